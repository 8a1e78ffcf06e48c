use std::collections::VecDeque;
use std::io::Write;

use super::error::ExecError;
use super::node::*;
use super::template::Template;
use super::value::is_true;

use crate::gotmpl::value::{Func, Value};

/// Nesting limit shared by `if`/`with`/`range` blocks and `template`, `include` and `tpl` calls
/// (see [`enter_nested`]). Go allows 100 000 template calls on a growable goroutine stack (Helm
/// 1000 includes); a native stack overflows long before, so a recursive chart fails with a
/// clear error here instead of aborting the process. The render thread's stack holds this
/// depth with a wide margin: tests/errors.rs drives the worst case, which needs 16-64 MiB for 1000
/// levels in a debug build; the thread has 128 MiB for 500.
pub const MAX_TEMPLATE_DEPTH: usize = 500;

/// Sprig functions that change their first (map) argument in place.
const MUTATORS: &[&str] = &[
    "set",
    "unset",
    "merge",
    "mergeOverwrite",
    "mustMerge",
    "mustMergeOverwrite",
];

thread_local! {
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A guard counting one level of template nesting on this thread; dropped on return.
pub struct NestGuard(());

impl Drop for NestGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Enters one level of nesting (`template`, `include`, `tpl`), failing past the limit.
pub fn enter_nested() -> Result<NestGuard, ExecError> {
    DEPTH.with(|d| {
        if d.get() >= MAX_TEMPLATE_DEPTH {
            return Err(ExecError::MaxTemplateDepth);
        }
        d.set(d.get() + 1);
        Ok(NestGuard(()))
    })
}

struct Variable {
    name: String,
    value: Value,
}

struct State<'a, 'b, T: Write> {
    template: &'a Template,
    template_name: String,
    writer: &'b mut T,
    vars: VecDeque<VecDeque<Variable>>,
}

// A Context for the template. Passed to the template exectution.
pub struct Context {
    dot: Value,
}

impl Context {
    pub fn from<T>(value: T) -> Context
    where
        T: Into<Value>,
    {
        let serialized: Value = value.into();
        Context { dot: serialized }
    }
}

impl<'b> Template {
    /// Executes the template `name` of this set (the set is not changed: `include` and `tpl`
    /// run named templates of a shared set).
    pub fn execute_named<T: Write>(
        &self,
        name: &str,
        writer: &'b mut T,
        data: &Context,
    ) -> Result<(), ExecError> {
        let mut vars: VecDeque<VecDeque<Variable>> = VecDeque::new();
        let mut dot = VecDeque::new();
        dot.push_back(Variable {
            name: "$".to_owned(),
            value: data.dot.clone(),
        });
        vars.push_back(dot);

        let mut state = State {
            template: self,
            template_name: name.to_string(),
            writer,
            vars,
        };

        let root = self
            .tree_set
            .get(name)
            .and_then(|tree| tree.root.as_ref())
            .ok_or_else(|| ExecError::IncompleteTemplate(name.to_string()))?;
        state.walk(data, root)?;

        Ok(())
    }
}

impl<'a, 'b, T: Write> State<'a, 'b, T> {
    fn wrap_error(&self, err: ExecError, node: &Nodes) -> ExecError {
        let span = node.span();
        ExecError::with_context(&self.template_name, span.line, span.col, span.len, err)
    }

    /// Go's `setTopVar`: sets the `k`-th variable from the top of the whole variable stack.
    /// For `range $k, $v := ...` those are the range's own; for `range $v = ...` (nothing
    /// declared) Go 1.19 sets whichever outer variables are on top, and so does this.
    fn set_kth_last_var_value(&mut self, k: usize, value: Value) -> Result<(), ExecError> {
        let var = self
            .vars
            .iter_mut()
            .rev()
            .flat_map(|scope| scope.iter_mut().rev())
            .nth(k.saturating_sub(1))
            .ok_or(ExecError::VarContextToSmall(k))?;
        var.value = value;
        Ok(())
    }

    /// The innermost visible variable `name`.
    fn var_slot(&mut self, name: &str) -> Option<&mut Variable> {
        self.vars
            .iter_mut()
            .rev()
            .flat_map(|scope| scope.iter_mut().rev())
            .find(|v| v.name == name)
    }

    /// `$name = value`: sets a variable declared before.
    fn assign(&mut self, name: &str, value: Value) -> Result<(), ExecError> {
        let slot = self
            .var_slot(name)
            .ok_or_else(|| ExecError::VariableNotFound(name.to_string()))?;
        slot.value = value;
        Ok(())
    }

    fn var_value(&self, key: &str) -> Result<Value, ExecError> {
        for context in self.vars.iter().rev() {
            for var in context.iter().rev() {
                if var.name == key {
                    return Ok(var.value.clone());
                }
            }
        }
        Err(ExecError::VariableNotFound(key.to_string()))
    }

    fn walk_list(&mut self, ctx: &Context, node: &'a ListNode) -> Result<(), ExecError> {
        for n in &node.nodes {
            self.walk(ctx, n)?;
        }
        Ok(())
    }

    // Top level walk function. Steps through the major parts for the template strcuture and
    // writes to the output.
    fn walk(&mut self, ctx: &Context, node: &'a Nodes) -> Result<(), ExecError> {
        match *node {
            Nodes::Action(ref n) => {
                let val = self
                    .eval_pipeline(ctx, &n.pipe)
                    .map_err(|e| self.wrap_error(e, node))?;
                if n.pipe.decl.is_empty() {
                    self.print_value(&val)?;
                }
                Ok(())
            }
            Nodes::If(_) | Nodes::With(_) => self.walk_if_or_with(node, ctx),
            Nodes::Range(ref n) => self
                .walk_range(ctx, n)
                .map_err(|e| self.wrap_error(e, node)),
            Nodes::List(ref n) => self.walk_list(ctx, n),
            Nodes::Text(ref n) => write!(self.writer, "{}", n.text).map_err(ExecError::IOError),
            Nodes::Template(ref n) => self
                .walk_template(ctx, n)
                .map_err(|e| self.wrap_error(e, node)),
            // Unwound to the innermost `range` (Go 1.18 break/continue).
            Nodes::Break(_) => Err(ExecError::Break),
            Nodes::Continue(_) => Err(ExecError::Continue),
            _ => Err(ExecError::UnknownNode(node.to_string())),
        }
    }

    fn walk_template(&mut self, ctx: &Context, template: &TemplateNode) -> Result<(), ExecError> {
        let name = &template.name;
        let _nested = enter_nested()?;
        let tree = self.template.tree_set.get(name);
        if let Some(tree) = tree
            && let Some(ref root) = tree.root
        {
            let mut vars = VecDeque::new();
            let mut dot = VecDeque::new();
            let value = if let Some(ref pipe) = template.pipe {
                self.eval_pipeline(ctx, pipe)?
            } else {
                Value::Missing
            };
            dot.push_back(Variable {
                name: "$".to_owned(),
                value: value.clone(),
            });
            vars.push_back(dot);
            let mut new_state = State {
                template: self.template,
                template_name: name.clone(),
                writer: self.writer,
                vars,
            };
            return new_state.walk(&Context::from(value), root);
        }
        Err(ExecError::TemplateNotDefined(name.clone()))
    }

    fn eval_pipeline(&mut self, ctx: &Context, pipe: &PipeNode) -> Result<Value, ExecError> {
        let mut val: Option<Value> = None;
        for cmd in &pipe.cmds {
            val = Some(self.eval_command(ctx, cmd, &val)?);
            // TODO
        }
        let val = val.ok_or_else(|| ExecError::ErrorEvaluatingPipe(pipe.to_string()))?;
        if pipe.is_assign {
            for var in &pipe.decl {
                self.assign(&var.ident[0], val.clone())?;
            }
            return Ok(val);
        }
        for var in &pipe.decl {
            self.vars
                .back_mut()
                .map(|v| {
                    v.push_back(Variable {
                        name: var.ident[0].clone(),
                        value: val.clone(),
                    })
                })
                .ok_or(ExecError::EmptyStack)?;
        }
        Ok(val)
    }

    fn eval_command(
        &mut self,
        ctx: &Context,
        cmd: &CommandNode,
        val: &Option<Value>,
    ) -> Result<Value, ExecError> {
        let first_word = cmd
            .args
            .first()
            .ok_or_else(|| ExecError::NoArgsForCommandNode(cmd.to_string()))?;
        self.eval_operand(ctx, first_word, &cmd.args, val, true)
    }

    /// A command's first word (`as_command`, with the command's words in `args` and the piped
    /// value in `fin`) or one argument of a call (no `args`, no `fin`).
    fn eval_operand(
        &mut self,
        ctx: &Context,
        node: &Nodes,
        args: &[Nodes],
        fin: &Option<Value>,
        as_command: bool,
    ) -> Result<Value, ExecError> {
        match node {
            Nodes::Field(n) => return self.eval_field_node(ctx, n, args, fin),
            Nodes::Variable(n) => return self.eval_variable_node(ctx, n, args, fin),
            Nodes::Chain(n) => return self.eval_chain_node(ctx, n, args, fin),
            Nodes::Identifier(n) => return self.eval_function(ctx, n, args, fin),
            _ => {}
        }
        not_a_function(args, fin)?;
        match node {
            Nodes::Pipe(n) => {
                let _nested = enter_nested()?;
                self.eval_pipeline(ctx, n)
            }
            Nodes::Dot(_) => Ok(ctx.dot.clone()),
            Nodes::Bool(n) => Ok(n.value.clone()),
            Nodes::Number(n) => Ok(n.value.clone()),
            Nodes::String(n) => Ok(n.value.clone()),
            // Go: nil is a value as an argument (`print nil` prints <nil>), not a command.
            Nodes::Nil(_) if !as_command => Ok(Value::Nil),
            _ if as_command => Err(ExecError::CannotEvaluateCommand(node.to_string())),
            _ => Err(ExecError::InvalidArgument(node.to_string())),
        }
    }

    fn eval_function(
        &mut self,
        ctx: &Context,
        ident: &IdentifierNode,
        args: &[Nodes],
        fin: &Option<Value>,
    ) -> Result<Value, ExecError> {
        let name = &ident.ident;
        // Go 1.18+: `and` and `or` stop at the first operand that decides the result, so
        // `and .Values.a .Values.a.b` does not evaluate `.Values.a.b` when `.Values.a` is unset.
        if (name == "and" || name == "or") && self.template.funcs.contains_key(name.as_str()) {
            let want_truth = name == "or";
            let mut last = Value::Missing;
            let operands = args.len().saturating_sub(1) + usize::from(fin.is_some());
            if operands < 1 {
                return Err(ExecError::UndefinedFunction(format!(
                    "{name} needs arguments"
                )));
            }
            for arg in args.iter().skip(1) {
                last = self.eval_arg(ctx, arg)?;
                if is_true(&last) == want_truth {
                    return Ok(last);
                }
            }
            if let Some(v) = fin {
                last = v.clone();
            }
            return Ok(last);
        }
        let function = self
            .template
            .funcs
            .get(name.as_str())
            .ok_or_else(|| ExecError::UndefinedFunction(name.to_string()))?;
        let result = self.eval_call(ctx, *function, args, fin)?;
        // Sprig's set/unset/merge/mergeOverwrite change their first argument, a Go map shared
        // by reference. Values here are copies, so when that argument is a plain variable
        // (`$_ := set $ctx "k" v`, the common idiom) the result is written back to it.
        // Other aliases of the same map (a field path, a second variable) do not see the change.
        if MUTATORS.contains(&name.as_str())
            && let Some(Nodes::Variable(var)) = args.get(1)
            && var.ident.len() == 1
            && var.ident[0] != "$"
            && let Some(slot) = self.var_slot(&var.ident[0])
        {
            slot.value = result.clone();
        }
        Ok(result)
    }

    fn eval_call(
        &mut self,
        ctx: &Context,
        function: Func,
        args: &[Nodes],
        fin: &Option<Value>,
    ) -> Result<Value, ExecError> {
        let mut arg_vals = vec![];
        if !args.is_empty() {
            for arg in &args[1..] {
                let val = self.eval_arg(ctx, arg)?;
                arg_vals.push(val);
            }
        }
        if let Some(ref f) = *fin {
            arg_vals.push(f.clone());
        }

        function(&arg_vals).map_err(Into::into)
    }

    fn eval_chain_node(
        &mut self,
        ctx: &Context,
        chain: &ChainNode,
        args: &[Nodes],
        fin: &Option<Value>,
    ) -> Result<Value, ExecError> {
        if chain.field.is_empty() {
            return Err(ExecError::NoFieldsInEvalChainNode);
        }
        if let Nodes::Nil(_) = *chain.node {
            return Err(ExecError::NullInChain(chain.to_string()));
        }
        let pipe = self.eval_arg(ctx, &chain.node)?;
        self.eval_field_chain(ctx, &pipe, &chain.field, args, fin)
    }

    fn eval_arg(&mut self, ctx: &Context, node: &Nodes) -> Result<Value, ExecError> {
        // Errors carry the argument's position.
        self.eval_operand(ctx, node, &[], &None, false)
            .map_err(|e| self.wrap_error(e, node))
    }

    fn eval_field_node(
        &mut self,
        ctx: &Context,
        field: &FieldNode,
        args: &[Nodes],
        fin: &Option<Value>,
    ) -> Result<Value, ExecError> {
        self.eval_field_chain(ctx, &ctx.dot, &field.ident, args, fin)
    }

    fn eval_field_chain(
        &mut self,
        ctx: &Context,
        receiver: &Value,
        ident: &[String],
        args: &[Nodes],
        fin: &Option<Value>,
    ) -> Result<Value, ExecError> {
        let n = ident.len();
        if n < 1 {
            return Err(ExecError::FieldChainWithoutFields);
        }
        // TODO clean shit up
        let mut r: Value = Value::from(0);
        for (i, id) in ident.iter().enumerate().take(n - 1) {
            r = self.eval_field(ctx, if i == 0 { receiver } else { &r }, id, &[], &None)?;
        }
        self.eval_field(
            ctx,
            if n == 1 { receiver } else { &r },
            &ident[n - 1],
            args,
            fin,
        )
    }

    fn eval_field(
        &mut self,
        ctx: &Context,
        receiver: &Value,
        field_name: &str,
        args: &[Nodes],
        fin: &Option<Value>,
    ) -> Result<Value, ExecError> {
        let has_args = args.len() > 1 || fin.is_some();
        let ret = match *receiver {
            Value::Map(ref o) => Ok(o.get(field_name).cloned().unwrap_or(Value::Missing)),
            _ => Err(ExecError::OnlyMapsAndObjectsHaveFields),
        };
        // A function stored in a map is a method (Helm's `.Files.Get`, `.Capabilities.
        // APIVersions.Has`): it gets its receiver first, then the call's arguments.
        if let Ok(Value::Function(ref f)) = ret {
            let mut call_args = vec![receiver.clone()];
            for arg in args.iter().skip(1) {
                call_args.push(self.eval_arg(ctx, arg)?);
            }
            if let Some(v) = fin {
                call_args.push(v.clone());
            }
            return (f.f)(&call_args).map_err(Into::into);
        }
        if has_args {
            return Err(ExecError::NotAFunctionButArguments(field_name.to_string()));
        }
        ret
    }

    fn eval_variable_node(
        &mut self,
        ctx: &Context,
        variable: &VariableNode,
        args: &[Nodes],
        fin: &Option<Value>,
    ) -> Result<Value, ExecError> {
        let val = self.var_value(&variable.ident[0])?;
        if variable.ident.len() == 1 {
            not_a_function(args, fin)?;
            return Ok(val);
        }
        self.eval_field_chain(ctx, &val, &variable.ident[1..], args, fin)
    }

    // Walks an `if` or `with` node. They behave the same, except that `with` sets dot.
    fn walk_if_or_with(&mut self, node: &'a Nodes, ctx: &Context) -> Result<(), ExecError> {
        let pipe = match *node {
            Nodes::If(ref n) | Nodes::With(ref n) => &n.pipe,
            _ => return Err(ExecError::ExpectedIfOrWith(node.to_string())),
        };
        let val = self
            .eval_pipeline(ctx, pipe)
            .map_err(|e| self.wrap_error(e, node))?;
        let truth = is_true(&val);
        let _nested = enter_nested().map_err(|e| self.wrap_error(e, node))?;
        self.vars.push_back(VecDeque::new());
        let result = self.walk_if_or_with_branch(node, ctx, val, truth);
        self.vars.pop_back();
        result
    }

    fn walk_if_or_with_branch(
        &mut self,
        node: &'a Nodes,
        ctx: &Context,
        val: Value,
        truth: bool,
    ) -> Result<(), ExecError> {
        if truth {
            match *node {
                Nodes::If(ref n) => self.walk_list(ctx, &n.list)?,
                Nodes::With(ref n) => {
                    let ctx = Context { dot: val };
                    self.walk_list(&ctx, &n.list)?;
                }
                _ => {}
            }
        } else {
            match *node {
                Nodes::If(ref n) | Nodes::With(ref n) => {
                    if let Some(ref otherwise) = n.else_list {
                        self.walk_list(ctx, otherwise)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn one_iteration(
        &mut self,
        key: Value,
        val: Value,
        range: &'a RangeNode,
    ) -> Result<(), ExecError> {
        let declared = range.pipe.decl.len();
        if declared > 0 {
            self.set_kth_last_var_value(1, val.clone())?;
        }
        if declared > 1 {
            self.set_kth_last_var_value(2, key)?;
        }
        let vars = VecDeque::new();
        self.vars.push_back(vars);
        let ctx = Context { dot: val };
        let result = self.walk_list(&ctx, &range.list);
        self.vars.pop_back();
        result
    }

    fn walk_range(&mut self, ctx: &Context, range: &'a RangeNode) -> Result<(), ExecError> {
        let _nested = enter_nested()?;
        // Go: the range pipeline's variables live in a scope of their own.
        self.vars.push_back(VecDeque::new());
        let result = self.walk_range_scoped(ctx, range);
        self.vars.pop_back();
        result
    }

    fn walk_range_scoped(&mut self, ctx: &Context, range: &'a RangeNode) -> Result<(), ExecError> {
        let val = self.eval_pipeline(ctx, &range.pipe)?;
        let iterated = match val {
            Value::Map(ref map) => {
                // Methods stored in a map (see `eval_field`) are not entries.
                let mut keys: Vec<&String> = map
                    .iter()
                    .filter(|(_, v)| !matches!(v, Value::Function(_)))
                    .map(|(k, _)| k)
                    .collect();
                keys.sort();
                let keys_empty = keys.is_empty();
                for k in keys {
                    let v = map.get(k).cloned().unwrap_or(Value::Missing);
                    match self.one_iteration(Value::from(k.as_str()), v, range) {
                        Err(ExecError::Break) => break,
                        Err(ExecError::Continue) => continue,
                        other => other?,
                    }
                }
                !keys_empty
            }
            Value::Array(ref vec) => {
                for (k, v) in vec.iter().enumerate() {
                    match self.one_iteration(Value::from(k), v.clone(), range) {
                        Err(ExecError::Break) => break,
                        Err(ExecError::Continue) => continue,
                        other => other?,
                    }
                }
                !vec.is_empty()
            }
            Value::Missing | Value::Nil => false,
            _ => return Err(ExecError::InvalidRange(val)),
        };
        if !iterated && let Some(ref else_list) = range.else_list {
            self.walk_list(ctx, else_list)?;
        }
        Ok(())
    }

    fn print_value(&mut self, val: &Value) -> Result<(), ExecError> {
        write!(self.writer, "{}", super::gofmt::format_value(val)).map_err(ExecError::IOError)?;
        Ok(())
    }
}

fn not_a_function(args: &[Nodes], val: &Option<Value>) -> Result<(), ExecError> {
    if args.len() > 1 || val.is_some() {
        let operand = args.first().map(ToString::to_string).unwrap_or_default();
        return Err(ExecError::ArgumentForNonFunction(operand));
    }
    Ok(())
}
