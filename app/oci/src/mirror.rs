//! A whole mirror run: decide the image set, copy every image by digest, write what the cluster
//! needs. The CLI (`kubectl-tvk mirror`) only parses [`MirrorArgs`], calls [`run`] and prints.
//!
//! Sources of the image set: a file-based catalog directory, a catalog image, an oc-mirror
//! ImageSetConfiguration, or an OCI layout written by an earlier registry → dir run (the disk
//! carried across the air gap). The set is the catalog image (when given as an image), every
//! selected bundle image and every `relatedImages` entry of those bundles. Destinations are a
//! registry namespace (`docker://HOST[:PORT]/NS`) or an OCI layout (`dir:PATH`).
//!
//! Mapping (see [`crate::resources`]): `SRC/ns/name@sha256:X` → `DEST/NS/ns/name@sha256:X`.
//! In a layout, each image is named (`org.opencontainers.image.ref.name`) by its full source
//! reference, which is how a later dir → registry run knows the original names.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    str::FromStr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use semver::Version;

use crate::{
    auth::CredentialStore,
    catalog::{Bundle, Catalog, CatalogError, VersionFilter},
    catalog_image,
    copy::{BlobObserver, BlobOutcome, CopyEngine, Endpoint, ImageLocation},
    error::OciError,
    image_set::{ImageSetConfiguration, ImageSetError},
    layout::{OciLayout, ref_name},
    reference::{Digest, ImageReference, validate_repository},
    registry::{RegistryConfig, RegistryPool},
    resources::{self, ImageRole, MirroredImage, ResourcesError},
    retry::RetryPolicy,
};

/// Layout annotation recording an image's role (catalog, bundle, related).
pub const ANNOTATION_ROLE: &str = "io.tvk.mirror.role";

/// Where the image set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorSource {
    /// A file-based catalog directory on disk.
    CatalogDir(PathBuf),
    /// A catalog image (its FBC read from its layers; the image is mirrored too).
    CatalogImage(ImageReference),
    /// An oc-mirror ImageSetConfiguration file.
    ImageSetConfig(PathBuf),
    /// An OCI layout written by a registry → dir run: every image named in it is mirrored.
    Layout(PathBuf),
}

/// Where images go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `docker://HOST[:PORT]/NAMESPACE`.
    Registry {
        /// `host[:port]`.
        registry: String,
        /// Namespace path under which source repository paths are kept (may be empty).
        namespace: String,
    },
    /// `dir:PATH`.
    Layout(PathBuf),
}

impl FromStr for Destination {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(MirrorError::Options("dir: needs a path (dir:PATH)".into()));
            }
            return Ok(Self::Layout(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("docker://") else {
            return Err(MirrorError::Options(format!(
                "destination {s:?} must be docker://HOST[:PORT]/NAMESPACE or dir:PATH"
            )));
        };
        let rest = rest.trim_end_matches('/');
        let (registry, namespace) = rest.split_once('/').unwrap_or((rest, ""));
        if registry.is_empty() {
            return Err(MirrorError::Options(format!(
                "destination {s:?} names no registry host"
            )));
        }
        if !namespace.is_empty() {
            validate_repository(namespace).map_err(|e| {
                MirrorError::Options(format!("destination namespace {namespace:?}: {e}"))
            })?;
        }
        Ok(Self::Registry {
            registry: registry.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

impl Destination {
    /// Where `source` is mirrored: the source repository path kept under the namespace. For a
    /// layout the name is the source reference itself.
    pub fn map(&self, source: &ImageReference) -> ImageReference {
        match self {
            Self::Registry {
                registry,
                namespace,
            } => ImageReference {
                registry: registry.clone(),
                repository: if namespace.is_empty() {
                    source.repository.clone()
                } else {
                    format!("{namespace}/{}", source.repository)
                },
                tag: None,
                digest: source.digest.clone(),
            },
            Self::Layout(_) => source.clone(),
        }
    }
}

/// Bundle selection for catalog sources (the ImageSetConfiguration carries its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Packages to mirror; empty = every package.
    pub packages: Vec<String>,
    /// Channels; empty = every channel of the selected packages.
    pub channels: Vec<String>,
    /// Lowest bundle version included.
    pub min_version: Option<Version>,
    /// Highest bundle version included.
    pub max_version: Option<Version>,
    /// Only the head of each selected channel.
    pub heads_only: bool,
}

/// TLS settings of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Verify certificates (false also allows plain HTTP).
    pub verify: bool,
    /// Extra CA bundle (PEM).
    pub ca_file: Option<PathBuf>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            verify: true,
            ca_file: None,
        }
    }
}

/// Everything a mirror run needs.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// What to mirror.
    pub source: MirrorSource,
    /// Where to.
    pub destination: Destination,
    /// Bundle selection (catalog sources).
    pub selection: Selection,
    /// Where to write the cluster resources and `mapping.txt` (none: not written).
    pub output_dir: Option<PathBuf>,
    /// Auth file (else the default container auth files).
    pub authfile: Option<PathBuf>,
    /// TLS of the source registries.
    pub source_tls: TlsOptions,
    /// TLS of the destination registry.
    pub destination_tls: TlsOptions,
    /// Blobs copied at once.
    pub parallelism: usize,
    /// Retry budget for transient registry errors.
    pub retry: RetryPolicy,
}

impl MirrorOptions {
    /// Options with defaults: TLS verified, 4 parallel copies, default retries, no output dir.
    pub fn new(source: MirrorSource, destination: Destination) -> Self {
        Self {
            source,
            destination,
            selection: Selection::default(),
            output_dir: None,
            authfile: None,
            source_tls: TlsOptions::default(),
            destination_tls: TlsOptions::default(),
            parallelism: 4,
            retry: RetryPolicy::default(),
        }
    }
}

/// `kubectl-tvk mirror` flags (flatten into the CLI's command with `#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct MirrorArgs {
    /// Destination: docker://HOST(:PORT)/NAMESPACE or dir:PATH (an OCI layout to carry across
    /// the air gap).
    #[arg(value_name = "DESTINATION")]
    pub destination: String,
    /// File-based catalog: a directory, or a catalog image reference (docker://… optional).
    #[arg(long, conflicts_with_all = ["config", "from"])]
    pub catalog: Option<String>,
    /// oc-mirror ImageSetConfiguration (mirror.openshift.io/v2alpha1) file.
    #[arg(long, conflicts_with_all = ["catalog", "from"])]
    pub config: Option<PathBuf>,
    /// Mirror every image of an OCI layout written by an earlier run (dir:PATH).
    #[arg(long, conflicts_with_all = ["catalog", "config"])]
    pub from: Option<String>,
    /// Package to mirror (repeatable; default: every package).
    #[arg(long = "package")]
    pub packages: Vec<String>,
    /// Channel to mirror (repeatable; default: every channel).
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Lowest bundle version to mirror (semver, inclusive).
    #[arg(long)]
    pub min_version: Option<Version>,
    /// Highest bundle version to mirror (semver, inclusive).
    #[arg(long)]
    pub max_version: Option<Version>,
    /// Only the head bundle of each selected channel.
    #[arg(long)]
    pub heads_only: bool,
    /// Directory for ImageDigestMirrorSet, ImageContentSourcePolicy, CatalogSource and
    /// mapping.txt.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Auth file (default: $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json).
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Verify TLS of source registries (false also allows plain HTTP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub src_tls_verify: bool,
    /// Verify TLS of the destination registry (false also allows plain HTTP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub dest_tls_verify: bool,
    /// Extra CA certificates (PEM) for source registries.
    #[arg(long)]
    pub src_ca_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for the destination registry.
    #[arg(long)]
    pub dest_ca_file: Option<PathBuf>,
    /// Blobs copied in parallel.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Attempts per request for transient registry errors (429, 5xx, timeouts).
    #[arg(long, default_value_t = 5)]
    pub retry_times: u32,
}

impl TryFrom<MirrorArgs> for MirrorOptions {
    type Error = MirrorError;
    fn try_from(args: MirrorArgs) -> Result<Self, Self::Error> {
        let source = match (args.catalog, args.config, args.from) {
            (Some(catalog), None, None) => {
                let path = PathBuf::from(&catalog);
                if path.is_dir() {
                    MirrorSource::CatalogDir(path)
                } else {
                    let reference = catalog.strip_prefix("docker://").unwrap_or(&catalog);
                    MirrorSource::CatalogImage(ImageReference::parse(reference).map_err(|e| {
                        MirrorError::Options(format!(
                            "--catalog {catalog:?} is neither a directory nor an image reference: {e}"
                        ))
                    })?)
                }
            }
            (None, Some(config), None) => MirrorSource::ImageSetConfig(config),
            (None, None, Some(from)) => match from.strip_prefix("dir:") {
                Some(path) if !path.is_empty() => MirrorSource::Layout(PathBuf::from(path)),
                _ => {
                    return Err(MirrorError::Options(format!(
                        "--from {from:?} must be dir:PATH (an OCI layout from an earlier mirror run)"
                    )));
                }
            },
            _ => {
                return Err(MirrorError::Options(
                    "say what to mirror with exactly one of --catalog, --config or --from".into(),
                ));
            }
        };
        let mut options = Self::new(source, args.destination.parse()?);
        options.selection = Selection {
            packages: args.packages,
            channels: args.channels,
            min_version: args.min_version,
            max_version: args.max_version,
            heads_only: args.heads_only,
        };
        options.output_dir = args.output_dir;
        options.authfile = args.authfile;
        options.source_tls = TlsOptions {
            verify: args.src_tls_verify,
            ca_file: args.src_ca_file,
        };
        options.destination_tls = TlsOptions {
            verify: args.dest_tls_verify,
            ca_file: args.dest_ca_file,
        };
        options.parallelism = args.parallel.max(1);
        options.retry.max_attempts = args.retry_times.max(1);
        Ok(options)
    }
}

/// What a run reports as it goes (the CLI renders a bar on a terminal, lines otherwise).
#[derive(Debug)]
pub enum ProgressEvent<'a> {
    /// The image set is known.
    Planned {
        /// Images to mirror.
        images: usize,
    },
    /// One blob finished.
    Blob {
        /// Its digest.
        digest: &'a Digest,
        /// Its size.
        size: u64,
        /// Copied, skipped or mounted.
        outcome: BlobOutcome,
    },
    /// One image is completely at the destination.
    ImageDone {
        /// The image.
        image: &'a MirroredImage,
        /// The destination already had all of it.
        already_present: bool,
    },
    /// One image failed (the run goes on with the others, then fails).
    ImageFailed {
        /// The image.
        source: &'a ImageReference,
        /// Why.
        error: &'a OciError,
    },
}

/// Receives progress events; must be cheap (called from the copy tasks).
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: ProgressEvent<'_>);
}

/// Progress that is dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: ProgressEvent<'_>) {}
}

/// Plain progress lines (for a log or a non-terminal stderr): one per image, one per copied
/// blob. A terminal front end renders a bar from the same events instead.
pub struct LineProgress<W> {
    out: std::sync::Mutex<W>,
}

impl<W> LineProgress<W> {
    /// Writes lines to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out: std::sync::Mutex::new(out),
        }
    }
}

impl<W> std::fmt::Debug for LineProgress<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineProgress")
    }
}

impl<W: std::io::Write + Send> Progress for LineProgress<W> {
    fn event(&self, event: ProgressEvent<'_>) {
        let line = match event {
            ProgressEvent::Planned { images } => format!("mirroring {images} images"),
            ProgressEvent::Blob {
                digest,
                size,
                outcome: BlobOutcome::Copied,
            } => format!("copied blob {digest} ({size} bytes)"),
            ProgressEvent::Blob { .. } => return,
            ProgressEvent::ImageDone {
                image,
                already_present,
            } => format!(
                "{} {} -> {}",
                if already_present {
                    "present"
                } else {
                    "mirrored"
                },
                image.source,
                image.destination
            ),
            ProgressEvent::ImageFailed { source, error } => format!("FAILED {source}: {error}"),
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // Progress output is best effort: a closed pipe must not fail the mirror.
        let _ = writeln!(out, "{line}");
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct MirrorSummary {
    /// Images in the set.
    pub images: usize,
    /// Images the destination already had completely.
    pub images_already_present: usize,
    /// Blobs transferred.
    pub blobs_copied: u64,
    /// Blobs the destination already had.
    pub blobs_skipped: u64,
    /// Blobs linked by cross-repository mount.
    pub blobs_mounted: u64,
    /// Bytes transferred.
    pub bytes_copied: u64,
    /// Manifests written.
    pub manifests_written: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Every image mirrored (source → destination), sorted.
    pub mirrored: Vec<MirroredImage>,
    /// Files written to the output directory.
    pub resources: Vec<PathBuf>,
}

impl std::fmt::Display for MirrorSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images ({} already present); blobs: {} copied, {} skipped, {} mounted; {} bytes copied; {:.2?}",
            self.images,
            self.images_already_present,
            self.blobs_copied,
            self.blobs_skipped,
            self.blobs_mounted,
            self.bytes_copied,
            self.elapsed
        )
    }
}

/// One image that could not be mirrored.
#[derive(Debug)]
pub struct ImageFailure {
    /// The image.
    pub image: String,
    /// Why.
    pub error: OciError,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Invalid options.
    #[error("invalid mirror options: {0}")]
    Options(String),
    /// The catalog could not be read or the selection not made.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The ImageSetConfiguration could not be used.
    #[error(transparent)]
    ImageSet(#[from] ImageSetError),
    /// A registry or layout operation outside a single image's copy failed.
    #[error("failed to read {what}: {source}")]
    Oci {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: OciError,
    },
    /// Some images failed; the others were mirrored, no cluster resources were written.
    #[error("failed to mirror {} of {} images (no cluster resources written; rerun to resume): {}",
        failures.len(), summary.images,
        failures.iter().map(|f| format!("{}: {}", f.image, f.error)).collect::<Vec<_>>().join("; "))]
    Incomplete {
        /// The failed images.
        failures: Vec<ImageFailure>,
        /// What was done.
        summary: Box<MirrorSummary>,
    },
    /// The cluster resources could not be written.
    #[error(transparent)]
    Resources(#[from] ResourcesError),
}

/// An image to mirror.
#[derive(Debug, Clone)]
struct Planned {
    source: ImageReference,
    role: ImageRole,
}

struct ObserverAdapter(Arc<dyn Progress>);

impl BlobObserver for ObserverAdapter {
    fn blob_done(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        self.0.event(ProgressEvent::Blob {
            digest,
            size,
            outcome,
        });
    }
}

/// Runs a mirror: plans the image set, copies every image, writes the resources.
pub async fn run(
    options: MirrorOptions,
    progress: Arc<dyn Progress>,
) -> Result<MirrorSummary, MirrorError> {
    let started = Instant::now();
    let credentials = Arc::new(CredentialStore::load(options.authfile.as_deref()).map_err(
        |source| MirrorError::Oci {
            what: "the auth file".into(),
            source,
        },
    )?);
    let config = |tls: &TlsOptions| RegistryConfig {
        tls_verify: tls.verify,
        ca_file: tls.ca_file.clone(),
        credentials: credentials.clone(),
        retry: options.retry,
    };
    let pool_error = |what: &str| {
        let what = what.to_owned();
        move |source| MirrorError::Oci { what, source }
    };
    let sources = RegistryPool::new(config(&options.source_tls))
        .map_err(pool_error("source TLS settings"))?;
    let destinations = RegistryPool::new(config(&options.destination_tls))
        .map_err(pool_error("destination TLS settings"))?;

    let (source_layout, planned) = plan(&options, &sources).await?;
    progress.event(ProgressEvent::Planned {
        images: planned.len(),
    });

    let destination_endpoint = match &options.destination {
        Destination::Registry { registry, .. } => Endpoint::Registry(destinations.client(registry)),
        Destination::Layout(path) => Endpoint::Layout(Arc::new(
            OciLayout::create(path).map_err(pool_error("the destination layout"))?,
        )),
    };
    let engine = CopyEngine::new(options.parallelism)
        .with_retry(options.retry)
        .with_observer(Arc::new(ObserverAdapter(progress.clone())));

    let results: Vec<Result<(MirroredImage, bool), ImageFailure>> =
        futures::stream::iter(planned.iter().cloned())
            .map(|image| {
                let engine = &engine;
                let sources = &sources;
                let source_layout = &source_layout;
                let destination_endpoint = &destination_endpoint;
                let options = &options;
                let progress = &progress;
                async move {
                    let result = mirror_one(
                        engine,
                        sources,
                        source_layout,
                        destination_endpoint,
                        options,
                        &image,
                    )
                    .await;
                    match &result {
                        Ok((mirrored, present)) => progress.event(ProgressEvent::ImageDone {
                            image: mirrored,
                            already_present: *present,
                        }),
                        Err(error) => progress.event(ProgressEvent::ImageFailed {
                            source: &image.source,
                            error,
                        }),
                    }
                    result.map_err(|error| ImageFailure {
                        image: image.source.to_string(),
                        error,
                    })
                }
            })
            .buffer_unordered(options.parallelism.max(1))
            .collect()
            .await;

    let mut summary = MirrorSummary {
        images: planned.len(),
        ..MirrorSummary::default()
    };
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok((image, present)) => {
                summary.images_already_present += usize::from(present);
                summary.mirrored.push(image);
            }
            Err(failure) => failures.push(failure),
        }
    }
    summary.mirrored.sort_by(|a, b| a.source.cmp(&b.source));
    let stats = engine.stats();
    summary.blobs_copied = stats.blobs_copied.load(Ordering::Relaxed);
    summary.blobs_skipped = stats.blobs_skipped.load(Ordering::Relaxed);
    summary.blobs_mounted = stats.blobs_mounted.load(Ordering::Relaxed);
    summary.bytes_copied = stats.bytes_copied.load(Ordering::Relaxed);
    summary.manifests_written = stats.manifests_written.load(Ordering::Relaxed);
    if !failures.is_empty() {
        failures.sort_by(|a, b| a.image.cmp(&b.image));
        summary.elapsed = started.elapsed();
        return Err(MirrorError::Incomplete {
            failures,
            summary: Box::new(summary),
        });
    }
    if let Some(dir) = &options.output_dir {
        summary.resources = match &options.destination {
            Destination::Registry { .. } => resources::write(dir, &summary.mirrored)?,
            Destination::Layout(path) => {
                resources::write_layout_listing(dir, path, &summary.mirrored)?
            }
        };
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

async fn mirror_one(
    engine: &CopyEngine,
    sources: &RegistryPool,
    source_layout: &Option<Arc<OciLayout>>,
    destination_endpoint: &Endpoint,
    options: &MirrorOptions,
    image: &Planned,
) -> Result<(MirroredImage, bool), OciError> {
    let (source_endpoint, digest) = match source_layout {
        Some(layout) => (
            Endpoint::Layout(layout.clone()),
            image
                .source
                .digest
                .clone()
                .ok_or_else(|| OciError::InvalidReference {
                    reference: image.source.to_string(),
                    reason: "layout entries must carry a digest".into(),
                })?,
        ),
        None => {
            let client = sources.client(&image.source.registry);
            let digest = match &image.source.digest {
                Some(d) => d.clone(),
                None => client
                    .resolve_manifest(&image.source.repository, &image.source.manifest_reference())
                    .await?
                    .ok_or_else(|| OciError::NotFound {
                        what: format!("image {}", image.source),
                    })?,
            };
            (Endpoint::Registry(client), digest)
        }
    };
    let source_by_digest = image.source.with_digest(digest.clone());
    let destination = options.destination.map(&source_by_digest);
    let source_location = ImageLocation {
        endpoint: source_endpoint,
        repository: image.source.repository.clone(),
    };
    let destination_location = ImageLocation {
        endpoint: destination_endpoint.clone(),
        repository: destination.repository.clone(),
    };
    let copied = engine
        .copy_image(
            &image.source.to_string(),
            &source_location,
            &destination_location,
            &digest,
            image.source.tag.as_deref(),
        )
        .await?;
    if let Endpoint::Layout(layout) = destination_endpoint {
        // Named last: an image appears in index.json only once all of it is on disk.
        let mut full_name = image.source.clone();
        full_name.digest = Some(digest.clone());
        let annotations =
            BTreeMap::from([(ANNOTATION_ROLE.to_owned(), image.role.as_str().to_owned())]);
        layout
            .add_image(&full_name.to_string(), &copied.descriptor, annotations)
            .await?;
    }
    Ok((
        MirroredImage {
            source: source_by_digest,
            destination,
            role: image.role,
        },
        copied.already_present,
    ))
}

/// The image set (and the source layout for dir → registry runs).
async fn plan(
    options: &MirrorOptions,
    sources: &RegistryPool,
) -> Result<(Option<Arc<OciLayout>>, Vec<Planned>), MirrorError> {
    let mut planned: Vec<Planned> = Vec::new();
    let mut layout = None;
    match &options.source {
        MirrorSource::CatalogDir(dir) => {
            let catalog = Catalog::from_dir(dir)?;
            add_bundles(&mut planned, &select(&catalog, &options.selection)?)?;
        }
        MirrorSource::CatalogImage(reference) => {
            let image =
                catalog_image::read(&sources.client(&reference.registry), reference).await?;
            planned.push(Planned {
                source: with_digest_keep_tag(reference, image.digest),
                role: ImageRole::Catalog,
            });
            add_bundles(&mut planned, &select(&image.catalog, &options.selection)?)?;
        }
        MirrorSource::ImageSetConfig(path) => {
            let config = ImageSetConfiguration::load(path)?;
            for operator in &config.mirror.operators {
                let local = PathBuf::from(&operator.catalog);
                let catalog = if local.is_dir() {
                    Catalog::from_dir(&local)?
                } else {
                    let reference = ImageReference::parse(
                        operator
                            .catalog
                            .strip_prefix("docker://")
                            .unwrap_or(&operator.catalog),
                    )
                    .map_err(|e| ImageSetError::Invalid {
                        path: path.clone(),
                        reason: format!("catalog {:?}: {e}", operator.catalog),
                    })?;
                    let image =
                        catalog_image::read(&sources.client(&reference.registry), &reference)
                            .await?;
                    planned.push(Planned {
                        source: with_digest_keep_tag(&reference, image.digest),
                        role: ImageRole::Catalog,
                    });
                    image.catalog
                };
                add_bundles(&mut planned, &operator.select(&catalog)?)?;
            }
            for additional in &config.mirror.additional_images {
                let reference = ImageReference::parse(&additional.name).map_err(|e| {
                    ImageSetError::Invalid {
                        path: path.clone(),
                        reason: format!("additionalImages {:?}: {e}", additional.name),
                    }
                })?;
                planned.push(Planned {
                    source: reference,
                    role: ImageRole::Related,
                });
            }
        }
        MirrorSource::Layout(path) => {
            let source = Arc::new(OciLayout::open(path).map_err(|source| MirrorError::Oci {
                what: format!("source layout {}", path.display()),
                source,
            })?);
            let index = source.read_index().await.map_err(|e| MirrorError::Oci {
                what: format!("source layout {}", path.display()),
                source: e,
            })?;
            for entry in &index.manifests {
                let Some(name) = ref_name(entry) else {
                    continue;
                };
                let mut reference = ImageReference::parse(name).map_err(|e| MirrorError::Oci {
                    what: format!("source layout {}", path.display()),
                    source: e,
                })?;
                if reference
                    .digest
                    .as_ref()
                    .is_some_and(|d| *d != entry.digest)
                {
                    return Err(MirrorError::Oci {
                        what: format!("source layout {}", path.display()),
                        source: OciError::InvalidLayout {
                            path: path.clone(),
                            reason: format!("entry {name} points at {}", entry.digest),
                        },
                    });
                }
                reference.digest = Some(entry.digest.clone());
                let role = entry
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_ROLE))
                    .map_or(ImageRole::Related, |r| ImageRole::parse(r));
                planned.push(Planned {
                    source: reference,
                    role,
                });
            }
            if planned.is_empty() {
                return Err(MirrorError::Options(format!(
                    "layout {} names no image (org.opencontainers.image.ref.name)",
                    path.display()
                )));
            }
            layout = Some(source);
        }
    }
    // One copy per distinct image; a catalog role wins over bundle over related.
    planned.sort_by(|a, b| a.source.cmp(&b.source).then(a.role.cmp(&b.role)));
    planned.dedup_by(|b, a| a.source == b.source);
    Ok((layout, planned))
}

fn with_digest_keep_tag(reference: &ImageReference, digest: Digest) -> ImageReference {
    let mut r = reference.clone();
    r.digest = Some(digest);
    r
}

fn add_bundles(planned: &mut Vec<Planned>, bundles: &[&Bundle]) -> Result<(), MirrorError> {
    for bundle in bundles {
        let parse = |image: &str| {
            ImageReference::parse(image).map_err(|e| {
                MirrorError::Catalog(CatalogError::Invalid {
                    file: format!("bundle {}", bundle.name),
                    reason: e.to_string(),
                })
            })
        };
        planned.push(Planned {
            source: parse(&bundle.image)?,
            role: ImageRole::Bundle,
        });
        for related in &bundle.related_images {
            let source = parse(&related.image)?;
            if source.to_string() != bundle.image {
                planned.push(Planned {
                    source,
                    role: ImageRole::Related,
                });
            }
        }
    }
    Ok(())
}

/// Applies the CLI selection to a catalog.
pub fn select<'a>(
    catalog: &'a Catalog,
    selection: &Selection,
) -> Result<Vec<&'a Bundle>, CatalogError> {
    let packages = if selection.packages.is_empty() {
        catalog.packages.values().collect::<Vec<_>>()
    } else {
        selection
            .packages
            .iter()
            .map(|p| catalog.package(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    let filter = VersionFilter {
        min: selection.min_version.clone(),
        max: selection.max_version.clone(),
        heads_only: selection.heads_only,
    };
    let wanted: BTreeSet<&str> = selection.channels.iter().map(String::as_str).collect();
    let mut out: Vec<&Bundle> = Vec::new();
    let mut channels_seen = BTreeSet::new();
    for package in packages {
        for channel in package.channels.values() {
            if !wanted.is_empty() && !wanted.contains(channel.name.as_str()) {
                continue;
            }
            channels_seen.insert(channel.name.as_str());
            for bundle in package.select(channel, &filter)? {
                if !out
                    .iter()
                    .any(|b| b.package == bundle.package && b.name == bundle.name)
                {
                    out.push(bundle);
                }
            }
        }
    }
    if let Some(missing) = wanted.iter().find(|c| !channels_seen.contains(*c)) {
        return Err(CatalogError::UnknownChannel {
            package: selection
                .packages
                .join(",")
                .chars()
                .take(200)
                .collect::<String>(),
            channel: (*missing).to_owned(),
            available: catalog
                .packages
                .values()
                .flat_map(|p| p.channels.keys().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if out.is_empty() {
        return Err(CatalogError::EmptySelection);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: MirrorArgs,
    }

    fn parse(args: &[&str]) -> Result<MirrorOptions, String> {
        let cli = Cli::try_parse_from(std::iter::once("mirror").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        MirrorOptions::try_from(cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn destinations_parse_and_map_keeping_the_repository_path() {
        let dest: Destination = "docker://mirror.local:5000/air/gap".parse().unwrap();
        let source = ImageReference::parse(
            "quay.io/trilio/tvk@sha256:0000000000000000000000000000000000000000000000000000000000000001",
        )
        .unwrap();
        assert_eq!(
            dest.map(&source).to_string(),
            "mirror.local:5000/air/gap/trilio/tvk@sha256:0000000000000000000000000000000000000000000000000000000000000001"
        );
        let bare: Destination = "docker://mirror.local".parse().unwrap();
        assert_eq!(bare.map(&source).repository, "trilio/tvk");
        assert_eq!(
            "dir:/tmp/x".parse::<Destination>().unwrap(),
            Destination::Layout(PathBuf::from("/tmp/x"))
        );
        for bad in ["quay.io/x", "docker://", "dir:", "docker://h/UP"] {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_flags_become_options() {
        let o = parse(&[
            "--catalog",
            "docker://quay.io/trilio/catalog:v1",
            "--channel",
            "stable",
            "--channel",
            "fast",
            "--min-version",
            "1.2.0",
            "--heads-only",
            "--src-tls-verify=false",
            "--parallel",
            "8",
            "docker://mirror.local/ns",
        ])
        .unwrap();
        assert!(
            matches!(o.source, MirrorSource::CatalogImage(ref r) if r.tag.as_deref() == Some("v1"))
        );
        assert_eq!(o.selection.channels, ["stable", "fast"]);
        assert_eq!(o.selection.min_version, Some(Version::new(1, 2, 0)));
        assert!(o.selection.heads_only && !o.source_tls.verify && o.destination_tls.verify);
        assert_eq!(o.parallelism, 8);

        let o = parse(&["--from", "dir:/media/disk", "docker://m.local/ns"]).unwrap();
        assert_eq!(o.source, MirrorSource::Layout(PathBuf::from("/media/disk")));
        assert!(
            parse(&["docker://m.local/ns"])
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(parse(&["--config", "a.yaml", "--from", "dir:/x", "docker://m/ns"]).is_err());
        assert!(
            parse(&["--from", "/x", "docker://m/ns"])
                .unwrap_err()
                .contains("dir:PATH")
        );
        assert!(parse(&["--catalog", "x", "--min-version", "one", "docker://m/ns"]).is_err());
    }
}
