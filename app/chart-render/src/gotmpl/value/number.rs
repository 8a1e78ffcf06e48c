//! Numbers in template values: unsigned and signed integers (template literals, lengths,
//! Sprig integer results) and floats (Helm's `float64` values stay floats).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    n: Num,
}

/// Non-negative integers are `U`, negative ones `I`; equal only within a kind (Go's `eq`
/// does not compare an int with a float).
#[derive(Copy, Clone, Debug, PartialEq)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Number {
    pub fn as_i64(&self) -> Option<i64> {
        match self.n {
            Num::U(n) => i64::try_from(n).ok(),
            Num::I(n) => Some(n),
            Num::F(_) => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self.n {
            Num::U(n) => Some(n),
            Num::I(n) => u64::try_from(n).ok(),
            Num::F(_) => None,
        }
    }

    /// The float, for a float only (integers give `None`).
    pub fn as_f64(&self) -> Option<f64> {
        match self.n {
            Num::F(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.n {
            Num::U(n) => write!(f, "{n}"),
            Num::I(n) => write!(f, "{n}"),
            Num::F(n) => write!(f, "{n}"),
        }
    }
}

macro_rules! from_int {
    ($($ty:ident)*) => {
        $(
            impl From<$ty> for Number {
                fn from(n: $ty) -> Self {
                    let n = match u64::try_from(n) {
                        Ok(u) => Num::U(u),
                        Err(_) => Num::I(n as i64),
                    };
                    Number { n }
                }
            }
        )*
    };
}

from_int!(i8 i16 i32 i64 isize u8 u16 u32 u64 usize);

impl From<f64> for Number {
    fn from(n: f64) -> Self {
        Number { n: Num::F(n) }
    }
}

impl From<f32> for Number {
    fn from(n: f32) -> Self {
        Number {
            n: Num::F(f64::from(n)),
        }
    }
}
