use std::collections::{HashMap, HashSet, VecDeque};

use super::error::ParseError;
use super::lexer::{Item, ItemType, Lexer};
use super::node::{
    ActionNode, BoolNode, BranchNode, ChainNode, CommandNode, FieldNode, IdentifierNode, ListNode,
    Nodes, NumberNode, PipeNode, Span, StringNode, TemplateNode, TextNode, VariableNode,
};
use super::unquote::unquote_str;
use super::value::Value;

pub struct Parser {
    name: String,
    pub funcs: HashSet<String>,
    lex: Option<Lexer>,
    line: usize,
    col: usize,
    len: usize,
    token: VecDeque<Item>,
    peek_count: usize,
    pub tree_set: HashMap<String, Tree>,
    tree: Option<Tree>,
    tree_stack: VecDeque<Tree>,
    /// How many `range` bodies enclose the current position (`break`/`continue` need one).
    range_depth: usize,
}

#[derive(Clone)]
pub struct Tree {
    name: String,
    pub root: Option<Nodes>,
    vars: Vec<String>,
}

impl Parser {
    pub fn new(name: String) -> Parser {
        Parser {
            name,
            funcs: HashSet::new(),
            lex: None,
            line: 0,
            col: 0,
            len: 0,
            token: VecDeque::new(),
            peek_count: 0,
            tree_set: HashMap::new(),
            tree: None,
            tree_stack: VecDeque::new(),
            range_depth: 0,
        }
    }
}

impl Tree {
    fn new(name: String) -> Tree {
        Tree {
            name,
            root: None,
            vars: vec![],
        }
    }

    /// Go's `parse.IsEmptyTree` of the root: nothing but white space.
    pub fn is_empty(&self) -> Result<bool, ParseError> {
        match &self.root {
            Some(root) => Ok(root.is_empty_tree()?),
            None => Ok(true),
        }
    }

    pub fn pop_vars(&mut self, n: usize) {
        self.vars.truncate(n);
    }
}

pub fn parse(
    name: String,
    text: String,
    funcs: HashSet<String>,
) -> Result<HashMap<String, Tree>, ParseError> {
    let mut p = Parser::new(name);
    p.funcs = funcs;
    p.lex = Some(Lexer::new(text));
    p.parse_tree()?;
    Ok(p.tree_set)
}

impl Parser {
    fn next_from_lex(&mut self) -> Option<Item> {
        match self.lex {
            Some(ref mut l) => l.next(),
            None => None,
        }
    }

    fn backup(&mut self, t: Item) {
        self.token.push_front(t);
        self.peek_count += 1;
    }

    fn backup2(&mut self, t0: Item, t1: Item) {
        self.token.push_front(t1);
        self.token.push_front(t0);
        self.peek_count += 2;
    }

    fn backup3(&mut self, t0: Item, t1: Item, t2: Item) {
        self.token.push_front(t2);
        self.token.push_front(t1);
        self.token.push_front(t0);
        self.peek_count += 3;
    }

    fn next_must(&mut self, context: &str) -> Result<Item, ParseError> {
        self.next()
            .ok_or_else(|| self.error_msg(&format!("unexpected end in {}", context)))
    }

    fn next_non_space(&mut self) -> Option<Item> {
        self.find(|c| c.typ != ItemType::Space)
    }

    fn next_non_space_must(&mut self, context: &str) -> Result<Item, ParseError> {
        self.next_non_space()
            .ok_or_else(|| self.unexpected("end", context))
    }

    fn peek_non_space_must(&mut self, context: &str) -> Result<&Item, ParseError> {
        if let Some(t) = self.next_non_space() {
            self.backup(t);
            if let Some(front) = self.token.front() {
                return Ok(front);
            }
        }
        self.error(&format!("unexpected end in {}", context))
    }

    fn peek(&mut self) -> Option<&Item> {
        if let Some(t) = self.next() {
            self.backup(t);
            return self.token.front();
        }
        None
    }

    fn start_parse(&mut self, name: String) {
        if let Some(t) = self.tree.take() {
            self.tree_stack.push_back(t);
        }
        self.tree = Some(Tree::new(name));
    }

    fn stop_parse(&mut self) -> Result<(), ParseError> {
        self.add_to_tree_set()?;
        self.tree = self.tree_stack.pop_back();
        Ok(())
    }

    // top level parser
    fn parse_tree(&mut self) -> Result<(), ParseError> {
        let name = self.name.clone();
        self.start_parse(name);
        self.parse()?;
        self.stop_parse()?;
        Ok(())
    }

    fn add_tree(&mut self, name: String, t: Tree) {
        self.tree_set.insert(name, t);
    }

    fn error<T>(&self, msg: &str) -> Result<T, ParseError> {
        Err(self.error_msg(msg))
    }

    fn error_msg(&self, msg: &str) -> ParseError {
        let name = if let Some(t) = self.tree.as_ref() {
            &t.name
        } else {
            &self.name
        };
        ParseError::with_context(name, self.line, self.col, self.len, msg)
    }

    fn expect(&mut self, expected: &ItemType, context: &str) -> Result<Item, ParseError> {
        let token = self.next_non_space_must(context)?;
        if token.typ != *expected {
            return Err(self.unexpected(&token, context));
        }
        Ok(token)
    }

    fn unexpected(
        &self,
        token: impl std::fmt::Display,
        context: impl std::fmt::Display,
    ) -> ParseError {
        self.error_msg(&format!("unexpected {} in {}", token, context))
    }

    fn has_var(&self, name: &str) -> bool {
        name == "$"
            || self
                .tree
                .as_ref()
                .is_some_and(|t| t.vars.iter().any(|v| v == name))
    }

    fn add_var(&mut self, name: String) -> Result<(), ParseError> {
        let mut tree = self.tree.take().ok_or_else(|| self.error_msg("no tree"))?;
        tree.vars.push(name);
        self.tree = Some(tree);
        Ok(())
    }

    /// Go's `Tree.add`: a definition replaces an empty one; a second non-empty definition
    /// in the same text is an error; an empty one leaves the first in place.
    fn add_to_tree_set(&mut self) -> Result<(), ParseError> {
        let tree = self.tree.take().ok_or_else(|| self.error_msg("no tree"))?;
        if let Some(old) = self.tree_set.get(tree.name.as_str())
            && !old.is_empty()?
        {
            if tree.is_empty()? {
                return Ok(());
            }
            let err = format!("template multiple definitions of template {}", &tree.name);
            return self.error(&err);
        }
        self.add_tree(tree.name.clone(), tree);
        Ok(())
    }

    fn has_func(&self, name: &str) -> bool {
        self.funcs.contains(name)
    }

    fn parse(&mut self) -> Result<(), ParseError> {
        if self.tree.is_none() {
            return self.error("no tree");
        }
        let mut t = self.next_must("template")?;
        if let Some(tree) = self.tree.as_mut() {
            tree.root = Some(Nodes::List(ListNode {
                span: t.span(),
                nodes: vec![],
            }));
        }
        while t.typ != ItemType::Eof {
            if t.typ == ItemType::LeftDelim {
                let nns = self.next_non_space();
                match nns {
                    Some(ref item) if item.typ == ItemType::Define => {
                        self.parse_definition()?;
                        t = self.next_must("template")?;
                        continue;
                    }
                    _ => {}
                };
                if let Some(t2) = nns {
                    self.backup2(t, t2);
                } else {
                    self.backup(t);
                }
            } else {
                self.backup(t);
            }
            let node = match self.text_or_action() {
                Ok(node @ (Nodes::Else(_) | Nodes::End(_))) => {
                    return self.error(&format!("unexpected {node}"));
                }
                node => node?,
            };
            self.tree
                .as_mut()
                .and_then(|tree| {
                    tree.root.as_mut().and_then(|r| match *r {
                        Nodes::List(ref mut r) => {
                            r.nodes.push(node);
                            Some(())
                        }
                        _ => None,
                    })
                })
                .ok_or_else(|| self.error_msg("invalid root node"))?;

            t = self.next_must("template")?;
        }
        self.backup(t);
        Ok(())
    }

    fn parse_definition(&mut self) -> Result<(), ParseError> {
        let context = "define clause";
        let token = self.next_non_space_must(context)?;
        let name = self.parse_template_name(&token, context)?;
        self.expect(&ItemType::RightDelim, "define end")?;
        self.start_parse(name);
        let (list, end) = self.item_list()?;
        if !matches!(end, Nodes::End(_)) {
            return Err(self.unexpected(&end, context));
        }
        if let Some(tree) = self.tree.as_mut() {
            tree.root = Some(Nodes::List(list));
        }
        self.stop_parse()
    }

    fn item_list(&mut self) -> Result<(ListNode, Nodes), ParseError> {
        let span = self.peek_non_space_must("item list")?.span();
        let mut list = ListNode {
            span,
            nodes: vec![],
        };
        while self.peek_non_space_must("item list")?.typ != ItemType::Eof {
            let node = self.text_or_action()?;
            match node {
                Nodes::End(_) | Nodes::Else(_) => return Ok((list, node)),
                _ => list.nodes.push(node),
            }
        }
        self.error("unexpected EOF")
    }

    fn text_or_action(&mut self) -> Result<Nodes, ParseError> {
        match self.next_non_space() {
            Some(item) if item.typ == ItemType::Text => Ok(Nodes::Text(TextNode {
                span: item.span(),
                text: item.val,
            })),
            Some(ref item) if item.typ == ItemType::LeftDelim => self.action(),
            Some(ref item) => Err(self.unexpected(item, "input")),
            _ => self.error("unexpected end of input"),
        }
    }

    fn action(&mut self) -> Result<Nodes, ParseError> {
        let token = self.next_non_space_must("action")?;
        match token.typ {
            ItemType::Block => return self.block_control(),
            ItemType::Else => return self.else_control(),
            ItemType::End => return self.end_control(),
            ItemType::Break | ItemType::Continue => {
                let end = self.expect(&ItemType::RightDelim, "break or continue")?;
                if self.range_depth == 0 {
                    return self.error(&format!("{{{{{}}}}} outside {{{{range}}}}", token.val));
                }
                let span = Span {
                    len: end.val.len(),
                    ..token.span()
                };
                return Ok(if token.typ == ItemType::Break {
                    Nodes::Break(span)
                } else {
                    Nodes::Continue(span)
                });
            }
            ItemType::If | ItemType::Range | ItemType::With => {
                return self.control(token.typ);
            }
            ItemType::Template => return self.template_control(),
            _ => {}
        }
        let span = token.span();
        self.backup(token);
        let pipe = self.pipeline("command")?;
        Ok(Nodes::Action(ActionNode { span, pipe }))
    }

    /// The pipeline, body and `else` of an `if`, `with` or `range` (`else if` only after `if`).
    fn parse_control(
        &mut self,
        allow_else_if: bool,
        context: &str,
    ) -> Result<BranchNode, ParseError> {
        let vars_len = self
            .tree
            .as_ref()
            .map(|t| t.vars.len())
            .ok_or(ParseError::NoTree)?;
        let pipe = self.pipeline(context)?;
        let in_range = usize::from(context == "range");
        self.range_depth += in_range;
        let listed = self.item_list();
        self.range_depth -= in_range;
        let (list, next) = listed?;
        let else_list = match next {
            Nodes::End(_) => None,
            Nodes::Else(span) => {
                if allow_else_if && self.peek_non_space_must("else if")?.typ == ItemType::If {
                    self.next_must("else if")?;
                    Some(ListNode {
                        span,
                        nodes: vec![self.control(ItemType::If)?],
                    })
                } else {
                    let (else_list, next) = self.item_list()?;
                    if !matches!(next, Nodes::End(_)) {
                        return self.error(&format!("expected end; found {}", next));
                    }
                    Some(else_list)
                }
            }
            _ => return self.error(&format!("expected end; found {}", next)),
        };
        if let Some(t) = self.tree.as_mut() {
            t.pop_vars(vars_len);
        }
        Ok(BranchNode {
            span: pipe.span,
            pipe,
            list,
            else_list,
        })
    }

    /// `if`, `with` or `range`, after its keyword.
    fn control(&mut self, keyword: ItemType) -> Result<Nodes, ParseError> {
        Ok(match keyword {
            ItemType::If => Nodes::If(self.parse_control(true, "if")?),
            ItemType::With => Nodes::With(self.parse_control(false, "with")?),
            _ => Nodes::Range(self.parse_control(false, "range")?),
        })
    }

    fn end_control(&mut self) -> Result<Nodes, ParseError> {
        let token = self.expect(&ItemType::RightDelim, "end")?;
        Ok(Nodes::End(token.span()))
    }

    fn else_control(&mut self) -> Result<Nodes, ParseError> {
        let peek = self.peek_non_space_must("else")?;
        if peek.typ == ItemType::If {
            return Ok(Nodes::Else(peek.span()));
        }
        let token = self.expect(&ItemType::RightDelim, "else")?;
        Ok(Nodes::Else(token.span()))
    }

    fn block_control(&mut self) -> Result<Nodes, ParseError> {
        let context = "block clause";
        let token = self.next_non_space_must(context)?;
        let name = self.parse_template_name(&token, context)?;
        let pipe = self.pipeline(context)?;

        self.start_parse(name.clone());
        let (root, end) = self.item_list()?;
        if let Some(tree) = self.tree.as_mut() {
            tree.root = Some(Nodes::List(root));
        }
        if !matches!(end, Nodes::End(_)) {
            return self.error(&format!("unexpected {} in {}", end, context));
        }
        self.stop_parse()?;
        Ok(Nodes::Template(TemplateNode {
            span: token.span(),
            name,
            pipe: Some(pipe),
        }))
    }

    fn template_control(&mut self) -> Result<Nodes, ParseError> {
        let context = "template clause";
        let token = self.next_non_space().ok_or(ParseError::UnexpectedEnd)?;
        if token.typ == ItemType::LeftParen {
            // Go requires a constant template name (`template "x" .`).
            return Err(ParseError::NoDynamicTemplate);
        }
        let name = self.parse_template_name(&token, context)?;
        let next = self.next_non_space().ok_or(ParseError::UnexpectedEnd)?;
        let pipe = if next.typ != ItemType::RightDelim {
            self.backup(next);
            Some(self.pipeline(context)?)
        } else {
            None
        };
        Ok(Nodes::Template(TemplateNode {
            span: token.span(),
            name,
            pipe,
        }))
    }

    fn pipeline(&mut self, context: &str) -> Result<PipeNode, ParseError> {
        let mut decl = vec![];
        let mut assign = false;
        let mut token = self.next_non_space_must("pipeline")?;
        let span = token.span();
        if token.typ == ItemType::Variable {
            while token.typ == ItemType::Variable {
                let token_after_var = self.next_must("variable")?;
                let next = if token_after_var.typ == ItemType::Space {
                    let next = self.next_non_space_must("variable")?;
                    if next.typ != ItemType::ColonEquals
                        && next.typ != ItemType::Assign
                        && !(next.typ == ItemType::Char && next.val == ",")
                    {
                        self.backup3(token, token_after_var, next);
                        break;
                    }
                    next
                } else {
                    token_after_var
                };
                if next.typ == ItemType::Assign {
                    // Go 1.11+: `$x = value` assigns to a variable declared before.
                    if !self.has_var(&token.val) {
                        return self.error(&format!("undefined variable {}", token.val));
                    }
                    decl.push(VariableNode::new(token.span(), &token.val));
                    assign = true;
                    break;
                }
                if next.typ == ItemType::ColonEquals
                    || (next.typ == ItemType::Char && next.val == ",")
                {
                    decl.push(VariableNode::new(token.span(), &token.val));
                    self.add_var(token.val.clone())?;
                    if next.typ == ItemType::Char && next.val == "," {
                        if context == "range" && decl.len() < 2 {
                            token = self.next_non_space_must("variable")?;
                            continue;
                        }
                        return self.error(&format!("to many decalarations in {}", context));
                    }
                } else {
                    self.backup2(token, next);
                }
                break;
            }
        } else {
            self.backup(token);
        }
        let mut pipe = PipeNode {
            span,
            decl,
            cmds: vec![],
            is_assign: assign,
        };
        let mut token = self.next_non_space_must("pipeline")?;
        loop {
            match token.typ {
                ItemType::RightDelim | ItemType::RightParen => {
                    self.check_pipeline(&mut pipe, context)?;
                    if token.typ == ItemType::RightParen {
                        self.backup(token);
                    }
                    return Ok(pipe);
                }
                ItemType::Bool
                | ItemType::CharConstant
                | ItemType::Dot
                | ItemType::Field
                | ItemType::Identifier
                | ItemType::Number
                | ItemType::Nil
                | ItemType::RawString
                | ItemType::String
                | ItemType::Variable
                | ItemType::LeftParen => {
                    self.backup(token);
                    pipe.cmds.push(self.command()?);
                }
                _ => return Err(self.unexpected(&token, context)),
            }
            token = self.next_non_space_must("pipeline")?;
        }
    }

    fn check_pipeline(&mut self, pipe: &mut PipeNode, context: &str) -> Result<(), ParseError> {
        if pipe.cmds.is_empty() {
            return self.error(&format!("missing value for {}", context));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if c.args.first().is_none_or(Nodes::is_constant) {
                return self.error(&format!(
                    "non executable command in pipeline stage {}",
                    i + 2
                ));
            }
        }
        Ok(())
    }

    fn command(&mut self) -> Result<CommandNode, ParseError> {
        let mut cmd = CommandNode { args: vec![] };
        loop {
            self.peek_non_space_must("operand")?;
            if let Some(operand) = self.operand()? {
                cmd.args.push(operand);
            }
            let token = self.next_must("command")?;
            match token.typ {
                ItemType::Space => continue,
                ItemType::Error => return self.error(&token.val),
                ItemType::RightDelim | ItemType::RightParen => self.backup(token),
                ItemType::Pipe => {}
                _ => return self.error(&format!("unexpected {} in operand", token)),
            };
            break;
        }
        if cmd.args.is_empty() {
            return self.error("empty command");
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> Result<Option<Nodes>, ParseError> {
        let node = self.term()?;
        match node {
            None => Ok(None),
            Some(n) => {
                let next = self.next_must("operand")?;
                if next.typ == ItemType::Field {
                    if n.is_constant() {
                        return self.error(&format!("unexpected . after term {n}"));
                    }
                    let mut chain = ChainNode {
                        span: next.span(),
                        node: Box::new(n),
                        field: vec![],
                    };
                    chain.add(&next.val);
                    while self
                        .peek()
                        .map(|p| p.typ == ItemType::Field)
                        .unwrap_or(false)
                    {
                        if let Some(field) = self.next() {
                            chain.add(&field.val);
                        }
                    }
                    let chain_str = chain.to_string();
                    // Use original node's position and full expression length
                    let span = Span {
                        len: chain_str.len(),
                        ..chain.node.span()
                    };
                    let n = match *chain.node {
                        Nodes::Field(_) => Nodes::Field(FieldNode::new(span, &chain_str)),
                        Nodes::Variable(_) => Nodes::Variable(VariableNode::new(span, &chain_str)),
                        _ => Nodes::Chain(chain),
                    };
                    Ok(Some(n))
                } else {
                    self.backup(next);
                    Ok(Some(n))
                }
            }
        }
    }

    fn term(&mut self) -> Result<Option<Nodes>, ParseError> {
        let token = self.next_non_space_must("token")?;
        let span = token.span();
        let node = match token.typ {
            ItemType::Error => return self.error(&token.val),
            ItemType::Identifier => {
                if !self.has_func(&token.val) {
                    return self.error(&format!("function {} not defined", token.val));
                }
                Nodes::Identifier(IdentifierNode {
                    span,
                    ident: token.val,
                })
            }
            ItemType::Dot => Nodes::Dot(span),
            ItemType::Nil => Nodes::Nil(span),
            ItemType::Variable => {
                if !self.has_var(&token.val) {
                    return self.error(&format!("undefined variable {}", token.val));
                }
                Nodes::Variable(VariableNode::new(span, &token.val))
            }
            ItemType::Field => Nodes::Field(FieldNode::new(span, &token.val)),
            ItemType::Bool => Nodes::Bool(BoolNode {
                span,
                value: Value::Bool(token.val == "true"),
            }),
            ItemType::CharConstant | ItemType::Number => {
                match NumberNode::new(span, token.val, &token.typ) {
                    Ok(n) => Nodes::Number(n),
                    Err(e) => return self.error(&e.to_string()),
                }
            }
            ItemType::LeftParen => {
                let pipe = self.pipeline("parenthesized pipeline")?;
                let next = self.next_must("parenthesized pipeline")?;
                if next.typ != ItemType::RightParen {
                    return self.error(&format!("unclosed right paren: unexpected {}", next));
                }
                Nodes::Pipe(pipe)
            }
            ItemType::String | ItemType::RawString => match unquote_str(&token.val) {
                Some(s) => Nodes::String(StringNode {
                    span,
                    quoted: token.val,
                    value: Value::String(s),
                }),
                None => return self.error(&format!("unable to unqote string: {}", token.val)),
            },
            _ => {
                self.backup(token);
                return Ok(None);
            }
        };
        Ok(Some(node))
    }

    fn parse_template_name(&self, token: &Item, context: &str) -> Result<String, ParseError> {
        match token.typ {
            ItemType::String | ItemType::RawString => unquote_str(&token.val)
                .ok_or_else(|| ParseError::UnableToParseString(token.val.clone())),
            _ => Err(self.unexpected(token, context)),
        }
    }
}

impl Iterator for Parser {
    type Item = Item;
    fn next(&mut self) -> Option<Item> {
        let item = if self.peek_count > 0 {
            self.peek_count -= 1;
            self.token.pop_front()
        } else {
            self.next_from_lex()
        };
        match item {
            Some(item) => {
                self.line = item.line;
                self.col = item.col;
                self.len = item.val.len();
                Some(item)
            }
            _ => None,
        }
    }
}
