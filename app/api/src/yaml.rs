//! The one YAML module of the workspace: every crate reads and writes YAML through here, so the
//! library behind it (`serde_norway`, the maintained fork of the archived `serde_yaml`) can be
//! swapped without touching callers.
//!
//! Reading is hardened for hostile input (manifests from users, AdmissionReviews, files on a
//! target): the whole text, each document and the nesting depth are capped by [`Limits`]. The
//! per-document cap is charged while the document is being built, counting the *expanded* size,
//! so an alias bomb (`&a [*b, *b, …]`) is stopped as soon as it outgrows the cap instead of after
//! it has filled memory. Nesting is checked on the way down, so a deeply nested document is an
//! error and never a stack overflow.

use std::{cell::Cell, fmt};

use serde::{
    Serialize,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Number, Value};

/// Caps applied while parsing. The defaults suit Kubernetes manifests (etcd refuses objects over
/// 1.5 MiB; a multi-document file of a whole application stays well under 8 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input text, in bytes.
    pub max_total_bytes: usize,
    /// Largest accepted document, in bytes of its expanded content (aliases counted each time
    /// they are used).
    pub max_document_bytes: usize,
    /// Deepest accepted nesting of mappings and sequences (the document root is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_total_bytes: 8 * 1024 * 1024,
            max_document_bytes: 3 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// One non-empty document of a YAML stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Zero-based position of the document in the stream, counting empty documents too, so it
    /// matches what an editor shows. Error messages print it one-based ("document 3").
    pub index: usize,
    /// The document as JSON.
    pub value: Value,
}

/// Where in the input a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// One-based line.
    pub line: usize,
    /// One-based column.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why YAML could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The whole input is over [`Limits::max_total_bytes`].
    #[error(
        "failed to read YAML: input is {size} bytes, more than the limit of {limit} bytes; split it into smaller files"
    )]
    InputTooLarge {
        /// Input size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// One document is over [`Limits::max_document_bytes`] once expanded.
    #[error("failed to read YAML document {document}{}: it expands to more than {limit} bytes (aliases count each time they are used); make it smaller", position.map(|p| format!(" at {p}")).unwrap_or_default())]
    DocumentTooLarge {
        /// One-based document number.
        document: usize,
        /// Where the cap was reached, when the parser knows.
        position: Option<Position>,
        /// The limit.
        limit: usize,
    },
    /// One document nests deeper than [`Limits::max_depth`].
    #[error("failed to read YAML document {document}{}: nesting is deeper than {limit} levels", position.map(|p| format!(" at {p}")).unwrap_or_default())]
    TooDeep {
        /// One-based document number.
        document: usize,
        /// Where the limit was crossed, when the parser knows.
        position: Option<Position>,
        /// The limit.
        limit: usize,
    },
    /// The text is not valid YAML, or holds something JSON cannot (a non-string key, …).
    #[error("failed to parse YAML document {document}{}: {message}", position.map(|p| format!(" at {p}")).unwrap_or_default())]
    Syntax {
        /// One-based document number.
        document: usize,
        /// Where, when the parser knows.
        position: Option<Position>,
        /// The parser's message.
        message: String,
    },
    /// A value could not be written as YAML.
    #[error("failed to write YAML: {0}")]
    Serialize(#[source] serde_norway::Error),
}

impl YamlError {
    /// The one-based document number the error is about, when it is about one.
    pub fn document(&self) -> Option<usize> {
        match self {
            Self::DocumentTooLarge { document, .. }
            | Self::TooDeep { document, .. }
            | Self::Syntax { document, .. } => Some(*document),
            Self::InputTooLarge { .. } | Self::Serialize(_) => None,
        }
    }
}

/// Parses a multi-document YAML stream into JSON values, skipping empty documents (a leading
/// `---`, a trailing `---`, comment-only documents, explicit `null`). Stops at the first error.
pub fn parse_documents(text: &str, limits: &Limits) -> Result<Vec<Document>, YamlError> {
    if text.len() > limits.max_total_bytes {
        return Err(YamlError::InputTooLarge {
            size: text.len(),
            limit: limits.max_total_bytes,
        });
    }
    // The parser reads a whole document before the depth check below sees any of it, so a
    // bracket bomb would cost time in proportion to its size first: refuse it up front.
    if let Some((document, position)) = flow_nesting_over(text, FLOW_PRESCAN_DEPTH) {
        return Err(YamlError::TooDeep {
            document,
            position: Some(position),
            limit: limits.max_depth,
        });
    }
    let mut documents = Vec::new();
    for (index, deserializer) in serde_norway::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let budget = Cell::new(limits.max_document_bytes);
        let failure = Cell::new(None);
        let seed = BoundedValue {
            depth: 0,
            limits,
            budget: &budget,
            failure: &failure,
        };
        match seed.deserialize(deserializer) {
            Ok(Value::Null) => {}
            Ok(value) => documents.push(Document { index, value }),
            Err(error) => {
                let position = error.location().map(|l| Position {
                    line: l.line(),
                    column: l.column(),
                });
                return Err(match failure.get() {
                    Some(LimitHit::Size) => YamlError::DocumentTooLarge {
                        document: number,
                        position,
                        limit: limits.max_document_bytes,
                    },
                    Some(LimitHit::Depth) => YamlError::TooDeep {
                        document: number,
                        position,
                        limit: limits.max_depth,
                    },
                    None => syntax_error(number, &error),
                });
            }
        }
    }
    Ok(documents)
}

/// Flow collections (`[`, `{`) nested deeper than this are refused by a linear scan before
/// parsing. Far above any real depth limit, so brackets inside a block or plain scalar never
/// trip it; the exact limit is still enforced while the value is built.
const FLOW_PRESCAN_DEPTH: usize = 1024;

/// Where flow-collection nesting first exceeds `limit`, as (one-based document, position).
/// Brackets inside quoted scalars and comments are not counted.
fn flow_nesting_over(text: &str, limit: usize) -> Option<(usize, Position)> {
    #[derive(PartialEq)]
    enum State {
        Plain,
        Single,
        Double,
        Comment,
    }
    let mut state = State::Plain;
    let (mut depth, mut document, mut content_seen) = (0usize, 1usize, false);
    let (mut line, mut column) = (1usize, 0usize);
    let mut previous = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        let at_line_start = previous == '\n';
        match state {
            State::Comment if c == '\n' => state = State::Plain,
            State::Comment => {}
            State::Single if c == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next(); // '' is an escaped quote
                    column += 1;
                } else {
                    state = State::Plain;
                }
            }
            State::Double if c == '\\' => {
                chars.next();
                column += 1;
            }
            State::Double if c == '"' => state = State::Plain,
            State::Single | State::Double => {}
            State::Plain => {
                let after_separator =
                    at_line_start || matches!(previous, ' ' | '\t' | '[' | '{' | ',' | ':' | '-');
                match c {
                    '-' if at_line_start && text_starts_with_marker(&mut chars) => {
                        if content_seen {
                            document += 1;
                        }
                        column += 2;
                    }
                    '#' if at_line_start || matches!(previous, ' ' | '\t') => {
                        state = State::Comment
                    }
                    '\'' if after_separator => state = State::Single,
                    '"' if after_separator => state = State::Double,
                    '[' | '{' => {
                        depth += 1;
                        if depth > limit {
                            return Some((document, Position { line, column }));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if !c.is_whitespace() && state != State::Comment {
                    content_seen = true;
                }
            }
        }
        if c == '\n' {
            line += 1;
            column = 0;
        }
        previous = c;
    }
    None
}

/// After a `-` at the start of a line: consumes `--` when the line is a document marker
/// (`---` followed by a space, a newline or the end).
fn text_starts_with_marker(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = chars.clone();
    if ahead.next() == Some('-')
        && ahead.next() == Some('-')
        && matches!(ahead.next(), None | Some(' ' | '\n' | '\r' | '\t'))
    {
        chars.next();
        chars.next();
        true
    } else {
        false
    }
}

/// Parses text that must hold exactly one non-empty document.
pub fn parse_single(text: &str, limits: &Limits) -> Result<Value, YamlError> {
    let mut documents = parse_documents(text, limits)?;
    match documents.len() {
        1 => Ok(documents.remove(0).value),
        n => Err(YamlError::Syntax {
            document: documents.get(1).map_or(1, |d| d.index + 1),
            position: None,
            message: format!("expected exactly one document, found {n}"),
        }),
    }
}

/// Writes one value as a YAML document (no leading `---`). Struct fields keep their declared
/// order and maps their own order, so output is stable for the same input.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, YamlError> {
    serde_norway::to_string(value).map_err(YamlError::Serialize)
}

/// Writes several values as one multi-document stream, each document introduced by `---`.
pub fn to_multi_document(values: &[Value]) -> Result<String, YamlError> {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&to_string(value)?);
    }
    Ok(out)
}

fn syntax_error(document: usize, error: &serde_norway::Error) -> YamlError {
    // serde_norway's Display appends " at line L column C"; the position is reported
    // separately, so keep only the message.
    let full = error.to_string();
    let message = match full.rfind(" at line ") {
        Some(cut) if error.location().is_some() => full[..cut].to_string(),
        _ => full,
    };
    YamlError::Syntax {
        document,
        position: error.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        }),
        message,
    }
}

#[derive(Debug, Clone, Copy)]
enum LimitHit {
    Size,
    Depth,
}

/// Builds a `serde_json::Value` while charging every node to a byte budget and checking depth
/// on the way down.
struct BoundedValue<'a> {
    depth: usize,
    limits: &'a Limits,
    budget: &'a Cell<usize>,
    failure: &'a Cell<Option<LimitHit>>,
}

impl BoundedValue<'_> {
    /// Bytes charged per node on top of its text: keeps a document of a million empty lists
    /// from slipping under a cap that only counted characters.
    const NODE_COST: usize = 8;

    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = bytes.saturating_add(Self::NODE_COST);
        match self.budget.get().checked_sub(cost) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => {
                self.failure.set(Some(LimitHit::Size));
                Err(E::custom("document too large"))
            }
        }
    }

    fn child(&self) -> BoundedValue<'_> {
        BoundedValue {
            depth: self.depth + 1,
            limits: self.limits,
            budget: self.budget,
            failure: self.failure,
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth + 1 > self.limits.max_depth {
            self.failure.set(Some(LimitHit::Depth));
            return Err(E::custom("nesting too deep"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(8)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(8)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(8)?;
        // JSON has no NaN or infinities; Kubernetes would reject them anyway.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} cannot be represented in JSON")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        self.charge(0)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(self.child())? {
            let key = match key {
                Value::String(s) => s,
                // Kubernetes objects only have string keys; YAML allows `1: x` or `true: x`,
                // which JSON cannot hold. Say so instead of silently stringifying.
                other => {
                    return Err(de::Error::custom(format!(
                        "mapping key {other} is not a string; quote it"
                    )));
                }
            };
            let value = map.next_value_seed(self.child())?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_multiple_documents_and_skips_empty_ones() {
        let text = "---\n# only a comment\n---\na: 1\n---\n---\nb: [x, y]\n...\n";
        let docs = parse_documents(text, &Limits::default()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value, json!({"a": 1}));
        assert_eq!(docs[1].value, json!({"b": ["x", "y"]}));
        assert!(docs[0].index < docs[1].index);
        assert_eq!(docs[1].index, 3);
    }

    #[test]
    fn syntax_error_names_document_and_position() {
        let text = "a: 1\n---\nb: [1, 2\nc: 3\n";
        let err = parse_documents(text, &Limits::default()).unwrap_err();
        assert_eq!(err.document(), Some(2));
        let YamlError::Syntax { position, .. } = &err else {
            panic!("expected a syntax error, got {err:?}");
        };
        assert!(position.is_some(), "{err}");
        let shown = err.to_string();
        assert!(shown.contains("document 2"), "{shown}");
        assert!(shown.contains("line "), "{shown}");
    }

    #[test]
    fn rejects_input_over_total_limit() {
        let limits = Limits {
            max_total_bytes: 10,
            ..Limits::default()
        };
        let err = parse_documents("a: 0123456789", &limits).unwrap_err();
        assert!(matches!(
            err,
            YamlError::InputTooLarge {
                size: 13,
                limit: 10
            }
        ));
    }

    #[test]
    fn rejects_document_over_size_limit() {
        let limits = Limits {
            max_document_bytes: 1000,
            ..Limits::default()
        };
        let small = "a: b\n";
        let big = format!("big: {}\n", "x".repeat(2000));
        let err = parse_documents(&format!("{small}---\n{big}"), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                YamlError::DocumentTooLarge {
                    document: 2,
                    limit: 1000,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn alias_bomb_is_stopped_by_the_document_cap() {
        // Each level doubles the expanded size: 2^20 copies of a 100-byte string.
        let mut text = format!("a0: &a0 \"{}\"\n", "x".repeat(100));
        for i in 1..=20 {
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
        }
        let err = parse_documents(&text, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                YamlError::DocumentTooLarge { .. } | YamlError::Syntax { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for depth in [65usize, 200, 100_000] {
            let flow = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let err = parse_documents(&flow, &Limits::default()).unwrap_err();
            assert!(
                matches!(err, YamlError::TooDeep { .. } | YamlError::Syntax { .. }),
                "depth {depth}: {err:?}"
            );
        }
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(parse_documents(&ok, &Limits::default()).unwrap().len(), 1);
    }

    #[test]
    fn bracket_bomb_is_refused_before_parsing_with_its_document_and_position() {
        let bomb = format!(
            "a: 1\n---\nb: {}{}\n",
            "[".repeat(2_000_000),
            "]".repeat(2_000_000)
        );
        let err = parse_documents(&bomb, &Limits::default()).unwrap_err();
        match err {
            YamlError::TooDeep {
                document,
                position: Some(p),
                ..
            } => {
                assert_eq!(document, 2);
                assert_eq!((p.line, p.column), (3, 4 + FLOW_PRESCAN_DEPTH));
            }
            other => panic!("expected TooDeep, got {other:?}"),
        }
    }

    #[test]
    fn brackets_in_quotes_and_comments_are_not_nesting() {
        let many = "[".repeat(FLOW_PRESCAN_DEPTH + 10);
        let text = format!("a: '{many}'\nb: \"{many}\"\n# {many}\nc: 'it''s {many}'\n");
        let docs = parse_documents(&text, &Limits::default()).unwrap();
        assert_eq!(docs[0].value["a"], Value::String(many.clone()));
        assert_eq!(docs[0].value["c"], Value::String(format!("it's {many}")));
    }

    #[test]
    fn block_nesting_over_limit_is_too_deep() {
        let mut text = String::new();
        for level in 0..70 {
            text.push_str(&"  ".repeat(level));
            text.push_str(&format!("k{level}:\n"));
        }
        let err = parse_documents(&text, &Limits::default()).unwrap_err();
        let YamlError::TooDeep {
            document: 1,
            limit: 64,
            position,
        } = err
        else {
            panic!("expected TooDeep, got {err:?}");
        };
        assert!(position.is_some_and(|p| p.line > 1), "{position:?}");
    }

    #[test]
    fn non_string_keys_and_nan_are_errors() {
        assert!(parse_documents("1: a\n", &Limits::default()).is_err());
        assert!(parse_documents("a: .nan\n", &Limits::default()).is_err());
    }

    #[test]
    fn garbage_input_does_not_panic() {
        for text in [
            "\u{0}\u{1}\u{2}",
            "key: [unclosed",
            "- a\nb: c",
            "%YAML 9.9\n---\na",
            "*undefined_alias",
            "a: !!binary zzz",
            "{{{{",
            "---\n- &a [*a]\n",
        ] {
            let _ = parse_documents(text, &Limits::default());
        }
    }

    #[test]
    fn writes_single_and_multi_document_yaml_that_reads_back() {
        let values = vec![
            json!({"kind": "A", "spec": {"x": [1, 2]}}),
            json!({"kind": "B"}),
        ];
        let text = to_multi_document(&values).unwrap();
        assert!(text.starts_with("---\n"));
        let back: Vec<Value> = parse_documents(&text, &Limits::default())
            .unwrap()
            .into_iter()
            .map(|d| d.value)
            .collect();
        assert_eq!(back, values);
        assert_eq!(to_string(&json!({"a": "b"})).unwrap(), "a: b\n");
    }

    #[test]
    fn parse_single_requires_exactly_one_document() {
        assert_eq!(
            parse_single("a: 1\n", &Limits::default()).unwrap(),
            json!({"a": 1})
        );
        assert!(parse_single("a: 1\n---\nb: 2\n", &Limits::default()).is_err());
        assert!(parse_single("", &Limits::default()).is_err());
    }
}
