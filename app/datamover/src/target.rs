//! Backup targets: a filesystem path (an NFS share mounted into the Job) and S3-compatible
//! object storage, behind one interface and with one layout:
//! `<prefix>/<backupplan>/<backup>/<volume>/{data.qcow2,index,manifest.json}`.
//!
//! - Filesystem: objects are written as `<name>.partial`, fsynced and renamed into place;
//!   create-only writes (manifests) use `link(2)`, which fails if the name exists — atomic on
//!   local filesystems and NFS.
//! - S3 (`object_store`'s `AmazonS3`): images and indexes stream as multipart uploads with
//!   explicit part numbers (part 1 = the header cluster + first bytes, uploaded last) and up
//!   to [`PARTS_IN_FLIGHT`] parts in flight; objects smaller than one part are one PUT.
//!   Failed uploads are aborted. Reads are range GETs. Retries (5xx, SlowDown, timeouts) use
//!   object_store's jittered exponential backoff with a bounded budget. Manifests are PUT with
//!   `If-None-Match: *` (`PutMode::Create`).
//! - Credentials come only from the environment or a Secret-mounted file; every error message
//!   passes through [`redact`] so no key, signature or query string is ever printed.

use std::{
    collections::VecDeque,
    io::Read,
    path::{Path as FsPath, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{
    ClientOptions, MultipartId, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, aws::AmazonS3, aws::AmazonS3Builder, multipart::MultipartStore, multipart::PartId,
    path::Path as ObjPath,
};
use tokio::{runtime::Handle, task::JoinHandle};

use crate::{
    error::{Error, ErrorKind, Result},
    object_io::{
        LocalFileSink, LocalObject, ObjectSink, RandomRead, partial_path, sync_parent_dir,
    },
};

/// Size of one multipart part (S3 needs ≥ 5 MiB except for the last).
pub const PART_BYTES: usize = 16 << 20;
/// Parts uploaded concurrently.
pub const PARTS_IN_FLIGHT: usize = 4;

/// How to reach S3.
#[derive(Clone, Default)]
pub struct S3Config {
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// Endpoint URL (S3-compatible stores, moto); `None` = AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Accept any TLS certificate (self-signed test endpoints only).
    pub skip_tls_verify: bool,
    /// PEM CA bundle to trust in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Access key id (from env or a Secret file; never logged).
    pub access_key_id: String,
    /// Secret access key (never logged).
    pub secret_access_key: String,
    /// Session token, if any.
    pub session_token: Option<String>,
    /// Retry budget: total time for one request's retries.
    pub retry_timeout: Duration,
    /// Retry budget: attempts.
    pub max_retries: usize,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

impl S3Config {
    /// Reads credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`, or from a Secret-mounted file (`key=value` lines with those names,
    /// or the `aws_access_key_id` / `aws_secret_access_key` of an AWS credentials file).
    pub fn load_credentials(&mut self, file: Option<&FsPath>) -> Result<()> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io("read credentials file", path.display(), e))?;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                let v = v.trim().to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "aws_access_key_id" | "accesskey" | "access_key_id" => self.access_key_id = v,
                    "aws_secret_access_key" | "secretkey" | "secret_access_key" => {
                        self.secret_access_key = v
                    }
                    "aws_session_token" | "session_token" => self.session_token = Some(v),
                    _ => {}
                }
            }
        } else {
            self.access_key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
            self.secret_access_key = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
            self.session_token = std::env::var("AWS_SESSION_TOKEN").ok();
        }
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            return Err(Error::Usage(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or pass --s3-credentials-file".into(),
            ));
        }
        Ok(())
    }
}

/// Replaces anything that looks like a credential, signature or query string.
pub fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "<redacted>");
        }
    }
    // Query strings (presigned URLs, X-Amz-Signature, …).
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find('?') {
        // `<?xml` and `?>` in error bodies are not query strings.
        if rest[..i].ends_with('<') || rest[i + 1..].starts_with('>') {
            cleaned.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            continue;
        }
        cleaned.push_str(&rest[..i]);
        cleaned.push_str("?<redacted>");
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == ')')
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    cleaned.push_str(rest);
    for marker in ["Signature=", "Credential=", "X-Amz-Security-Token="] {
        while let Some(i) = cleaned.find(marker) {
            let start = i + marker.len();
            let end = cleaned[start..]
                .find(|c: char| c == ',' || c.is_whitespace() || c == '&')
                .map_or(cleaned.len(), |e| start + e);
            cleaned.replace_range(i..end, "<redacted>");
        }
    }
    cleaned
}

/// A backup target.
#[derive(Clone)]
pub struct Target {
    inner: Arc<TargetKind>,
}

enum TargetKind {
    Filesystem {
        root: PathBuf,
    },
    S3 {
        store: Arc<AmazonS3>,
        prefix: String,
        handle: Handle,
        secrets: Vec<String>,
        bucket: String,
        /// Signed requests object_store has no call for (GetObjectLockConfiguration).
        raw: Arc<RawS3>,
    },
}

/// What a hand-built S3 request needs: an HTTP client with the store's TLS, timeout and
/// proxy settings (object_store's own connector, without the upload headers) and the
/// bucket's URL, path-style like the store's requests.
struct RawS3 {
    http: object_store::client::HttpClient,
    bucket_url: String,
    region: String,
}

/// Where GetObjectLockConfiguration answered.
enum LockAnswer {
    /// 2xx with this body.
    Ok(String),
    /// Another status, with the S3 error code of the body when there is one.
    Status(u16, Option<String>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            TargetKind::Filesystem { root } => write!(f, "Target({})", root.display()),
            TargetKind::S3 { bucket, prefix, .. } => write!(f, "Target(s3://{bucket}/{prefix})"),
        }
    }
}

impl Target {
    /// A filesystem target rooted at `root` (must exist).
    pub fn filesystem(root: &FsPath) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::Usage(format!(
                "target {} is not a directory (mount the NFS share there first)",
                root.display()
            )));
        }
        Ok(Self {
            inner: Arc::new(TargetKind::Filesystem {
                root: root.to_path_buf(),
            }),
        })
    }

    /// An S3 target; S3 calls run on `handle` (call the target from outside the runtime).
    pub fn s3(cfg: &S3Config, handle: Handle) -> Result<Self> {
        // The S3 client's rustls has no provider of its own (workspace Cargo.toml): ring is the
        // only one in release builds and rustls picks it, but test builds also link aws-lc-rs
        // (through kube-fake-client), where nothing would be picked. Naming ring here serves
        // every caller of the library; a provider already installed is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Buckets with S3 Object Lock refuse uploads without an integrity header ("Content-MD5
        // or x-amz-sdk-checksum-algorithm header required", MissingUploadObjectWithObjectLockHeaders):
        // every upload carries its SHA-256 (`x-amz-checksum-sha256`, already computed to sign
        // the payload) and names the algorithm; object_store signs default headers.
        let mut headers = object_store::HeaderMap::new();
        headers.insert(
            "x-amz-sdk-checksum-algorithm",
            object_store::HeaderValue::from_static("SHA256"),
        );
        let mut client = ClientOptions::new()
            .with_allow_http(
                cfg.endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            )
            .with_allow_invalid_certificates(cfg.skip_tls_verify)
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::io("read CA file", ca.display(), e))?;
            for cert in object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Usage(format!("CA file {} is not PEM: {e}", ca.display())))?
            {
                client = client.with_root_certificate(cert);
            }
        }
        let mut retry = RetryConfig::default();
        if cfg.max_retries > 0 {
            retry.max_retries = cfg.max_retries;
        }
        if !cfg.retry_timeout.is_zero() {
            retry.retry_timeout = cfg.retry_timeout;
        }
        let secrets = vec![
            cfg.access_key_id.clone(),
            cfg.secret_access_key.clone(),
            cfg.session_token.clone().unwrap_or_default(),
        ];
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let invalid = |e: object_store::Error| {
            Error::Usage(format!(
                "invalid S3 target configuration: {}",
                redact(&e.to_string(), &refs)
            ))
        };
        // The same client settings for the requests object_store has no call for; without
        // the upload headers, which such requests do not sign.
        let raw = RawS3 {
            http: object_store::client::HttpConnector::connect(
                &object_store::client::ReqwestConnector::default(),
                &client,
            )
            .map_err(invalid)?,
            bucket_url: match &cfg.endpoint {
                Some(ep) => format!("{}/{}", ep.trim_end_matches('/'), cfg.bucket),
                None => format!("https://s3.{}.amazonaws.com/{}", cfg.region, cfg.bucket),
            },
            region: cfg.region.clone(),
        };
        let client = client.with_default_headers(headers);
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
            .with_client_options(client)
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            // One `DELETE /key` per object (we never delete in bulk): part of the core API of
            // every S3-compatible store, and a refusal (Object Lock → 403 AccessDenied) comes
            // back as that object's HTTP status instead of inside a 200 batch answer.
            .with_config(
                object_store::aws::AmazonS3ConfigKey::DisableBulkDelete,
                "true",
            )
            .with_retry(retry);
        if let Some(t) = &cfg.session_token {
            b = b.with_token(t);
        }
        if let Some(ep) = &cfg.endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(invalid)?;
        Ok(Self {
            inner: Arc::new(TargetKind::S3 {
                store: Arc::new(store),
                prefix: cfg.prefix.trim_matches('/').to_string(),
                handle,
                secrets,
                bucket: cfg.bucket.clone(),
                raw: Arc::new(raw),
            }),
        })
    }

    /// The target as an async object store and the key prefix inside it, for async callers
    /// that need none of the QCOW2 machinery (the image store of `tvk_oci::store`): an S3
    /// target hands out its client; a filesystem (NFS) target a `LocalFileSystem` rooted at
    /// the share, with fsync on (the durability an S3 `PUT` gives).
    pub fn object_store(&self) -> Result<(Arc<dyn ObjectStore>, String)> {
        match &*self.inner {
            TargetKind::Filesystem { root } => {
                let store = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| {
                        Error::Usage(format!("target {} cannot be opened: {e}", root.display()))
                    })?
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                Ok((Arc::new(store), String::new()))
            }
            TargetKind::S3 { store, prefix, .. } => {
                Ok((store.clone() as Arc<dyn ObjectStore>, prefix.clone()))
            }
        }
    }

    /// How messages name the target (`/mnt/target`, `s3://bucket/prefix`), no credentials.
    pub fn display_name(&self) -> String {
        match &*self.inner {
            TargetKind::Filesystem { root } => root.display().to_string(),
            TargetKind::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            TargetKind::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    fn fs_path(root: &FsPath, key: &str) -> PathBuf {
        root.join(key)
    }

    fn s3_key(prefix: &str, key: &str) -> ObjPath {
        if prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{prefix}/{key}"))
        }
    }

    /// Starts a write-once object written as a stream; `reserved` head bytes come last.
    pub fn create_sink(&self, key: &str, reserved: usize) -> Result<Box<dyn ObjectSink>> {
        match &*self.inner {
            TargetKind::Filesystem { root } => {
                let p = Self::fs_path(root, key);
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io("create directory", dir.display(), e))?;
                }
                Ok(Box::new(LocalFileSink::create(&p, reserved, true)?))
            }
            TargetKind::S3 {
                store,
                prefix,
                handle,
                secrets,
                ..
            } => Ok(Box::new(S3Sink {
                store: store.clone(),
                path: Self::s3_key(prefix, key),
                key: key.to_string(),
                handle: handle.clone(),
                secrets: secrets.clone(),
                reserved,
                first: Vec::new(),
                current: Vec::new(),
                current_len: 0,
                upload: None,
                next_part: 1,
                in_flight: VecDeque::new(),
                done: Vec::new(),
            })),
        }
    }

    /// Opens an object for positioned reads.
    pub fn open_read(&self, key: &str) -> Result<Arc<dyn RandomRead>> {
        match &*self.inner {
            TargetKind::Filesystem { root } => {
                let p = Self::fs_path(root, key);
                if !p.is_file() {
                    return Err(Error::MissingObject {
                        backup: String::new(),
                        object: key.to_string(),
                    });
                }
                Ok(Arc::new(LocalObject::open(&p)?))
            }
            TargetKind::S3 {
                store,
                prefix,
                handle,
                secrets,
                ..
            } => {
                let path = Self::s3_key(prefix, key);
                let meta = handle
                    .block_on(store.head(&path))
                    .map_err(|e| s3_error("stat", key, e, secrets))?;
                Ok(Arc::new(S3Object {
                    store: store.clone(),
                    path,
                    key: key.to_string(),
                    len: meta.size,
                    handle: handle.clone(),
                    secrets: secrets.clone(),
                }))
            }
        }
    }

    /// A sequential reader of an object (indexes), fetched in large ranges.
    pub fn open_stream(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let obj = self.open_read(key)?;
        Ok(Box::new(SequentialReader {
            obj,
            pos: 0,
            buf: Bytes::new(),
        }))
    }

    /// Reads a whole (small) object.
    pub fn read_all(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        let obj = self.open_read(key)?;
        if obj.len() > limit {
            return Err(Error::Usage(format!(
                "{key} is {} bytes, more than the {limit} allowed",
                obj.len()
            )));
        }
        let mut v = vec![0u8; obj.len() as usize];
        obj.read_exact_at(0, &mut v)?;
        Ok(v)
    }

    /// Writes `data` at `key` only if nothing is there (commit point of a backup).
    pub fn put_create_only(&self, key: &str, data: Bytes) -> Result<()> {
        match &*self.inner {
            TargetKind::Filesystem { root } => {
                let p = Self::fs_path(root, key);
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io("create directory", dir.display(), e))?;
                }
                let tmp = partial_path(&p);
                std::fs::write(&tmp, &data).map_err(|e| Error::io("write", tmp.display(), e))?;
                std::fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io("fsync", tmp.display(), e))?;
                let linked = std::fs::hard_link(&tmp, &p);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => sync_parent_dir(&p),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Err(Error::AlreadyExists {
                            object: key.to_string(),
                        })
                    }
                    Err(e) => Err(Error::io("commit", p.display(), e)),
                }
            }
            TargetKind::S3 {
                store,
                prefix,
                handle,
                secrets,
                ..
            } => {
                let path = Self::s3_key(prefix, key);
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match handle.block_on(store.put_opts(&path, PutPayload::from(data), opts)) {
                    Ok(_) => Ok(()),
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => Err(Error::AlreadyExists {
                        object: key.to_string(),
                    }),
                    Err(e) => Err(s3_error("commit", key, e, secrets)),
                }
            }
        }
    }

    /// Keys under `prefix` (a directory-like key ending without `/`), recursively.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match &*self.inner {
            TargetKind::Filesystem { root } => {
                let mut out = Vec::new();
                let base = Self::fs_path(root, prefix);
                let mut stack = vec![base];
                while let Some(dir) = stack.pop() {
                    let rd = match std::fs::read_dir(&dir) {
                        Ok(rd) => rd,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io("list", dir.display(), e)),
                    };
                    for entry in rd {
                        let entry = entry.map_err(|e| Error::io("list", dir.display(), e))?;
                        let p = entry.path();
                        let ft = entry
                            .file_type()
                            .map_err(|e| Error::io("stat", p.display(), e))?;
                        if ft.is_dir() {
                            stack.push(p);
                        } else if ft.is_file()
                            && let Ok(rel) = p.strip_prefix(root)
                            && let Some(s) = rel.to_str()
                        {
                            out.push(s.to_string());
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
            TargetKind::S3 {
                store,
                prefix: root,
                handle,
                secrets,
                ..
            } => {
                let p = Self::s3_key(root, prefix);
                let metas: Vec<_> = handle
                    .block_on(store.list(Some(&p)).try_collect::<Vec<_>>())
                    .map_err(|e| s3_error("list", prefix, e, secrets))?;
                let strip = if root.is_empty() {
                    String::new()
                } else {
                    format!("{root}/")
                };
                let mut out: Vec<String> = metas
                    .into_iter()
                    .map(|m| {
                        let s = m.location.to_string();
                        s.strip_prefix(&strip).unwrap_or(&s).to_string()
                    })
                    .collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// Deletes an object (absent is fine: deletes are idempotent).
    pub fn delete(&self, key: &str) -> Result<()> {
        match &*self.inner {
            TargetKind::Filesystem { root } => {
                let p = Self::fs_path(root, key);
                match std::fs::remove_file(&p) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    // EPERM/EACCES: an immutable file or a WORM (SnapLock-style) share.
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        Err(Error::ObjectLocked {
                            object: key.to_string(),
                            message: e.to_string(),
                        })
                    }
                    Err(e) => Err(Error::io("delete", p.display(), e)),
                }
            }
            TargetKind::S3 {
                store,
                prefix,
                handle,
                secrets,
                ..
            } => match handle.block_on(store.delete(&Self::s3_key(prefix, key))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                // 403 AccessDenied on DELETE: Object Lock (retention, legal hold) or a policy
                // that forbids deletes. Any other 403 cause (clock skew) keeps its own error.
                Err(e @ object_store::Error::PermissionDenied { .. })
                    if !e.to_string().contains("RequestTimeTooSkewed") =>
                {
                    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
                    Err(Error::ObjectLocked {
                        object: key.to_string(),
                        message: redact(&e.to_string(), &refs),
                    })
                }
                Err(e) => Err(s3_error("delete", key, e, secrets)),
            },
        }
    }

    /// Fails with kind [`ErrorKind::ObjectLock`] unless the bucket has S3 Object Lock enabled
    /// ([`Self::object_lock_enabled`]): a Target that promises immutable backups must not
    /// silently store them in a bucket that cannot keep that promise.
    pub fn verify_object_lock(&self) -> Result<()> {
        if self.object_lock_enabled()? {
            return Ok(());
        }
        let bucket = match &*self.inner {
            TargetKind::S3 { bucket, .. } => bucket.as_str(),
            TargetKind::Filesystem { .. } => "",
        };
        Err(Error::Target {
            kind: ErrorKind::ObjectLock,
            action: "verify Object Lock of",
            object: format!("bucket {bucket}"),
            message: "the bucket has no Object Lock configuration (GetObjectLockConfiguration answered ObjectLockConfigurationNotFoundError, or Disabled), so backups written to it would not be immutable; create the bucket with Object Lock enabled, or do not require it".into(),
        })
    }

    /// Whether the bucket has S3 Object Lock enabled: a GetObjectLockConfiguration request
    /// (`GET /<bucket>?object-lock`), which object_store has no call for, signed with the
    /// target's credentials by object_store's own SigV4 signer (`AwsAuthorizer`) and sent with
    /// the store's client settings (TLS, timeouts, proxies). `false` when the bucket answers
    /// `ObjectLockConfigurationNotFoundError` or reports the configuration disabled; any other
    /// failure is classified like every object store error. A filesystem target has no such
    /// setting to ask about (a WORM share is not detectable from here): a usage error.
    pub fn object_lock_enabled(&self) -> Result<bool> {
        match &*self.inner {
            TargetKind::Filesystem { root } => Err(Error::Usage(format!(
                "target {} is a filesystem path: Object Lock is a setting of S3 buckets and cannot be verified on a share",
                root.display()
            ))),
            TargetKind::S3 {
                store,
                handle,
                secrets,
                bucket,
                raw,
                ..
            } => {
                let object = format!("bucket {bucket}");
                let action = "read the Object Lock configuration of";
                match handle.block_on(get_object_lock_configuration(store, raw)) {
                    Ok(LockAnswer::Ok(body)) => Ok(body.contains("<ObjectLockEnabled>Enabled<")),
                    Ok(LockAnswer::Status(_, Some(code)))
                        if code == "ObjectLockConfigurationNotFoundError" =>
                    {
                        Ok(false)
                    }
                    Ok(LockAnswer::Status(status, code)) => {
                        let kind = code
                            .as_deref()
                            .and_then(kind_of_s3_code)
                            .unwrap_or_else(|| kind_of_status(status, ErrorKind::TargetRefused));
                        let message = format!(
                            "GetObjectLockConfiguration answered HTTP {status}{}",
                            code.map(|c| format!(" {c}")).unwrap_or_default()
                        );
                        Err(Error::Target {
                            kind,
                            action,
                            object,
                            message,
                        })
                    }
                    Err(e) => Err(s3_error(action, &object, e, secrets)),
                }
            }
        }
    }
}

/// `e` and its sources, joined: object_store's own message stops at "error sending request"
/// and the cause (a refused certificate, a reset connection) is only in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = c.source();
    }
    text
}

/// Sends a signed GetObjectLockConfiguration request.
async fn get_object_lock_configuration(
    store: &AmazonS3,
    raw: &RawS3,
) -> std::result::Result<LockAnswer, object_store::Error> {
    let generic = |e: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
        store: "S3",
        source: e,
    };
    let credential = store.credentials().get_credential().await?;
    let mut request =
        object_store::client::HttpRequest::new(object_store::client::HttpRequestBody::empty());
    *request.uri_mut() = format!("{}?object-lock", raw.bucket_url)
        .parse()
        .map_err(|e| generic(Box::new(e)))?;
    object_store::aws::AwsAuthorizer::new(&credential, "s3", &raw.region)
        .try_authorize(&mut request, None)?;
    let response = raw
        .http
        .execute(request)
        .await
        .map_err(|e| generic(Box::new(e)))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .bytes()
        .await
        .map_err(|e| generic(Box::new(e)))?;
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(if (200..300).contains(&status) {
        LockAnswer::Ok(body)
    } else {
        LockAnswer::Status(status, s3_error_code(&body).map(str::to_string))
    })
}

fn s3_error(action: &'static str, key: &str, e: object_store::Error, secrets: &[String]) -> Error {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let message = redact(&error_chain(&e), &refs);
    let kind = s3_error_kind(&e);
    let object = key.to_string();
    match kind {
        ErrorKind::ClockSkew => Error::ClockSkew { action, object },
        ErrorKind::Tls if has_certificate_error(&e) => Error::TlsUntrusted {
            action,
            object,
            message,
        },
        ErrorKind::NotFound => Error::MissingObject {
            backup: String::new(),
            object,
        },
        ErrorKind::AlreadyExists => Error::AlreadyExists { object },
        ErrorKind::TargetUnavailable => Error::TargetUnavailable {
            action,
            object,
            message,
        },
        _ => Error::Target {
            kind,
            action,
            object,
            message,
        },
    }
}

/// The `<Code>` of an S3 error response body (`<Error><Code>NoSuchBucket</Code>…`).
fn s3_error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(body[start..start + len].trim())
}

/// Whether a rustls certificate error is in `e`'s source chain (an untrusted or invalid
/// certificate, as opposed to a handshake with something that does not speak TLS).
fn has_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_),
        ) = as_rustls(c)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The innermost `io::Error` of nested ones (`io::Error::source` skips the wrapped error).
fn innermost_io(mut e: &std::io::Error) -> &std::io::Error {
    while let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<std::io::Error>()) {
        e = inner;
    }
    e
}

/// `e` as a rustls error: directly, or wrapped in (nested) `io::Error`s, as the TLS stream
/// and the HTTP client pass it on.
fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>().or_else(|| {
        let io = innermost_io(e.downcast_ref::<std::io::Error>()?);
        io.get_ref()?.downcast_ref::<rustls::Error>()
    })
}

/// Classifies an object store failure by walking its `source()` chain: object_store's own
/// variants (404, 401, 403, 412 / 409), a rustls error (TLS), an `io::Error` (refused, reset,
/// timed out) and the HTTP client's error kind (`HttpError`: connect, timeout) are typed. Two
/// causes have no public typed source: the S3 error `<Code>` and the status of a failed
/// response (object_store keeps its `RetryError` private; they are read from its message),
/// and DNS failures (hyper-util's resolver error is private: recognised by its message).
/// The one classifier of object store errors: the datamover's exit codes and result lines
/// and the Target controller's condition reasons all use it.
pub fn s3_error_kind(e: &object_store::Error) -> ErrorKind {
    match e {
        object_store::Error::NotFound { .. } => return kind_of_chain(e, ErrorKind::NotFound),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            return ErrorKind::AlreadyExists;
        }
        object_store::Error::Unauthenticated { .. } => return kind_of_chain(e, ErrorKind::Auth),
        object_store::Error::PermissionDenied { .. } => {
            return kind_of_chain(e, ErrorKind::Permission);
        }
        object_store::Error::InvalidPath { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => {
            return ErrorKind::TargetRefused;
        }
        _ => {}
    }
    kind_of_chain(e, ErrorKind::TargetUnavailable)
}

/// The most specific kind found in `e`'s source chain, else `fallback`.
fn kind_of_chain(e: &(dyn std::error::Error + 'static), fallback: ErrorKind) -> ErrorKind {
    use object_store::client::HttpErrorKind;
    let mut http: Option<HttpErrorKind> = None;
    let mut io: Option<ErrorKind> = None;
    let mut tls = false;
    let mut dns = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<object_store::client::HttpError>() {
            http.get_or_insert(h.kind());
        } else if as_rustls(c).is_some() {
            tls = true;
        } else if let Some(i) = c.downcast_ref::<std::io::Error>() {
            io.get_or_insert(ErrorKind::from_io(innermost_io(i)));
        } else {
            let text = c.to_string();
            // object_store's RetryError (the response's status and body) is private to the
            // crate: its message "Server returned non-2xx status code: 503 Service
            // Unavailable: <Error><Code>SlowDown</Code>…" is the only way to them.
            if let Some(kind) = s3_error_code(&text).and_then(kind_of_s3_code) {
                return kind;
            }
            if let Some(status) = response_status(&text) {
                return kind_of_status(status, fallback);
            }
            // hyper-util: ConnectError("dns error", <resolver error>); hickory: "no record
            // found" / "failed to lookup address". No typed source exists for these.
            if text.starts_with("dns error") || text.contains("failed to lookup address") {
                dns = true;
            }
        }
        cur = c.source();
    }
    if tls {
        ErrorKind::Tls
    } else if dns {
        ErrorKind::Dns
    } else if let Some(k) = io.filter(|k| *k != ErrorKind::LocalIo) {
        k
    } else {
        match http {
            Some(HttpErrorKind::Connect) => ErrorKind::Connect,
            Some(HttpErrorKind::Timeout) => ErrorKind::Timeout,
            Some(HttpErrorKind::Interrupted) | Some(HttpErrorKind::Request) => {
                ErrorKind::TargetUnavailable
            }
            _ => fallback,
        }
    }
}

/// The HTTP status in object_store's message of a failed response ("… status code: 503 …").
fn response_status(text: &str) -> Option<u16> {
    let start = text.find("status code: ")? + "status code: ".len();
    let digits = text.get(start..start + 3)?;
    digits.parse().ok().filter(|s| (100..600).contains(s))
}

/// Kinds of the S3 error codes that say more than their HTTP status.
fn kind_of_s3_code(code: &str) -> Option<ErrorKind> {
    Some(match code {
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidToken"
        | "ExpiredToken"
        | "TokenRefreshRequired"
        | "InvalidSecurity" => ErrorKind::Auth,
        "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => ErrorKind::Permission,
        "NoSuchBucket" => ErrorKind::BucketMissing,
        "NoSuchKey" | "NoSuchUpload" => ErrorKind::NotFound,
        "SlowDown"
        | "RequestLimitExceeded"
        | "ServiceUnavailable"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequests" => ErrorKind::Throttled,
        "RequestTimeout" => ErrorKind::Timeout,
        "InternalError" => ErrorKind::Server,
        "RequestTimeTooSkewed" => ErrorKind::ClockSkew,
        "ObjectLockConfigurationNotFoundError" | "InvalidRetentionPeriod" => ErrorKind::ObjectLock,
        "PreconditionFailed" => ErrorKind::AlreadyExists,
        _ => return None,
    })
}

/// Kind of an HTTP status without a recognised S3 code.
fn kind_of_status(status: u16, fallback: ErrorKind) -> ErrorKind {
    match status {
        401 => ErrorKind::Auth,
        403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        409 | 412 => ErrorKind::AlreadyExists,
        429 | 503 => ErrorKind::Throttled,
        500..=599 => ErrorKind::Server,
        400..=499 => ErrorKind::TargetRefused,
        _ => fallback,
    }
}

/// An S3 object read by range GETs.
struct S3Object {
    store: Arc<AmazonS3>,
    path: ObjPath,
    key: String,
    len: u64,
    handle: Handle,
    secrets: Vec<String>,
}

impl RandomRead for S3Object {
    fn name(&self) -> &str {
        &self.key
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                Error::io(
                    "read",
                    &self.key,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "range beyond the end of the object; the object is truncated",
                    ),
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let bytes = self
            .handle
            .block_on(self.store.get_range(&self.path, offset..end))
            .map_err(|e| s3_error("read", &self.key, e, &self.secrets))?;
        if bytes.len() != buf.len() {
            return Err(Error::TargetUnavailable {
                action: "read",
                object: self.key.clone(),
                message: format!("short range read: {} of {} bytes", bytes.len(), buf.len()),
            });
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }
}

/// Sequential `Read` over a [`RandomRead`] in 8 MiB ranges.
struct SequentialReader {
    obj: Arc<dyn RandomRead>,
    pos: u64,
    buf: Bytes,
}

impl Read for SequentialReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            let left = self.obj.len().saturating_sub(self.pos);
            if left == 0 {
                return Ok(0);
            }
            let n = left.min(8 << 20) as usize;
            let mut v = vec![0u8; n];
            self.obj
                .read_exact_at(self.pos, &mut v)
                .map_err(std::io::Error::other)?;
            self.pos += n as u64;
            self.buf = Bytes::from(v);
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// Streams an object to S3: part 1 (head + first bytes) is held and uploaded last, the rest
/// as numbered parts with several in flight. Small objects become a single PUT.
struct S3Sink {
    store: Arc<AmazonS3>,
    path: ObjPath,
    key: String,
    handle: Handle,
    secrets: Vec<String>,
    reserved: usize,
    /// Stream bytes that belong to part 1 (after the reserved head).
    first: Vec<Bytes>,
    current: Vec<Bytes>,
    current_len: usize,
    upload: Option<MultipartId>,
    next_part: usize,
    in_flight: VecDeque<(usize, JoinHandle<object_store::Result<PartId>>)>,
    done: Vec<(usize, PartId)>,
}

impl S3Sink {
    fn first_len(&self) -> usize {
        self.first.iter().map(Bytes::len).sum()
    }

    fn err(&self, action: &'static str, e: object_store::Error) -> Error {
        s3_error(action, &self.key, e, &self.secrets)
    }

    fn send_part(&mut self, parts: Vec<Bytes>) -> Result<()> {
        if self.upload.is_none() {
            let id = self
                .handle
                .block_on(self.store.create_multipart(&self.path))
                .map_err(|e| self.err("start upload of", e))?;
            self.upload = Some(id);
        }
        let Some(id) = self.upload.clone() else {
            return Err(Error::Usage("internal error: no multipart id".into()));
        };
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let idx = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let path = self.path.clone();
        let payload = PutPayload::from_iter(parts);
        let task = self
            .handle
            .spawn(async move { store.put_part(&path, &id, idx, payload).await });
        self.in_flight.push_back((idx, task));
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<()> {
        if let Some((idx, task)) = self.in_flight.pop_front() {
            let part = self
                .handle
                .block_on(task)
                .map_err(|e| Error::TargetUnavailable {
                    action: "upload part of",
                    object: self.key.clone(),
                    message: e.to_string(),
                })?
                .map_err(|e| self.err("upload part of", e))?;
            self.done.push((idx, part));
        }
        Ok(())
    }

    fn abort_upload(&mut self) {
        for (_, t) in self.in_flight.drain(..) {
            t.abort();
        }
        if let Some(id) = self.upload.take() {
            let _ = self
                .handle
                .block_on(self.store.abort_multipart(&self.path, &id));
        }
    }

    fn finish_inner(&mut self, head: Bytes) -> Result<u64> {
        let mut part0 = vec![head];
        part0.append(&mut self.first);
        if self.upload.is_none() {
            // Everything fits in one part: a single PUT.
            part0.append(&mut self.current);
            let total: usize = part0.iter().map(Bytes::len).sum();
            self.handle
                .block_on(self.store.put(&self.path, PutPayload::from_iter(part0)))
                .map_err(|e| self.err("upload", e))?;
            return Ok(total as u64);
        }
        if self.current_len > 0 {
            let cur = std::mem::take(&mut self.current);
            self.current_len = 0;
            self.send_part(cur)?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let Some(id) = self.upload.clone() else {
            return Err(Error::Usage("internal error: no multipart id".into()));
        };
        let p0 = self
            .handle
            .block_on(
                self.store
                    .put_part(&self.path, &id, 0, PutPayload::from_iter(part0)),
            )
            .map_err(|e| self.err("upload part of", e))?;
        self.done.push((0, p0));
        self.done.sort_by_key(|(i, _)| *i);
        let parts: Vec<PartId> = self.done.drain(..).map(|(_, p)| p).collect();
        self.handle
            .block_on(self.store.complete_multipart(&self.path, &id, parts))
            .map_err(|e| self.err("complete upload of", e))?;
        self.upload = None;
        let meta = self
            .handle
            .block_on(self.store.head(&self.path))
            .map_err(|e| self.err("stat", e))?;
        Ok(meta.size)
    }
}

impl ObjectSink for S3Sink {
    fn append(&mut self, data: Bytes) -> Result<()> {
        let part1_room = PART_BYTES.saturating_sub(self.reserved);
        let mut data = data;
        let have = self.first_len();
        if have < part1_room {
            let take = (part1_room - have).min(data.len());
            self.first.push(data.split_to(take));
        }
        if data.is_empty() {
            return Ok(());
        }
        self.current_len += data.len();
        self.current.push(data);
        if self.current_len >= PART_BYTES {
            let cur = std::mem::take(&mut self.current);
            self.current_len = 0;
            if let Err(e) = self.send_part(cur) {
                self.abort_upload();
                return Err(e);
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, head: Bytes) -> Result<u64> {
        if head.len() != self.reserved {
            self.abort_upload();
            return Err(Error::Usage("internal error: head length".into()));
        }
        match self.finish_inner(head) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.abort_upload();
                Err(e)
            }
        }
    }

    fn abort(mut self: Box<Self>) {
        self.abort_upload();
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_secrets_query_strings_and_signatures() {
        let m = redact(
            "GET http://h/b/k?X-Amz-Signature=abc123&X-Amz-Credential=AKIDEXAMPLE failed: key AKIDEXAMPLE \
             secret s3cr3tvalue; Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2026, \
             Signature=deadbeef body <?xml version=\"1.0\"?><Error/>",
            &["AKIDEXAMPLE", "s3cr3tvalue"],
        );
        for secret in ["AKIDEXAMPLE", "s3cr3tvalue", "deadbeef", "abc123"] {
            assert!(!m.contains(secret), "{secret} leaked: {m}");
        }
        assert!(m.contains("<?xml version"), "XML bodies stay readable: {m}");
    }
}
