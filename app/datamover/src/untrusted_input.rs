//! Entry points that run whole readers over untrusted bytes: the `cargo fuzz` targets in
//! `fuzz/` call these, and the tests replay mutated inputs through them. Each must return an
//! error (never panic, never allocate without bound) whatever the input.

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    error::Result,
    index::IndexReader,
    manifest::Manifest,
    object_io::{MemoryObject, RandomRead},
    qcow2::reader::Qcow2Image,
    restore::Chain,
};

/// Most L2 ranges / index clusters walked per input (keeps one fuzz iteration short; the
/// per-range and per-record checks are what is being exercised).
const WALK_LIMIT: u64 = 64;

/// Opens `data` as a QCOW2 image and walks its first L2 tables and the merged map.
pub fn walk_image(data: &[u8]) -> Result<u64> {
    let obj: Arc<dyn RandomRead> = Arc::new(MemoryObject {
        data: Bytes::copy_from_slice(data),
        name: "input.qcow2".into(),
    });
    let img = Qcow2Image::open(obj)?;
    let chain = Chain::new(vec![img])?;
    let mut data_clusters = 0u64;
    for k in 0..chain.ranges().min(WALK_LIMIT) {
        for r in chain.resolve_range(k)? {
            if let crate::restore::Resolved::Data { layer, host, .. } = r {
                let mut buf = vec![0u8; chain.cluster_size() as usize];
                chain.layers()[layer].read_host(host, &mut buf)?;
                data_clusters += 1;
            }
        }
    }
    Ok(data_clusters)
}

/// Reads `data` as a digest index to the end, checking its trailer.
pub fn read_index(data: &[u8]) -> Result<u64> {
    let mut r = IndexReader::new("input.index", data)?;
    let mut n = 0u64;
    while r.next_cluster()?.is_some() {
        n += 1;
        if n > WALK_LIMIT * 8192 {
            return Ok(n);
        }
    }
    r.finish()?;
    Ok(n)
}

/// Parses and validates `data` as a manifest.
pub fn parse_manifest(data: &[u8]) -> Result<Manifest> {
    Manifest::parse("input/manifest.json", data, None)
}
