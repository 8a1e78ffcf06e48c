//! Version ranges as OLM reads them: blang/semver's `ParseRange`, the syntax of the CSV's
//! `olm.skipRange` annotation and of a catalog entry's `skipRange` (`>=1.0.0 <1.2.0`, `||` for
//! alternatives, `1.2.x` wildcards). The `semver` crate's own ranges are Cargo's syntax (commas,
//! caret by default), so they cannot stand in for it.

use std::fmt;

use semver::Version;

/// Why a range does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid semver range {range:?}: {reason}")]
pub struct SemverRangeError {
    /// The text given.
    pub range: String,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    version: Version,
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        match self.op {
            Op::Eq => v == &self.version,
            Op::Ne => v != &self.version,
            Op::Gt => v > &self.version,
            Op::Ge => v >= &self.version,
            Op::Lt => v < &self.version,
            Op::Le => v <= &self.version,
        }
    }
}

/// A parsed range: alternatives (`||`) of comparators that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemverRange {
    any_of: Vec<Vec<Comparator>>,
}

impl SemverRange {
    /// Parses a range the way blang/semver's `ParseRange` does: space-separated comparators
    /// (`=`, `==`, `!`, `!=`, `>`, `>=`, `<`, `<=` or none) each followed by a full `X.Y.Z`
    /// version or an `X.x` / `X.Y.x` wildcard, alternatives joined by `||`.
    pub fn parse(range: &str) -> Result<Self, SemverRangeError> {
        let fail = |reason: String| SemverRangeError {
            range: range.to_owned(),
            reason,
        };
        if range.len() > 1024 {
            return Err(fail("longer than 1024 characters".into()));
        }
        let tokens = split_and_trim(range);
        if tokens.is_empty() {
            return Err(fail("it is empty".into()));
        }
        let mut any_of = Vec::new();
        let mut current = Vec::new();
        for token in tokens {
            if token == "||" {
                if current.is_empty() {
                    return Err(fail("an alternative around '||' is empty".into()));
                }
                any_of.push(std::mem::take(&mut current));
                continue;
            }
            current.extend(parse_comparator(&token).map_err(fail)?);
        }
        if current.is_empty() {
            return Err(fail("the last element is '||'".into()));
        }
        any_of.push(current);
        Ok(Self { any_of })
    }

    /// Whether `version` is in the range.
    pub fn matches(&self, version: &Version) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| c.matches(version)))
    }
}

impl fmt::Display for SemverRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, all) in self.any_of.iter().enumerate() {
            if i > 0 {
                f.write_str(" || ")?;
            }
            for (j, c) in all.iter().enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                let op = match c.op {
                    Op::Eq => "=",
                    Op::Ne => "!=",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                };
                write!(f, "{op}{}", c.version)?;
            }
        }
        Ok(())
    }
}

/// Splits on spaces, except a space right after an operator character (`> 1.0.0` is one
/// comparator), as blang's `splitAndTrim` does.
fn split_and_trim(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut last = ' ';
    for c in s.chars() {
        if c.is_whitespace() {
            if !matches!(last, '>' | '<' | '=' | '!') && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
            last = c;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn parse_comparator(token: &str) -> Result<Vec<Comparator>, String> {
    let digit = token
        .find(|c: char| c.is_ascii_digit())
        .ok_or_else(|| format!("{token:?} has no version"))?;
    let (op_text, version_text) = token.split_at(digit);
    let op = match op_text {
        "" | "=" | "==" => Op::Eq,
        "!" | "!=" => Op::Ne,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        other => return Err(format!("{other:?} is not a comparator")),
    };
    if version_text.contains(['x', 'X', '*']) {
        return expand_wildcard(op, version_text);
    }
    let version = Version::parse(version_text)
        .map_err(|e| format!("{version_text:?} is not a MAJOR.MINOR.PATCH version: {e}"))?;
    Ok(vec![Comparator { op, version }])
}

/// `1.x` and `1.2.x` (also `X`, `*`): the comparators blang expands them into.
fn expand_wildcard(op: Op, text: &str) -> Result<Vec<Comparator>, String> {
    let wild = |p: &str| matches!(p, "x" | "X" | "*");
    let number = |p: &str| {
        p.parse::<u64>()
            .map_err(|_| format!("{text:?} is not a version wildcard like 1.x or 1.2.x"))
    };
    let parts: Vec<&str> = text.split('.').collect();
    let (low, high) = match parts.as_slice() {
        [major, minor] | [major, minor, _]
            if wild(minor) && parts.iter().skip(1).all(|p| wild(p)) =>
        {
            let major = number(major)?;
            (Version::new(major, 0, 0), Version::new(major + 1, 0, 0))
        }
        [major, minor, patch] if wild(patch) => {
            let (major, minor) = (number(major)?, number(minor)?);
            (
                Version::new(major, minor, 0),
                Version::new(major, minor + 1, 0),
            )
        }
        _ => {
            return Err(format!(
                "{text:?} is not a version wildcard like 1.x or 1.2.x"
            ));
        }
    };
    let one = |op, version| vec![Comparator { op, version }];
    Ok(match op {
        Op::Eq => vec![
            Comparator {
                op: Op::Ge,
                version: low,
            },
            Comparator {
                op: Op::Lt,
                version: high,
            },
        ],
        Op::Ge => one(Op::Ge, low),
        Op::Gt => one(Op::Ge, high),
        Op::Le => one(Op::Lt, high),
        Op::Lt => one(Op::Lt, low),
        Op::Ne => {
            return Err(format!(
                "'!=' with the wildcard {text:?} is not supported; write the two bounds"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_olm_skip_ranges() {
        let r = SemverRange::parse(">=1.0.0 <1.2.0").unwrap();
        assert!(r.matches(&v("1.0.0")));
        assert!(r.matches(&v("1.1.9")));
        assert!(!r.matches(&v("1.2.0")));
        let r = SemverRange::parse("> 1.0.0 <= 2.0.0 || =3.0.0").unwrap();
        assert!(!r.matches(&v("1.0.0")));
        assert!(r.matches(&v("2.0.0")));
        assert!(r.matches(&v("3.0.0")));
        assert_eq!(r.to_string(), ">1.0.0 <=2.0.0 || =3.0.0");
        let r = SemverRange::parse("1.2.x").unwrap();
        assert!(r.matches(&v("1.2.7")));
        assert!(!r.matches(&v("1.3.0")));
        let r = SemverRange::parse("<1.x").unwrap();
        assert!(r.matches(&v("0.9.0")));
        assert!(!r.matches(&v("1.0.0")));
        let r = SemverRange::parse(">=1.0.0-rc.1 <1.0.0").unwrap();
        assert!(r.matches(&v("1.0.0-rc.2")));
    }

    #[test]
    fn rejects_what_blang_rejects() {
        for bad in [
            "",
            "   ",
            ">=1.0 <2.0.0",
            "~1.2.3",
            "^1.2.3",
            ">=1.0.0,<2.0.0",
            "|| >=1.0.0",
            ">=1.0.0 ||",
            "latest",
            "v1.0.0",
            "!=1.x",
            "1.x.3",
        ] {
            assert!(SemverRange::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = SemverRange::parse(">=1.0 <2.0.0").unwrap_err();
        assert!(err.to_string().contains("1.0"), "{err}");
    }
}
