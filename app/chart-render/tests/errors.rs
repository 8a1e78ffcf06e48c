//! Failures: what a chart gets wrong is an error naming the template, never a panic or an

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! unbounded allocation.

mod common;

use common::{inline_chart, oracle, ours};
use serde_json::json;
use tvk_chart_render::{Chart, RenderError};

fn render_err(template: &str, values: serde_json::Value) -> RenderError {
    match ours(&inline_chart(&[("x.yaml", template)], values), &json!({})) {
        Ok(r) => panic!("expected an error, rendered {:?}", r.templates),
        Err(e) => e,
    }
}

#[test]
fn missing_function_is_a_parse_error_naming_the_template_and_function() {
    let e = render_err("a: {{ lookupFoo 1 }}\n", json!({}));
    let msg = e.to_string();
    assert!(matches!(e, RenderError::Parse { .. }), "{msg}");
    assert!(msg.contains("t/templates/x.yaml"), "{msg}");
    assert!(msg.contains("lookupFoo"), "{msg}");
}

#[test]
fn required_names_its_message_and_location() {
    let e = render_err(
        "a: 1\nb: {{ required \"db.host is required\" .Values.db.host }}\n",
        json!({"db": {}}),
    );
    let msg = e.to_string();
    assert!(msg.contains("db.host is required"), "{msg}");
    assert!(msg.contains("t/templates/x.yaml:2"), "{msg}");
    // An empty string is missing too; a value passes.
    render_err("{{ required \"need it\" .Values.s }}", json!({"s": ""}));
    let ok = ours(
        &inline_chart(
            &[("x.yaml", "{{ required \"need it\" .Values.s }}")],
            json!({"s": "v"}),
        ),
        &json!({}),
    )
    .expect("render");
    assert_eq!(ok.templates["t/templates/x.yaml"], "v");
}

#[test]
fn fail_reports_the_chart_message() {
    let e = render_err("{{ fail \"unsupported mode\" }}", json!({}));
    assert!(e.to_string().contains("unsupported mode"), "{e}");
}

#[test]
fn recursive_include_hits_the_depth_limit() {
    let e = render_err(
        "{{- define \"loop\" }}{{ include \"loop\" . }}{{ end }}{{ include \"loop\" . }}",
        json!({}),
    );
    assert!(e.to_string().contains("depth"), "{e}");
    let e = render_err(
        "{{- define \"loop\" }}{{ template \"loop\" . }}{{ end }}{{ template \"loop\" . }}",
        json!({}),
    );
    assert!(e.to_string().contains("depth"), "{e}");
    // Worst case for the stack: every level of the recursion nested as deep as allowed.
    let deep = format!(
        "{{{{- define \"loop\" }}}}{}{{{{ include \"loop\" . }}}}{}{{{{ end }}}}{{{{ include \"loop\" . }}}}",
        "{{ if true }}".repeat(98),
        "{{ end }}".repeat(98)
    );
    let e = render_err(&deep, json!({}));
    assert!(e.to_string().contains("depth"), "{e}");
    let deep = format!(
        "{{{{- define \"loop\" }}}}{{{{ {}include \"loop\" .{} }}}}{{{{ end }}}}{{{{ include \"loop\" . }}}}",
        "list (".repeat(98),
        ")".repeat(98)
    );
    let e = render_err(&deep, json!({}));
    assert!(e.to_string().contains("depth"), "{e}");
}

#[test]
fn hostile_sizes_fail_without_allocating() {
    let e = render_err("{{ repeat 2000000000 \"abcdefgh\" }}", json!({}));
    assert!(e.to_string().contains("limit"), "{e}");
    let e = render_err("{{ range until 2000000000 }}x{{ end }}", json!({}));
    assert!(e.to_string().contains("limit"), "{e}");
    let e = render_err("{{ randAlphaNum 2000000000 }}", json!({}));
    assert!(e.to_string().contains("limit"), "{e}");
    // Output growth through nested ranges stops at the output cap.
    let e = render_err(
        "{{ range until 10000 }}{{ range until 10000 }}0123456789{{ end }}{{ end }}",
        json!({}),
    );
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn hostile_nesting_fails_cleanly() {
    let deep_parens = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
    let e = render_err(&deep_parens, json!({}));
    assert!(e.to_string().contains("nested"), "{e}");
    let deep_ifs = format!(
        "{}x{}",
        "{{ if true }}".repeat(5000),
        "{{ end }}".repeat(5000)
    );
    let e = render_err(&deep_ifs, json!({}));
    assert!(e.to_string().contains("nested"), "{e}");
    // Unterminated actions and garbage are parse errors.
    render_err("{{ if .Values.x }}never closed", json!({}));
    render_err("{{ \"unterminated }}", json!({}));
    render_err("{{ range $a, $b, $c := . }}{{ end }}", json!({}));
}

#[test]
fn invalid_release_records_are_rejected() {
    for bad in [
        json!([]),
        json!({"metadata": {}}),
        json!({"metadata": {"name": "../x"}}),
        json!({"metadata": {"name": "c"}, "templates": [{"name": "templates/a", "data": "%%%"}]}),
        json!({"metadata": {"name": "c"}, "templates": "nope"}),
        json!({"metadata": {"name": "c"}, "values": [1]}),
    ] {
        let e = Chart::from_release_json(&bad).expect_err("must be rejected");
        assert!(matches!(e, RenderError::InvalidChart(_)), "{e}");
    }
}

#[test]
fn random_functions_render_but_are_reported() {
    let chart = inline_chart(
        &[
            (
                "secret.yaml",
                "pw: {{ randAlphaNum 16 }}\nid: {{ uuidv4 }}\n",
            ),
            ("plain.yaml", "a: {{ .Values.a }}\n"),
        ],
        json!({"a": 1}),
    );
    let r = ours(&chart, &json!({})).expect("render");
    assert_eq!(
        r.nondeterministic,
        vec!["t/templates/secret.yaml".to_string()]
    );
    let pw = r.templates["t/templates/secret.yaml"]
        .lines()
        .next()
        .unwrap_or("");
    assert_eq!(pw.len(), "pw: ".len() + 16, "{pw}");
}

#[test]
fn lookup_is_empty_as_in_helm_template() {
    let chart = inline_chart(
        &[(
            "x.yaml",
            "{{- $s := lookup \"v1\" \"Secret\" .Release.Namespace \"db\" }}{{ if $s }}found{{ else }}absent{{ end }} {{ len $s }}",
        )],
        json!({}),
    );
    let r = ours(&chart, &json!({})).expect("render");
    assert_eq!(r.templates["t/templates/x.yaml"], "absent 0");
}

#[test]
fn charts_we_reject_are_rejected_by_go_too() {
    for (template, values) in [
        ("a: {{ lookupFoo 1 }}\n", json!({})),
        (
            "{{ required \"db.host is required\" .Values.db.host }}",
            json!({"db": {}}),
        ),
        ("{{ fail \"unsupported mode\" }}", json!({})),
        ("{{ if .Values.x }}never closed", json!({})),
        ("{{ template \"nope\" . }}", json!({})),
        ("{{ .Values.a.b.c }}", json!({})),
        ("{{ break }}", json!({})),
        ("{{ nil }}", json!({})),
        ("{{ (print 1) 2 }}", json!({})),
        (
            "{{ range .Values.l }}{{ else }}{{ continue }}{{ end }}",
            json!({"l": []}),
        ),
        (
            "{{ range .Values.l }}{{ end }}{{ break }}",
            json!({"l": [1]}),
        ),
        // Not an integer (8 is no octal digit) and no float syntax; past u64; a dangling `_`.
        ("{{ 08 }}", json!({})),
        ("{{ 18446744073709551616 }}", json!({})),
        ("{{ 1_ }}", json!({})),
    ] {
        let chart = inline_chart(&[("x.yaml", template)], values);
        assert!(
            ours(&chart, &json!({})).is_err(),
            "we rendered {template:?}"
        );
        if let Some(go) = common::oracle(&chart, &json!({})).expect("oracle") {
            assert!(go.is_err(), "Go rendered {template:?}: {go:?}");
        }
    }
}

#[test]
fn error_lines_count_trimmed_space_comments_and_raw_strings() {
    // Go counts every newline of the text: those a trim marker removes, those inside a
    // comment and those inside a raw string (which once underflowed the column).
    let template = "a: 1\n{{- /* one\ntwo */ -}}\n\nb: {{ `x\ny` }}\n{{- \"z\" -}}\n\nc: {{ fail \"boom\" }}\n";
    let e = render_err(template, json!({}));
    let msg = e.to_string();
    assert!(msg.contains("boom"), "{msg}");
    assert!(msg.contains("t/templates/x.yaml:9:6:"), "{msg}");
    let chart = inline_chart(&[("x.yaml", template)], json!({}));
    match oracle(&chart, &json!({})).expect("oracle") {
        None => {}
        Some(Ok(t)) => panic!("Go rendered {t:?}"),
        Some(Err(go)) => assert!(go.contains("t/templates/x.yaml:9:6:"), "{go}"),
    }
}

#[test]
fn break_outside_range_is_a_parse_error_as_in_go() {
    for template in ["{{ break }}", "{{ if true }}{{ continue }}{{ end }}"] {
        let e = render_err(template, json!({}));
        assert!(matches!(e, RenderError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("outside {{range}}"), "{e}");
    }
}
