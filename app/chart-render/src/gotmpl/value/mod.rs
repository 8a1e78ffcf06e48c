//! Template values: a fork of `gtmpl_value` 0.5.1 (MIT, same authors as gtmpl). Changed: a
//! float stays a float (upstream turned every float with no fraction into an integer, and
//! every negative float with a fraction too, so Helm's `float64` values printed as integers:
//! Go prints `1000000.0` as `1e+06`); `Other` errors carry no `anyhow` dependency.

mod from;
mod number;

pub use from::FromValue;

use std::cmp::PartialEq;
use std::collections::HashMap;
use std::fmt;
use thiserror::Error;

pub use number::Number;

#[derive(Debug, Error)]
pub enum FuncError {
    #[error("{0} requires at least {1} argument(s)")]
    AtLeastXArgs(String, usize),
    #[error("{0} requires exactly {1} argument(s)")]
    ExactlyXArgs(String, usize),
    #[error("{0}")]
    Generic(String),
}

// Function type supported by `gtmpl_value`.
pub type Func = fn(&[Value]) -> Result<Value, FuncError>;

// Wrapper struct for `Func`.
#[derive(Clone)]
pub struct Function {
    pub f: Func,
}

impl PartialEq for Function {
    fn eq(&self, other: &Function) -> bool {
        std::ptr::fn_addr_eq(self.f, other.f)
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Funtion")
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Funtion")
    }
}

/// A template value, as Go's `reflect.Value` holds one for the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Go's missing value: a map key that is not there (printed `<no value>` at top level).
    Missing,
    Nil,
    Bool(bool),
    String(String),
    Map(HashMap<String, Value>),
    Array(Vec<Value>),
    Function(Function),
    Number(Number),
}

impl Value {
    pub fn from<T>(t: T) -> Self
    where
        T: Into<Value>,
    {
        t.into()
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Go's %v, so messages and `print` show what Go would.
        write!(f, "{}", super::gofmt::format_nested(self))
    }
}

/// Go's truth of a value (`if`, `with`, `and`, `or`, `not`): false for false, 0, nil, and an
/// empty string, list or map.
pub fn is_true(val: &Value) -> bool {
    match *val {
        Value::Bool(ref b) => *b,
        Value::String(ref s) => !s.is_empty(),
        Value::Array(ref a) => !a.is_empty(),
        Value::Map(ref m) => !m.is_empty(),
        Value::Function(_) => true,
        Value::Missing | Value::Nil => false,
        Value::Number(ref n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i != 0,
            (_, Some(u), _) => u != 0,
            (_, _, Some(f)) => f != 0.0,
            _ => true,
        },
    }
}
