//! Upgrade policy under semver. The manager ships exactly one application version
//! ([`crate::render::APP_VERSION`]); `status.releaseVersion` is what is installed.
//!
//! - nothing installed → install;
//! - same version → reconcile in place;
//! - an older version of the same major (or, before 1.0, the same minor or the one just before
//!   it) → upgrade: CRDs first, then the rest, then prune (the apply order guarantees it);
//! - a newer version (downgrade), another major, or a jump over a 0.x minor → refused: the TVM
//!   becomes `Irreconcilable` with what to do, and nothing is changed.

use semver::Version;

/// What to do with an installed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeDecision {
    /// Nothing installed yet.
    Install,
    /// The shipped version is installed.
    Same,
    /// Upgrade from `from`.
    Upgrade {
        /// Installed version.
        from: String,
    },
    /// Refused, with the message for the user.
    Refused(String),
}

/// Decides what to do when `installed` is in the status and `shipped` is this manager's.
pub fn decide(installed: Option<&str>, shipped: &str) -> UpgradeDecision {
    let Some(installed_text) = installed.filter(|s| !s.is_empty()) else {
        return UpgradeDecision::Install;
    };
    let (Ok(installed), Ok(shipped_version)) = (
        Version::parse(installed_text.trim_start_matches('v')),
        Version::parse(shipped),
    ) else {
        return UpgradeDecision::Refused(format!(
            "status.releaseVersion {installed_text:?} is not a semantic version; clear status.releaseVersion only if you know the installed version matches {shipped}"
        ));
    };
    if installed == shipped_version {
        return UpgradeDecision::Same;
    }
    if installed > shipped_version {
        return UpgradeDecision::Refused(format!(
            "version {installed} is installed and this manager ships {shipped}: downgrades are not supported; install a manager of version {installed} or newer"
        ));
    }
    let supported = if shipped_version.major == 0 {
        installed.major == 0 && shipped_version.minor.saturating_sub(installed.minor) <= 1
    } else {
        installed.major == shipped_version.major
    };
    if supported {
        UpgradeDecision::Upgrade {
            from: installed.to_string(),
        }
    } else {
        UpgradeDecision::Refused(format!(
            "upgrading from {installed} straight to {shipped} is not supported; upgrade through each intermediate {} release first",
            if shipped_version.major == 0 {
                "minor"
            } else {
                "major"
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "1.2.0"), UpgradeDecision::Install);
        assert_eq!(decide(Some("1.2.0"), "1.2.0"), UpgradeDecision::Same);
        assert_eq!(
            decide(Some("1.0.3"), "1.2.0"),
            UpgradeDecision::Upgrade {
                from: "1.0.3".into()
            }
        );
        assert_eq!(
            decide(Some("0.1.0"), "0.2.1"),
            UpgradeDecision::Upgrade {
                from: "0.1.0".into()
            }
        );
        assert!(
            matches!(decide(Some("1.3.0"), "1.2.0"), UpgradeDecision::Refused(m) if m.contains("downgrades are not supported"))
        );
        assert!(
            matches!(decide(Some("1.9.0"), "2.0.0"), UpgradeDecision::Refused(m) if m.contains("intermediate major"))
        );
        assert!(
            matches!(decide(Some("0.1.0"), "0.3.0"), UpgradeDecision::Refused(m) if m.contains("intermediate minor"))
        );
        assert!(matches!(
            decide(Some("banana"), "0.3.0"),
            UpgradeDecision::Refused(_)
        ));
    }
}
