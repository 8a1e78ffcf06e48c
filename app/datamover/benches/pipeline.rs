//! Criterion benches of the data plane's inner loops, on a volume in tmpfs (`/dev/shm`, or
//! `TVK_BENCH_DIR`), so a change to the backup or restore pipeline can be judged with less
//! noise than the side-by-side harness (`hack/bench-vs-qemu.sh`), which goes through a disk.
//!
//! The volume has the shape of the harness's default one, scaled down (`TVK_BENCH_MIB`,
//! default 512 MiB): 10 % random data in runs of 1–256 clusters, 3 % written zeros, the
//! rest holes. Rows:
//! - `full_backup`: sparse read + zero detection + BLAKE3 index + QCOW2 stream into a file;
//! - `restore_verified`: L2 merge + read + BLAKE3 verification of every cluster + sparse write;
//! - `cluster_digest`: the per-cluster classification (zero test, BLAKE3) alone.
//!
//! Throughput is in bytes of allocated source data. Run: `cargo bench -p tvk-datamover`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tvk_datamover::{
    backup::{BackupJob, run_backup},
    index::IndexReader,
    object_io::{LocalFileSink, LocalObject, RandomRead},
    progress::NoProgress,
    qcow2::reader::Qcow2Image,
    restore::{Chain, Destination, RestoreJob, run_restore},
    volume::is_zero,
};

const CS: u64 = 1 << 16;

/// Deletes the bench directory when the bench ends.
struct BenchDir(PathBuf);
impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the volume; returns its allocated (data + written zero) bytes.
fn make_volume(path: &Path, size: u64) -> u64 {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    let clusters = size / CS;
    let mut rng = fastrand::Rng::with_seed(1);
    let mut buf = vec![0u8; (256 * CS) as usize];
    let (mut c, mut allocated) = (0u64, 0u64);
    while c < clusters {
        let run = rng.u64(1..=256).min(clusters - c);
        let len = (run * CS) as usize;
        match rng.u32(0..100) {
            0..10 => {
                rng.fill(&mut buf[..len]);
                file.write_all_at(&buf[..len], c * CS).unwrap();
                allocated += len as u64;
            }
            10..13 => {
                file.write_all_at(&vec![0u8; len], c * CS).unwrap();
                allocated += len as u64;
            }
            _ => {}
        }
        c += run;
    }
    allocated
}

fn backup(src: &Path, out: &Path, index: &Path) {
    run_backup(BackupJob {
        source: src,
        parent: None,
        changed_blocks: None,
        image_sink: Box::new(LocalFileSink::create(out, CS as usize, false).unwrap()),
        index_sink: Box::new(LocalFileSink::create(index, 0, false).unwrap()),
        cluster_bits: 16,
        progress: &NoProgress,
        encryption: None,
    })
    .unwrap();
}

fn restore(image: &Path, index: &Path, out: &Path) {
    let obj: Arc<dyn RandomRead> = Arc::new(LocalObject::open(image).unwrap());
    let chain = Chain::new(vec![Qcow2Image::open(obj).unwrap()]).unwrap();
    let dest = Destination::open(out).unwrap();
    let index = IndexReader::new(
        &index.display().to_string(),
        std::fs::File::open(index).unwrap(),
    )
    .unwrap();
    run_restore(
        RestoreJob {
            chain: &chain,
            index: Some(index),
            backup_id: "bench",
            progress: &NoProgress,
            durable: false,
        },
        &dest,
    )
    .unwrap();
}

fn pipeline(c: &mut Criterion) {
    let base =
        std::env::var_os("TVK_BENCH_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    let dir = BenchDir(base.join(format!("tvk-datamover-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let mib: u64 = std::env::var("TVK_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let vol = dir.0.join("vol.raw");
    let allocated = make_volume(&vol, mib << 20);
    let (image, index, restored) = (
        dir.0.join("full.qcow2"),
        dir.0.join("index"),
        dir.0.join("restored.raw"),
    );

    let mut g = c.benchmark_group("datamover");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(allocated));
    g.bench_function("full_backup", |b| {
        b.iter(|| {
            backup(&vol, &image, &index);
            // Freed outside the timing of the next run's writes (tmpfs frees are cheap).
            std::fs::remove_file(&image).unwrap();
        })
    });
    backup(&vol, &image, &index);
    g.bench_function("restore_verified", |b| {
        b.iter(|| {
            restore(&image, &index, &restored);
            std::fs::remove_file(&restored).unwrap();
        })
    });
    g.finish();

    // The per-cluster classification alone, on 64 MiB of data clusters.
    let mut data = vec![0u8; 64 << 20];
    fastrand::Rng::with_seed(2).fill(&mut data);
    let mut g = c.benchmark_group("cluster_digest");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("zero_test_and_blake3", |b| {
        b.iter(|| {
            data.chunks(CS as usize)
                .filter(|c| !is_zero(c))
                .map(|c| blake3::hash(c).as_bytes()[0])
                .fold(0u8, |a, x| a ^ x)
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
