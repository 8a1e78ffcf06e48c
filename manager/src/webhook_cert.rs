//! A webhook serving certificate when neither OLM nor cert-manager provides one: a private CA
//! and a serving certificate for `<service>.<namespace>.svc` (the application's `tvk-webhook`, or
//! the manager's own `tvk-manager-webhook` with `--webhook-self-signed`), kept in a
//! `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`), rotated [`ROTATE_BEFORE`] before
//! expiry. The CA bundle is injected into the webhook configurations through the values
//! (`webhook.caBundle`); the webhook reloads the files from its mounted Secret when they change.
//!
//! The expiry is recorded in an annotation on the Secret so rotation needs no X.509 parsing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Annotation on the Secret: when the serving certificate expires (RFC 3339).
pub const ANNOTATION_NOT_AFTER: &str = "triliovault.trilio.io/not-after";
/// Validity of a generated certificate.
pub const VALIDITY_DAYS: i64 = 365;
/// Rotate this many days before expiry.
pub const ROTATE_BEFORE_DAYS: i64 = 30;
/// Human-readable rotation window (docs).
pub const ROTATE_BEFORE: &str = "30 days";

/// Certificate generation failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to generate the webhook certificate: {0}")]
pub struct CertError(#[from] rcgen::Error);

/// A generated CA + serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCertificate {
    /// PEM CA certificate (the `caBundle`).
    pub ca_pem: String,
    /// PEM serving certificate.
    pub cert_pem: String,
    /// PEM private key of the serving certificate.
    pub key_pem: String,
    /// Expiry.
    pub not_after: Timestamp,
}

/// `rcgen`'s date of a timestamp (UTC, day precision).
fn date(ts: Timestamp) -> (i32, u8, u8) {
    let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
    (
        i32::from(d.year()),
        u8::try_from(d.month()).unwrap_or(1),
        u8::try_from(d.day()).unwrap_or(1),
    )
}

/// The application webhook's Service.
pub const APP_WEBHOOK_SERVICE: &str = "tvk-webhook";

/// DNS names of webhook Service `service` in `namespace`.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a CA and a serving certificate for webhook Service `service` in `namespace`.
pub fn generate(
    service: &str,
    namespace: &str,
    now: Timestamp,
) -> Result<ServingCertificate, CertError> {
    let not_after = now
        .checked_add(jiff::SignedDuration::from_hours(24 * VALIDITY_DAYS))
        .unwrap_or(now);
    let yesterday = now
        .checked_sub(jiff::SignedDuration::from_hours(24))
        .unwrap_or(now);
    let (by, bm, bd) = date(yesterday);
    let (ay, am, ad) = date(not_after);
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}-ca.{namespace}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(by, bm, bd);
    ca_params.not_after = rcgen::date_time_ymd(ay, am, ad);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(service_names(service, namespace))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(by, bm, bd);
    params.not_after = rcgen::date_time_ymd(ay, am, ad);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(ServingCertificate {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// Whether a Secret's certificate must be (re)generated at `now`: missing data, or expiring
/// within the rotation window, or no readable expiry.
pub fn needs_rotation(secret: Option<&Secret>, now: Timestamp) -> bool {
    let Some(secret) = secret else { return true };
    let data = secret.data.as_ref();
    let complete = ["tls.crt", "tls.key", "ca.crt"]
        .iter()
        .all(|k| data.is_some_and(|d| d.get(*k).is_some_and(|v| !v.0.is_empty())));
    let not_after = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_NOT_AFTER))
        .and_then(|t| t.parse::<Timestamp>().ok());
    match (complete, not_after) {
        (true, Some(not_after)) => {
            let rotate_at = not_after
                .checked_sub(jiff::SignedDuration::from_hours(24 * ROTATE_BEFORE_DAYS))
                .unwrap_or(not_after);
            now >= rotate_at
        }
        _ => true,
    }
}

/// The CA bundle stored in a Secret, if any.
pub fn ca_bundle(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get("ca.crt")
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// The certificate stored in a Secret written by [`secret`]; `None` when a key or the expiry
/// annotation is missing or not text.
pub fn from_secret(secret: &Secret) -> Option<ServingCertificate> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Some(ServingCertificate {
        ca_pem: text("ca.crt")?,
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
        not_after: secret
            .metadata
            .annotations
            .as_ref()?
            .get(ANNOTATION_NOT_AFTER)?
            .parse()
            .ok()?,
    })
}

/// The Secret holding `certificate`.
pub fn secret(
    name: &str,
    namespace: &str,
    certificate: &ServingCertificate,
    labels: BTreeMap<String, String>,
) -> Secret {
    let data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(certificate.cert_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(certificate.key_pem.clone().into_bytes()),
        ),
        (
            "ca.crt".to_string(),
            ByteString(certificate.ca_pem.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_NOT_AFTER.to_string(),
                certificate.not_after.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_is_pem_and_names_the_service() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let cert = generate(APP_WEBHOOK_SERVICE, "trilio-system", now).unwrap();
        assert!(cert.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(cert.ca_pem, cert.cert_pem);
        assert_eq!(cert.not_after, "2027-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(
            service_names(APP_WEBHOOK_SERVICE, "trilio-system")[0],
            "tvk-webhook.trilio-system.svc"
        );
    }

    #[test]
    fn rotation_happens_only_inside_the_window_or_when_incomplete() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let cert = generate(APP_WEBHOOK_SERVICE, "ns", now).unwrap();
        let secret = secret("s", "ns", &cert, BTreeMap::new());
        assert!(!needs_rotation(Some(&secret), now));
        let late: Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
        assert!(
            needs_rotation(Some(&secret), late),
            "inside 30 days of expiry"
        );
        let mid: Timestamp = "2026-11-30T00:00:00Z".parse().unwrap();
        assert!(!needs_rotation(Some(&secret), mid));
        assert!(needs_rotation(None, now));
        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().remove("tls.key");
        assert!(needs_rotation(Some(&broken), now));
        assert_eq!(ca_bundle(&secret).unwrap(), cert.ca_pem);
        assert_eq!(from_secret(&secret).unwrap(), cert);
        assert!(from_secret(&broken).is_none());
    }
}
