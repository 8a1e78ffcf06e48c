//! One `printf` verb applied to one operand, as Go's `fmt` does it (fmt/print.go and
//! fmt/format.go): the operand's text is built by kind (integer, float, string, bool,
//! list, map), then padded to the width by one function.

use super::error::PrintError;
use super::gofmt::{format_float_g, format_nested, quote};
use super::printf::FormatParams;
use super::value::Value;

/// Formats `val` for the verb `verb` with the flags, width and precision in `p`. A verb that
/// does not suit the operand prints Go's `%!verb(type=value)`, as Go does.
pub fn print(p: &FormatParams, verb: char, val: &Value) -> Result<String, PrintError> {
    if verb == 'T' {
        return Ok(pad(p, go_type(val).unwrap_or("<nil>").to_string()));
    }
    match val {
        Value::Number(n) => match (n.as_f64(), n.as_i64(), n.as_u64()) {
            (Some(f), _, _) => match float(p, verb, f) {
                Some(text) => Ok(text),
                // Go prints floats in hexadecimal or binary exponent form; not implemented.
                None if matches!(verb, 'b' | 'x' | 'X') => {
                    Err(PrintError::UnableToFormat(val.clone(), verb))
                }
                None => Ok(bad_verb(verb, val)),
            },
            (None, Some(i), _) => Ok(
                integer(p, verb, i < 0, i.unsigned_abs()).unwrap_or_else(|| bad_verb(verb, val))
            ),
            (None, None, Some(u)) => {
                Ok(integer(p, verb, false, u).unwrap_or_else(|| bad_verb(verb, val)))
            }
            (None, None, None) => Ok(bad_verb(verb, val)),
        },
        Value::String(s) => Ok(string(p, verb, s).unwrap_or_else(|| bad_verb(verb, val))),
        // A map with a `String` method is a Go fmt.Stringer: its text is formatted as a string.
        Value::Map(m) if matches!(m.get("String"), Some(Value::Function(_))) => {
            let text = format_nested(val);
            Ok(string(p, verb, &text).unwrap_or_else(|| bad_verb(verb, val)))
        }
        Value::Bool(b) if matches!(verb, 't' | 'v') => Ok(pad(p, b.to_string())),
        // Go formats each element of a list or map with the verb.
        Value::Array(a) => {
            let items: Result<Vec<String>, PrintError> =
                a.iter().map(|v| print_element(p, verb, v)).collect();
            Ok(format!("[{}]", items?.join(" ")))
        }
        Value::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut items = Vec::with_capacity(keys.len());
            for k in keys {
                let v = m.get(k).unwrap_or(&Value::Nil);
                items.push(format!(
                    "{}:{}",
                    print(p, verb, &Value::String(k.clone()))?,
                    print_element(p, verb, v)?
                ));
            }
            Ok(format!("map[{}]", items.join(" ")))
        }
        _ if verb == 'v' => Ok(pad(p, format_nested(val))),
        _ => Ok(bad_verb(verb, val)),
    }
}

/// An element inside a list or map (a nil element prints `<nil>` for `%v`).
fn print_element(p: &FormatParams, verb: char, val: &Value) -> Result<String, PrintError> {
    match val {
        Value::Missing => print(p, verb, &Value::Nil),
        _ => print(p, verb, val),
    }
}

/// Go's `%!verb(type=value)` for an operand the verb does not apply to.
fn bad_verb(verb: char, val: &Value) -> String {
    format!("%!{verb}({})", typed(val))
}

/// An operand as Go's `fmt` names it in a complaint: `type=value`, or `<nil>`.
pub fn typed(val: &Value) -> String {
    match go_type(val) {
        Some(typ) => format!("{typ}={}", format_nested(val)),
        None => "<nil>".into(),
    }
}

/// The Go type a value has in a chart (`None` for nil).
fn go_type(val: &Value) -> Option<&'static str> {
    Some(match val {
        Value::Missing | Value::Nil => return None,
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Number(n) if n.as_f64().is_some() => "float64",
        // Template literals are Go `int`s.
        Value::Number(_) => "int",
        Value::Array(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    })
}

/// Go's `fmtInteger` and friends: `d v b o O x X c q U`; `None` for any other verb.
fn integer(p: &FormatParams, verb: char, negative: bool, magnitude: u64) -> Option<String> {
    let (base, upper) = match verb {
        'd' | 'v' => (10, false),
        'b' => (2, false),
        'o' | 'O' => (8, false),
        'x' => (16, false),
        'X' => (16, true),
        'c' => return Some(pad(p, rune(negative, magnitude).to_string())),
        'q' => return Some(pad(p, quote_rune(rune(negative, magnitude)))),
        'U' => {
            let mut text = format!("U+{magnitude:04X}");
            if p.sharp {
                text = format!("{text} '{}'", rune(negative, magnitude));
            }
            return Some(pad(p, text));
        }
        _ => return None,
    };
    let mut digits = match base {
        2 => format!("{magnitude:b}"),
        8 => format!("{magnitude:o}"),
        16 if upper => format!("{magnitude:X}"),
        16 => format!("{magnitude:x}"),
        _ => magnitude.to_string(),
    };
    // Two ways to ask for leading zero digits: %.3d or %03d (the 0 flag is ignored when a
    // precision is given); a zero precision prints nothing for 0.
    let min_digits = match p.precision {
        Some(0) if magnitude == 0 => return Some(pad_spaces(p, String::new())),
        Some(prec) => prec,
        None if p.zero && !p.minus && p.width > 0 => {
            p.width - usize::from(negative || p.plus || p.space)
        }
        None => 0,
    };
    if digits.len() < min_digits {
        digits = format!("{}{digits}", "0".repeat(min_digits - digits.len()));
    }
    let prefix = match base {
        2 if p.sharp => "0b",
        8 if verb == 'O' => "0o",
        8 if p.sharp && !digits.starts_with('0') => "0",
        16 if p.sharp && upper => "0X",
        16 if p.sharp => "0x",
        _ => "",
    };
    Some(pad_spaces(
        p,
        format!("{}{prefix}{digits}", sign(p, negative)),
    ))
}

/// The rune an integer stands for, U+FFFD when it is none.
fn rune(negative: bool, magnitude: u64) -> char {
    u32::try_from(magnitude)
        .ok()
        .filter(|_| !negative)
        .and_then(char::from_u32)
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Go's `strconv.QuoteRune` for the runes charts print.
fn quote_rune(c: char) -> String {
    match c {
        '\'' => r"'\''".into(),
        '\\' => r"'\\'".into(),
        '\n' => r"'\n'".into(),
        '\r' => r"'\r'".into(),
        '\t' => r"'\t'".into(),
        c if u32::from(c) < 0x20 || c == '\u{7f}' => format!(r"'\x{:02x}'", u32::from(c)),
        c => format!("'{c}'"),
    }
}

fn sign(p: &FormatParams, negative: bool) -> &'static str {
    match (negative, p.plus, p.space) {
        (true, _, _) => "-",
        (false, true, _) => "+",
        (false, false, true) => " ",
        _ => "",
    }
}

/// Go's `fmtFloat` for `e E f F g G v`; `None` for any other verb.
fn float(p: &FormatParams, verb: char, f: f64) -> Option<String> {
    if !f.is_finite() {
        // Infinities and NaN are not padded with zeros; NaN has no sign unless asked for.
        let text = match (f.is_nan(), f > 0.0) {
            (true, _) if p.plus => "+NaN",
            (true, _) if p.space => " NaN",
            (true, _) => "NaN",
            (false, true) if p.space && !p.plus => " Inf",
            (false, true) => "+Inf",
            (false, false) => "-Inf",
        };
        return Some(pad_spaces(p, text.into()));
    }
    let abs = f.abs();
    let body = match verb {
        'e' | 'E' => exponent_form(&format!("{:.*e}", p.precision.unwrap_or(6), abs)),
        'f' | 'F' => format!("{:.*}", p.precision.unwrap_or(6), abs),
        'g' | 'G' | 'v' => match p.precision {
            None => format_float_g(abs),
            Some(prec) => shortest_g(abs, prec.max(1)),
        },
        _ => return None,
    };
    let body = if verb.is_ascii_uppercase() {
        body.to_uppercase()
    } else {
        body
    };
    let sign = sign(p, f.is_sign_negative());
    let len = sign.len() + body.chars().count();
    if p.zero && !p.minus && p.width > len {
        // Zero padding goes between the sign and the digits.
        return Some(format!("{sign}{}{body}", "0".repeat(p.width - len)));
    }
    Some(pad_spaces(p, format!("{sign}{body}")))
}

/// Rust's `1.5e3` as Go writes it: `1.5e+03` (signed exponent of at least two digits).
fn exponent_form(rust: &str) -> String {
    match rust.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => rust.to_string(),
    }
}

/// Go's `%.Ng`: `prec` significant digits, exponent form when the exponent is below -4 or
/// at least `prec`, trailing zeros removed.
fn shortest_g(abs: f64, prec: usize) -> String {
    let sci = format!("{:.*e}", prec - 1, abs);
    let exp: i64 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if exp < -4 || exp >= i64::try_from(prec).unwrap_or(i64::MAX) {
        let (mantissa, _) = sci.split_once('e').unwrap_or((&sci, ""));
        exponent_form(&format!("{}e{exp}", trim(mantissa.to_string())))
    } else {
        let decimals = usize::try_from(i64::try_from(prec).unwrap_or(0) - 1 - exp).unwrap_or(0);
        trim(format!("{abs:.decimals$}"))
    }
}

/// Go's string verbs `s v q x X`; `None` for any other verb.
fn string(p: &FormatParams, verb: char, s: &str) -> Option<String> {
    let truncated = |s: &str| -> String {
        match p.precision {
            Some(prec) => s.chars().take(prec).collect(),
            None => s.to_string(),
        }
    };
    Some(match verb {
        's' | 'v' => pad(p, truncated(s)),
        'q' if p.sharp && !s.contains('`') && !s.chars().any(char::is_control) => {
            pad(p, format!("`{s}`"))
        }
        'q' => pad(p, quote(&truncated(s), '"')),
        'x' | 'X' => pad(p, hex_bytes(p, verb == 'X', s)),
        _ => return None,
    })
}

/// Go's `fmtSbx`: each byte as two hex digits, `#` adds `0x`, a space separates bytes.
fn hex_bytes(p: &FormatParams, upper: bool, s: &str) -> String {
    let bytes = &s.as_bytes()[..p.precision.unwrap_or(usize::MAX).min(s.len())];
    let prefix = match (p.sharp, upper) {
        (false, _) => "",
        (true, false) => "0x",
        (true, true) => "0X",
    };
    let mut out = String::with_capacity(bytes.len() * 4);
    for (i, b) in bytes.iter().enumerate() {
        if i == 0 || p.space {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(prefix);
        }
        if upper {
            out.push_str(&format!("{b:02X}"));
        } else {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// Go's `fmt.pad`: `text` right-aligned to the width (left-aligned with `-`), filled with
/// zeros when the `0` flag is set.
fn pad(p: &FormatParams, text: String) -> String {
    pad_with(p, text, if p.zero && !p.minus { '0' } else { ' ' })
}

/// [`pad`] with spaces whatever the flags (numbers place their zeros themselves).
fn pad_spaces(p: &FormatParams, text: String) -> String {
    pad_with(p, text, ' ')
}

fn pad_with(p: &FormatParams, text: String, fill: char) -> String {
    let len = text.chars().count();
    if p.width <= len {
        return text;
    }
    let fill: String = std::iter::repeat_n(fill, p.width - len).collect();
    if p.minus {
        format!("{text}{fill}")
    } else {
        format!("{fill}{text}")
    }
}
