//! Go string and character literals: quotes and escapes resolved as Go's `strconv.Unquote`
//! does (`\a \b \f \n \r \t \v \\`, the quote, `\xFF` and `\377` bytes, `\u1234`,
//! `\U00012345`). `None` for what Go rejects, and for bytes that are not UTF-8 (a Rust string
//! cannot hold them).

/// A character constant (`'a'`, `'\n'`, `'\u00e9'`) as its rune.
pub fn unquote_char(s: &str) -> Option<char> {
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    let text = String::from_utf8(unescape(inner, '\'')?).ok()?;
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// A string literal's value: a raw string (`` `...` ``) is taken as written; a quoted one has
/// its escapes resolved.
pub fn unquote_str(s: &str) -> Option<String> {
    if let Some(raw) = s.strip_prefix('`') {
        return raw.strip_suffix('`').map(str::to_owned);
    }
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    String::from_utf8(unescape(inner, '"')?).ok()
}

/// The bytes `inner` (the text between the quotes) stands for.
fn unescape(inner: &str, quote: char) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == quote || c == '\n' {
            return None;
        }
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let escaped = chars.next()?;
        let simple = match escaped {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            c if c == quote => Some(c as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        match escaped {
            'x' => out.push(u8::try_from(hex_digits(&mut chars, 2)?).ok()?),
            'u' | 'U' => {
                let c =
                    char::from_u32(hex_digits(&mut chars, if escaped == 'u' { 4 } else { 8 })?)?;
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let mut value = escaped.to_digit(8)?;
                for _ in 0..2 {
                    value = value * 8 + chars.next()?.to_digit(8)?;
                }
                out.push(u8::try_from(value).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The value of the next `n` hexadecimal digits.
fn hex_digits(chars: &mut std::str::Chars<'_>, n: usize) -> Option<u32> {
    let mut value = 0;
    for _ in 0..n {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    Some(value)
}
