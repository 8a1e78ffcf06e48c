//! Registry credentials and the `WWW-Authenticate` challenge: where credentials come from
//! (container auth files), how a challenge is parsed, and the bearer-token request.
//!
//! Credentials and tokens are held in [`Secret`], whose `Debug` prints `<redacted>`, and never
//! reach a log line or an error message.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Deserialize;

use crate::{error::OciError, reference::DOCKER_HUB};

/// A string that must never be printed (password, token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for building a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A username and password (or identity token) for one registry or namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: Secret,
}

impl Credentials {
    /// The value of a `Basic` Authorization header.
    pub(crate) fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password.expose()))
        )
    }
}

/// Credentials keyed by registry or `registry/namespace`, looked up by longest prefix.
#[derive(Clone, Debug, Default)]
pub struct CredentialStore {
    entries: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl CredentialStore {
    /// An empty store (anonymous access everywhere).
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Loads credentials the way skopeo does: `authfile` alone when given; otherwise
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, then `~/.docker/config.json` (the first file
    /// that names a registry wins). Missing default files are fine; a given or present file
    /// that cannot be parsed is an error.
    pub fn load(authfile: Option<&Path>) -> Result<Self, OciError> {
        let mut defaults: Vec<PathBuf> = Vec::new();
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
            defaults.push(PathBuf::from(runtime).join("containers/auth.json"));
        }
        if let Some(home) = std::env::var_os("HOME") {
            defaults.push(PathBuf::from(home).join(".docker/config.json"));
        }
        Self::load_from(authfile, &defaults)
    }

    /// [`Self::load`] with the default files given: `authfile` alone when set, else each of
    /// `defaults` that exists, earlier files winning for the same key.
    pub fn load_from(authfile: Option<&Path>, defaults: &[PathBuf]) -> Result<Self, OciError> {
        let mut store = Self::default();
        if let Some(path) = authfile {
            store.merge_file(path, true)?;
            return Ok(store);
        }
        for path in defaults {
            store.merge_file(path, false)?;
        }
        Ok(store)
    }

    /// Adds credentials for `key` (`registry` or `registry/namespace/…`).
    pub fn insert(&mut self, key: &str, credentials: Credentials) {
        self.entries.insert(normalize_key(key), credentials);
    }

    fn merge_file(&mut self, path: &Path, required: bool) -> Result<(), OciError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(OciError::io("read auth file", path, e)),
        };
        let file: AuthFile = serde_json::from_str(&text).map_err(|e| OciError::AuthFile {
            path: path.to_owned(),
            reason: format!("not a valid auth file: {e}"),
        })?;
        self.merge_entries(file.auths, path)
    }

    /// Adds the credentials of a Kubernetes pull secret: the `.dockerconfigjson` of a
    /// `kubernetes.io/dockerconfigjson` Secret (`{"auths": {…}}`) or the `.dockercfg` of a
    /// legacy `kubernetes.io/dockercfg` one (the bare map). Keys already present win (pass
    /// secrets in the order they should be tried). `source` names the secret in errors.
    pub fn merge_docker_config(&mut self, text: &[u8], source: &str) -> Result<(), OciError> {
        let path = Path::new(source);
        let bad = |e: serde_json::Error| OciError::AuthFile {
            path: path.to_owned(),
            reason: format!("not a valid docker config: {e}"),
        };
        let value: serde_json::Value = serde_json::from_slice(text).map_err(bad)?;
        let auths = match value.get("auths") {
            Some(auths) => auths.clone(),
            None => value,
        };
        let entries: HashMap<String, AuthEntry> = serde_json::from_value(auths).map_err(bad)?;
        self.merge_entries(entries, path)
    }

    fn merge_entries(
        &mut self,
        auths: HashMap<String, AuthEntry>,
        path: &Path,
    ) -> Result<(), OciError> {
        let bad = |reason: String| OciError::AuthFile {
            path: path.to_owned(),
            reason,
        };
        for (key, entry) in auths {
            let credentials = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .ok_or_else(|| {
                            bad(format!(
                                "the `auth` of {key:?} is not base64 of user:password"
                            ))
                        })?;
                    let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                        bad(format!(
                            "the `auth` of {key:?} is not base64 of user:password"
                        ))
                    })?;
                    Credentials {
                        username: user.to_owned(),
                        password: Secret::new(pass),
                    }
                }
                (_, Some(username), Some(password)) => Credentials {
                    username,
                    password: Secret::new(password),
                },
                // Entries without credentials (credential helpers) are not ours to use.
                _ => continue,
            };
            self.entries
                .entry(normalize_key(&key))
                .or_insert(credentials);
        }
        Ok(())
    }

    /// The credentials for `registry/repository`: the longest key that is the registry or a
    /// path prefix of `registry/repository` on a component boundary.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Credentials> {
        let full = format!("{registry}/{repository}");
        self.entries
            .iter()
            .filter(|(key, _)| {
                full == **key || full.starts_with(&format!("{key}/")) || registry == key.as_str()
            })
            .max_by_key(|(key, _)| key.len())
            .map(|(_, c)| c)
    }

    /// Whether any credentials exist for the registry at all.
    pub fn has_registry(&self, registry: &str) -> bool {
        self.entries
            .keys()
            .any(|k| k == registry || k.starts_with(&format!("{registry}/")))
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://quay.io` → `quay.io`.
fn normalize_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    match key {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => key.to_owned(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`: send the credentials on every request.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: exchange credentials for a token per scope.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The service name to send to it.
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses the header value; `None` for schemes we do not speak.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(params);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Self::Basic),
            "bearer" => Some(Self::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
            }),
            _ => None,
        }
    }
}

/// `key="value",key2=value2` (quoted values may contain commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The token endpoint's answer (`token` per the Docker spec, `access_token` per OAuth2).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn pull_secrets_in_both_kubernetes_formats() {
        let auth = STANDARD.encode("puller:s3cret");
        let mut store = CredentialStore::anonymous();
        store
            .merge_docker_config(
                format!(r#"{{"auths":{{"reg.example.com:5000":{{"auth":"{auth}"}}}}}}"#).as_bytes(),
                "secret app/pull",
            )
            .unwrap();
        store
            .merge_docker_config(
                br#"{"https://index.docker.io/v1/":{"username":"hub","password":"pw"},
                     "reg.example.com:5000":{"username":"second","password":"x"}}"#,
                "secret app/legacy",
            )
            .unwrap();
        let c = store.lookup("reg.example.com:5000", "team/app").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("puller", "s3cret")
        );
        assert_eq!(
            store.lookup("docker.io", "library/x").unwrap().username,
            "hub"
        );
        let err = store
            .merge_docker_config(b"{not json", "secret app/broken")
            .unwrap_err();
        assert!(err.to_string().contains("secret app/broken"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn longest_prefix_wins_and_docker_hub_keys_normalise() {
        let dir = std::env::temp_dir().join(format!("tvk-oci-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.json");
        let auth = STANDARD.encode("org:orgpass");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"quay.io":{{"auth":"{auth}"}},"quay.io/team":{{"username":"team","password":"tp"}},"https://index.docker.io/v1/":{{"username":"hub","password":"hp"}},"helper.io":{{}}}}}}"#
            ),
        )
        .unwrap();
        let store = CredentialStore::load(Some(&path)).unwrap();
        assert_eq!(
            store.lookup("quay.io", "team/app").unwrap().username,
            "team"
        );
        assert_eq!(
            store.lookup("quay.io", "teamx/app").unwrap().username,
            "org"
        );
        assert_eq!(
            store
                .lookup("quay.io", "other/app")
                .unwrap()
                .password
                .expose(),
            "orgpass"
        );
        assert_eq!(
            store.lookup("docker.io", "library/x").unwrap().username,
            "hub"
        );
        assert!(store.lookup("helper.io", "x").is_none());
        assert!(store.lookup("ghcr.io", "x").is_none());
        assert!(!format!("{:?}", store.lookup("quay.io", "x")).contains("orgpass"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_files_are_merged_in_order_and_missing_ones_are_fine() {
        let dir =
            std::env::temp_dir().join(format!("tvk-oci-auth-defaults-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("containers")).unwrap();
        std::fs::create_dir_all(dir.join(".docker")).unwrap();
        let podman = dir.join("containers/auth.json");
        let docker = dir.join(".docker/config.json");
        std::fs::write(
            &podman,
            r#"{"auths":{"quay.io":{"username":"podman","password":"p"}}}"#,
        )
        .unwrap();
        std::fs::write(
            &docker,
            r#"{"auths":{"quay.io":{"username":"docker","password":"d"},"ghcr.io":{"username":"gh","password":"g"}}}"#,
        )
        .unwrap();
        let missing = dir.join("nope/auth.json");
        let store =
            CredentialStore::load_from(None, &[missing, podman.clone(), docker.clone()]).unwrap();
        assert_eq!(store.lookup("quay.io", "a/b").unwrap().username, "podman");
        assert_eq!(store.lookup("ghcr.io", "a").unwrap().username, "gh");
        // --authfile replaces the defaults entirely.
        let only = CredentialStore::load_from(Some(&docker), &[podman]).unwrap();
        assert_eq!(only.lookup("quay.io", "a/b").unwrap().username, "docker");
        assert!(CredentialStore::load_from(Some(&dir.join("missing.json")), &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unparsable_auth_file_names_the_file_not_the_secret() {
        let dir = std::env::temp_dir().join(format!("tvk-oci-auth-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.json");
        std::fs::write(
            &path,
            r#"{"auths":{"quay.io":{"auth":"s3cr3t-not-base64!"}}}"#,
        )
        .unwrap();
        let err = CredentialStore::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("auth.json"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
