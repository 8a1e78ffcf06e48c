//! Shared helpers of the datamover integration tests: deterministic volumes, local backups
//! through the library, and qemu-img.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use tvk_datamover::{
    backup::{BackupJob, BackupSummary, ParentIndex, run_backup},
    index::IndexReader,
    object_io::{LocalFileSink, LocalObject, RandomRead},
    progress::NoProgress,
    qcow2::reader::Qcow2Image,
    restore::{Chain, Destination, RestoreJob, run_restore},
    volume::ByteRange,
};

pub const CS: u64 = 65536;

/// Small deterministic PRNG (xorshift64*), so volumes are reproducible.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub fn qemu_img() {
    tvk_testkit::require_tool("qemu-img", "apt-get install qemu-utils").unwrap();
}

/// Runs qemu-img and asserts success; returns stdout.
pub fn qemu(args: &[&str]) -> String {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img check` must report no errors and no leaks.
pub fn assert_check_clean(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json"])
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qemu-img check {} failed: {text} {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["corruptions", "leaks", "check-errors"] {
        assert_eq!(
            v.get(key).and_then(|x| x.as_u64()).unwrap_or(0),
            0,
            "{key} in {}: {text}",
            img.display()
        );
    }
}

/// `qemu-img compare` says the raw volume and the image read identically.
pub fn assert_same(raw: &Path, img: &Path) {
    let out = Command::new("qemu-img")
        .arg("compare")
        .arg("-f")
        .arg("raw")
        .arg(raw)
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        raw.display(),
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sparse raw volume being edited by a test.
pub struct Volume {
    pub path: PathBuf,
    pub file: std::fs::File,
}

impl Volume {
    pub fn create(path: &Path, size: u64) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.set_len(size).unwrap();
        Self {
            path: path.to_path_buf(),
            file,
        }
    }
    pub fn write_random(&self, rng: &mut Rng, offset: u64, len: u64) {
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        self.file.write_all_at(&buf, offset).unwrap();
    }
    pub fn write_zeros(&self, offset: u64, len: u64) {
        self.file
            .write_all_at(&vec![0u8; len as usize], offset)
            .unwrap();
    }
    /// Punches a hole (rewrites zeros where punching is unsupported).
    pub fn punch(&self, offset: u64, len: u64) {
        let status = Command::new("fallocate")
            .args(["-p", "-o", &offset.to_string(), "-l", &len.to_string()])
            .arg(&self.path)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            self.write_zeros(offset, len);
        }
    }
    pub fn set_len(&self, size: u64) {
        self.file.set_len(size).unwrap();
    }
}

/// Full (parent None) or incremental backup of `src` into `out` + `index`.
pub fn backup(
    src: &Path,
    out: &Path,
    index: &Path,
    parent: Option<(&Path, &str)>,
    changed: Option<Vec<ByteRange>>,
) -> BackupSummary {
    try_backup(src, out, index, parent, changed).unwrap()
}

/// [`backup`], returning its error.
#[allow(dead_code)]
pub fn try_backup(
    src: &Path,
    out: &Path,
    index: &Path,
    parent: Option<(&Path, &str)>,
    changed: Option<Vec<ByteRange>>,
) -> tvk_datamover::Result<BackupSummary> {
    let parent = parent.map(|(ix, backing)| ParentIndex {
        name: ix.display().to_string(),
        reader: Box::new(std::fs::File::open(ix).unwrap()),
        backing_name: backing.to_string(),
    });
    run_backup(BackupJob {
        source: src,
        parent,
        changed_blocks: changed,
        image_sink: Box::new(LocalFileSink::create(out, CS as usize, false).unwrap()),
        index_sink: Box::new(LocalFileSink::create(index, 0, false).unwrap()),
        cluster_bits: 16,
        progress: &NoProgress,
        encryption: None,
    })
}

/// Bytes allocated to `p` on disk (st_blocks).
#[allow(dead_code)]
pub fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

pub fn open_image(path: &Path) -> Qcow2Image {
    let obj: Arc<dyn RandomRead> = Arc::new(LocalObject::open(path).unwrap());
    Qcow2Image::open(obj).unwrap()
}

/// Restores the chain (base first) into `out`, verifying against `index` when given.
pub fn restore(layers: &[PathBuf], index: Option<&Path>, out: &Path) -> tvk_datamover::Result<()> {
    let chain = Chain::new(layers.iter().map(|p| open_image(p)).collect())?;
    let dest = Destination::open(out)?;
    let index = index.map(|p| {
        IndexReader::new(&p.display().to_string(), std::fs::File::open(p).unwrap()).unwrap()
    });
    run_restore(
        RestoreJob {
            chain: &chain,
            index,
            backup_id: "test-backup",
            progress: &NoProgress,
            durable: false,
        },
        &dest,
    )?;
    Ok(())
}

pub fn assert_files_equal(a: &Path, b: &Path) {
    let x = std::fs::read(a).unwrap();
    let y = std::fs::read(b).unwrap();
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}
