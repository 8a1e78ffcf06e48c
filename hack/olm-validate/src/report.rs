//! What a validation returns: findings with a severity, the file and a stable rule id.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// How serious a finding is. Errors make OLM's tools fail; warnings are reported and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The bundle or catalog is invalid: OLM or `opm` would refuse it, or a project rule says so.
    Error,
    /// Worth fixing; the upstream validators only warn.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in (the directory itself when no single file is to blame).
    pub file: PathBuf,
    /// Stable rule id, e.g. `csv.alm-examples.json` (README.md lists them all).
    pub rule: &'static str,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}: {}",
            self.severity,
            self.rule,
            self.file.display(),
            self.message
        )
    }
}

/// Everything one validation found, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The findings, errors and warnings mixed.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The findings of severity [`Severity::Error`].
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// The findings of severity [`Severity::Warning`].
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }

    /// True when there is no error (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }

    /// Whether some finding (of either severity) has rule id `rule`.
    pub fn has_rule(&self, rule: &str) -> bool {
        self.findings.iter().any(|f| f.rule == rule)
    }

    /// Appends the findings of another report.
    pub fn extend(&mut self, other: Report) {
        self.findings.extend(other.findings);
    }

    pub(crate) fn error(&mut self, file: &Path, rule: &'static str, message: impl Into<String>) {
        self.push(Severity::Error, file, rule, message.into());
    }

    pub(crate) fn warn(&mut self, file: &Path, rule: &'static str, message: impl Into<String>) {
        self.push(Severity::Warning, file, rule, message.into());
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        file: &Path,
        rule: &'static str,
        message: String,
    ) {
        self.findings.push(Finding {
            severity,
            file: file.to_path_buf(),
            rule,
            message,
        });
    }
}

/// One line per finding (`error [rule] file: message`), then nothing else; an empty report
/// prints nothing.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}
