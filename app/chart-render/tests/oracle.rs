//! Our renderer against Go's real text/template + Sprig (test/helm-oracle), text for text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_same_as_go, chart_dir, inline_chart};
use serde_json::{Value, json};

fn webapp() -> Value {
    chart_dir(
        "webapp",
        json!({"name": "webapp", "version": "0.1.0+build.7", "apiVersion": "v2",
               "appVersion": "1.16.0", "description": "A Helm chart for Kubernetes", "type": "application"}),
    )
}

#[test]
fn webapp_defaults_match_go() {
    let Some(r) = assert_same_as_go(&webapp(), &json!({})) else {
        return;
    };
    // Sanity: the helpers ran and the hook/partials/NOTES are where they belong.
    let dep = &r.templates["webapp/templates/deployment.yaml"];
    assert!(dep.contains("name: demo-webapp"), "{dep}");
    assert!(!r.templates.contains_key("webapp/templates/_helpers.tpl"));
    assert!(!r.templates.contains_key("webapp/templates/NOTES.txt"));
    assert!(r.templates["webapp/templates/hpa.yaml"].trim().is_empty());
    assert!(r.nondeterministic.is_empty());
}

#[test]
fn webapp_rich_values_match_go() {
    let user = json!({
        "replicaCount": 3,
        "image": {"tag": "1.2.3"},
        "fullnameOverride": "a-very-long-release-name-that-goes-on-and-on-and-on-past-sixty-three-chars",
        "env": {"b_second": "two", "a_first": 1, "c_third": true, "d_float": 2.5},
        "extraConfig": {"zeta": [1, 2, {"k": "v"}], "alpha": {"nested": "yes", "on": "off"}, "empty": {}},
        "podAnnotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
        "imagePullSecrets": [{"name": "regcred"}],
        "podSecurityContext": {"fsGroup": 2000, "runAsNonRoot": true},
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": 0.25}},
        "nodeSelector": {"disktype": "ssd"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        "service": {"type": "NodePort", "port": 8080, "nodePort": 30080,
                    "annotations": {"b": "2", "a": "1"}},
        "ingress": {"enabled": true, "tls": [{"secretName": "tls-a", "hosts": ["a.example", "b.example"]}],
                    "hosts": [{"host": "a.example", "paths": [{"path": "/"}, {"path": "/api", "pathType": "Prefix"}]}]},
        "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 1000000},
        "serviceAccount": {"name": "custom-sa", "annotations": {"iam": "role"}},
        "database": {"host": "db.shop.svc", "port": 6543},
        "greeting": "{{ include \"webapp.fullname\" . }} says {{ .Values.replicaCount }}",
    });
    assert_same_as_go(&webapp(), &user);
}

#[test]
fn webapp_name_overrides_and_nulls_match_go() {
    let user = json!({
        "nameOverride": "demo-web",
        "serviceAccount": {"create": false},
        "ingress": {"enabled": true, "hosts": []},
        "replicaCount": 1234567,
        "autoscaling": {"enabled": true, "targetCPUUtilizationPercentage": null},
        "tolerations": null,
    });
    assert_same_as_go(&webapp(), &user);
}

#[test]
fn whitespace_trimming_matches_go() {
    let t = "a: {{- \" x\" -}} :b\n{{- /* comment */ -}}\nc: {{ \"y\" -}}\n\n  d\n{{-\n\"e\"\n-}}\n\tf {{ \"g\" }}  \n{{- if true }}\n  h\n{{- end -}}\n\n";
    assert_same_as_go(&inline_chart(&[("ws.yaml", t)], json!({})), &json!({}));
}

#[test]
fn control_flow_variables_and_scopes_match_go() {
    let t = r#"{{- $top := . -}}
{{- range $i, $v := .Values.list }}
{{ $i }}={{ $v }} top={{ $top.Values.name }} root={{ $.Values.name }}
{{- end }}
{{- range .Values.missing }}never{{ else }}
empty-range-else
{{- end }}
{{- range $k, $v := .Values.map }}
{{ $k }}:{{ $v }}
{{- else }}
not printed
{{- end }}
{{- with .Values.nothing }}no{{ else }}
with-else
{{- end }}
{{- with .Values.map }}
inside-with {{ .b }} {{ $.Values.name }}
{{- end }}
{{- range .Values.list }}{{ if eq . "y" }}{{ continue }}{{ end }}[{{ . }}]{{ if eq . "x" }}{{ range $.Values.list }}{{ break }}{{ end }}{{ end }}{{- end }}
{{- range $i, $v := .Values.list }}{{ if eq $i 1 }}{{ break }}{{ end }}<{{ $v }}>{{ end }}
{{- $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}
x={{ $x }}
{{- if and .Values.name (not .Values.off) }}
and-not
{{- else if .Values.other }}
nope
{{- end }}
{{- if or .Values.off .Values.zero "" }}bad{{ else }}
or-false
{{- end }}
{{ if eq .Values.name "svc" }}eq-string{{ end }} {{ if ne .Values.count 2.0 }}ne{{ end }} {{ if lt .Values.count 10.0 }}lt{{ end }}
{{ len .Values.list }} {{ index .Values.list 1 }} {{ index .Values.map "a" }}
{{ .Values.map }} {{ .Values.list }} {{ .Values.nested }}
missing=[{{ .Values.missing }}] nested-missing=[{{ .Values.map.zz }}]
{{ printf "%s-%d-%v-%q-%05.2f" "s" 7 .Values.count "q" 3.14159 }}
{{ print "a" 1 2 "b" }} {{ println "x" }}
"#;
    let values = json!({
        "name": "svc", "list": ["x", "y", "z"], "map": {"b": 2, "a": 1, "c": [1, "two"]},
        "off": false, "zero": 0, "count": 3, "nested": {"k": {"j": null}},
    });
    assert_same_as_go(&inline_chart(&[("flow.yaml", t)], values), &json!({}));
}

#[test]
fn sprig_functions_match_go() {
    let t = r#"default: {{ .Values.none | default "dflt" }} {{ .Values.zero | default 5 }} {{ .Values.str | default "x" }} {{ default "d" "" }}
empty: {{ empty .Values.none }} {{ empty .Values.zero }} {{ empty .Values.list }} {{ empty .Values.str }} {{ empty (dict) }}
coalesce: {{ coalesce .Values.none "" .Values.str "z" }}
ternary: {{ ternary "yes" "no" true }} {{ ternary "yes" "no" (eq 1 2) }}
quote: {{ quote "a\"b" }} {{ squote "c" }} {{ .Values.num | quote }} {{ quote .Values.flag }} {{ quote "multi\nline" }}
strings: {{ upper "abc" }} {{ lower "ABC" }} {{ trim "  t  " }} {{ trimSuffix "-" "name--" }} {{ trimPrefix "x" "xxy" }} {{ replace "." "-" "a.b.c" }}
trunc: {{ trunc 3 "abcdef" }} {{ trunc 10 "ab" }} {{ trunc -2 "abcdef" }}
contains: {{ contains "b" "abc" }} {{ hasPrefix "a" "abc" }} {{ hasSuffix "c" "abc" }}
list: {{ list 1 "two" 3.5 }} {{ join "," (list "a" "b" "c") }} {{ splitList "," "a,b,c" }} {{ sortAlpha (list "c" "a" "b") }}
dict: {{ $d := dict "b" 2 "a" 1 }}{{ $d }} {{ hasKey $d "a" }} {{ hasKey $d "z" }} {{ get $d "b" }}
merge: {{ merge (dict "a" 1 "n" (dict "x" 1)) (dict "a" 2 "b" 3 "n" (dict "y" 2)) | toJson }}
mergeOverwrite: {{ mergeOverwrite (dict "a" 1 "n" (dict "x" 1)) (dict "a" 2 "b" 3 "n" (dict "x" 9)) | toJson }}
encoding: {{ b64enc "hello" }} {{ b64dec "aGVsbG8=" }} {{ sha256sum "hello" }}
math: {{ add 1 2 3 }} {{ sub 10 4 }} {{ mul 2 3 }} {{ div 7 2 }} {{ mod 7 3 }} {{ add1 .Values.num }} {{ max 1 5 3 }} {{ min 4 2 }} {{ add .Values.num 1 }}
conv: {{ int "42" }} {{ int64 .Values.num }} {{ toString 12 }} {{ .Values.num | toString }} {{ float64 "1.5" }}
until: {{ until 4 }} {{ untilStep 1 10 3 }}
indent: [{{ indent 2 "a\nb" }}] [{{ nindent 2 "a\nb" }}]
semver: {{ semverCompare ">=1.20-0" "v1.32.0" }} {{ semverCompare "<1.20" "v1.32.0" }} {{ semverCompare "^1.30" "1.32.1" }} {{ semverCompare "~1.31" "1.32.0" }} {{ semverCompare ">= 1.19, < 2.0" "1.32.0" }} {{ semverCompare "1.32.x" "1.32.9" }} {{ semverCompare ">1.0 || <0.5" "0.4.0" }}
kinds: {{ kindOf .Values.num }} {{ kindOf .Values.list }} {{ kindOf .Values.str }} {{ kindIs "map" .Values }} {{ typeOf .Values.num }} {{ typeOf 1 }}
json: {{ toJson .Values }} {{ (fromJson "{\"a\": [1, 2]}").a }}
yaml: {{ toYaml .Values.yamlish | nindent 2 }}
fromYaml: {{ (fromYaml "a: 1\nb: [x, z]").b }} {{ (fromYaml "a: 1").a }}
cat: {{ cat "a" 1 "b" }}
lookup: {{ lookup "v1" "Secret" "ns" "name" }} {{ (lookup "v1" "Secret" "ns" "name").data }}
repeat: {{ repeat 3 "ab" }}
"#;
    let values = json!({
        "zero": 0, "str": "s", "list": [], "num": 7, "flag": true,
        "yamlish": {"yes": "yes", "no": "on", "int": 1, "float": 1.5, "big": 1000000, "str_num": "123",
                     "empty": "", "null": null, "list": ["a", 1, true], "nested": {"b": 1, "a": {"deep": [1, 2]}},
                     "multi": "line1\nline2\n", "colon": "a: b", "hash": "# no", "star": "*", "space": " lead",
                     "date": "2021-01-01", "tilde": "~", "dash": "-", "long": "word ".repeat(30)},
    });
    assert_same_as_go(&inline_chart(&[("funcs.yaml", t)], values), &json!({}));
}

#[test]
fn include_tpl_define_order_and_files_match_go() {
    let helpers = r#"{{- define "t.name" -}}helpers-{{ .Values.n }}{{- end -}}
{{- define "t.twice" -}}{{ include "t.name" . }}/{{ include "t.name" . }}{{- end -}}
{{- define "t.list" -}}
{{- range . }}
- {{ . }}
{{- end }}
{{- end -}}"#;
    // Same define in a later-sorting file at the same depth: Helm parses it first, so
    // _helpers.tpl's (parsed after) wins; a define in a deeper file is parsed before both.
    let other = r#"{{- define "t.name" -}}z-other{{- end -}}"#;
    let deeper = r#"{{- define "t.deep" -}}deep {{ .Values.n }}{{- end -}}{{- define "t.name" -}}deep-name{{- end -}}"#;
    let main = r#"name: {{ include "t.name" . }}
twice: {{ include "t.twice" . }}
list: {{- include "t.list" .Values.items | indent 2 }}
deep: {{ include "t.deep" . }}
tpl: {{ tpl .Values.tmpl . }}
tpl-nested: {{ tpl "{{ tpl .Values.tmpl . }}" . }}
template: {{ template "t.name" . }}
templateName: {{ .Template.Name }} {{ .Template.BasePath }}
files: {{ .Files.Get "files/a.txt" }}{{ .Files.Get "missing" }}|
lines: {{ range .Files.Lines "files/a.txt" }}[{{ . }}]{{ end }}
glob: {{ range $p, $c := .Files.Glob "files/*.conf" }}{{ $p }}={{ $c | toString | trim }};{{ end }}
config: {{- (.Files.Glob "files/*.conf").AsConfig | nindent 2 }}
secrets: {{- (.Files.Glob "files/*.conf").AsSecrets | nindent 2 }}
chart: {{ .Chart.Name }} {{ .Chart.Version }} {{ .Chart.AppVersion }} {{ .Chart.Description }} [{{ .Chart.Home }}] {{ .Chart.Keywords }} {{ .Chart.APIVersion }}
release: {{ .Release.Name }} {{ .Release.Namespace }} {{ .Release.Revision }} {{ .Release.IsInstall }} {{ .Release.IsUpgrade }} {{ .Release.Service }}
caps: {{ .Capabilities.KubeVersion }} {{ .Capabilities.KubeVersion.Version }} {{ .Capabilities.KubeVersion.Major }} {{ .Capabilities.KubeVersion.Minor }} {{ .Capabilities.KubeVersion.GitVersion }} {{ .Capabilities.APIVersions.Has "apps/v1" }} {{ .Capabilities.APIVersions.Has "batch/v9" }} {{ .Capabilities.HelmVersion.Version }}
"#;
    let templates: Vec<(String, Vec<u8>)> = vec![
        ("templates/_helpers.tpl".into(), helpers.as_bytes().to_vec()),
        ("templates/_zother.tpl".into(), other.as_bytes().to_vec()),
        ("templates/sub/_deep.tpl".into(), deeper.as_bytes().to_vec()),
        ("templates/main.yaml".into(), main.as_bytes().to_vec()),
        (
            "templates/empty.yaml".into(),
            b"{{- if .Values.never }}\nkind: X\n{{- end }}\n".to_vec(),
        ),
    ];
    let files: Vec<(String, Vec<u8>)> = vec![
        ("files/a.txt".into(), b"line one\nline two\n".to_vec()),
        ("files/x.conf".into(), b"x=1\n".to_vec()),
        ("files/y.conf".into(), b"y: [2]\n".to_vec()),
        ("other/z.conf".into(), b"no".to_vec()),
    ];
    let chart = common::release_chart(
        json!({"name": "t", "version": "1.2.3", "appVersion": "9.9", "apiVersion": "v2",
               "description": "d", "keywords": ["a", "b"]}),
        &templates,
        json!({"n": 5, "items": ["p", "q"], "tmpl": "tpl sees {{ .Values.n }} and {{ include \"t.name\" . }}"}),
        &files,
    );
    assert_same_as_go(&chart, &json!({"n": 6}));
}

#[test]
fn library_chart_idioms_match_go() {
    // The idioms of library charts (bitnami-style "common"): tplvalues.render, dicts built
    // with dict/set/merge, labels merged from several sources, dig, list helpers.
    let helpers = r#"{{- define "common.tplvalues.render" -}}
{{- $value := typeIs "string" .value | ternary .value (.value | toYaml) }}
{{- if contains "{{" (toJson .value) }}
  {{- if .scope }}
      {{- tpl (cat "{{- with $.RelativeScope -}}" $value "{{- end }}") (merge (dict "RelativeScope" .scope) .context) }}
  {{- else }}
    {{- tpl $value .context }}
  {{- end }}
{{- else }}
    {{- $value }}
{{- end }}
{{- end -}}
{{- define "common.labels.standard" -}}
{{- $default := dict "app.kubernetes.io/name" .context.Chart.Name "helm.sh/chart" (printf "%s-%s" .context.Chart.Name .context.Chart.Version) "app.kubernetes.io/instance" .context.Release.Name "app.kubernetes.io/managed-by" .context.Release.Service -}}
{{- with .customLabels -}}
{{- $default = merge (include "common.tplvalues.render" (dict "value" . "context" $.context) | fromYaml) $default -}}
{{- end -}}
{{- toYaml $default -}}
{{- end -}}"#;
    let main = r##"{{- $ctx := dict "a" 1 -}}
{{- $_ := set $ctx "b" .Values.big -}}
{{- $_ := set $ctx "neg" .Values.neg -}}
{{- $_ := unset $ctx "a" -}}
{{- $m := dict "x" (dict "y" 1) -}}
{{- $_ := merge $m (dict "x" (dict "z" 2) "w" 3) -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
  labels: {{- include "common.labels.standard" (dict "customLabels" .Values.commonLabels "context" $) | nindent 4 }}
  annotations: {{- include "common.tplvalues.render" (dict "value" .Values.annotations "context" $) | nindent 4 }}
data:
  ctx: {{ $ctx | toJson | quote }}
  ctx-b: {{ $ctx.b | quote }} {{ get $ctx "neg" }}
  merged: {{ $m | toJson | quote }}
  dig: {{ dig "db" "auth" "user" "nobody" .Values | quote }} {{ dig "db" "nope" "dflt" .Values | quote }}
  lists: {{ list 3 1 2 | first }} {{ list 3 1 2 | last }} {{ rest (list 1 2 3) }} {{ initial (list 1 2 3) }} {{ append (list 1) 2 }} {{ prepend (list 1) 0 }} {{ concat (list 1) (list 2 3) }} {{ reverse (list 1 2 3) }} {{ uniq (list 1 1 2) }} {{ has 2 (list 1 2) }} {{ compact (list "" "a" 0 "b") }} {{ without (list 1 2 3) 2 }}
  keys: {{ keys .Values.db | sortAlpha }} {{ pick .Values.db "auth" | toJson }} {{ omit .Values.db "auth" | toJson }} {{ pluck "user" .Values.db.auth (dict "user" "x") }}
  strings: {{ title "hello world" }} {{ camelcase "foo_bar" }} {{ snakecase "FooBar" }} {{ kebabcase "FooBar" }} {{ regexReplaceAll "[0-9]+" "a1b22" "#" }} {{ regexMatch "^a" "abc" }} {{ base "a/b/c.txt" }} {{ dir "a/b/c.txt" }} {{ ext "c.txt" }} {{ sha1sum "x" }} {{ b32enc "hi" }} {{ nospace "a b c" }} {{ substr 1 3 "abcdef" }} {{ abbrev 5 "hello world" }}
  types: {{ printf "%T|%T|%T|%T|%T|%T|%5T" 1 1.5 "s" true (list 1) .Values.f "x" }}
numbers: {{ .Values.big }} {{ .Values.neg }} {{ .Values.small }} {{ .Values.frac }} {{ int .Values.frac }} {{ .Values.big | int64 }} {{ floor 1.5 }} {{ ceil 1.2 }} {{ round 2.5 0 }}
  {{- range $i, $e := .Values.extraEnv }}
  env{{ $i }}: {{ include "common.tplvalues.render" (dict "value" $e.value "context" $) | quote }}
  {{- end }}
"##;
    let templates: Vec<(String, Vec<u8>)> = vec![
        ("templates/_labels.tpl".into(), helpers.as_bytes().to_vec()),
        ("templates/cm.yaml".into(), main.as_bytes().to_vec()),
    ];
    let chart = common::release_chart(
        json!({"name": "lib", "version": "2.0.1", "apiVersion": "v2", "appVersion": "2"}),
        &templates,
        json!({
            "big": 12345678, "neg": -0.5, "small": 0.00001, "frac": 2.75,
            "commonLabels": {"team": "{{ .Release.Namespace }}", "tier": "backend"},
            "annotations": {"owner": "{{ .Release.Name }}-owner", "static": "yes"},
            "db": {"auth": {"user": "admin"}, "port": 5432},
            "extraEnv": [{"value": "{{ .Chart.Name }}"}, {"value": "plain"}],
        }),
        &[],
    );
    assert_same_as_go(&chart, &json!({}));
}

#[test]
fn builtins_and_everyday_idioms_match_go() {
    let t = r##"or: {{ or .Values.none "fallback" }} {{ or .Values.zero .Values.str }} {{ or "" 0 }}|
and: {{ and .Values.str .Values.num }} {{ and .Values.str .Values.none }}|
short-circuit: {{ if and .Values.none .Values.none.deeper }}x{{ else }}skipped{{ end }} {{ or .Values.str .Values.none.deeper }} {{ .Values.none | or "piped" }}
not: {{ not .Values.none }} {{ not .Values.str }}
eq: {{ eq .Values.str "b" "s" }} {{ eq .Values.str "x" "y" }} {{ ne .Values.str "s" }} {{ eq .Values.flag true }}
cmp: {{ gt .Values.num 3.0 }} {{ le .Values.num 7.0 }} {{ lt 1 2 }} {{ ge "b" "a" }}
index: {{ index .Values.nested "k" "j" }} {{ index .Values.list 0 }} {{ index .Values.nested "missing" }}|
len: {{ len .Values.str }} {{ len .Values.list }} {{ len .Values.nested }}
printf: {{ printf "%v|%s|%5s|%-5s|%t|%x|%03d|%.1f|%%" .Values.num "s" "ab" "ab" true 255 7 2.25 }}
print: {{ print .Values.num " " .Values.flag " " .Values.none }}
toString: {{ toString .Values.num }} {{ toString 1.5 }} {{ toString true }} {{ toString .Values.list }}
int: {{ int .Values.num }} {{ int "12" }} {{ int 3.9 }}
default-list: {{ default (list "a") .Values.emptyList | toJson }} {{ default (dict "k" 1) .Values.none | toJson }}
trimAll: {{ trimAll "-" "--x--" }} {{ lower "MiXeD" }} {{ splitList "/" "a/b" | last }}
nindent0: [{{ "a\nb" | nindent 0 }}]
json: {{ toJson .Values.nested }} {{ toJson 1.5 }} {{ toJson "s\"q" }} {{ toJson .Values.list }}
html-json: {{ toJson "<a&b>" }} {{ toRawJson "<a&b>" }} {{ toPrettyJson .Values.nested }} {{ tuple 1 "x" }} {{ all 1 "a" }} {{ any 0 "" }} {{ (splitn "," 2 "a,b,c")._1 }} {{ regexQuoteMeta "a.b" }} {{ trimall "$" "$5$" }}
yaml-scalar: {{ toYaml "plain" }} {{ toYaml 7 }} {{ toYaml .Values.flag }} [{{ toYaml .Values.emptyList }}] [{{ toYaml .Values.none }}]
with-else-nested: {{ with .Values.nested }}{{ with .k }}{{ .j }}{{ end }}{{ end }}
range-int-keys: {{ range $i, $v := .Values.list }}{{ $i }}{{ $v }},{{ end }}
range-break-var: {{ $last := "" }}{{ range .Values.list }}{{ $last = . }}{{ end }}{{ $last }}
"##;
    let values = json!({
        "zero": 0, "str": "s", "num": 7, "flag": true, "list": ["a", "b", "c"],
        "nested": {"k": {"j": "deep"}}, "emptyList": [],
    });
    assert_same_as_go(&inline_chart(&[("b.yaml", t)], values), &json!({}));
}

#[test]
fn remaining_sprig_functions_match_go() {
    let t = r##"strings: {{ trimAll "$" "$5.00$" }} {{ untitle "Hello World" }} {{ substr 0 5 "hello world" }} {{ nospace "h e l" }} {{ abbrev 8 "hello world" }} {{ abbrevboth 5 10 "1234 5678 9123" }} {{ initials "First Try" }} {{ plural "one" "many" 2 }} {{ snakecase "FirstName" }} {{ kebabcase "FirstName" }} {{ swapcase "This Is" }}
hashes: {{ sha1sum "a" }} {{ b32enc "hello" }} {{ b32dec "NBSWY3DP" }}
floats: {{ addf 1.5 2 }} {{ add1f 1.5 }} {{ subf 5 1.5 }} {{ divf 5 2 }} {{ mulf 1.5 3 }} {{ maxf 1 2.5 }} {{ minf 1 2.5 }} {{ floor 1.7 }} {{ ceil 1.2 }} {{ round 3.14159 2 }}
conv: {{ atoi "42" }} {{ toStrings (list 1 "a" true) }} {{ typeIs "string" "x" }} {{ deepEqual (list 1 2) (list 1 2) }}
lists: {{ slice (list 1 2 3 4) 1 3 }} {{ seq 3 }} {{ seq 1 2 7 }}
paths: {{ base "/a/b.txt" }} {{ dir "/a/b.txt" }} {{ clean "a//b/../c" }} {{ ext "x.tar.gz" }} {{ isAbs "/x" }}
"##;
    assert_same_as_go(&inline_chart(&[("r.yaml", t)], json!({})), &json!({}));
}

/// Every printf verb the engine implements, with Go's flags (`#`, `0`, `+`, `-`, width,
/// precision), on template integers, float64 values, strings and booleans.
#[test]
fn printf_verbs_and_flags_match_go() {
    let t = r##"ints: {{ printf "%b|%o|%x|%X|%d|%c|%q|%U" 5 8 255 255 -7 65 66 9731 }}
int-flags: {{ printf "[%#x][%#o][%#b][%+d][%6d][%-6d|][%06d][%+06d][%#08x][%-#8x|][%08b][%+x]" 255 8 5 7 42 42 42 42 255 255 5 255 }}
neg: {{ printf "[%x][%o][%b][%6d][%+d]" -255 -8 -5 -42 -42 }}
floats: {{ printf "%e|%E|%.2e|%+.3e|%12.4E|%f|%.3f|%8.2f|%-8.2f|%+.1f|%08.3f" 1234.5678 0.000123 1234.5678 -1.5 98765.4321 2.5 3.14159 2.71828 2.71828 1.25 -3.14159 }}
values: {{ printf "%e|%.1f|%v|%d" .Values.f .Values.f .Values.f .Values.f }}
strings: {{ printf "[%s][%8s][%-8s][%.2s][%8.3s][%x][%X][%q][%v]" "go" "go" "go" "hello" "hello" "hi" "hi" "a\"b" "v" }}
bools: {{ printf "[%t][%v][%6t][%-6t][%s]" true false true false true }}
bad-verbs: {{ printf "[%s][%d][%t][%x]" 5 "s" 1 true }}
lists: {{ printf "%v|%3v|%d|%x|%v" (list 1 2) (list 1 2) (list 1 2) (list "a" "b") (dict "b" 1 "a" "x") }}
args: {{ printf "%d %d|" 1 }}{{ printf "%[2]d %d %[1]d|" 1 2 }}{{ printf "%d|" 1 2 "x" }}{{ printf "[%*d][%-*d][%.*f][%6.f]" 5 1 4 2 1 3.14159 2.5 }}
numbers: {{ 0x1F }} {{ 0X1f }} {{ 0o17 }} {{ 0b101 }} {{ 017 }} {{ 1_000 }} {{ -0x10 }} {{ 0x_ff }} {{ 1e3 }} {{ -0 }} {{ 2.50 }} {{ add 0x10 1 }}
unquote: {{ printf "%q" "\u0041B\x43\104\a\v\f\b|\U0001F600|\xe2\x98\x83|\u00e9\u00e8" }} {{ '\101' }} {{ '\x41' }} {{ '\u00e9' }} {{ '\U0001F600' }} {{ '"' }} {{ "'" }}
nil-args: {{ print nil }} {{ printf "%v|%d" nil nil }} {{ default "d" nil }} {{ list 1 nil | toJson }}
escapes: {{ "a\\" }} {{ '\\' }} {{ "q\"" }} {{ '\'' }} {{ `raw\` }}
go-flags: {{ printf "[%-06d][%.3d][%.0d][%5.1s][%05s][%#q][% x][%# x][%U][%#U]" 7 7 0 "abc" "go" "q" "hi" "hi" 9731 9731 }}
"##;
    let values = json!({"f": 1234.5});
    assert_same_as_go(&inline_chart(&[("p.yaml", t)], values), &json!({}));
}

/// Go's rules for a name defined twice: an empty (white-space) definition never replaces a
/// non-empty one, in the same file or a file parsed later; a non-empty one replaces it.
#[test]
fn empty_redefinitions_keep_the_first_as_go() {
    let filled = r#"{{- define "x" -}}X-filled{{- end -}}{{ define "y" }}Y{{ end }}{{ define "y" }}  {{ end }}"#;
    // Sorts before b.yaml, so Helm parses it after: its empty "x" comes last.
    let empty =
        "{{ define \"x\" }}\n  {{ end }}{{ define \"z\" }} {{ end }}{{ define \"z\" }}Z{{ end }}";
    let user = r#"x: {{ include "x" . }} y: {{ include "y" . }} z: {{ include "z" . }}"#;
    let chart = inline_chart(
        &[("a.yaml", empty), ("b.yaml", filled), ("c.yaml", user)],
        json!({}),
    );
    assert_same_as_go(&chart, &json!({}));
}

/// `range $v = ...` assigns instead of declaring; Go 1.19 sets the variables on top of the
/// stack (here `$k`, then `$v`), which is what this fork reproduces. It used to panic.
#[test]
fn range_assigning_to_outer_variables_matches_go() {
    let t = r#"{{- $v := "none" }}{{ $k := -1 }}{{ range $v = list "a" "b" }}[{{ $v }}]{{ end }} last={{ $v }}
{{ range $k, $v = list "x" "y" }}[{{ $k }}:{{ $v }}]{{ end }} last={{ $k }}:{{ $v }}
"#;
    assert_same_as_go(&inline_chart(&[("r.yaml", t)], json!({})), &json!({}));
}
