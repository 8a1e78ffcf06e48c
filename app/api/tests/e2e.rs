#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Opt-in real-cluster checks (run by `hack/test.sh` when `KUBECONFIG` is set): a real
//! apiserver accepts every generated CRD. Server-side apply with `dryRun=All` runs the
//! apiserver's full CRD validation (structural schema, defaults, printer columns) without
//! changing the cluster.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

#[tokio::test]
#[ignore = "needs KUBECONFIG: real-cluster e2e"]
async fn e2e_generated_crds_are_accepted_by_a_real_apiserver() {
    let client = Client::try_default()
        .await
        .expect("e2e needs a cluster: set KUBECONFIG");
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let params = PatchParams::apply("tvk-e2e").force().dry_run();
    for crd in tvk_api::crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        let accepted = api
            .patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("the apiserver refused CRD {name}: {e}"));
        assert_eq!(accepted.spec.names.kind, crd.spec.names.kind);
    }
}
