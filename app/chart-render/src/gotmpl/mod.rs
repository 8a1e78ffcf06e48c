//! Go's `text/template` engine: a fork of the engine core of `gtmpl-ng` 0.7.7 (MIT, Copyright
//! (c) 2017 Florian Merz; lexer, parser, executor, builtins, printf), changed where it departs
//! from Go in ways that decide what a Helm chart renders:
//!
//! - `range` over a map visits keys in sorted order (upstream: `HashMap` order, so a different
//!   order on every run); its `else` runs only when nothing was visited (upstream: always); a
//!   nil value ranges over nothing (upstream: error). Range, `if` and `with` open a variable
//!   scope, as in Go.
//! - Printing follows Go's `fmt` `%v` (`map[a:1 b:2]`, `[x y]`, `<nil>`, `1e+06`); upstream
//!   printed Rust debug forms.
//! - Trim markers are `-` next to any ASCII space (space, tab, CR, LF), as in Go (upstream:
//!   space only, so `{{-` followed by a newline failed to trim).
//! - A function stored in a map is called as a method with its arguments (`.Files.Get "x"`).
//! - `template` nesting shares one bounded per-thread depth with `include` and `tpl`
//!   ([`exec::enter_nested`]) so recursion fails cleanly instead of overflowing the stack.
//! - Go 1.11+ `$x = value` assignment, Go 1.18+ `break`/`continue` and short-circuit
//!   `and`/`or`; `eq` with several operands; `len` of maps.
//! - No panics: upstream `unwrap`s replaced with errors.
//!
//! The rest (function implementations) comes from the `gtmpl-ng` crate itself, see `funcs`.
//! The upstream MIT licences are kept beside the code: `LICENSE-gtmpl-ng`,
//! `value/LICENSE-gtmpl_value`.

pub mod error;
pub mod exec;
pub mod funcs;
pub mod gofmt;
mod lexer;
pub mod node;
mod parse;
mod print_verb;
pub mod printf;
pub mod template;
mod unquote;
pub mod value;

pub use exec::Context;
pub use template::Template;
