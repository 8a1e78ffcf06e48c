#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Every catalog rule: the checked-in valid catalog (with an `.indexignore`d broken file) passes
//! with no finding, and one mutation per case makes exactly the rule under test fire.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use tvk_olm_validate::{Severity, validate_catalog};

const E: Severity = Severity::Error;
const W: Severity = Severity::Warning;

/// Edits the blobs of catalog.yaml (0 package, 1 channel stable, 2..=4 bundles 1.0.0, 1.1.0,
/// 1.1.1).
fn blobs(dir: &Path, f: impl FnOnce(&mut Vec<Value>)) {
    edit_docs(&dir.join(CATALOG), f);
}

fn blob(dir: &Path, index: usize, f: impl FnOnce(&mut Value)) {
    blobs(dir, |docs| f(&mut docs[index]));
}

fn entries(dir: &Path, f: impl FnOnce(&mut Vec<Value>)) {
    blob(dir, 1, |channel| {
        f(at(channel, "/entries").as_array_mut().unwrap())
    });
}

fn add(dir: &Path, value: Value) {
    blobs(dir, |docs| docs.push(value));
}

fn bundle(name: &str, version: &str) -> Value {
    json!({
        "schema": "olm.bundle", "package": "tvk-operator", "name": name,
        "image": "quay.io/tvk/b@sha256:4444444444444444444444444444444444444444444444444444444444444444",
        "properties": [{"type": "olm.package", "value": {"packageName": "tvk-operator", "version": version}}],
    })
}

type Mutation = fn(&Path);

const CASES: &[(&str, &str, Severity, Mutation)] = &[
    ("not a directory", "catalog.read", E, |d| {
        std::fs::remove_dir_all(d).unwrap();
    }),
    ("broken file", "catalog.parse", E, |d| {
        std::fs::write(d.join("tvk-operator/extra.yaml"), "schema: [\n").unwrap()
    }),
    ("broken JSON", "catalog.parse", E, |d| {
        std::fs::write(d.join(CATALOG_JSON), "{\"schema\": ").unwrap()
    }),
    (".indexignore removed", "catalog.parse", E, |d| {
        std::fs::remove_file(d.join("tvk-operator/.indexignore")).unwrap()
    }),
    ("Dockerfile not ignored", "catalog.parse", E, |d| {
        std::fs::write(
            d.join("catalog.Dockerfile"),
            "FROM scratch\nADD catalog /configs\n",
        )
        .unwrap()
    }),
    ("symbolic link", "catalog.file", W, |d| {
        std::os::unix::fs::symlink(d.join(CATALOG), d.join("link.yaml")).unwrap()
    }),
    ("blob without schema", "catalog.blob.schema", E, |d| {
        add(d, json!({"name": "x"}))
    }),
    ("empty catalog", "catalog.empty", E, |d| {
        std::fs::remove_dir_all(d.join("tvk-operator")).unwrap()
    }),
    ("two olm.package", "catalog.package.duplicate", E, |d| {
        std::fs::write(
            d.join("second.yaml"),
            "schema: olm.package\nname: tvk-operator\ndefaultChannel: stable\n",
        )
        .unwrap()
    }),
    ("package without name", "catalog.package.name", E, |d| {
        add(
            d,
            json!({"schema": "olm.package", "defaultChannel": "stable"}),
        )
    }),
    (
        "package without channels",
        "catalog.package.channels",
        E,
        |d| {
            add(
                d,
                json!({"schema": "olm.package", "name": "other", "defaultChannel": "stable"}),
            )
        },
    ),
    (
        "default channel missing",
        "catalog.package.default-channel",
        E,
        |d| blob(d, 0, |p| remove(p, "/defaultChannel")),
    ),
    (
        "default channel unknown",
        "catalog.package.default-channel",
        E,
        |d| blob(d, 0, |p| *at(p, "/defaultChannel") = json!("fast")),
    ),
    ("icon mediatype", "catalog.package.icon", E, |d| {
        blob(d, 0, |p| *at(p, "/icon/mediatype") = json!("image/bmp"))
    }),
    ("icon without data", "catalog.package.icon", E, |d| {
        blob(d, 0, |p| remove(p, "/icon/base64data"))
    }),
    (
        "icon data of another type",
        "catalog.package.icon",
        W,
        |d| blob(d, 0, |p| *at(p, "/icon/mediatype") = json!("image/gif")),
    ),
    ("channel twice", "catalog.channel.duplicate", E, |d| {
        blobs(d, |docs| {
            let channel = docs[1].clone();
            docs.push(channel);
        })
    }),
    ("channel without name", "catalog.channel.name", E, |d| {
        add(
            d,
            json!({"schema": "olm.channel", "package": "tvk-operator", "entries": [{"name": "tvk-operator.v1.2.0"}]}),
        )
    }),
    (
        "channel of unknown package",
        "catalog.channel.package",
        E,
        |d| {
            add(
                d,
                json!({"schema": "olm.channel", "package": "ghost", "name": "stable", "entries": [{"name": "x"}]}),
            )
        },
    ),
    ("channel without entries", "catalog.channel.empty", E, |d| {
        blob(d, 1, |c| *at(c, "/entries") = json!([]))
    }),
    ("entry twice", "catalog.channel.entry", E, |d| {
        entries(d, |e| {
            let first = e[0].clone();
            e.push(first);
        })
    }),
    ("entry without name", "catalog.channel.entry", E, |d| {
        entries(d, |e| e.push(json!({"replaces": "x"})))
    }),
    ("empty skip", "catalog.channel.entry", E, |d| {
        entries(d, |e| e[3]["skips"] = json!(["tvk-operator.v1.1.1", ""]))
    }),
    (
        "entry without bundle",
        "catalog.channel.entry-bundle",
        E,
        |d| {
            entries(d, |e| {
                e.push(json!({"name": "tvk-operator.v1.3.0", "replaces": "tvk-operator.v1.2.0"}))
            })
        },
    ),
    ("skipRange", "catalog.channel.skip-range", E, |d| {
        entries(d, |e| e[3]["skipRange"] = json!("< 1.2"))
    }),
    ("two heads", "catalog.channel.head", E, |d| {
        entries(d, |e| {
            e[3].as_object_mut().unwrap().remove("skips");
        })
    }),
    ("no head", "catalog.channel.head", E, |d| {
        entries(d, |e| e[0]["replaces"] = json!("tvk-operator.v1.2.0"))
    }),
    ("replaces cycle", "catalog.channel.cycle", E, |d| {
        entries(d, |e| e[0]["replaces"] = json!("tvk-operator.v1.1.0"))
    }),
    ("stranded bundle", "catalog.channel.stranded", E, |d| {
        entries(d, |e| {
            e.push(json!({"name": "tvk-operator.v1.0.5"}));
            e[2]["replaces"] = json!("tvk-operator.v1.0.5");
        });
        add(d, bundle("tvk-operator.v1.0.5", "1.0.5"));
    }),
    ("bundle twice", "catalog.bundle.duplicate", E, |d| {
        blobs(d, |docs| {
            let b = docs[2].clone();
            docs.push(b);
        })
    }),
    ("bundle without name", "catalog.bundle.name", E, |d| {
        blob(d, 4, |b| remove(b, "/name"))
    }),
    (
        "bundle of unknown package",
        "catalog.bundle.package",
        E,
        |d| {
            let mut b = bundle("ghost.v1.0.0", "1.0.0");
            b["package"] = json!("ghost");
            add(d, b);
        },
    ),
    (
        "bundle in no channel",
        "catalog.bundle.not-in-channel",
        E,
        |d| add(d, bundle("tvk-operator.v1.3.0", "1.3.0")),
    ),
    ("bundle without image", "catalog.bundle.image", E, |d| {
        blob(d, 2, |b| remove(b, "/image"))
    }),
    (
        "bundle image by tag",
        "catalog.bundle.image-digest",
        E,
        |d| {
            blob(d, 2, |b| {
                *at(b, "/image") = json!("quay.io/tvk/tvk-operator-bundle:1.0.0")
            })
        },
    ),
    (
        "related image by tag",
        "catalog.bundle.image-digest",
        E,
        |d| {
            replace(
                &d.join(CATALOG_JSON),
                "quay.io/tvk/tvk-manager@sha256:2222222222222222222222222222222222222222222222222222222222222222",
                "quay.io/tvk/tvk-manager:1.2.0",
            )
        },
    ),
    (
        "related image empty",
        "catalog.bundle.related-images",
        E,
        |d| {
            blob(d, 2, |b| {
                b["relatedImages"] = json!([{"name": "x", "image": ""}])
            })
        },
    ),
    (
        "no olm.package property",
        "catalog.bundle.package-property",
        E,
        |d| blob(d, 2, |b| *at(b, "/properties") = json!([])),
    ),
    (
        "two olm.package properties",
        "catalog.bundle.package-property",
        E,
        |d| {
            blob(d, 2, |b| {
                let p = at(b, "/properties/0").clone();
                at(b, "/properties").as_array_mut().unwrap().push(p);
            })
        },
    ),
    (
        "olm.package of another package",
        "catalog.bundle.package-property",
        E,
        |d| {
            blob(d, 2, |b| {
                *at(b, "/properties/0/value/packageName") = json!("tvk")
            })
        },
    ),
    (
        "olm.package version not semver",
        "catalog.bundle.package-property",
        E,
        |d| {
            blob(d, 2, |b| {
                *at(b, "/properties/0/value/version") = json!("1.0")
            })
        },
    ),
    (
        "same version twice",
        "catalog.bundle.version-duplicate",
        E,
        |d| {
            blob(d, 4, |b| {
                *at(b, "/properties/0/value/version") = json!("1.1.0")
            })
        },
    ),
];

#[test]
fn the_valid_catalog_has_no_finding() {
    let dir = copy_fixture("catalog");
    let report = validate_catalog(dir.path());
    assert!(report.findings.is_empty(), "{report}");
}

#[test]
fn each_rule_fires_on_its_mutation() {
    let mut failures = Vec::new();
    for (case, rule, severity, mutate) in CASES {
        let dir = copy_fixture("catalog");
        mutate(dir.path());
        let report = validate_catalog(dir.path());
        if !report
            .findings
            .iter()
            .any(|f| f.rule == *rule && f.severity == *severity)
        {
            failures.push(format!(
                "{case}: expected {severity} {rule}, got:\n{report}"
            ));
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
fn findings_name_the_file_that_holds_the_problem() {
    let dir = copy_fixture("catalog");
    entries(dir.path(), |e| {
        e[3].as_object_mut().unwrap().remove("skips");
    });
    let report = validate_catalog(dir.path());
    let head = report
        .findings
        .iter()
        .find(|f| f.rule == "catalog.channel.head")
        .unwrap();
    assert_eq!(head.file, dir.path().join(CATALOG));
    assert!(
        head.message.contains("tvk-operator.v1.1.1")
            && head.message.contains("tvk-operator.v1.2.0"),
        "{}",
        head.message
    );
    assert!(head.message.contains("\"stable\""), "{}", head.message);
}

#[test]
fn indexignore_patterns_follow_gitignore_rules() {
    let dir = copy_fixture("catalog");
    let package = dir.path().join("tvk-operator");
    std::fs::write(package.join("draft.yaml"), "schema: [\n").unwrap();
    std::fs::write(package.join("keep.yaml"), "schema: [\n").unwrap();
    std::fs::write(
        package.join(".indexignore"),
        "notes/\n*.yaml\n!keep.yaml\n!catalog.yaml\n",
    )
    .unwrap();
    let report = validate_catalog(dir.path());
    let parse: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "catalog.parse")
        .map(|f| f.file.clone())
        .collect();
    assert_eq!(parse, [package.join("keep.yaml")], "{report}");
    // catalog.yaml is re-included, so the model is complete apart from keep.yaml.
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn a_dockerfile_listed_in_indexignore_is_not_read() {
    let dir = copy_fixture("catalog");
    std::fs::write(dir.path().join("catalog.Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(dir.path().join(".indexignore"), "catalog.Dockerfile\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "# only a comment for YAML\n").unwrap();
    let report = validate_catalog(dir.path());
    assert!(report.findings.is_empty(), "{report}");
}

#[test]
fn hostile_catalogs_are_findings_not_panics() {
    let dir = copy_fixture("catalog");
    let package = dir.path().join("tvk-operator");
    std::fs::write(
        package.join("deep.json"),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    std::fs::write(
        package.join("bomb.yaml"),
        format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    std::fs::write(package.join("types.yaml"), "schema: olm.channel\npackage: tvk-operator\nname: odd\nentries: {a: 1}\n---\nschema: olm.bundle\nname: 7\nproperties: nope\n").unwrap();
    let report = validate_catalog(dir.path());
    assert!(report.has_rule("catalog.parse"), "{report}");
    assert!(report.has_rule("catalog.channel.empty"), "{report}");
    assert!(!report.is_ok());
}
