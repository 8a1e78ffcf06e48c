//! Go's `fmt` `%v` formatting of template values: what `{{ .x }}` prints in Go.

use crate::gotmpl::value::Value;

/// Formats a value the way Go's `fmt.Sprint` prints the corresponding Go value (Helm's values
/// are `map[string]interface{}`, `[]interface{}`, `float64`, `string`, `bool` and `nil`).
pub fn format_value(val: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, val, true);
    out
}

fn write_value(out: &mut String, val: &Value, top: bool) {
    match val {
        // Go prints a nil interface as "<no value>" at the top level of an action and as
        // "<nil>" inside a container.
        Value::Missing | Value::Nil if top => out.push_str("<no value>"),
        Value::Missing | Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => out.push_str(s),
        Value::Function(_) => out.push_str("<func>"),
        Value::Number(n) => out.push_str(&format_number(n)),
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, v, false);
            }
            out.push(']');
        }
        // A map with a `String` method prints as Go prints a fmt.Stringer.
        Value::Map(m) if matches!(m.get("String"), Some(Value::Function(_))) => {
            if let Some(Value::Function(f)) = m.get("String") {
                match (f.f)(std::slice::from_ref(val)) {
                    Ok(Value::String(s)) => out.push_str(&s),
                    Ok(other) => write_value(out, &other, top),
                    Err(e) => out.push_str(&format!("%!v(PANIC=String method: {e})")),
                }
            }
        }
        Value::Map(m) => {
            out.push_str("map[");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                if let Some(v) = m.get(k) {
                    write_value(out, v, false);
                }
            }
            out.push(']');
        }
    }
}

/// Formats a value as Go's `%v` inside `printf` (a nil prints as `<nil>`).
pub fn format_nested(val: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, val, false);
    out
}

/// A number as Go prints it: integers in decimal, floats as [`format_float_g`].
pub fn format_number(n: &crate::gotmpl::value::Number) -> String {
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    format_float_g(n.as_f64().unwrap_or(f64::NAN))
}

/// Go's `%v` for a float64: `strconv.FormatFloat(f, 'g', -1, 64)` — the shortest decimal that
/// round-trips, in exponent form (`1e+06`, `1.234567e+06`, `1e-05`) when the decimal exponent
/// is below -4 or at least 6. This is why Helm prints a value `1000000` as `1e+06`.
pub fn format_float_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e6".
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let neg = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        out.push_str(&a.to_string());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// Go's `%q` of a string.
pub fn quote(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '"' if quote == '"' => out.push_str("\\\""),
            '\\' if quote == '"' => out.push_str("\\\\"),
            '\n' if quote == '"' => out.push_str("\\n"),
            '\t' if quote == '"' => out.push_str("\\t"),
            '\r' if quote == '"' => out.push_str("\\r"),
            '\u{7}' if quote == '"' => out.push_str("\\a"),
            '\u{8}' if quote == '"' => out.push_str("\\b"),
            '\u{c}' if quote == '"' => out.push_str("\\f"),
            '\u{b}' if quote == '"' => out.push_str("\\v"),
            c if quote == '"' && ((c as u32) < 0x20 || c == '\u{7f}') => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}
