//! Rendering the whole application (every template, the generated CRDs, values merge, parse
//! back into objects, ordering and hashing) for one TVM. Target: under 10 ms.
//! Run: `cargo bench -p tvk-manager --bench render`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tvk_manager::{
    render::{RenderInputs, Renderer, TemplateSource},
    tvm::TrilioVaultManager,
};

fn tvm() -> Option<TrilioVaultManager> {
    let text = include_str!("../tests/tvms/resources-scheduling.yaml");
    let value = tvk_api::yaml::parse_single(text, &tvk_api::yaml::Limits::default()).ok()?;
    serde_json::from_value(value).ok()
}

fn bench(c: &mut Criterion) {
    let (Ok(renderer), Some(tvm)) = (Renderer::new(&TemplateSource::embedded()), tvm()) else {
        eprintln!(
            "error: the embedded templates or the bench TVM do not load; run the golden tests"
        );
        std::process::exit(1);
    };
    let inputs = RenderInputs {
        api_versions: vec!["monitoring.coreos.com/v1".into()],
        ca_bundle: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        ..Default::default()
    };
    c.bench_function("render whole application", |b| {
        b.iter(|| renderer.render(black_box(&tvm), black_box(&inputs)))
    });
    c.bench_function("compile templates", |b| {
        b.iter(|| Renderer::new(black_box(&TemplateSource::embedded())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
