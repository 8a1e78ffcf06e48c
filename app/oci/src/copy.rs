//! The copy engine: copies one image by digest — every platform of an index, every config and
//! layer blob, then the manifests, children before parents — between two [`Endpoint`]s.
//!
//! Endpoints are an enum rather than a trait object so each kind keeps its natural API; a
//! content-addressed blob store on a backup target (image backup) becomes one more variant.
//! Every blob is streamed from source to destination through a [`VerifyingStream`] that hashes
//! it and ends in an error instead of a clean end when the digest or size is wrong, which
//! aborts the destination write before anything is committed.

use std::{
    collections::{BTreeMap, HashMap},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt, future::try_join_all};
use sha2::{Digest as _, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::{
    error::OciError,
    layout::OciLayout,
    manifest::{Descriptor, Manifest, ManifestContent},
    reference::Digest,
    registry::{MountOutcome, RegistryClient},
    store::ImageStore,
};

/// Where images are read from or written to.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A registry (`docker://HOST[:PORT]/…`).
    Registry(Arc<RegistryClient>),
    /// An OCI image layout (`dir:PATH`): one blob store for every repository.
    Layout(Arc<OciLayout>),
    /// The content-addressed image store of a backup target (S3 or NFS): one blob store for
    /// every repository, as a layout, but without an `index.json` (backups record their
    /// images themselves).
    Store(Arc<ImageStore>),
}

/// One side of a copy: an endpoint and the repository in it (ignored by layouts' blob store).
#[derive(Debug, Clone)]
pub struct ImageLocation {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The repository path (`ns/name`).
    pub repository: String,
}

/// Counters of one engine's work (shared by every image it copies).
#[derive(Debug, Default)]
pub struct CopyStats {
    /// Blobs transferred.
    pub blobs_copied: AtomicU64,
    /// Blobs the destination already had.
    pub blobs_skipped: AtomicU64,
    /// Blobs linked by a cross-repository mount.
    pub blobs_mounted: AtomicU64,
    /// Bytes transferred.
    pub bytes_copied: AtomicU64,
    /// Manifests written.
    pub manifests_written: AtomicU64,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Transferred.
    Copied,
    /// Already present.
    Skipped,
    /// Mounted from another repository of the same registry.
    Mounted,
}

/// Notified as blobs finish, for progress display.
pub trait BlobObserver: Send + Sync {
    /// One blob is done.
    fn blob_done(&self, digest: &Digest, size: u64, outcome: BlobOutcome);
}

/// The result of copying one image.
#[derive(Debug, Clone)]
pub struct CopiedImage {
    /// The top-level manifest's descriptor.
    pub descriptor: Descriptor,
    /// Whether the destination already had the whole image (nothing was written).
    pub already_present: bool,
}

/// Copies images with bounded parallelism, skipping, mounting and de-duplicating blobs.
pub struct CopyEngine {
    blob_permits: Arc<Semaphore>,
    retry: crate::retry::RetryPolicy,
    stats: Arc<CopyStats>,
    observer: Option<Arc<dyn BlobObserver>>,
    /// One in-flight or finished transfer per destination blob: two images sharing a layer
    /// wait for one copy instead of racing (or counting it twice).
    inflight: Mutex<HashMap<String, Arc<OnceCell<BlobOutcome>>>>,
    /// Destination repositories known to hold a blob (mount sources within the destination).
    known_at_destination: Mutex<HashMap<Digest, String>>,
}

impl std::fmt::Debug for CopyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyEngine")
            .field("stats", &self.stats)
            .finish()
    }
}

impl CopyEngine {
    /// An engine copying at most `parallelism` blobs at once (at least 1).
    pub fn new(parallelism: usize) -> Self {
        Self {
            blob_permits: Arc::new(Semaphore::new(parallelism.max(1))),
            retry: crate::retry::RetryPolicy::default(),
            stats: Arc::new(CopyStats::default()),
            observer: None,
            inflight: Mutex::new(HashMap::new()),
            known_at_destination: Mutex::new(HashMap::new()),
        }
    }

    /// Retries whole blob transfers (a stream cut mid-way cannot be resumed by the request
    /// layer) under `retry`.
    pub fn with_retry(mut self, retry: crate::retry::RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Reports every finished blob to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn BlobObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The counters.
    pub fn stats(&self) -> &CopyStats {
        &self.stats
    }

    /// Copies the image `digest` from `source` to `destination`, then tags it `tag` at a
    /// registry destination when given. `name` identifies the image in errors.
    pub async fn copy_image(
        &self,
        name: &str,
        source: &ImageLocation,
        destination: &ImageLocation,
        digest: &Digest,
        tag: Option<&str>,
    ) -> Result<CopiedImage, OciError> {
        if let Endpoint::Registry(dest) = &destination.endpoint
            && let Some(present) = dest
                .head_manifest(&destination.repository, &digest.to_string())
                .await?
            && present.digest == *digest
        {
            // A registry accepts a manifest only when everything it references is present, so
            // a present top-level manifest means the whole image is: nothing is read from the
            // source (a no-change re-run costs one HEAD per image).
            if let Some(tag) = tag
                && dest.resolve_manifest(&destination.repository, tag).await?
                    != Some(digest.clone())
            {
                let top = self.fetch_manifest(source, digest, None, name).await?;
                dest.put_manifest(&destination.repository, tag, &top)
                    .await?;
            }
            return Ok(CopiedImage {
                descriptor: present,
                already_present: true,
            });
        }
        let top = self.fetch_manifest(source, digest, None, name).await?;
        let descriptor = top.descriptor();
        self.copy_manifest_tree(name, source, destination, &top, 0)
            .await?;
        if let (Some(tag), Endpoint::Registry(dest)) = (tag, &destination.endpoint) {
            self.tag_if_needed(dest, &destination.repository, tag, &top)
                .await?;
        }
        Ok(CopiedImage {
            descriptor,
            already_present: false,
        })
    }

    async fn tag_if_needed(
        &self,
        dest: &RegistryClient,
        repository: &str,
        tag: &str,
        manifest: &Manifest,
    ) -> Result<(), OciError> {
        if dest.resolve_manifest(repository, tag).await? != Some(manifest.digest.clone()) {
            dest.put_manifest(repository, tag, manifest).await?;
        }
        Ok(())
    }

    async fn fetch_manifest(
        &self,
        source: &ImageLocation,
        digest: &Digest,
        descriptor: Option<&Descriptor>,
        name: &str,
    ) -> Result<Manifest, OciError> {
        match &source.endpoint {
            Endpoint::Registry(client) => {
                client
                    .get_manifest(&source.repository, &digest.to_string(), Some(digest))
                    .await
            }
            Endpoint::Layout(layout) => {
                let descriptor = match descriptor {
                    Some(d) => d.clone(),
                    None => find_in_index(layout, digest).await?,
                };
                layout.read_manifest(&descriptor, name).await
            }
            Endpoint::Store(store) => {
                store
                    .read_manifest(digest, descriptor.map(|d| d.media_type.as_str()), name)
                    .await
            }
        }
    }

    /// Blobs and child manifests first, then `manifest` itself.
    fn copy_manifest_tree<'a>(
        &'a self,
        name: &'a str,
        source: &'a ImageLocation,
        destination: &'a ImageLocation,
        manifest: &'a Manifest,
        depth: u32,
    ) -> Pin<Box<dyn Future<Output = Result<(), OciError>> + Send + 'a>> {
        Box::pin(async move {
            match &manifest.content {
                ManifestContent::Image { config, layers } => {
                    let blobs = std::iter::once(config)
                        .chain(layers.iter().filter(|layer| !layer.is_foreign_layer()));
                    try_join_all(blobs.map(|blob| self.copy_blob(name, source, destination, blob)))
                        .await?;
                }
                ManifestContent::Index { manifests } => {
                    if depth >= 2 {
                        return Err(OciError::MalformedManifest {
                            what: name.to_owned(),
                            reason: "indexes nested more than two levels deep".into(),
                        });
                    }
                    try_join_all(manifests.iter().map(|child| async move {
                        let child_manifest = self
                            .fetch_manifest(source, &child.digest, Some(child), name)
                            .await?;
                        self.copy_manifest_tree(
                            name,
                            source,
                            destination,
                            &child_manifest,
                            depth + 1,
                        )
                        .await
                    }))
                    .await?;
                }
            }
            self.write_manifest(destination, manifest).await
        })
    }

    async fn write_manifest(
        &self,
        destination: &ImageLocation,
        manifest: &Manifest,
    ) -> Result<(), OciError> {
        match &destination.endpoint {
            Endpoint::Registry(client) => {
                client
                    .put_manifest(
                        &destination.repository,
                        &manifest.digest.to_string(),
                        manifest,
                    )
                    .await?
            }
            Endpoint::Layout(layout) => layout.write_manifest(manifest).await?,
            Endpoint::Store(store) => store.write_manifest(manifest).await?,
        }
        self.stats.manifests_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn copy_blob(
        &self,
        name: &str,
        source: &ImageLocation,
        destination: &ImageLocation,
        blob: &Descriptor,
    ) -> Result<BlobOutcome, OciError> {
        let key = match &destination.endpoint {
            Endpoint::Registry(r) => format!(
                "{}/{}@{}",
                r.registry(),
                destination.repository,
                blob.digest
            ),
            Endpoint::Layout(l) => format!("{}@{}", l.root().display(), blob.digest),
            Endpoint::Store(s) => format!("store {}@{}", s.display(), blob.digest),
        };
        let cell = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let mut first = false;
        let outcome = *cell
            .get_or_try_init(|| async {
                first = true;
                let _permit = self
                    .blob_permits
                    .acquire()
                    .await
                    .map_err(|_| OciError::Aborted {
                        what: name.to_owned(),
                        reason: "the copy engine was shut down".into(),
                    })?;
                let outcome = self.transfer_blob(name, source, destination, blob).await?;
                if let Endpoint::Registry(_) = &destination.endpoint {
                    self.known_at_destination
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(blob.digest.clone(), destination.repository.clone());
                }
                Ok::<_, OciError>(outcome)
            })
            .await?;
        if first {
            let counter = match outcome {
                BlobOutcome::Copied => &self.stats.blobs_copied,
                BlobOutcome::Skipped => &self.stats.blobs_skipped,
                BlobOutcome::Mounted => &self.stats.blobs_mounted,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if outcome == BlobOutcome::Copied {
                self.stats
                    .bytes_copied
                    .fetch_add(blob.size, Ordering::Relaxed);
            }
            if let Some(observer) = &self.observer {
                observer.blob_done(&blob.digest, blob.size, outcome);
            }
        }
        Ok(outcome)
    }

    async fn transfer_blob(
        &self,
        name: &str,
        source: &ImageLocation,
        destination: &ImageLocation,
        blob: &Descriptor,
    ) -> Result<BlobOutcome, OciError> {
        let digest = &blob.digest;
        match &destination.endpoint {
            Endpoint::Registry(dest) => {
                if dest.has_blob(&destination.repository, digest).await? {
                    return Ok(BlobOutcome::Skipped);
                }
                let mut mount_from = None;
                if let Endpoint::Registry(src) = &source.endpoint
                    && src.registry() == dest.registry()
                {
                    mount_from = Some(source.repository.clone());
                }
                if mount_from.is_none() {
                    mount_from = self
                        .known_at_destination
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(digest)
                        .filter(|repo| **repo != destination.repository)
                        .cloned();
                }
                if let Some(from) = mount_from
                    && dest
                        .mount_blob(&destination.repository, digest, &from)
                        .await?
                        == MountOutcome::Mounted
                {
                    return Ok(BlobOutcome::Mounted);
                }
            }
            Endpoint::Layout(layout) => {
                if layout.has_verified_blob(digest, blob.size).await? {
                    return Ok(BlobOutcome::Skipped);
                }
            }
            // Present with the right size: its content was verified when it was written.
            Endpoint::Store(store) => {
                if store.has_blob(digest, blob.size).await? {
                    return Ok(BlobOutcome::Skipped);
                }
            }
        }
        let what = format!("blob {digest} of {name}");
        let max_attempts = match &source.endpoint {
            Endpoint::Registry(_) | Endpoint::Store(_) => self.retry.max_attempts.clamp(1, 3),
            Endpoint::Layout(_) => 1,
        };
        let mut attempt = 0;
        loop {
            let result = self.stream_blob(&what, source, destination, blob).await;
            match result {
                Err(e) if e.is_transient() && attempt + 1 < max_attempts => {
                    tracing::debug!(blob = %digest, error = %e, "retrying a blob transfer");
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                    attempt += 1;
                }
                other => return other.map(|()| BlobOutcome::Copied),
            }
        }
    }

    async fn stream_blob(
        &self,
        what: &str,
        source: &ImageLocation,
        destination: &ImageLocation,
        blob: &Descriptor,
    ) -> Result<(), OciError> {
        let raw: Pin<Box<dyn Stream<Item = Result<Bytes, OciError>> + Send>> = match &source
            .endpoint
        {
            Endpoint::Registry(client) => {
                let response = client.get_blob(&source.repository, &blob.digest).await?;
                Box::pin(crate::registry::blob_body(
                    response,
                    client.registry(),
                    what,
                ))
            }
            Endpoint::Layout(layout) => Box::pin(layout.read_blob_unverified(&blob.digest).await?),
            Endpoint::Store(store) => {
                Box::pin(store.read_blob_unverified(&blob.digest, what).await?)
            }
        };
        let verdict = Arc::new(Mutex::new(None));
        let verifying =
            VerifyingStream::new(raw, blob.digest.clone(), blob.size, what, verdict.clone());
        let result = match &destination.endpoint {
            Endpoint::Registry(client) => {
                let body = reqwest::Body::wrap_stream(verifying);
                client
                    .upload_blob(&destination.repository, &blob.digest, blob.size, body)
                    .await
            }
            Endpoint::Layout(layout) => {
                layout.write_blob(&blob.digest, verifying).await.map(|_| ())
            }
            Endpoint::Store(store) => store.write_blob(&blob.digest, blob.size, verifying).await,
        };
        // The stream's own verdict names the real cause (digest mismatch, truncation, a source
        // read error) better than the destination's "body aborted".
        if let Some(error) = verdict.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(error);
        }
        result
    }
}

async fn find_in_index(layout: &OciLayout, digest: &Digest) -> Result<Descriptor, OciError> {
    layout
        .read_index()
        .await?
        .manifests
        .into_iter()
        .find(|d| d.digest == *digest)
        .ok_or_else(|| OciError::NotFound {
            what: format!("image {digest} in layout {}", layout.root().display()),
        })
}

/// Hashes and counts a blob stream and checks it the moment the last expected byte arrives:
/// a wrong digest or size turns into an error *instead of* the final chunk (a consumer that
/// stops polling after `size` bytes, like an HTTP body with a Content-Length, still never sees
/// the last byte of bad content). The error is also recorded in `verdict` for the caller.
pub struct VerifyingStream<S> {
    inner: S,
    state: VerifyState,
    expected: Digest,
    size: u64,
    seen: u64,
    what: String,
    verdict: Arc<Mutex<Option<OciError>>>,
}

enum VerifyState {
    Streaming(Sha256),
    Verified,
    Failed,
}

impl<S> VerifyingStream<S> {
    /// Wraps `inner`, expecting `size` bytes hashing to `expected`.
    pub fn new(
        inner: S,
        expected: Digest,
        size: u64,
        what: &str,
        verdict: Arc<Mutex<Option<OciError>>>,
    ) -> Self {
        Self {
            inner,
            state: VerifyState::Streaming(Sha256::new()),
            expected,
            size,
            seen: 0,
            what: what.to_owned(),
            verdict,
        }
    }

    fn fail(&mut self, error: OciError) -> Poll<Option<Result<Bytes, OciError>>> {
        self.state = VerifyState::Failed;
        let message = OciError::Aborted {
            what: self.what.clone(),
            reason: error.to_string(),
        };
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        Poll::Ready(Some(Err(message)))
    }

    fn size_error(&self) -> OciError {
        OciError::SizeMismatch {
            what: self.what.clone(),
            expected: self.size,
            actual: self.seen,
        }
    }
}

impl<S> Stream for VerifyingStream<S>
where
    S: Stream<Item = Result<Bytes, OciError>> + Unpin,
{
    type Item = Result<Bytes, OciError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if matches!(this.state, VerifyState::Failed) {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(error))) => this.fail(error),
            Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    let error = this.size_error();
                    return this.fail(error);
                }
                let VerifyState::Streaming(hasher) = &mut this.state else {
                    return Poll::Ready(None);
                };
                hasher.update(&chunk);
                if this.seen == this.size {
                    let finished = std::mem::replace(&mut this.state, VerifyState::Verified);
                    if let VerifyState::Streaming(hasher) = finished {
                        let actual = Digest::from_hasher(hasher);
                        if actual != this.expected {
                            let error = OciError::DigestMismatch {
                                what: this.what.clone(),
                                expected: this.expected.to_string(),
                                actual: actual.to_string(),
                            };
                            return this.fail(error);
                        }
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => match this.state {
                VerifyState::Verified => Poll::Ready(None),
                _ => {
                    let error = this.size_error();
                    this.fail(error)
                }
            },
        }
    }
}

/// Annotations recorded with an image in a layout's `index.json`.
pub type LayoutAnnotations = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(
        chunks: Vec<&'static [u8]>,
        expected: Digest,
        size: u64,
    ) -> Result<Vec<u8>, OciError> {
        let verdict = Arc::new(Mutex::new(None));
        let inner = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let mut s = VerifyingStream::new(inner, expected, size, "blob x", verdict.clone());
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return Err(verdict.lock().unwrap().take().unwrap()),
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn verifying_stream_passes_good_and_refuses_bad_content() {
        let good = Digest::of(b"hello world");
        assert_eq!(
            drain(vec![b"hello ", b"world"], good.clone(), 11)
                .await
                .unwrap(),
            b"hello world"
        );
        let err = drain(vec![b"hello ", b"worle"], good.clone(), 11)
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        let err = drain(vec![b"hello "], good.clone(), 11).await.unwrap_err();
        assert!(
            matches!(err, OciError::SizeMismatch { actual: 6, .. }),
            "{err}"
        );
        let err = drain(vec![b"hello world!!"], good, 11).await.unwrap_err();
        assert!(matches!(err, OciError::SizeMismatch { .. }), "{err}");
    }
}
