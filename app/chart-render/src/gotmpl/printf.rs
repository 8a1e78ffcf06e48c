//! Go's `fmt.Sprintf` (fmt/print.go `doPrintf`): verbs with flags, width, precision and
//! explicit argument indexes (`%[2]d`, `%*d`); each verb is formatted by `print_verb`.

use super::error::PrintError;
use super::print_verb::{print, typed};
use super::value::{FromValue, Value};

/// The verbs Go's `fmt` knows; a `%` directive runs up to the first of them.
static VERBS: &str = "vVtTbcdoOqxXUeEfFgGsp";

/// Flags, width and precision of one verb.
#[derive(Default)]
pub struct FormatParams {
    pub sharp: bool,
    pub zero: bool,
    pub plus: bool,
    pub minus: bool,
    pub space: bool,
    pub width: usize,
    pub precision: Option<usize>,
}

pub fn sprintf(format: &str, args: &[Value]) -> Result<String, PrintError> {
    let mut out = String::new();
    let mut rest = format;
    let mut next_arg = 0;
    let mut reordered = false;
    while let Some(percent) = rest.find('%') {
        out.push_str(&rest[..percent]);
        let directive = &rest[percent + 1..];
        if let Some(after) = directive.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let verb_at = directive
            .find(|c| VERBS.contains(c))
            .ok_or_else(|| PrintError::UnableToTerminateFormatArg(rest[percent..].to_string()))?;
        let spec = &directive[..verb_at];
        let verb = directive[verb_at..].chars().next().unwrap_or('v');
        reordered |= spec.contains('[');
        out.push_str(&format_verb(spec, verb, args, &mut next_arg)?);
        rest = &directive[verb_at + verb.len_utf8()..];
    }
    out.push_str(rest);
    // Go reports arguments no verb used, unless the format picks arguments by index.
    if !reordered && next_arg < args.len() {
        let extra: Vec<String> = args[next_arg..].iter().map(typed).collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    Ok(out)
}

/// One directive: `spec` is what stands between `%` and the verb.
fn format_verb(
    spec: &str,
    verb: char,
    args: &[Value],
    next_arg: &mut usize,
) -> Result<String, PrintError> {
    let mut p = FormatParams::default();
    let flags = spec
        .find(|c| !matches!(c, '#' | '0' | '+' | '-' | ' '))
        .unwrap_or(spec.len());
    for c in spec[..flags].chars() {
        match c {
            '#' => p.sharp = true,
            // Go pads with zeros only to the left.
            '0' => p.zero = !p.minus,
            '+' => p.plus = true,
            '-' => {
                p.minus = true;
                p.zero = false;
            }
            _ => p.space = true,
        }
    }
    let mut rest = &spec[flags..];
    let mut after_index = take_index(&mut rest, next_arg)?;
    if let Some(r) = rest.strip_prefix('*') {
        rest = r;
        let width = star_arg(args, next_arg);
        if width < 0 {
            p.minus = true;
            p.zero = false;
        }
        p.width = usize::try_from(width.unsigned_abs()).unwrap_or(usize::MAX);
        after_index = false;
    } else if let Some(width) = take_number(&mut rest)? {
        if after_index {
            return Err(PrintError::WithAfterIndex);
        }
        p.width = width;
    }
    if let Some(r) = rest.strip_prefix('.') {
        rest = r;
        if after_index {
            return Err(PrintError::PrecisionAfterIndex);
        }
        after_index = take_index(&mut rest, next_arg)?;
        if let Some(r) = rest.strip_prefix('*') {
            rest = r;
            // A negative precision counts as none.
            p.precision = usize::try_from(star_arg(args, next_arg)).ok();
            after_index = false;
        } else {
            p.precision = Some(take_number(&mut rest)?.unwrap_or(0));
        }
    }
    if !after_index {
        take_index(&mut rest, next_arg)?;
    }
    let Some(arg) = args.get(*next_arg) else {
        return Ok(format!("%!{verb}(MISSING)"));
    };
    *next_arg += 1;
    print(&p, verb, arg)
}

/// An explicit argument index `[n]` (1-based) at the start of `rest`: moves to that argument.
fn take_index(rest: &mut &str, next_arg: &mut usize) -> Result<bool, PrintError> {
    let Some(inner) = rest.strip_prefix('[') else {
        return Ok(false);
    };
    let close = inner
        .find(']')
        .ok_or_else(|| PrintError::MissingClosingBracket(rest.to_string()))?;
    let n: usize = inner[..close]
        .parse()
        .map_err(PrintError::UnableToParseIndex)?;
    *next_arg = n.saturating_sub(1);
    *rest = &inner[close + 1..];
    Ok(true)
}

/// A decimal number at the start of `rest`.
fn take_number(rest: &mut &str) -> Result<Option<usize>, PrintError> {
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if end == 0 {
        return Ok(None);
    }
    let n = rest[..end]
        .parse()
        .map_err(PrintError::UnableToParseWidth)?;
    *rest = &rest[end..];
    Ok(Some(n))
}

/// The integer argument a `*` takes for width or precision (0 when there is none).
fn star_arg(args: &[Value], next_arg: &mut usize) -> i64 {
    let n = args.get(*next_arg).and_then(i64::from_value).unwrap_or(0);
    *next_arg += 1;
    n
}
