// helm-oracle renders a Helm 3 chart with Go's own text/template and Sprig, following Helm's
// documented engine behaviour, so tvk-chart-render's output can be compared with Go's.
//
// stdin: {"chart": <release.chart JSON>, "request": {"release_name", "namespace", "revision",
// "is_install", "is_upgrade", "user_values", "kube_version", "api_versions"}}
// stdout: {"templates": {"<chart>/templates/<file>": "<text>"}} or {"error": "<message>"}.
//
// Written for this project from Helm's documentation (engine semantics: Sprig's TxtFuncMap
// minus env/expandenv, Helm's additions, missingkey=zero, "<no value>" removed, templates
// parsed deepest path first); it is a test component, not a Helm replacement.
package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"text/template"

	sprig "github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

type file struct {
	Name string `json:"name"`
	Data string `json:"data"`
}

type input struct {
	Chart struct {
		Metadata  map[string]interface{} `json:"metadata"`
		Templates []file                 `json:"templates"`
		Values    map[string]interface{} `json:"values"`
		Files     []file                 `json:"files"`
	} `json:"chart"`
	Request struct {
		ReleaseName string                 `json:"release_name"`
		Namespace   string                 `json:"namespace"`
		Revision    int                    `json:"revision"`
		IsInstall   bool                   `json:"is_install"`
		IsUpgrade   bool                   `json:"is_upgrade"`
		UserValues  map[string]interface{} `json:"user_values"`
		KubeVersion string                 `json:"kube_version"`
		APIVersions []string               `json:"api_versions"`
	} `json:"request"`
}

// Metadata mirrors Helm's chart.Metadata field names (what `.Chart.X` reads).
type Maintainer struct{ Name, Email, URL string }
type Dependency struct {
	Name, Version, Repository, Condition, Alias string
	Enabled                                     bool
}
type Metadata struct {
	Name, Home                  string
	Sources                     []string
	Version, Description        string
	Keywords                    []string
	Maintainers                 []*Maintainer
	Icon, APIVersion, Condition string
	Tags, AppVersion            string
	Deprecated                  bool
	Annotations                 map[string]string
	KubeVersion                 string
	Dependencies                []*Dependency
	Type                        string
}

type KubeVersion struct{ Version, Major, Minor, GitVersion string }

// String is Helm's: `.Capabilities.KubeVersion` prints as its version.
func (kv *KubeVersion) String() string { return kv.Version }

type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type HelmVersion struct{ Version, GitCommit, GitTreeState, GoVersion string }
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion HelmVersion
}

// Files is Helm's documented `.Files` object.
type Files map[string][]byte

func (f Files) GetBytes(name string) []byte { return f[name] }
func (f Files) Get(name string) string      { return string(f[name]) }
func (f Files) Glob(pattern string) Files {
	out := Files{}
	for k, v := range f {
		if ok, _ := path.Match(pattern, k); ok {
			out[k] = v
		}
	}
	return out
}
func (f Files) Lines(name string) []string {
	s := string(f[name])
	if s == "" {
		return []string{}
	}
	s = strings.TrimSuffix(s, "\n")
	return strings.Split(s, "\n")
}
func (f Files) AsConfig() string {
	if len(f) == 0 {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return toYAML(m)
}
func (f Files) AsSecrets() string {
	if len(f) == 0 {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return toYAML(m)
}

// yamlMarshal is sigs.k8s.io/yaml.Marshal: JSON first, then YAML of the JSON document.
func yamlMarshal(v interface{}) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return nil, err
	}
	return yaml.Marshal(obj)
}

// yamlUnmarshal is sigs.k8s.io/yaml.Unmarshal: YAML to JSON, then encoding/json (float64s).
func yamlUnmarshal(text string, out interface{}) error {
	var obj interface{}
	if err := yaml.Unmarshal([]byte(text), &obj); err != nil {
		return err
	}
	j, err := json.Marshal(stringKeys(obj))
	if err != nil {
		return err
	}
	return json.Unmarshal(j, out)
}

func stringKeys(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := map[string]interface{}{}
		for k, x := range t {
			m[fmt.Sprint(k)] = stringKeys(x)
		}
		return m
	case []interface{}:
		for i := range t {
			t[i] = stringKeys(t[i])
		}
	}
	return v
}

func toYAML(v interface{}) string {
	data, err := yamlMarshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, sv := range src {
		dv, ok := dst[k]
		if !ok {
			dst[k] = sv
		} else if dv == nil {
			delete(dst, k)
		} else if dm, ok := dv.(map[string]interface{}); ok {
			if sm, ok := sv.(map[string]interface{}); ok {
				coalesce(dm, sm)
			}
		}
	}
	return dst
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail(err)
	}
	out, err := render(&in)
	if err != nil {
		fail(err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{"templates": out})
}

func fail(err error) {
	json.NewEncoder(os.Stdout).Encode(map[string]string{"error": err.Error()})
	os.Exit(0)
}

func render(in *input) (map[string]string, error) {
	var meta Metadata
	mj, _ := json.Marshal(in.Chart.Metadata)
	json.Unmarshal(mj, &meta) // encoding/json matches the camelCase keys case-insensitively
	if v, ok := in.Chart.Metadata["apiVersion"].(string); ok {
		meta.APIVersion = v
	}
	if v, ok := in.Chart.Metadata["appVersion"].(string); ok {
		meta.AppVersion = v
	}
	files := Files{}
	for _, f := range in.Chart.Files {
		b, err := base64.StdEncoding.DecodeString(f.Data)
		if err != nil {
			return nil, err
		}
		files[f.Name] = b
	}
	user := in.Request.UserValues
	if user == nil {
		user = map[string]interface{}{}
	}
	values := coalesce(user, in.Chart.Values)
	kv := strings.Split(strings.TrimPrefix(in.Request.KubeVersion, "v"), ".")
	for len(kv) < 2 {
		kv = append(kv, "")
	}
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": in.Request.ReleaseName, "Namespace": in.Request.Namespace,
			"Revision": in.Request.Revision, "IsInstall": in.Request.IsInstall,
			"IsUpgrade": in.Request.IsUpgrade, "Service": "Helm",
		},
		"Chart": &meta,
		"Capabilities": &Capabilities{
			KubeVersion: KubeVersion{in.Request.KubeVersion, kv[0], kv[1], in.Request.KubeVersion},
			APIVersions: VersionSet(in.Request.APIVersions),
			HelmVersion: HelmVersion{Version: "v3.16.0"},
		},
		"Files":     files,
		"Subcharts": map[string]interface{}{},
	}

	t := template.New("gotpl").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	includeDepth := 0
	funcs["include"] = func(name string, data interface{}) (string, error) {
		includeDepth++
		defer func() { includeDepth-- }()
		if includeDepth > 200 {
			return "", errors.New("include nested too deep")
		}
		var b strings.Builder
		err := t.ExecuteTemplate(&b, name, data)
		return b.String(), err
	}
	funcs["tpl"] = func(text string, vals map[string]interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		name := "tpl"
		if tm, ok := vals["Template"].(map[string]interface{}); ok {
			name, _ = tm["Name"].(string)
		}
		c, err = c.New(name).Parse(text)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		if err := c.Execute(&b, vals); err != nil {
			return "", err
		}
		return strings.ReplaceAll(b.String(), "<no value>", ""), nil
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	funcs["lookup"] = func(apiVersion, kind, ns, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	funcs["toYaml"] = toYAML
	funcs["mustToYaml"] = func(v interface{}) (string, error) {
		b, err := yamlMarshal(v)
		return strings.TrimSuffix(string(b), "\n"), err
	}
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yamlUnmarshal(s, &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["fromYamlArray"] = func(s string) []interface{} {
		a := []interface{}{}
		if err := yamlUnmarshal(s, &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	funcs["toJson"] = func(v interface{}) string {
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(b)
	}
	funcs["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	t.Funcs(funcs)

	names := []string{}
	texts := map[string]string{}
	chartName := meta.Name
	for _, f := range in.Chart.Templates {
		b, err := base64.StdEncoding.DecodeString(f.Data)
		if err != nil {
			return nil, err
		}
		n := chartName + "/" + f.Name
		names = append(names, n)
		texts[n] = string(b)
	}
	// Deepest path first; equal depths in reverse name order.
	sort.Slice(names, func(i, j int) bool {
		ci, cj := strings.Count(names[i], "/"), strings.Count(names[j], "/")
		if ci != cj {
			return ci > cj
		}
		return names[i] > names[j]
	})
	for _, n := range names {
		if _, err := t.New(n).Parse(texts[n]); err != nil {
			return nil, err
		}
	}
	out := map[string]string{}
	sort.Strings(names)
	for _, n := range names {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") {
			continue
		}
		vals := map[string]interface{}{}
		for k, v := range top {
			vals[k] = v
		}
		vals["Template"] = map[string]interface{}{"Name": n, "BasePath": chartName + "/templates"}
		var b strings.Builder
		if err := t.ExecuteTemplate(&b, n, vals); err != nil {
			return nil, err
		}
		if base == "NOTES.txt" {
			continue
		}
		out[n] = strings.ReplaceAll(b.String(), "<no value>", "")
	}
	return out, nil
}
