//! Flattening a chain into one standalone base image (retention coalescing and the `image
//! squash` command). Only allocated clusters are copied; every cluster is checked against
//! the digest index of the backup the chain represents when one is given.

use std::io::Read;

use bytes::Bytes;
use rayon::prelude::*;

use crate::{
    error::{Error, Result},
    index::{ClusterState, IndexReader},
    object_io::ObjectSink,
    progress::Progress,
    qcow2::writer::{ImageOptions, ImageSummary, Qcow2Writer},
    restore::{Chain, Resolved},
    volume::is_zero,
};

/// Clusters read per parallel batch (bounded memory: 64 MiB with 64 KiB clusters).
const BATCH_CLUSTERS: usize = 1024;
/// Clusters per read.
const RUN_CLUSTERS: u64 = 64;

/// Writes the chain's content as a base image (no backing file) into `sink`.
/// `index` (the top backup's) verifies every cluster before it is written.
pub fn flatten_chain<R: Read>(
    chain: &Chain,
    mut index: Option<IndexReader<R>>,
    backup_id: &str,
    sink: Box<dyn ObjectSink>,
    progress: &dyn Progress,
) -> Result<ImageSummary> {
    // The index keeps the exact size; image headers round it up to 512 bytes.
    let size = index
        .as_ref()
        .map_or(chain.virtual_size(), |ix| ix.header().virtual_size);
    let cs = chain.cluster_size();
    let cluster_bits = cs.trailing_zeros();
    let mut writer = Qcow2Writer::new(
        sink,
        ImageOptions {
            virtual_size: size,
            cluster_bits,
            backing_file: None,
            // Coalescing re-encrypts with the key that opened the chain.
            encryption: chain
                .layers()
                .last()
                .and_then(|l| l.encryption_key().cloned()),
        },
    )?;
    let r = copy_clusters(chain, index.as_mut(), backup_id, &mut writer, progress);
    let r = r.and_then(|()| match index {
        Some(ix) => ix.finish().map(|_| ()),
        None => Ok(()),
    });
    match r {
        Ok(()) => writer.finish(),
        Err(e) => {
            writer.abort();
            Err(e)
        }
    }
}

fn copy_clusters<R: Read>(
    chain: &Chain,
    mut index: Option<&mut IndexReader<R>>,
    backup_id: &str,
    writer: &mut Qcow2Writer,
    progress: &dyn Progress,
) -> Result<()> {
    let size = chain.virtual_size();
    let cs = chain.cluster_size();
    for k in 0..chain.ranges() {
        let resolved = chain.resolve_range(k)?;
        let first = k * chain.range_clusters();
        let mut expected = Vec::with_capacity(resolved.len());
        if let Some(ix) = index.as_mut() {
            for _ in 0..resolved.len() {
                expected.push(ix.next_cluster()?);
            }
        }
        // (guest, layer, host, count) runs.
        let mut runs: Vec<(u64, usize, u64, u64)> = Vec::new();
        for (i, r) in resolved.iter().enumerate() {
            let g = first + i as u64;
            match *r {
                Resolved::Zero => {
                    if let Some(Some(ClusterState::Data(_))) = expected.get(i) {
                        return Err(Error::DigestMismatch {
                            backup: backup_id.into(),
                            image: chain.layers().last().map_or("", |l| l.name()).into(),
                            offset: g * cs,
                            detail: "the index records data but the chain has none".into(),
                        });
                    }
                }
                Resolved::Data { layer, host, .. } => match runs.last_mut() {
                    Some((rg, rl, rh, n))
                        if *rl == layer
                            && *rg + *n == g
                            && *rh + *n * cs == host
                            && *n < RUN_CLUSTERS =>
                    {
                        *n += 1
                    }
                    _ => runs.push((g, layer, host, 1)),
                },
            }
        }
        for batch in runs.chunks(BATCH_CLUSTERS / RUN_CLUSTERS as usize) {
            let datas: Result<Vec<(u64, Bytes)>> = batch
                .par_iter()
                .map(|&(g0, li, host, n)| {
                    let layer = &chain.layers()[li];
                    let mut buf = vec![0u8; (n * cs) as usize];
                    layer.read_host(host, &mut buf)?;
                    for c in 0..n {
                        let g = g0 + c;
                        let i = (g - first) as usize;
                        let cl = &mut buf[(c * cs) as usize..((c + 1) * cs) as usize];
                        if let Resolved::Data { valid, .. } = resolved[i]
                            && valid < cs
                        {
                            cl[valid as usize..].fill(0);
                        }
                        let ok = match expected.get(i).copied().flatten() {
                            Some(ClusterState::Data(h)) => chain.digest(cl) == h,
                            Some(_) => is_zero(cl),
                            None => true,
                        };
                        if !ok {
                            return Err(Error::DigestMismatch {
                                backup: backup_id.into(),
                                image: layer.name().into(),
                                offset: g * cs,
                                detail: format!(
                                    "cluster at host offset {:#x} does not match the index",
                                    host + c * cs
                                ),
                            });
                        }
                    }
                    Ok((g0, Bytes::from(buf)))
                })
                .collect();
            for (g0, data) in datas? {
                // Clusters that are data but all zeros (other tools store zeroed clusters
                // that way) need no space in a base image: there they read as zeros anyway.
                let cs = cs as usize;
                let n = data.len() / cs;
                let mut start: Option<usize> = None;
                for i in 0..=n {
                    let keep = i < n && !is_zero(&data[i * cs..(i + 1) * cs]);
                    match (keep, start) {
                        (true, None) => start = Some(i),
                        (false, Some(s)) => {
                            writer.put_data(g0 + s as u64, data.slice(s * cs..i * cs))?;
                            start = None;
                        }
                        _ => {}
                    }
                }
            }
        }
        progress.update(((first + resolved.len() as u64) * cs).min(size), size);
    }
    Ok(())
}
