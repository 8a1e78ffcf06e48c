use std::collections::HashMap;

use super::error::ParseError;
use super::funcs::BUILTINS;
use super::parse::{Tree, parse};
use super::value::Func;

/// A set of named templates sharing one function map (Go's `*template.Template` with its
/// associated templates).
pub struct Template {
    pub funcs: HashMap<String, Func>,
    pub tree_set: HashMap<String, Tree>,
}

impl Default for Template {
    /// An empty set offering Go's builtin functions.
    fn default() -> Template {
        Template {
            funcs: BUILTINS.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
            tree_set: HashMap::default(),
        }
    }
}

impl Template {
    /// Adds (or replaces) one function of the set's function map.
    pub fn add_func(&mut self, name: &str, func: Func) {
        self.funcs.insert(name.to_owned(), func);
    }

    /// Parses `text` as the template `name`, adding it and every `define` in it to the set.
    /// Functions must be in the map before parsing, as in Go.
    pub fn add_template<N: Into<String>, T: Into<String>>(
        &mut self,
        name: N,
        text: T,
    ) -> Result<(), ParseError> {
        let tree_set = parse(
            name.into(),
            text.into(),
            self.funcs.keys().cloned().collect(),
        )?;
        // Go's `associate`: an empty definition does not replace an existing one.
        for (name, tree) in tree_set {
            if tree.is_empty()? && self.tree_set.contains_key(&name) {
                continue;
            }
            self.tree_set.insert(name, tree);
        }
        Ok(())
    }
}
