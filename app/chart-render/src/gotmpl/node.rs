//! The parse tree (Go's `text/template/parse` nodes). Every node carries the [`Span`] of the
//! token that starts it, so execution errors name `line:col`; `Display` writes a node back as
//! template text for error messages, as Go's `String` methods do.

use std::fmt::{Display, Formatter, Result as FmtResult};

use super::error::NodeError;
use super::lexer::ItemType;
use super::unquote::unquote_char;
use super::value::Value;

/// Where a node starts in its template text: 1-based line and column, and the
/// length of its first token (errors underline that much).
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub enum Nodes {
    List(ListNode),
    Text(TextNode),
    Pipe(PipeNode),
    Action(ActionNode),
    Identifier(IdentifierNode),
    Variable(VariableNode),
    Dot(Span),
    Nil(Span),
    Field(FieldNode),
    Chain(ChainNode),
    Bool(BoolNode),
    Number(NumberNode),
    String(StringNode),
    /// `{{end}}`, `{{else}}`: markers the parser consumes, never in a finished tree.
    End(Span),
    Else(Span),
    Break(Span),
    Continue(Span),
    If(BranchNode),
    With(BranchNode),
    Range(BranchNode),
    Template(TemplateNode),
}

impl Nodes {
    pub fn span(&self) -> Span {
        match self {
            Nodes::List(n) => n.span,
            Nodes::Text(n) => n.span,
            Nodes::Pipe(n) => n.span,
            Nodes::Action(n) => n.span,
            Nodes::Identifier(n) => n.span,
            Nodes::Variable(n) => n.span,
            Nodes::Field(n) => n.span,
            Nodes::Chain(n) => n.span,
            Nodes::Bool(n) => n.span,
            Nodes::Number(n) => n.span,
            Nodes::String(n) => n.span,
            Nodes::If(n) | Nodes::With(n) | Nodes::Range(n) => n.span,
            Nodes::Template(n) => n.span,
            Nodes::Dot(s)
            | Nodes::Nil(s)
            | Nodes::End(s)
            | Nodes::Else(s)
            | Nodes::Break(s)
            | Nodes::Continue(s) => *s,
        }
    }

    /// A constant operand (Go: a node that cannot be a pipeline stage or carry fields).
    pub fn is_constant(&self) -> bool {
        matches!(
            self,
            Nodes::Bool(_) | Nodes::Dot(_) | Nodes::Nil(_) | Nodes::Number(_) | Nodes::String(_)
        )
    }

    /// Go's `parse.IsEmptyTree`, deciding whether a second definition may replace a first.
    pub fn is_empty_tree(&self) -> Result<bool, NodeError> {
        match self {
            Nodes::List(n) => {
                for n in &n.nodes {
                    if !n.is_empty_tree()? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Nodes::Text(n) => Ok(n.text.trim().is_empty()),
            Nodes::Action(_)
            | Nodes::If(_)
            | Nodes::Range(_)
            | Nodes::Template(_)
            | Nodes::With(_) => Ok(false),
            _ => Err(NodeError::NaTN),
        }
    }
}

impl Display for Nodes {
    fn fmt(&self, f: &mut Formatter<'_>) -> FmtResult {
        match self {
            Nodes::List(n) => n.fmt(f),
            Nodes::Text(n) => f.write_str(&n.text),
            Nodes::Pipe(n) => n.fmt(f),
            Nodes::Action(n) => write!(f, "{{{{{}}}}}", n.pipe),
            Nodes::Identifier(n) => f.write_str(&n.ident),
            Nodes::Variable(n) => f.write_str(&n.ident.join(".")),
            Nodes::Dot(_) => f.write_str("."),
            Nodes::Nil(_) => f.write_str("nil"),
            Nodes::Field(n) => f.write_str(&n.ident.join(".")),
            Nodes::Chain(n) => n.fmt(f),
            Nodes::Bool(n) => write!(f, "{}", n.value),
            Nodes::Number(n) => f.write_str(&n.text),
            Nodes::String(n) => f.write_str(&n.quoted),
            Nodes::End(_) => f.write_str("{{end}}"),
            Nodes::Else(_) => f.write_str("{{else}}"),
            Nodes::Break(_) => f.write_str("{{break}}"),
            Nodes::Continue(_) => f.write_str("{{continue}}"),
            Nodes::If(n) => n.write(f, "if"),
            Nodes::With(n) => n.write(f, "with"),
            Nodes::Range(n) => n.write(f, "range"),
            Nodes::Template(n) => n.fmt(f),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ListNode {
    pub span: Span,
    pub nodes: Vec<Nodes>,
}

impl Display for ListNode {
    fn fmt(&self, f: &mut Formatter<'_>) -> FmtResult {
        self.nodes.iter().try_for_each(|n| n.fmt(f))
    }
}

#[derive(Clone, Debug)]
pub struct TextNode {
    pub span: Span,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct PipeNode {
    pub span: Span,
    /// Variables declared (`$x :=`) or, with `is_assign`, assigned (`$x =`).
    pub decl: Vec<VariableNode>,
    pub cmds: Vec<CommandNode>,
    pub is_assign: bool,
}

impl Display for PipeNode {
    fn fmt(&self, f: &mut Formatter<'_>) -> FmtResult {
        if !self.decl.is_empty() {
            let decl: Vec<String> = self.decl.iter().map(|n| n.ident.join(".")).collect();
            write!(f, "{} := ", decl.join(", "))?;
        }
        let cmds: Vec<String> = self.cmds.iter().map(ToString::to_string).collect();
        f.write_str(&cmds.join(" | "))
    }
}

#[derive(Clone, Debug)]
pub struct ActionNode {
    pub span: Span,
    pub pipe: PipeNode,
}

/// One stage of a pipeline: a function, method or value and its arguments.
#[derive(Clone, Debug)]
pub struct CommandNode {
    pub args: Vec<Nodes>,
}

impl Display for CommandNode {
    fn fmt(&self, f: &mut Formatter<'_>) -> FmtResult {
        let args: Vec<String> = self.args.iter().map(ToString::to_string).collect();
        f.write_str(&args.join(" "))
    }
}

#[derive(Clone, Debug)]
pub struct IdentifierNode {
    pub span: Span,
    pub ident: String,
}

/// `$` or `$x`, with the field names that follow it (`$x.a.b` is `["$x", "a", "b"]`).
#[derive(Clone, Debug)]
pub struct VariableNode {
    pub span: Span,
    pub ident: Vec<String>,
}

impl VariableNode {
    pub fn new(span: Span, ident: &str) -> VariableNode {
        VariableNode {
            span,
            ident: ident.split('.').map(str::to_owned).collect(),
        }
    }
}

/// `.a.b` as `["a", "b"]`.
#[derive(Clone, Debug)]
pub struct FieldNode {
    pub span: Span,
    pub ident: Vec<String>,
}

impl FieldNode {
    pub fn new(span: Span, ident: &str) -> FieldNode {
        FieldNode {
            span,
            ident: ident
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// Fields after a term that is not a field or variable: `(pipeline).a.b`.
#[derive(Clone, Debug)]
pub struct ChainNode {
    pub span: Span,
    pub node: Box<Nodes>,
    pub field: Vec<String>,
}

impl ChainNode {
    pub fn add(&mut self, val: &str) {
        self.field.push(val.trim_start_matches('.').to_owned());
    }
}

impl Display for ChainNode {
    fn fmt(&self, f: &mut Formatter<'_>) -> FmtResult {
        write!(f, "{}", self.node)?;
        self.field
            .iter()
            .try_for_each(|field| write!(f, ".{field}"))
    }
}

#[derive(Clone, Debug)]
pub struct BoolNode {
    pub span: Span,
    pub value: Value,
}

#[derive(Clone, Debug)]
pub struct NumberNode {
    pub span: Span,
    pub text: String,
    pub value: Value,
}

impl NumberNode {
    /// A number or character constant; integers stay integers (unsigned when they fit), a
    /// float with an integral value becomes an integer as in upstream `gtmpl`.
    pub fn new(span: Span, text: String, item_typ: &ItemType) -> Result<NumberNode, NodeError> {
        if *item_typ == ItemType::CharConstant {
            let c = unquote_char(&text).ok_or(NodeError::UnquoteError)?;
            return Ok(NumberNode {
                span,
                text,
                value: Value::from(u64::from(c)),
            });
        }
        let int = parse_go_int(&text);
        let as_i64 = int.and_then(|(negative, magnitude)| {
            if negative {
                0i64.checked_sub_unsigned(magnitude)
            } else {
                i64::try_from(magnitude).ok()
            }
        });
        // `-0` is also an unsigned zero.
        let as_u64 = int
            .and_then(|(negative, magnitude)| (!negative || magnitude == 0).then_some(magnitude));
        let float = text.replace('_', "").parse::<f64>().ok();
        // Go: what parses only as a float must look like one (`08`, 2^64 do not).
        if int.is_none() && float.is_some() && !text.contains(['.', 'e', 'E', 'p', 'P']) {
            return Err(NodeError::IntegerOverflow(text));
        }
        let is_f64 = float.is_some() && text.contains(['.', 'e', 'E']);
        // A float with an integral value is also that integer (casts saturate; the round
        // trip tells whether the value was exact).
        let as_i64 = as_i64.or(float.filter(|f| (*f as i64) as f64 == *f).map(|f| f as i64));
        let as_u64 = as_u64.or(float.filter(|f| (*f as u64) as f64 == *f).map(|f| f as u64));
        let as_f64 = float.unwrap_or_default();
        let value = match (as_u64, as_i64) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            (None, None) if is_f64 => Value::from(as_f64),
            (None, None) => return Err(NodeError::NaN),
        };
        Ok(NumberNode { span, text, value })
    }
}

/// Go's `strconv.ParseUint(text, 0, 64)` with an optional sign: a `0x`, `0o`, `0b` or `0`
/// (octal) prefix picks the base, and `_` may separate digits. Returns sign and magnitude.
fn parse_go_int(text: &str) -> Option<(bool, u64)> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    // Go: underscores only between digits, and only where a base prefix allows them.
    if digits.starts_with('_') && radix == 10 || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(&digits.replace('_', ""), radix)
        .ok()
        .map(|m| (negative, m))
}

#[derive(Clone, Debug)]
pub struct StringNode {
    pub span: Span,
    /// As written, with its quotes.
    pub quoted: String,
    pub value: Value,
}

/// The body of `if`, `with` and `range` (the variant of [`Nodes`] says which).
#[derive(Clone, Debug)]
pub struct BranchNode {
    pub span: Span,
    pub pipe: PipeNode,
    pub list: ListNode,
    pub else_list: Option<ListNode>,
}

pub type RangeNode = BranchNode;

impl BranchNode {
    fn write(&self, f: &mut Formatter<'_>, keyword: &str) -> FmtResult {
        write!(f, "{{{{{keyword} {}}}}}{}", self.pipe, self.list)?;
        if let Some(else_list) = &self.else_list {
            write!(f, "{{{{else}}}}{else_list}")?;
        }
        f.write_str("{{end}}")
    }
}

/// `{{template "name" pipeline}}` (Go accepts only a constant name).
#[derive(Clone, Debug)]
pub struct TemplateNode {
    pub span: Span,
    pub name: String,
    pub pipe: Option<PipeNode>,
}

impl Display for TemplateNode {
    fn fmt(&self, f: &mut Formatter<'_>) -> FmtResult {
        match &self.pipe {
            Some(pipe) => write!(f, "{{{{template {} {}}}}}", self.name, pipe),
            None => write!(f, "{{{{template {}}}}}", self.name),
        }
    }
}
