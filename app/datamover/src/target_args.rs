//! The command-line description of a backup target, shared by every binary that reaches one
//! (the datamover, the metamover, the control plane's Jobs): one set of flags, one parser.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    error::{Error, Result},
    target::{S3Config, Target},
};

/// `--target` and the `--s3-*` flags, as a `clap` argument group to `#[command(flatten)]`.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// `/path` (a mounted NFS share) or `s3://bucket[/prefix]`.
    #[arg(long)]
    pub target: String,
    /// S3 endpoint URL (S3-compatible stores).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, default_value = "us-east-1")]
    pub s3_region: String,
    /// Accept any TLS certificate (test endpoints only).
    #[arg(long)]
    pub s3_skip_tls_verify: bool,
    /// PEM CA bundle to trust.
    #[arg(long)]
    pub s3_ca_file: Option<PathBuf>,
    /// Secret-mounted credentials file (else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    pub s3_credentials_file: Option<PathBuf>,
    /// Retry budget per request, seconds.
    #[arg(long, default_value_t = 180)]
    pub s3_retry_timeout_secs: u64,
    /// Retry budget per request, attempts.
    #[arg(long, default_value_t = 10)]
    pub s3_max_retries: usize,
}

impl TargetArgs {
    pub fn open(&self, handle: tokio::runtime::Handle) -> Result<Target> {
        if let Some(rest) = self.target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Usage("--target s3:// needs a bucket".into()));
            }
            let mut cfg = S3Config {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                skip_tls_verify: self.s3_skip_tls_verify,
                ca_file: self.s3_ca_file.clone(),
                retry_timeout: Duration::from_secs(self.s3_retry_timeout_secs),
                max_retries: self.s3_max_retries,
                ..Default::default()
            };
            cfg.load_credentials(self.s3_credentials_file.as_deref())?;
            Target::s3(&cfg, handle)
        } else if self.target.starts_with('/') {
            Target::filesystem(Path::new(&self.target))
        } else {
            Err(Error::Usage(format!(
                "--target {:?} must be an absolute path or s3://bucket/prefix",
                self.target
            )))
        }
    }
}
