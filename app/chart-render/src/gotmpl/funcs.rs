//! Builtin functions.
use std::cmp::Ordering;
use std::fmt::Write;

use crate::gotmpl::value::{Func, FuncError, Value};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::printf::sprintf;
use super::value::is_true;

const QUERY_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'#')
    .add(b'`')
    .add(b'`')
    .add(b'?')
    .add(b'{')
    .add(b'}');

pub static BUILTINS: &[(&str, Func)] = &[
    ("eq", eq as Func),
    ("ne", ne as Func),
    ("lt", lt as Func),
    ("le", le as Func),
    ("gt", gt as Func),
    ("ge", ge as Func),
    ("len", len as Func),
    ("and", and as Func),
    ("or", or as Func),
    ("not", not as Func),
    ("urlquery", urlquery as Func),
    ("print", print as Func),
    ("println", println as Func),
    ("printf", printf as Func),
    ("index", index as Func),
    ("call", call as Func),
];

macro_rules! val {
    ($x:expr) => {
        Value::from($x)
    };
}

// Returns the boolean OR of its arguments by returning the
// first non-empty argument or the last argument, that is,
// "or x y" behaves as "if x then x else y". All the
// arguments are evaluated.
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template("{{ or 1 2.0 false . }}", "foo");
// assert_eq!(&equal.unwrap(), "1");
// ```
pub fn or(args: &[Value]) -> Result<Value, FuncError> {
    for arg in args {
        if is_true(arg) {
            return Ok(arg.clone());
        }
    }
    args.iter()
        .cloned()
        .next_back()
        .ok_or_else(|| FuncError::AtLeastXArgs("or".into(), 1))
}

// Returns the boolean AND of its arguments by returning the
// first empty argument or the last argument, that is,
// "and x y" behaves as "if x then y else x". All the
// arguments are evaluated.
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template("{{ and 1 2.0 true . }}", "foo");
// assert_eq!(&equal.unwrap(), "foo");
// ```
pub fn and(args: &[Value]) -> Result<Value, FuncError> {
    for arg in args {
        if !is_true(arg) {
            return Ok(arg.clone());
        }
    }
    args.iter()
        .cloned()
        .next_back()
        .ok_or_else(|| FuncError::AtLeastXArgs("and".into(), 1))
}

// Returns the boolean negation of its single argument.
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template("{{ not 0 }}", "");
// assert_eq!(&equal.unwrap(), "true");
// ```
pub fn not(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() != 1 {
        Err(FuncError::ExactlyXArgs("not".into(), 1))
    } else {
        Ok(val!(!is_true(&args[0])))
    }
}

// Returns the integer length of its argument.
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template("{{ len . }}", "foo");
// assert_eq!(&equal.unwrap(), "3");
// ```
pub fn len(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() != 1 {
        return Err(FuncError::ExactlyXArgs("len".into(), 1));
    }
    let arg = &args[0];
    let len = match *arg {
        Value::String(ref s) => s.len(),
        Value::Array(ref a) => a.len(),
        Value::Map(ref o) => o
            .values()
            .filter(|v| !matches!(v, Value::Function(_)))
            .count(),
        _ => {
            return Err(FuncError::Generic(format!("len of type {}", arg)));
        }
    };

    Ok(val!(len))
}

// Returns the result of calling the first argument, which
// must be a function, with the remaining arguments as parameters.
//
// # Example
// ```
// use gtmpl_ng::{gtmpl_fn, template, Value};
// use crate::gotmpl::value::{FuncError, Function};
//
// gtmpl_fn!(
// fn add(a: u64, b: u64) -> Result<u64, FuncError> {
//     Ok(a + b)
// });
// let equal = template(r#"{{ call . 1 2 }}"#, Value::Function(Function { f: add }));
// assert_eq!(&equal.unwrap(), "3");
// ```
pub fn call(args: &[Value]) -> Result<Value, FuncError> {
    if args.is_empty() {
        Err(FuncError::AtLeastXArgs("call".into(), 1))
    } else if let Value::Function(ref f) = args[0] {
        (f.f)(&args[1..])
    } else {
        Err(FuncError::Generic(
            "call requires the first argument to be a function".into(),
        ))
    }
}

// An implementation of golang's fmt.Sprint
//
// Golang's Sprint formats using the default formats for its operands and returns the
// resulting string. Spaces are added between operands when neither is a string.
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template(r#"{{ print "Hello " . "!" }}"#, "world");
// assert_eq!(&equal.unwrap(), "Hello world!");
// ```
pub fn print(args: &[Value]) -> Result<Value, FuncError> {
    let mut no_space = true;
    let mut s = String::new();
    for val in args {
        if let Value::String(ref v) = *val {
            no_space = true;
            s.push_str(v);
        } else {
            if no_space {
                s += &val.to_string();
            } else {
                s += &format!(" {}", val)
            }
            no_space = false;
        }
    }
    Ok(val!(s))
}

// An implementation of golang's fmt.Sprintln
//
// Sprintln formats using the default formats for its operands and returns the
// resulting string. Spaces are always added between operands and a newline is appended.
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template(r#"{{ println "Hello" . "!" }}"#, "world");
// assert_eq!(&equal.unwrap(), "Hello world !\n");
// ```
pub fn println(args: &[Value]) -> Result<Value, FuncError> {
    let mut iter = args.iter();
    let s = match iter.next() {
        None => String::from("\n"),
        Some(first_elt) => {
            let (lower, _) = iter.size_hint();
            let mut result = String::with_capacity(lower + 1);
            if let Value::String(ref v) = *first_elt {
                result.push_str(v);
            } else {
                let _ = write!(&mut result, "{}", first_elt);
            }
            for elt in iter {
                result.push(' ');
                if let Value::String(ref v) = *elt {
                    result.push_str(v);
                } else {
                    let _ = write!(&mut result, "{}", elt);
                }
            }
            result.push('\n');
            result
        }
    };
    Ok(val!(s))
}

// An implementation of golang's fmt.Sprintf
// Limitations:
// - float:
//   * `g`, `G`, and `b` are weired and not implement yet
// - pretty sure there are more
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template(r#"{{ printf "%v %s %v" "Hello" . "!" }}"#, "world");
// assert_eq!(&equal.unwrap(), "Hello world !");
// ```
pub fn printf(args: &[Value]) -> Result<Value, FuncError> {
    if args.is_empty() {
        return Err(FuncError::AtLeastXArgs("printf".into(), 1));
    }
    if let Value::String(ref s) = args[0] {
        let s = sprintf(s, &args[1..]).map_err(|e| FuncError::Generic(e.to_string()))?;
        Ok(val!(s))
    } else {
        Err(FuncError::Generic("printf requires a format string".into()))
    }
}

// Returns the result of indexing its first argument by the
// following arguments. Thus "index x 1 2 3" is, in Go syntax,
// x[1][2][3]. Each indexed item must be a map, slice or array.
//
// # Example
// ```
// use gtmpl_ng::template;
// let ctx = vec![23, 42, 7];
// let index = template("{{ index . 1 }}", ctx);
// assert_eq!(&index.unwrap(), "42");
// ```
pub fn index(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() < 2 {
        return Err(FuncError::AtLeastXArgs("index".into(), 2));
    }
    let mut col = &args[0];
    for val in &args[1..] {
        col = get_item(col, val)?;
    }

    Ok(col.clone())
}

fn get_item<'a>(col: &'a Value, key: &Value) -> Result<&'a Value, FuncError> {
    let ret = match (col, key) {
        (Value::Array(a), Value::Number(n)) => {
            if let Some(i) = n.as_u64() {
                a.get(i as usize)
            } else {
                None
            }
        }
        (Value::Map(o), Value::Number(n)) => o.get(&n.to_string()),
        (Value::Map(o), Value::String(s)) => o.get(s),
        _ => None,
    };
    match *col {
        Value::Map(_) => Ok(ret.unwrap_or(&Value::Missing)),
        _ => ret.ok_or_else(|| FuncError::Generic(format!("unable to get {} in {}", key, col))),
    }
}

// Returns the escaped value of the textual representation of
// its arguments in a form suitable for embedding in a URL query.
//
// # Example
// ```
// use gtmpl_ng::template;
// let url = template(r#"{{ urlquery "foo bar?" }}"#, 0);
// assert_eq!(&url.unwrap(), "foo%20bar%3F");
// ```
pub fn urlquery(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() != 1 {
        return Err(FuncError::ExactlyXArgs("urlquery".into(), 1));
    }
    let val = &args[0];
    match *val {
        Value::String(ref s) => Ok(val!(utf8_percent_encode(s, QUERY_ENCODE).to_string())),
        _ => Err(FuncError::Generic(
            "Arguments need to be of type String".into(),
        )),
    }
}

// Returns the boolean truth of arg1 == arg2 [== arg3 ...]
//
// # Example
// ```
// use gtmpl_ng::template;
// let equal = template("{{ eq 1 1 . }}", 1);
// assert_eq!(&equal.unwrap(), "true");
// ```
pub fn eq(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() < 2 {
        return Err(FuncError::AtLeastXArgs("eq".into(), 2));
    }
    let first = &args[0];
    // Go: true when the first argument equals any of the others.
    Ok(Value::from(args.iter().skip(1).any(|x| *x == *first)))
}

pub fn ne(args: &[Value]) -> Result<Value, FuncError> {
    let (a, b) = two_args("ne", args)?;
    Ok(Value::from(a != b))
}

pub fn lt(args: &[Value]) -> Result<Value, FuncError> {
    compare("lt", args, Ordering::is_lt)
}

pub fn le(args: &[Value]) -> Result<Value, FuncError> {
    compare("le", args, Ordering::is_le)
}

pub fn gt(args: &[Value]) -> Result<Value, FuncError> {
    compare("gt", args, Ordering::is_gt)
}

pub fn ge(args: &[Value]) -> Result<Value, FuncError> {
    compare("ge", args, Ordering::is_ge)
}

fn two_args<'a>(name: &str, args: &'a [Value]) -> Result<(&'a Value, &'a Value), FuncError> {
    match args {
        [a, b] => Ok((a, b)),
        _ => Err(FuncError::AtLeastXArgs(name.into(), 2)),
    }
}

/// `lt`, `le`, `gt`, `ge`: whether the order of the two arguments is one `holds` accepts.
fn compare(name: &str, args: &[Value], holds: fn(Ordering) -> bool) -> Result<Value, FuncError> {
    let (a, b) = two_args(name, args)?;
    match cmp(a, b) {
        Some(order) => Ok(Value::from(holds(order))),
        None => Err(FuncError::Generic(format!(
            "unable to compare {} and {}",
            a, b
        ))),
    }
}

fn cmp(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::Number(l), Value::Number(r)) => {
            // Exact integer comparison when both sides fit in i64.
            if let (Some(li), Some(ri)) = (l.as_i64(), r.as_i64()) {
                return li.partial_cmp(&ri);
            }
            // Exact unsigned comparison for values outside the i64 range.
            if let (Some(lu), Some(ru)) = (l.as_u64(), r.as_u64()) {
                return lu.partial_cmp(&ru);
            }
            // Mixed int/float or disjoint signed/unsigned ranges: coerce
            // both sides to f64. This is lossy for integers beyond the
            // f64 mantissa, but matches Go's numeric-comparison semantics
            // and — crucially — never returns `None` for an otherwise
            // comparable pair of numbers. Previously, the function checked
            // `as_f64` first and short-circuited `None` for any value that
            // happened to be stored as an integer variant, so e.g.
            // `lt 5 3.5` reported "unable to compare".
            let lf = number_to_f64(l)?;
            let rf = number_to_f64(r)?;
            lf.partial_cmp(&rf)
        }
        (Value::Bool(l), Value::Bool(r)) => l.partial_cmp(r),
        (Value::String(l), Value::String(r)) => l.partial_cmp(r),
        (Value::Array(l), Value::Array(r)) => l.len().partial_cmp(&r.len()),
        _ => None,
    }
}

// Convert any `Number` variant to `f64`, accepting `Num::F`, `Num::I`,
// and `Num::U`. Returns `None` only if the library adds a new variant.
fn number_to_f64(n: &crate::gotmpl::value::Number) -> Option<f64> {
    n.as_f64()
        .or_else(|| n.as_i64().map(|i| i as f64))
        .or_else(|| n.as_u64().map(|u| u as f64))
}
