#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Every bundle rule: the checked-in valid bundle passes with no finding at all, and one
//! mutation per case makes exactly the rule under test fire (with its severity).

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use tvk_olm_validate::{Severity, validate_bundle};

const TAG_IMAGE: &str = "quay.io/tvk/tvk-manager:1.2.0";
const SEVEN: &str = "sha256:7777777777777777777777777777777777777777777777777777777777777777";

fn csv(dir: &Path, f: impl FnOnce(&mut Value)) {
    edit(&dir.join(CSV), f);
}

fn crd(dir: &Path, f: impl FnOnce(&mut Value)) {
    edit(&dir.join(CRD), f);
}

fn annotations(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    edit(&dir.join(ANNOTATIONS), |v| {
        f(at(v, "/annotations").as_object_mut().unwrap())
    });
}

fn annotation(dir: &Path, key: &str, value: Option<&str>) {
    csv(dir, |v| {
        let map = at(v, "/metadata/annotations").as_object_mut().unwrap();
        match value {
            Some(value) => {
                map.insert(key.to_owned(), json!(value));
            }
            None => {
                map.remove(key).unwrap();
            }
        }
    });
}

fn webhook(dir: &Path, field: &str, value: Value) {
    csv(dir, |v| {
        at(v, "/spec/webhookdefinitions/0")
            .as_object_mut()
            .unwrap()
            .insert(field.into(), value);
    });
}

fn conversion_webhook(dir: &Path, crds: Value) {
    csv(dir, |v| {
        let mut hook = at(v, "/spec/webhookdefinitions/0").clone();
        hook["type"] = json!("ConversionWebhook");
        hook["generateName"] = json!("ctvm.kb.io");
        hook["conversionCRDs"] = crds;
        at(v, "/spec/webhookdefinitions")
            .as_array_mut()
            .unwrap()
            .push(hook);
    });
}

fn write(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).unwrap();
}

type Mutation = fn(&Path);

const E: Severity = Severity::Error;
const W: Severity = Severity::Warning;

/// (case, rule that must fire, its severity, the mutation).
const CASES: &[(&str, &str, Severity, Mutation)] = &[
    // CSV
    ("csv apiVersion", "csv.api-version", E, |d| {
        csv(d, |v| v["apiVersion"] = json!("operators.coreos.com/v1"))
    }),
    ("csv name version differs", "csv.name", E, |d| {
        csv(d, |v| {
            *at(v, "/metadata/name") = json!("tvk-operator.v1.3.0")
        })
    }),
    ("csv name package differs", "csv.name", E, |d| {
        csv(d, |v| *at(v, "/metadata/name") = json!("tvk.v1.2.0"))
    }),
    ("csv name no version", "csv.name", E, |d| {
        csv(d, |v| *at(v, "/metadata/name") = json!("tvk-operator"))
    }),
    ("csv version not semver", "csv.version", E, |d| {
        csv(d, |v| *at(v, "/spec/version") = json!("1.2"))
    }),
    ("csv version missing", "csv.version", E, |d| {
        csv(d, |v| remove(v, "/spec/version"))
    }),
    ("csv displayName", "csv.display-name", E, |d| {
        csv(d, |v| remove(v, "/spec/displayName"))
    }),
    ("csv replaces", "csv.replaces", E, |d| {
        csv(d, |v| *at(v, "/spec/replaces") = json!("tvk-operator"))
    }),
    ("csv skips", "csv.skips", E, |d| {
        csv(d, |v| v["spec"]["skips"] = json!(["tvk-operator.1.x"]))
    }),
    ("csv skipRange", "csv.skip-range", E, |d| {
        annotation(d, "olm.skipRange", Some("1.0 - 1.2"))
    }),
    ("csv minKubeVersion", "csv.min-kube-version", E, |d| {
        csv(d, |v| *at(v, "/spec/minKubeVersion") = json!("latest"))
    }),
    ("csv strategy", "csv.install-strategy", E, |d| {
        csv(d, |v| *at(v, "/spec/install/strategy") = json!("helm"))
    }),
    ("csv no deployments", "csv.install-strategy", E, |d| {
        csv(d, |v| *at(v, "/spec/install/spec/deployments") = json!([]))
    }),
    (
        "csv container without image",
        "csv.install-strategy",
        E,
        |d| {
            csv(d, |v| {
                remove(
                    v,
                    "/spec/install/spec/deployments/0/spec/template/spec/containers/0/image",
                )
            })
        },
    ),
    (
        "csv permission without SA",
        "csv.install-strategy",
        E,
        |d| {
            csv(d, |v| {
                remove(v, "/spec/install/spec/permissions/0/serviceAccountName")
            })
        },
    ),
    ("csv install modes missing", "csv.install-modes", E, |d| {
        csv(d, |v| remove(v, "/spec/installModes"))
    }),
    (
        "csv install modes none supported",
        "csv.install-modes",
        E,
        |d| {
            csv(d, |v| {
                for i in 0..4 {
                    *at(v, &format!("/spec/installModes/{i}/supported")) = json!(false);
                }
            })
        },
    ),
    ("csv install mode unknown", "csv.install-modes", E, |d| {
        csv(d, |v| {
            *at(v, "/spec/installModes/0/type") = json!("Everywhere")
        })
    }),
    ("csv install mode twice", "csv.install-modes", E, |d| {
        csv(d, |v| {
            *at(v, "/spec/installModes/1/type") = json!("OwnNamespace")
        })
    }),
    ("csv owned entry without group", "csv.owned-crd", E, |d| {
        csv(d, |v| {
            *at(v, "/spec/customresourcedefinitions/owned/0/name") = json!("triliovaultmanagers")
        })
    }),
    ("csv owned without displayName", "csv.owned-crd", W, |d| {
        csv(d, |v| {
            remove(v, "/spec/customresourcedefinitions/owned/0/displayName")
        })
    }),
    ("alm-examples not JSON", "csv.alm-examples.json", E, |d| {
        annotation(d, "alm-examples", Some("[{\"kind\": "))
    }),
    ("alm-examples not a list", "csv.alm-examples.json", E, |d| {
        annotation(
            d,
            "alm-examples",
            Some("{\"kind\": \"TrilioVaultManager\"}"),
        )
    }),
    (
        "alm-examples kind not owned",
        "csv.alm-examples.owned",
        E,
        |d| {
            annotation(
                d,
                "alm-examples",
                Some(
                    r#"[{"apiVersion": "triliovault.trilio.io/v1", "kind": "TrilioVaultManager"}, {"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup"}]"#,
                ),
            )
        },
    ),
    ("alm-examples missing", "csv.alm-examples.missing", W, |d| {
        annotation(d, "alm-examples", None)
    }),
    (
        "alm-examples without the owned kind",
        "csv.alm-examples.missing",
        W,
        |d| annotation(d, "alm-examples", Some("[]")),
    ),
    ("webhook type", "csv.webhook.type", E, |d| {
        webhook(d, "type", json!("AdmissionWebhook"))
    }),
    ("webhook deployment", "csv.webhook.deployment", E, |d| {
        webhook(d, "deploymentName", json!("tvk-webhook"))
    }),
    ("webhook port", "csv.webhook.container-port", E, |d| {
        webhook(d, "containerPort", json!(70000))
    }),
    (
        "webhook name two segments",
        "csv.webhook.generate-name",
        E,
        |d| webhook(d, "generateName", json!("vtvm.io")),
    ),
    (
        "webhook name missing",
        "csv.webhook.generate-name",
        E,
        |d| csv(d, |v| remove(v, "/spec/webhookdefinitions/0/generateName")),
    ),
    (
        "webhook review versions",
        "csv.webhook.admission-review-versions",
        E,
        |d| webhook(d, "admissionReviewVersions", json!([])),
    ),
    ("webhook side effects", "csv.webhook.side-effects", E, |d| {
        webhook(d, "sideEffects", json!("Some"))
    }),
    (
        "webhook side effects missing",
        "csv.webhook.side-effects",
        E,
        |d| csv(d, |v| remove(v, "/spec/webhookdefinitions/0/sideEffects")),
    ),
    (
        "webhook failure policy",
        "csv.webhook.failure-policy",
        E,
        |d| webhook(d, "failurePolicy", json!("Maybe")),
    ),
    ("webhook timeout", "csv.webhook.timeout", E, |d| {
        webhook(d, "timeoutSeconds", json!(60))
    }),
    ("webhook path", "csv.webhook.path", E, |d| {
        webhook(d, "webhookPath", json!("validate"))
    }),
    (
        "conversion webhook without CRDs",
        "csv.webhook.conversion-crds",
        E,
        |d| conversion_webhook(d, json!([])),
    ),
    (
        "conversion webhook of a foreign CRD",
        "csv.webhook.conversion-crds",
        E,
        |d| conversion_webhook(d, json!(["backups.triliovault.trilio.io"])),
    ),
    (
        "conversion webhook with OwnNamespace",
        "csv.webhook.conversion-install-modes",
        E,
        |d| conversion_webhook(d, json!(["triliovaultmanagers.triliovault.trilio.io"])),
    ),
    ("selector does not match", "csv.install-strategy", E, |d| {
        csv(d, |v| {
            *at(
                v,
                "/spec/install/spec/deployments/0/spec/selector/matchLabels/app",
            ) = json!("other")
        })
    }),
    ("no selector", "csv.install-strategy", E, |d| {
        csv(d, |v| {
            remove(v, "/spec/install/spec/deployments/0/spec/selector")
        })
    }),
    ("arch label value", "csv.arch-labels", E, |d| {
        csv(d, |v| {
            *at(v, "/metadata/labels/operatorframework.io~1arch.arm64") = json!("yes")
        })
    }),
    ("unknown arch", "csv.arch-labels", E, |d| {
        csv(d, |v| {
            at(v, "/metadata/labels").as_object_mut().unwrap().insert(
                "operatorframework.io/arch.riscv128".into(),
                json!("supported"),
            );
        })
    }),
    ("no arch labels", "csv.arch-labels", W, |d| {
        csv(d, |v| remove(v, "/metadata/labels"))
    }),
    (
        "suggested namespace invalid",
        "openshift.suggested-namespace",
        E,
        |d| {
            annotation(
                d,
                "operatorframework.io/suggested-namespace",
                Some("TVK_NS"),
            )
        },
    ),
    (
        "suggested namespace missing",
        "openshift.suggested-namespace",
        W,
        |d| annotation(d, "operatorframework.io/suggested-namespace", None),
    ),
    ("related image without name", "csv.related-images", E, |d| {
        csv(d, |v| remove(v, "/spec/relatedImages/1/name"))
    }),
    // CRD
    ("crd v1beta1", "crd.api-version", E, |d| {
        crd(d, |v| {
            v["apiVersion"] = json!("apiextensions.k8s.io/v1beta1")
        })
    }),
    ("crd name", "crd.names", E, |d| {
        crd(d, |v| {
            *at(v, "/metadata/name") = json!("tvms.triliovault.trilio.io")
        })
    }),
    ("crd kind missing", "crd.names", E, |d| {
        crd(d, |v| remove(v, "/spec/names/kind"))
    }),
    ("crd scope", "crd.scope", E, |d| {
        crd(d, |v| *at(v, "/spec/scope") = json!("Global"))
    }),
    ("crd no storage version", "crd.versions", E, |d| {
        crd(d, |v| *at(v, "/spec/versions/0/storage") = json!(false))
    }),
    ("crd two storage versions", "crd.versions", E, |d| {
        crd(d, |v| {
            let mut second = at(v, "/spec/versions/0").clone();
            second["name"] = json!("v2");
            at(v, "/spec/versions").as_array_mut().unwrap().push(second);
        })
    }),
    ("crd not served", "crd.versions", E, |d| {
        crd(d, |v| *at(v, "/spec/versions/0/served") = json!(false))
    }),
    ("crd without schema", "crd.versions", E, |d| {
        crd(d, |v| remove(v, "/spec/versions/0/schema"))
    }),
    ("crd versions empty", "crd.versions", E, |d| {
        crd(d, |v| *at(v, "/spec/versions") = json!([]))
    }),
    ("crd conversion webhook", "crd.conversion", E, |d| {
        crd(d, |v| {
            v["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {}})
        })
    }),
    // bundle layout and manifests
    ("no manifests dir", "bundle.layout", E, |d| {
        std::fs::remove_dir_all(d.join("manifests")).unwrap()
    }),
    ("nested manifests", "bundle.layout", E, |d| {
        std::fs::create_dir(d.join("manifests/extra")).unwrap()
    }),
    ("manifest garbage", "bundle.manifest.parse", E, |d| {
        write(d, "manifests/x.yaml", "a: [1,\n")
    }),
    ("manifest not an object", "bundle.manifest.parse", E, |d| {
        write(d, "manifests/x.yaml", "just: data\n")
    }),
    (
        "two objects in one file",
        "bundle.manifest.one-object",
        E,
        |d| {
            write(
                d,
                "manifests/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
            )
        },
    ),
    ("unsupported kind", "bundle.manifest.kind", E, |d| {
        write(
            d,
            "manifests/d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
        )
    }),
    ("no CSV", "bundle.csv.count", E, |d| {
        std::fs::remove_file(d.join(CSV)).unwrap()
    }),
    ("two CSVs", "bundle.csv.count", E, |d| {
        std::fs::copy(
            d.join(CSV),
            d.join("manifests/z.clusterserviceversion.yaml"),
        )
        .unwrap();
    }),
    ("duplicate CRD", "bundle.crd.duplicate", E, |d| {
        std::fs::copy(d.join(CRD), d.join("manifests/z-crd.yaml")).unwrap();
    }),
    ("owned CRD missing", "bundle.crd.owned-missing", E, |d| {
        std::fs::remove_file(d.join(CRD)).unwrap()
    }),
    (
        "owned version differs",
        "bundle.crd.owned-missing",
        E,
        |d| {
            csv(d, |v| {
                *at(v, "/spec/customresourcedefinitions/owned/0/version") = json!("v2")
            })
        },
    ),
    ("CRD not owned", "bundle.crd.not-owned", W, |d| {
        write(
            d,
            "manifests/extra-crd.yaml",
            &std::fs::read_to_string(d.join(CRD))
                .unwrap()
                .replace("triliovaultmanager", "widget")
                .replace("TrilioVaultManager", "Widget"),
        )
    }),
    (
        "service account of the deployment",
        "bundle.service-account",
        E,
        |d| {
            write(
                d,
                "manifests/sa.yaml",
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tvk-manager}\n",
            )
        },
    ),
    // annotations and Dockerfile
    ("annotations missing", "bundle.annotations", E, |d| {
        std::fs::remove_file(d.join(ANNOTATIONS)).unwrap()
    }),
    ("annotations not a mapping", "bundle.annotations", E, |d| {
        write(d, ANNOTATIONS, "labels: {}\n")
    }),
    ("mediatype", "bundle.annotations.mediatype", E, |d| {
        annotations(d, |m| {
            m.insert(
                "operators.operatorframework.io.bundle.mediatype.v1".into(),
                json!("plain+v0"),
            );
        })
    }),
    ("manifests path", "bundle.annotations.manifests", E, |d| {
        annotations(d, |m| {
            m.insert(
                "operators.operatorframework.io.bundle.manifests.v1".into(),
                json!("manifest/"),
            );
        })
    }),
    ("metadata path", "bundle.annotations.metadata", E, |d| {
        annotations(d, |m| {
            m.remove("operators.operatorframework.io.bundle.metadata.v1");
        })
    }),
    ("package missing", "bundle.annotations.package", E, |d| {
        annotations(d, |m| {
            m.remove("operators.operatorframework.io.bundle.package.v1");
        })
    }),
    ("channels missing", "bundle.annotations.channels", E, |d| {
        annotations(d, |m| {
            m.remove("operators.operatorframework.io.bundle.channels.v1");
        })
    }),
    (
        "default channel not a channel",
        "bundle.annotations.default-channel",
        E,
        |d| {
            annotations(d, |m| {
                m.insert(
                    "operators.operatorframework.io.bundle.channel.default.v1".into(),
                    json!("fast"),
                );
            })
        },
    ),
    (
        "openshift versions",
        "bundle.annotations.openshift-versions",
        E,
        |d| {
            annotations(d, |m| {
                m.insert("com.redhat.openshift.versions".into(), json!("4.14+"));
            })
        },
    ),
    (
        "dockerfile label differs",
        "bundle.dockerfile.labels",
        E,
        |d| {
            replace(
                &d.join(DOCKERFILE),
                "channels.v1=stable,stable-1.2",
                "channels.v1=stable",
            )
        },
    ),
    (
        "dockerfile label missing",
        "bundle.dockerfile.labels",
        E,
        |d| {
            replace(
                &d.join(DOCKERFILE),
                "LABEL com.redhat.openshift.versions=\"v4.14\"\n",
                "",
            )
        },
    ),
    (
        "dockerfile extra bundle label",
        "bundle.dockerfile.labels",
        E,
        |d| {
            replace(
                &d.join(DOCKERFILE),
                "FROM scratch\n",
                "FROM scratch\nLABEL operators.operatorframework.io.bundle.extra.v1=x\n",
            )
        },
    ),
    (
        "dockerfile without COPY metadata",
        "bundle.dockerfile.copy",
        E,
        |d| replace(&d.join(DOCKERFILE), "COPY metadata /metadata/\n", ""),
    ),
    ("bundle over 1 MiB compressed", "bundle.size", E, |d| {
        std::fs::write(d.join("metadata/noise.bin"), noise(1100 * 1024)).unwrap()
    }),
    ("bundle near the limit", "bundle.size", W, |d| {
        std::fs::write(d.join("metadata/noise.bin"), noise(950 * 1024)).unwrap()
    }),
    // OperatorHub and OpenShift
    ("provider", "operatorhub.provider", E, |d| {
        csv(d, |v| remove(v, "/spec/provider/name"))
    }),
    ("maintainer email", "operatorhub.maintainers", E, |d| {
        csv(d, |v| {
            *at(v, "/spec/maintainers/0/email") = json!("support-at-trilio")
        })
    }),
    ("maintainers empty", "operatorhub.maintainers", E, |d| {
        csv(d, |v| *at(v, "/spec/maintainers") = json!([]))
    }),
    (
        "maintainer without email",
        "operatorhub.maintainers",
        E,
        |d| csv(d, |v| remove(v, "/spec/maintainers/0/email")),
    ),
    ("link url", "operatorhub.links", E, |d| {
        csv(d, |v| *at(v, "/spec/links/0/url") = json!("docs.trilio.io"))
    }),
    ("links empty", "operatorhub.links", W, |d| {
        csv(d, |v| *at(v, "/spec/links") = json!([]))
    }),
    ("capabilities", "operatorhub.capabilities", E, |d| {
        annotation(d, "capabilities", Some("Magic"))
    }),
    ("capabilities missing", "operatorhub.capabilities", E, |d| {
        annotation(d, "capabilities", None)
    }),
    ("categories", "operatorhub.categories", E, |d| {
        annotation(d, "categories", Some("Storage, Backup"))
    }),
    ("categories missing", "operatorhub.categories", W, |d| {
        annotation(d, "categories", None)
    }),
    ("version 0.0.0", "operatorhub.version", E, |d| {
        csv(d, |v| *at(v, "/spec/version") = json!("0.0.0"))
    }),
    ("icon missing", "operatorhub.icon", E, |d| {
        csv(d, |v| remove(v, "/spec/icon"))
    }),
    ("two icons", "operatorhub.icon", E, |d| {
        csv(d, |v| {
            let icon = at(v, "/spec/icon/0").clone();
            at(v, "/spec/icon").as_array_mut().unwrap().push(icon);
        })
    }),
    ("icon mediatype", "operatorhub.icon", E, |d| {
        csv(d, |v| *at(v, "/spec/icon/0/mediatype") = json!("image/bmp"))
    }),
    (
        "icon data is not the mediatype",
        "operatorhub.icon",
        E,
        |d| {
            csv(d, |v| {
                *at(v, "/spec/icon/0/mediatype") = json!("image/svg+xml")
            })
        },
    ),
    ("icon without data", "operatorhub.icon", E, |d| {
        csv(d, |v| remove(v, "/spec/icon/0/base64data"))
    }),
    (
        "minKubeVersion missing",
        "operatorhub.min-kube-version",
        W,
        |d| csv(d, |v| remove(v, "/spec/minKubeVersion")),
    ),
    ("description", "operatorhub.description", E, |d| {
        csv(d, |v| remove(v, "/spec/description"))
    }),
    ("short description", "operatorhub.description", W, |d| {
        annotation(d, "description", None)
    }),
    ("keywords", "operatorhub.keywords", E, |d| {
        csv(d, |v| remove(v, "/spec/keywords"))
    }),
    ("containerImage", "operatorhub.container-image", E, |d| {
        annotation(d, "containerImage", None)
    }),
    ("createdAt format", "operatorhub.created-at", E, |d| {
        annotation(d, "createdAt", Some("yesterday"))
    }),
    ("createdAt missing", "operatorhub.created-at", E, |d| {
        annotation(d, "createdAt", None)
    }),
    (
        "valid-subscription not JSON",
        "openshift.valid-subscription",
        E,
        |d| {
            annotation(
                d,
                "operators.openshift.io/valid-subscription",
                Some("OpenShift Container Platform"),
            )
        },
    ),
    (
        "valid-subscription empty list",
        "openshift.valid-subscription",
        E,
        |d| annotation(d, "operators.openshift.io/valid-subscription", Some("[]")),
    ),
    ("feature missing", "openshift.features", E, |d| {
        annotation(d, "features.operators.openshift.io/token-auth-gcp", None)
    }),
    ("feature not boolean", "openshift.features", E, |d| {
        annotation(
            d,
            "features.operators.openshift.io/disconnected",
            Some("yes"),
        )
    }),
    ("unknown feature", "openshift.features", W, |d| {
        annotation(d, "features.operators.openshift.io/teleport", Some("true"))
    }),
    // good practices
    (
        "no resource requests",
        "good-practices.resource-requests",
        W,
        |d| {
            csv(d, |v| {
                remove(
                    v,
                    "/spec/install/spec/deployments/0/spec/template/spec/containers/0/resources",
                )
            })
        },
    ),
    (
        "owned CRD without description",
        "good-practices.crd-description",
        W,
        |d| {
            csv(d, |v| {
                remove(v, "/spec/customresourcedefinitions/owned/0/description")
            })
        },
    ),
    ("channel naming", "good-practices.channel-naming", W, |d| {
        annotations(d, |m| {
            m.insert(
                "operators.operatorframework.io.bundle.channels.v1".into(),
                json!("stable,1.2.x"),
            );
        })
    }),
    (
        "removed API past minKubeVersion",
        "deprecated-api.removed",
        E,
        |d| {
            write(
                d,
                "manifests/pdb.yaml",
                "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: p}\n",
            )
        },
    ),
    (
        "removed API, no minKubeVersion",
        "deprecated-api.removed",
        W,
        |d| {
            write(
                d,
                "manifests/pdb.yaml",
                "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: p}\n",
            );
            csv(d, |v| remove(v, "/spec/minKubeVersion"));
        },
    ),
    (
        "container image by tag",
        "good-practices.image-digest",
        E,
        |d| {
            csv(d, |v| {
                *at(
                    v,
                    "/spec/install/spec/deployments/0/spec/template/spec/containers/0/image",
                ) = json!(TAG_IMAGE)
            })
        },
    ),
    (
        "RELATED_IMAGE by tag",
        "good-practices.image-digest",
        E,
        |d| {
            csv(d, |v| {
                *at(
                    v,
                    "/spec/install/spec/deployments/0/spec/template/spec/containers/0/env/0/value",
                ) = json!("quay.io/tvk/tvk-datamover:latest")
            })
        },
    ),
    (
        "relatedImages by tag",
        "good-practices.image-digest",
        E,
        |d| {
            csv(d, |v| {
                *at(v, "/spec/relatedImages/0/image") = json!(TAG_IMAGE)
            })
        },
    ),
    (
        "containerImage by tag",
        "good-practices.image-digest",
        E,
        |d| annotation(d, "containerImage", Some(TAG_IMAGE)),
    ),
    (
        "init container by tag",
        "good-practices.image-digest",
        E,
        |d| {
            csv(d, |v| {
                at(v, "/spec/install/spec/deployments/0/spec/template/spec").as_object_mut().unwrap()
            .insert("initContainers".into(), json!([{"name": "init", "image": "busybox", "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]));
            })
        },
    ),
    (
        "RELATED_IMAGE not in relatedImages",
        "good-practices.related-images",
        E,
        |d| csv(d, |v| remove(v, "/spec/relatedImages/1")),
    ),
    (
        "container image not in relatedImages",
        "good-practices.related-images",
        E,
        |d| {
            csv(d, |v| {
                *at(
                    v,
                    "/spec/install/spec/deployments/0/spec/template/spec/containers/0/image",
                ) = json!(format!("quay.io/tvk/tvk-manager@{SEVEN}"))
            })
        },
    ),
];

#[test]
fn the_valid_bundle_has_no_finding() {
    let dir = copy_fixture("bundle");
    let report = validate_bundle(dir.path());
    assert!(report.findings.is_empty(), "{report}");
    assert!(report.is_ok());
}

#[test]
fn each_rule_fires_on_its_mutation() {
    let mut failures = Vec::new();
    for (case, rule, severity, mutate) in CASES {
        let dir = copy_fixture("bundle");
        mutate(dir.path());
        let report = validate_bundle(dir.path());
        let fired = report
            .findings
            .iter()
            .any(|f| f.rule == *rule && f.severity == *severity);
        if !fired {
            failures.push(format!(
                "{case}: expected {severity} {rule}, got:\n{report}"
            ));
        }
        if *severity == Severity::Error && report.is_ok() {
            failures.push(format!("{case}: an error rule fired but is_ok() is true"));
        }
        for finding in &report.findings {
            let shown = finding.to_string();
            assert!(
                shown.contains(finding.rule) && shown.contains(&finding.file.display().to_string()),
                "{shown}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn every_rule_id_is_documented_in_the_readme() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for (_, rule, _, _) in CASES {
        assert!(
            readme.contains(&format!("`{rule}`")),
            "README.md does not list rule {rule}"
        );
    }
}

#[test]
fn report_display_is_one_line_per_finding_naming_file_and_rule() {
    let dir = copy_fixture("bundle");
    annotation(dir.path(), "capabilities", Some("Magic"));
    annotation(dir.path(), "categories", None);
    let report = validate_bundle(dir.path());
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("error [operatorhub.capabilities] "),
        "{text}"
    );
    assert!(
        lines[0].contains("tvk-operator.clusterserviceversion.yaml: "),
        "{text}"
    );
    assert!(lines[0].contains("Magic"), "{text}");
    assert!(
        lines[1].starts_with("warning [operatorhub.categories] "),
        "{text}"
    );
    assert_eq!(report.errors().count(), 1);
    assert_eq!(report.warnings().count(), 1);
    assert!(!report.is_ok());
}

#[test]
fn hostile_manifests_are_findings_not_panics() {
    let dir = copy_fixture("bundle");
    let bomb = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    write(dir.path(), "manifests/bomb.yaml", &bomb);
    write(dir.path(), "manifests/binary.yaml", "\u{0}\u{1}\u{2}");
    csv(dir.path(), |v| {
        v["spec"]["installModes"] = json!("not a list");
        v["spec"]["webhookdefinitions"] = json!([{"containerPort": "x"}, 7]);
        v["spec"]["relatedImages"] = json!({"a": 1});
    });
    let report = validate_bundle(dir.path());
    assert!(report.has_rule("bundle.manifest.parse"), "{report}");
    assert!(report.has_rule("csv.install-modes"), "{report}");
    assert!(report.has_rule("csv.webhook.type"), "{report}");
    assert!(!report.is_ok());
}
