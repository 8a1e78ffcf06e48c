use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::LazyLock;

use super::node::Span;

type Pos = usize;

// Go: a trim marker is "-" next to one ASCII space character (space, tab, CR, LF).
const TRIM_MARKER_LEN: usize = 2;
fn has_left_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && matches!(b[1], b' ' | b'\t' | b'\r' | b'\n')
}
fn has_right_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[1] == b'-' && matches!(b[0], b' ' | b'\t' | b'\r' | b'\n')
}
static LEFT_DELIM: &str = "{{";
static RIGHT_DELIM: &str = "}}";
static LEFT_COMMENT: &str = "/*";
static RIGHT_COMMENT: &str = "*/";

static KEY: LazyLock<HashMap<&'static str, ItemType>> = LazyLock::new(|| {
    let mut m = HashMap::new();
    m.insert(".", ItemType::Dot);
    m.insert("block", ItemType::Block);
    m.insert("define", ItemType::Define);
    m.insert("end", ItemType::End);
    m.insert("else", ItemType::Else);
    m.insert("if", ItemType::If);
    m.insert("range", ItemType::Range);
    m.insert("nil", ItemType::Nil);
    m.insert("template", ItemType::Template);
    m.insert("with", ItemType::With);
    m.insert("break", ItemType::Break);
    m.insert("continue", ItemType::Continue);
    m
});

/// What a lexed token is (Go's `itemType`).
#[derive(Debug, Clone, PartialEq)]
pub enum ItemType {
    Error,        // error occurred; value is text of error
    Bool,         // boolean constant
    Char,         // printable ASCII character; grab bag for comma etc.
    CharConstant, // character constant
    Break,        // break keyword (Go 1.18)
    Continue,     // continue keyword (Go 1.18)
    Assign,       // equals ('=') assigning to an existing variable
    ColonEquals,  // colon-equals (':=') introducing a declaration
    Eof,
    Field,      // alphanumeric identifier starting with '.'
    Identifier, // alphanumeric identifier not starting with '.'
    LeftDelim,  // left action delimiter
    LeftParen,  // '(' inside action
    Number,     // simple number, including imaginary
    Pipe,       // pipe symbol
    RawString,  // raw quoted string (includes quotes)
    RightDelim, // right action delimiter
    RightParen, // ')' inside action
    Space,      // run of spaces separating arguments
    String,     // quoted string (includes quotes)
    Text,       // plain text
    Variable,   // variable starting with '$', such as '$' or  '$1' or '$hello'
    // Keywords, appear after all the rest.
    Block,    // block keyword
    Dot,      // the cursor, spelled '.'
    Define,   // define keyword
    Else,     // else keyword
    End,      // end keyword
    If,       // if keyword
    Nil,      // the untyped nil constant, easiest to treat as a keyword
    Range,    // range keyword
    Template, // template keyword
    With,     // with keyword
}

#[derive(Debug)]
pub struct Item {
    pub typ: ItemType,
    pub val: String,
    pub line: usize,
    pub col: usize,
}

impl Item {
    pub fn new<T: Into<String>>(typ: ItemType, val: T, line: usize, col: usize) -> Item {
        Item {
            typ,
            val: val.into(),
            line,
            col,
        }
    }
}

impl Item {
    /// Where this token stands, as a node's span.
    pub fn span(&self) -> Span {
        Span {
            line: self.line,
            col: self.col,
            len: self.val.len(),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.typ {
            ItemType::Eof => write!(f, "EOF"),
            _ => write!(f, "{}", self.val),
        }
    }
}

/// The tokens of one template text, lexed up front (upstream lexed on a thread of its own per
/// parse and sent tokens over a channel; the parser always read them all).
pub struct Lexer {
    items: VecDeque<Item>,
}

struct LexerStateMachine {
    input: String,         // the string being scanned
    state: State,          // the next lexing function to enter
    pos: Pos,              // current position in the input
    start: Pos,            // start position of this item
    width: Pos,            // width of last rune read from input
    items: VecDeque<Item>, // scanned items
    paren_depth: usize,    // nesting depth of ( ) exprs
    line: usize,           // line of `line_cursor` (1-based)
    line_start: Pos,       // position of the start of that line
    line_cursor: Pos,      // position up to which newlines are counted
}

#[derive(Debug)]
enum State {
    End,
    LexText,
    LexLeftDelim,
    LexComment,
    LexRightDelim,
    LexInsideAction,
    LexSpace,
    LexIdentifier,
    LexField,
    LexVariable,
    LexChar,
    LexNumber,
    LexQuote,
    LexRawQuote,
}

impl Iterator for Lexer {
    type Item = Item;
    fn next(&mut self) -> Option<Item> {
        self.items.pop_front()
    }
}

impl Lexer {
    pub fn new(input: String) -> Lexer {
        let mut l = LexerStateMachine {
            input,
            state: State::LexText,
            pos: 0,
            start: 0,
            width: 0,
            items: VecDeque::new(),
            paren_depth: 0,
            line: 1,
            line_start: 0,
            line_cursor: 0,
        };
        l.run();
        Lexer { items: l.items }
    }
}

impl Iterator for LexerStateMachine {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        match self.input[self.pos..].chars().next() {
            Some(c) => {
                self.width = c.len_utf8();
                self.pos += self.width;
                Some(c)
            }
            None => {
                self.width = 0;
                None
            }
        }
    }
}

impl LexerStateMachine {
    fn run(&mut self) {
        loop {
            self.state = match self.state {
                State::LexText => self.lex_text(),
                State::LexComment => self.lex_comment(),
                State::LexLeftDelim => self.lex_left_delim(),
                State::LexRightDelim => self.lex_right_delim(),
                State::LexInsideAction => self.lex_inside_action(),
                State::LexSpace => self.lex_space(),
                State::LexIdentifier => self.lex_identifier(),
                State::LexField => self.lex_field(),
                State::LexVariable => self.lex_variable(),
                State::LexChar => self.lex_char(),
                State::LexNumber => self.lex_number(),
                State::LexQuote => self.lex_quote(),
                State::LexRawQuote => self.lex_raw_quote(),
                State::End => {
                    return;
                }
            }
        }
    }

    /// Steps back over the rune `next` returned (none at the end of the input).
    fn backup(&mut self) {
        self.pos -= self.width;
    }

    fn peek(&mut self) -> Option<char> {
        let c = self.next();
        self.backup();
        c
    }

    fn emit(&mut self, t: ItemType) {
        let (line, col) = self.line_col(self.start);
        let item = Item::new(t, &self.input[self.start..self.pos], line, col);
        self.items.push_back(item);
        self.start = self.pos;
    }

    /// Line (1-based) and column (0-based byte offset in the line, as Go's errors give it)
    /// of `at`. Tokens are emitted in order, so newlines are counted once, from the previous
    /// token on.
    fn line_col(&mut self, at: Pos) -> (usize, usize) {
        if at < self.line_cursor {
            (self.line, self.line_start, self.line_cursor) = (1, 0, 0);
        }
        let skipped = &self.input[self.line_cursor..at];
        if let Some(last) = skipped.rfind('\n') {
            self.line += skipped.matches('\n').count();
            self.line_start = self.line_cursor + last + 1;
        }
        self.line_cursor = at;
        (self.line, at - self.line_start)
    }

    /// Skips the white space a right trim marker (`-}}`) removes.
    fn skip_leading_space(&mut self) {
        self.pos += ltrim_len(&self.input[self.pos..]);
    }

    fn ignore(&mut self) {
        self.start = self.pos;
    }

    fn accept(&mut self, valid: &str) -> bool {
        if self.next().map(|s| valid.contains(s)).unwrap_or_default() {
            return true;
        }
        self.backup();
        false
    }

    fn accept_run(&mut self, valid: &str) {
        while self.accept(valid) {}
    }

    fn errorf(&mut self, msg: &str) -> State {
        let (line, col) = self.line_col(self.start);
        self.items
            .push_back(Item::new(ItemType::Error, msg, line, col));
        State::End
    }

    fn lex_text(&mut self) -> State {
        self.width = 0;
        let x = self.input[self.pos..].find(LEFT_DELIM);
        match x {
            Some(x) => {
                self.pos += x;
                let ld = self.pos + LEFT_DELIM.len();
                let trim = if has_left_trim_marker(&self.input[ld..]) {
                    rtrim_len(&self.input[self.start..self.pos])
                } else {
                    0
                };
                self.pos -= trim;
                if self.pos > self.start {
                    self.emit(ItemType::Text);
                }
                self.pos += trim;
                self.ignore();
                State::LexLeftDelim
            }
            None => {
                self.pos = self.input.len();
                if self.pos > self.start {
                    self.emit(ItemType::Text);
                }
                self.emit(ItemType::Eof);
                State::End
            }
        }
    }

    fn at_right_delim(&mut self) -> (bool, bool) {
        if self.input[self.pos..].starts_with(RIGHT_DELIM) {
            return (true, false);
        }
        if has_right_trim_marker(&self.input[self.pos..])
            && self.input[self.pos + TRIM_MARKER_LEN..].starts_with(RIGHT_DELIM)
        {
            return (true, true);
        }
        (false, false)
    }

    fn lex_left_delim(&mut self) -> State {
        self.pos += LEFT_DELIM.len();
        let trim = has_left_trim_marker(&self.input[self.pos..]);
        let after_marker = if trim { TRIM_MARKER_LEN } else { 0 };
        if self.input[(self.pos + after_marker)..].starts_with(LEFT_COMMENT) {
            self.pos += after_marker;
            self.ignore();
            State::LexComment
        } else {
            self.emit(ItemType::LeftDelim);
            self.pos += after_marker;
            self.ignore();
            self.paren_depth = 0;
            State::LexInsideAction
        }
    }

    fn lex_comment(&mut self) -> State {
        self.pos += LEFT_COMMENT.len();
        let i = match self.input[self.pos..].find(RIGHT_COMMENT) {
            Some(i) => i,
            None => {
                return self.errorf("unclosed comment");
            }
        };

        self.pos += i + RIGHT_COMMENT.len();
        let (delim, trim) = self.at_right_delim();

        if !delim {
            return self.errorf("comment end before closing delimiter");
        }

        if trim {
            self.pos += TRIM_MARKER_LEN;
        }

        self.pos += RIGHT_DELIM.len();

        if trim {
            self.skip_leading_space();
        }
        self.ignore();
        State::LexText
    }

    fn lex_right_delim(&mut self) -> State {
        let trim = has_right_trim_marker(&self.input[self.pos..]);
        if trim {
            self.pos += TRIM_MARKER_LEN;
            self.ignore();
        }
        self.pos += RIGHT_DELIM.len();
        self.emit(ItemType::RightDelim);
        if trim {
            self.skip_leading_space();
            self.ignore();
        }
        State::LexText
    }

    fn lex_inside_action(&mut self) -> State {
        let (delim, _) = self.at_right_delim();
        if delim {
            if self.paren_depth == 0 {
                return State::LexRightDelim;
            }
            return self.errorf("unclosed left paren");
        }

        match self.next() {
            None | Some('\r') | Some('\n') => self.errorf("unclosed action"),
            Some(c) => {
                match c {
                    '"' => State::LexQuote,
                    '`' => State::LexRawQuote,
                    '$' => State::LexVariable,
                    '\'' => State::LexChar,
                    '=' => {
                        self.emit(ItemType::Assign);
                        State::LexInsideAction
                    }
                    '(' => {
                        self.emit(ItemType::LeftParen);
                        self.paren_depth += 1;
                        State::LexInsideAction
                    }
                    ')' => {
                        self.emit(ItemType::RightParen);
                        if self.paren_depth == 0 {
                            return self.errorf(&format!("unexpected right paren {}", c));
                        }
                        self.paren_depth -= 1;
                        State::LexInsideAction
                    }
                    ':' => match self.next() {
                        Some('=') => {
                            self.emit(ItemType::ColonEquals);
                            State::LexInsideAction
                        }
                        _ => self.errorf("expected :="),
                    },
                    '|' => {
                        self.emit(ItemType::Pipe);
                        State::LexInsideAction
                    }
                    '.' => match self.input[self.pos..].chars().next() {
                        Some('0'..='9') => {
                            self.backup();
                            State::LexNumber
                        }
                        _ => State::LexField,
                    },
                    '+' | '-' | '0'..='9' => {
                        self.backup();
                        State::LexNumber
                    }
                    _ if c.is_whitespace() => State::LexSpace,
                    _ if c.is_alphanumeric() || c == '_' => {
                        self.backup();
                        State::LexIdentifier
                    }
                    _ if c.is_ascii() => {
                        // figure out a way to check for unicode.isPrint ?!
                        self.emit(ItemType::Char);
                        State::LexInsideAction
                    }
                    _ => self.errorf(&format!("unrecognized character in action {}", c)),
                }
            }
        }
    }

    fn lex_space(&mut self) -> State {
        while self.peek().map(|c| c.is_whitespace()).unwrap_or_default() {
            self.next();
        }
        self.emit(ItemType::Space);
        State::LexInsideAction
    }

    fn lex_identifier(&mut self) -> State {
        let c = self.find(|c| !(c.is_alphanumeric() || *c == '_'));
        self.backup();
        if !self.at_terminator() {
            return self.errorf(&format!("bad character {}", c.unwrap_or_default()));
        }
        let item_type = match &self.input[self.start..self.pos] {
            "true" | "false" => ItemType::Bool,
            word if KEY.contains_key(word) => {
                KEY.get(word).cloned().unwrap_or(ItemType::Identifier)
            }
            word if word.starts_with('.') => ItemType::Field,
            _ => ItemType::Identifier,
        };
        self.emit(item_type);
        State::LexInsideAction
    }

    fn lex_field(&mut self) -> State {
        self.lex_field_or_variable(ItemType::Field)
    }

    fn lex_variable(&mut self) -> State {
        self.lex_field_or_variable(ItemType::Variable)
    }

    fn lex_field_or_variable(&mut self, typ: ItemType) -> State {
        if self.at_terminator() {
            self.emit(match typ {
                ItemType::Variable => ItemType::Variable,
                _ => ItemType::Dot,
            });
            return State::LexInsideAction;
        }
        let c = self.find(|c| !(c.is_alphanumeric() || *c == '_'));
        self.backup();

        if !self.at_terminator() {
            return self.errorf(&format!("bad character {}", c.unwrap_or_default()));
        }
        self.emit(typ);
        State::LexInsideAction
    }

    fn at_terminator(&mut self) -> bool {
        match self.peek() {
            Some(c) => {
                match c {
                    '.' | ',' | '|' | ':' | ')' | '(' | ' ' | '\t' | '\r' | '\n' => true,
                    // this is what golang does to detect a delimiter
                    _ => RIGHT_DELIM.starts_with(c),
                }
            }
            None => false,
        }
    }

    fn lex_char(&mut self) -> State {
        self.lex_quoted(
            '\'',
            "unterminated character constant",
            ItemType::CharConstant,
        )
    }

    /// A quoted string or character constant: up to the closing `quote` not escaped by `\`,
    /// on one line.
    fn lex_quoted(&mut self, quote: char, unterminated: &str, typ: ItemType) -> State {
        let mut escaped = false;
        loop {
            match self.next() {
                Some('\\') if !escaped => {
                    escaped = true;
                    continue;
                }
                Some('\n') | None => return self.errorf(unterminated),
                Some(c) if c == quote && !escaped => break,
                _ => {}
            }
            escaped = false;
        }
        self.emit(typ);
        State::LexInsideAction
    }

    fn lex_number(&mut self) -> State {
        if self.scan_number() {
            // Let's ingnore complex numbers here.
            self.emit(ItemType::Number);
            State::LexInsideAction
        } else {
            let msg = &format!("bad number syntax: {}", &self.input[self.start..self.pos]);
            self.errorf(msg)
        }
    }

    /// Go's `scanNumber`: an optional sign, a `0x`/`0o`/`0b` base prefix, digits with `_`
    /// separators, a fraction, and an exponent (`e` for decimal, `p` for hexadecimal).
    fn scan_number(&mut self) -> bool {
        const DECIMAL: &str = "0123456789_";
        const HEX: &str = "0123456789abcdefABCDEF_";
        self.accept("+-");
        let mut digits = DECIMAL;
        if self.accept("0") {
            if self.accept("xX") {
                digits = HEX;
            } else if self.accept("oO") {
                digits = "01234567_";
            } else if self.accept("bB") {
                digits = "01_";
            }
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if (digits == DECIMAL && self.accept("eE")) || (digits == HEX && self.accept("pP")) {
            self.accept("+-");
            self.accept_run(DECIMAL);
        }
        // The next thing must not be alphanumeric.
        if self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.next();
            return false;
        }
        true
    }

    fn lex_quote(&mut self) -> State {
        self.lex_quoted('"', "unterminated quoted string", ItemType::String)
    }

    fn lex_raw_quote(&mut self) -> State {
        if !self.any(|c| c == '`') {
            return self.errorf("unterminated raw quoted string");
        }
        self.emit(ItemType::RawString);
        State::LexInsideAction
    }
}

fn rtrim_len(s: &str) -> usize {
    match s.rfind(|c: char| !c.is_whitespace()) {
        Some(i) => s.len() - 1 - i,
        None => s.len(),
    }
}

fn ltrim_len(s: &str) -> usize {
    let l = s.len();
    s.find(|c: char| !c.is_whitespace()).unwrap_or(l)
}
