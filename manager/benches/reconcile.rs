//! One reconcile of an installed, unchanged TrilioVaultManager (the whole application, the
//! generated CRDs included) against kube-fake-client's in-memory apiserver: validate, cluster
//! rules (list TVMs), upgrade policy, certificate check, render, compare every object with the
//! live one, status compare. Target: under 50 ms. That it sends zero writes is asserted by the
//! test `a_no_change_reconcile_of_the_whole_application_sends_zero_writes` (same scenario); the
//! bench refuses to report a number if a write happens anyway.
//! Run: `cargo bench -p tvk-manager --bench reconcile`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_client, ctx, recorder, installed) =
        runtime.block_on(support::installed_whole_application());
    c.bench_function("no-change reconcile (whole application)", |b| {
        b.iter(|| {
            runtime
                .block_on(tvk_manager::reconcile::apply_tvm(
                    black_box(installed.clone()),
                    ctx.clone(),
                ))
                .unwrap()
        })
    });
    let writes = recorder.take();
    assert!(writes.is_empty(), "a no-change reconcile wrote: {writes:?}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
