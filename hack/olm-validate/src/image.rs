//! The project's supply-chain rule for image references: every image that ships is pinned by
//! digest, so a mirrored catalog installs exactly what was tested and OpenShift's digest mirror
//! sets (which only map digest references) can redirect it.

use tvk_oci::ImageReference;

/// Checks that `reference` is a valid image reference pinned by a `sha256` digest; the error
/// says what is wrong and what to write instead.
pub(crate) fn check_pinned(reference: &str) -> Result<ImageReference, String> {
    let parsed = ImageReference::parse(reference)
        .map_err(|e| format!("image {reference:?} is not a valid image reference: {e}"))?;
    if parsed.digest.is_none() {
        return Err(format!(
            "image {reference:?} is referenced by tag, not by digest; pin it as \
             {}@sha256:<digest> (cargo xtask images records the digests)",
            parsed.repository_name()
        ));
    }
    Ok(parsed)
}

/// The `repository@digest` identity of a reference (tags dropped), for comparing the images a
/// deployment uses with `relatedImages`; the reference itself when it does not parse.
pub(crate) fn identity(reference: &str) -> String {
    match ImageReference::parse(reference) {
        Ok(parsed) => match &parsed.digest {
            Some(digest) => format!("{}@{digest}", parsed.repository_name()),
            None => parsed.to_string(),
        },
        Err(_) => reference.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests_pass_tags_and_garbage_fail() {
        assert!(check_pinned(&format!("quay.io/t/m@{D}")).is_ok());
        assert!(check_pinned(&format!("quay.io/t/m:1.0@{D}")).is_ok());
        let err = check_pinned("quay.io/t/m:1.0").unwrap_err();
        assert!(
            err.contains("by tag") && err.contains("quay.io/t/m@sha256"),
            "{err}"
        );
        assert!(check_pinned("quay.io/t/m").is_err());
        assert!(
            check_pinned("Not An Image")
                .unwrap_err()
                .contains("not a valid")
        );
        assert_eq!(
            identity(&format!("quay.io/t/m:1.0@{D}")),
            identity(&format!("quay.io/t/m@{D}"))
        );
    }
}
