//! Conversions into and out of [`Value`].

use super::{Func, Function, Value};

macro_rules! from_num {
    ($($ty:ident)*) => {
        $(
            impl From<$ty> for Value {
                fn from(n: $ty) -> Self {
                    Value::Number(n.into())
                }
            }
        )*
    };
}

from_num! {
    i8 i16 i32 i64 isize
    u8 u16 u32 u64 usize
    f32 f64
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<Func> for Value {
    fn from(f: Func) -> Self {
        Value::Function(Function { f })
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

/// Reads a Rust value out of a [`Value`] (`None` when it holds another kind).
pub trait FromValue: Sized {
    fn from_value(val: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(val: &Value) -> Option<i64> {
        match val {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }
}
