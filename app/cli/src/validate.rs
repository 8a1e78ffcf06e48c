//! `kubectl-tvk validate`: the admission webhook's validation, run offline on manifest files.
//!
//! Each document is identified, given its kind's defaults (the mutating webhook's patch, so the
//! user validates what the cluster would store) and validated as a CREATE by the same pure
//! `KindAdmission` the webhook runs. Documents of other API groups (the Secret beside a Target,
//! a Namespace) are skipped and counted as such; an unknown kind of our group, a wrong
//! apiVersion, malformed YAML or a document over the size and depth caps of `tvk_api::yaml` is an
//! error for that document — never a panic. A `List` document (`kubectl get … -o yaml`) is checked
//! item by item.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;
use tvk_api::{
    admission::{AdmissionRegistry, FieldError, KindAdmission, Operation, Request, identify},
    yaml::{Limits, parse_documents},
};

/// Every kind `validate` knows. The manager's TrilioVaultManager is added here, in this one place.
pub fn admission_registry() -> AdmissionRegistry {
    tvk_api::admission::app_admission().with(tvk_manager::admission::tvm_admission())
}

/// Arguments of `kubectl-tvk validate`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Validate TrilioVault manifests offline, with the rules of the admission webhook",
    after_help = "Exit status: 0 when every document is valid, 1 when any is invalid, 2 for a \
                  usage error or a file that cannot be read.\n\nExamples:\n  kubectl tvk validate \
                  -f target.yaml -f policies/\n  helm template . | kubectl tvk validate -f -"
)]
pub struct ValidateArgs {
    /// A manifest file (multi-document YAML or JSON), a directory (its *.yaml, *.yml and *.json
    /// files), or `-` for standard input. Repeat for more.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Also read the subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// How to print the results.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per problem on standard error, a summary line on standard output.
    Text,
    /// One JSON object with every document's result on standard output.
    Json,
}

/// Exit status: every document valid.
pub const EXIT_VALID: u8 = 0;
/// Exit status: at least one document invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit status: a usage error or a file that could not be read.
pub const EXIT_USAGE: u8 = 2;

/// What was decided about one document (or one file that yielded no documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Valid for its kind.
    Valid,
    /// Breaks a rule, or cannot be read as a manifest.
    Invalid,
    /// Not one of our kinds; not checked.
    Skipped,
    /// The file could not be read.
    Unreadable,
}

/// One problem: a field path (empty when it is about the whole document) and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Dotted field path, `spec.hooks[1].podSelector`, or empty.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl From<FieldError> for Problem {
    fn from(error: FieldError) -> Self {
        Self {
            path: error.path,
            message: error.message,
        }
    }
}

/// The result for one document.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentResult {
    /// The file as given (`<stdin>` for standard input).
    pub file: String,
    /// One-based document number in the file, when the problem is about one document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// Zero-based index in the document's `items`, when the document is a `List`
    /// (`kubectl get … -o yaml` output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// The document's kind, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The document's `metadata.name`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The verdict.
    pub result: Outcome,
    /// Every problem found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
    /// Warnings of a valid document (deprecated fields, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl DocumentResult {
    fn file_problem(file: &str, document: Option<usize>, result: Outcome, message: String) -> Self {
        Self {
            file: file.to_owned(),
            document,
            item: None,
            kind: None,
            name: None,
            result,
            errors: vec![Problem {
                path: String::new(),
                message,
            }],
            warnings: Vec::new(),
        }
    }

    /// `FILE: document N: Kind/name: ` — the prefix of every line about this document.
    fn prefix(&self) -> String {
        let mut prefix = format!("{}: ", self.file);
        if let Some(document) = self.document {
            let _ = write!(prefix, "document {document}: ");
        }
        if let Some(item) = self.item {
            let _ = write!(prefix, "items[{item}]: ");
        }
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => {
                let _ = write!(prefix, "{kind}/{name}: ");
            }
            (Some(kind), None) => {
                let _ = write!(prefix, "{kind}: ");
            }
            (None, Some(name)) => {
                let _ = write!(prefix, "{name}: ");
            }
            (None, None) => {}
        }
        prefix
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files read (directories count by the files they held).
    pub files: usize,
    /// Documents found.
    pub documents: usize,
    /// Valid documents.
    pub valid: usize,
    /// Invalid documents, files with malformed content included.
    pub invalid: usize,
    /// Documents of other API groups.
    pub skipped: usize,
    /// Files that could not be read.
    pub unreadable: usize,
}

impl Summary {
    fn of(files: usize, results: &[DocumentResult]) -> Self {
        let mut summary = Self {
            files,
            ..Self::default()
        };
        for result in results {
            if result.document.is_some() && result.result != Outcome::Unreadable {
                summary.documents += 1;
            }
            match result.result {
                Outcome::Valid => summary.valid += 1,
                Outcome::Invalid => summary.invalid += 1,
                Outcome::Skipped => summary.skipped += 1,
                Outcome::Unreadable => summary.unreadable += 1,
            }
        }
        summary
    }

    /// The exit status these counts call for.
    pub fn exit_status(&self) -> u8 {
        if self.unreadable > 0 {
            EXIT_USAGE
        } else if self.invalid > 0 {
            EXIT_INVALID
        } else {
            EXIT_VALID
        }
    }

    fn line(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut line = format!(
            "{} in {}: {} valid, {} invalid",
            plural(self.documents, "document"),
            plural(self.files, "file"),
            self.valid,
            self.invalid
        );
        if self.skipped > 0 {
            let _ = write!(line, ", {} skipped (not TrilioVault kinds)", self.skipped);
        }
        if self.unreadable > 0 {
            let _ = write!(line, ", {} unreadable", plural(self.unreadable, "file"));
        }
        line
    }
}

/// Where documents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    fn display(&self) -> String {
        match self {
            Self::Stdin => "<stdin>".to_owned(),
            Self::File(path) => path.display().to_string(),
        }
    }
}

/// Expands the `-f` arguments: `-` is standard input, a directory gives its manifest files in
/// name order. A path that cannot be listed becomes an unreadable-file result.
fn expand_sources(args: &ValidateArgs) -> (Vec<Source>, Vec<DocumentResult>) {
    let mut sources = Vec::new();
    let mut failures = Vec::new();
    for path in &args.files {
        if path.as_os_str() == "-" {
            if !sources.contains(&Source::Stdin) {
                sources.push(Source::Stdin);
            }
        } else if path.is_dir() {
            if let Err(err) = expand_directory(path, args.recursive, &mut sources) {
                failures.push(DocumentResult::file_problem(
                    &path.display().to_string(),
                    None,
                    Outcome::Unreadable,
                    format!("failed to list the directory: {err}"),
                ));
            }
        } else {
            sources.push(Source::File(path.clone()));
        }
    }
    (sources, failures)
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| {
            ["yaml", "yml", "json"]
                .iter()
                .any(|wanted| ext.eq_ignore_ascii_case(wanted))
        })
}

fn expand_directory(dir: &Path, recursive: bool, sources: &mut Vec<Source>) -> io::Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<io::Result<_>>()?;
    entries.sort();
    let mut subdirectories = Vec::new();
    for path in entries {
        if path.is_dir() {
            subdirectories.push(path);
        } else if is_manifest(&path) {
            sources.push(Source::File(path));
        }
    }
    if recursive {
        for subdirectory in subdirectories {
            expand_directory(&subdirectory, recursive, sources)?;
        }
    }
    Ok(())
}

/// Reads at most `limit + 1` bytes, so an endless or huge input is refused without being held.
fn read_capped(mut reader: impl Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.by_ref().take(cap).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_source(source: &Source, stdin: &mut dyn Read, limits: &Limits) -> Result<Vec<u8>, String> {
    match source {
        Source::Stdin => read_capped(stdin, limits.max_total_bytes)
            .map_err(|err| format!("failed to read standard input: {err}")),
        Source::File(path) => fs::File::open(path)
            .and_then(|file| read_capped(file, limits.max_total_bytes))
            .map_err(|err| format!("failed to read the file: {err}")),
    }
}

/// Validates every document of one input text.
fn check_text(
    registry: &AdmissionRegistry,
    file: &str,
    bytes: &[u8],
    limits: &Limits,
) -> Vec<DocumentResult> {
    if bytes.len() > limits.max_total_bytes {
        return vec![DocumentResult::file_problem(
            file,
            None,
            Outcome::Invalid,
            format!(
                "the input is larger than {} bytes, the limit for one file; split it into smaller \
                 files",
                limits.max_total_bytes
            ),
        )];
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return vec![DocumentResult::file_problem(
            file,
            None,
            Outcome::Invalid,
            "the input is not UTF-8 text; manifests must be YAML or JSON".to_owned(),
        )];
    };
    match parse_documents(text, limits) {
        Ok(documents) => documents
            .into_iter()
            .flat_map(|document| {
                let number = document.index + 1;
                match list_items(&document.value) {
                    // `kubectl get … -o yaml` wraps objects in a List: check each item.
                    Some(items) => items
                        .iter()
                        .enumerate()
                        .map(|(index, item)| {
                            let mut result = check_document(registry, file, number, item);
                            result.item = Some(index);
                            result
                        })
                        .collect::<Vec<_>>(),
                    None => vec![check_document(registry, file, number, &document.value)],
                }
            })
            .collect(),
        // The parser stops at the first broken document: a YAML stream cannot be resynchronised
        // reliably after a syntax error, so the documents after it are not checked.
        Err(err) => vec![DocumentResult::file_problem(
            file,
            err.document(),
            Outcome::Invalid,
            format!("{err} (no document of this file was checked)"),
        )],
    }
}

/// The items of a `v1` `List` (or a typed `…List`) document.
fn list_items(value: &Value) -> Option<&Vec<Value>> {
    let kind = raw_text(value, "/kind")?;
    if !kind.ends_with("List") {
        return None;
    }
    value.get("items")?.as_array()
}

fn raw_text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// The registry's kind for the document's own `apiVersion` and `kind`, if it serves them.
fn served_kind<'a>(
    registry: &'a AdmissionRegistry,
    value: &Value,
) -> Option<&'a dyn KindAdmission> {
    let api_version = raw_text(value, "/apiVersion")?;
    let kind = raw_text(value, "/kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    registry
        .find(group, kind)
        .filter(|admission| admission.gvk().version == version)
}

/// Identifies, defaults and validates one document.
fn check_document(
    registry: &AdmissionRegistry,
    file: &str,
    number: usize,
    value: &Value,
) -> DocumentResult {
    let mut result = DocumentResult {
        file: file.to_owned(),
        document: Some(number),
        item: None,
        kind: raw_text(value, "/kind").map(str::to_owned),
        name: raw_text(value, "/metadata/name").map(str::to_owned),
        result: Outcome::Invalid,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let admission = match identify(value) {
        Ok((gvk, name, _namespace)) => {
            result.name = Some(name);
            match registry.find(&gvk.group, &gvk.kind) {
                Some(admission) if admission.gvk().version == gvk.version => admission,
                Some(admission) => {
                    result.errors.push(Problem {
                        path: "apiVersion".to_owned(),
                        message: format!(
                            "{:?} is not served: use {}",
                            gvk.api_version(),
                            admission.gvk().api_version()
                        ),
                    });
                    return result;
                }
                None if registry.iter().any(|kind| kind.gvk().group == gvk.group) => {
                    let known: BTreeSet<String> = registry
                        .iter()
                        .filter(|kind| kind.gvk().group == gvk.group)
                        .map(|kind| kind.gvk().kind)
                        .collect();
                    result.errors.push(Problem {
                        path: "kind".to_owned(),
                        message: format!(
                            "unknown kind {:?} in {}: must be one of {}",
                            gvk.kind,
                            gvk.group,
                            known.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    });
                    return result;
                }
                None => {
                    result.result = Outcome::Skipped;
                    return result;
                }
            }
        }
        // `identify` knows the application's kinds; a kind added to the registry on top of them
        // (the manager's TrilioVaultManager) is still ours to validate.
        Err(error) => match served_kind(registry, value) {
            Some(admission) if error.path != "metadata.name" => admission,
            _ => {
                result.errors.push(error.into());
                return result;
            }
        },
    };

    // Validate what the API server would store: the object with the mutating webhook's defaults.
    let object = match admission.default_patch(value) {
        Ok(patch) => {
            let mut object = value.clone();
            if let Err(err) = json_patch::patch(&mut object, &patch) {
                result.errors.push(Problem {
                    path: String::new(),
                    message: format!(
                        "failed to apply the defaults of {} ({err}); this is a defect, please \
                         report it",
                        admission.gvk().kind
                    ),
                });
                return result;
            }
            object
        }
        Err(errors) => {
            result.errors.extend(errors.into_iter().map(Problem::from));
            return result;
        }
    };
    let request = Request {
        operation: Operation::Create,
        object: &object,
        old_object: None,
    };
    match admission.validate(&request) {
        Ok(warnings) => {
            result.result = Outcome::Valid;
            result.warnings = warnings;
        }
        Err(errors) => result.errors.extend(errors.into_iter().map(Problem::from)),
    }
    result
}

/// The report of a whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Every document's result, in input order.
    pub documents: Vec<DocumentResult>,
    /// The counts.
    pub summary: Summary,
}

/// Validates every input of `args`. `stdin` is read for `-`.
pub fn validate(args: &ValidateArgs, registry: &AdmissionRegistry, stdin: &mut dyn Read) -> Report {
    let limits = Limits::default();
    let (sources, mut documents) = expand_sources(args);
    let listing_failures = documents.len();
    for source in &sources {
        let file = source.display();
        match read_source(source, stdin, &limits) {
            Ok(bytes) => documents.extend(check_text(registry, &file, &bytes, &limits)),
            Err(message) => documents.push(DocumentResult::file_problem(
                &file,
                None,
                Outcome::Unreadable,
                message,
            )),
        }
    }
    // Directories that could not be listed count as one (unreadable) file each.
    let files = sources.len() + listing_failures;
    let summary = Summary::of(files, &documents);
    Report { documents, summary }
}

/// Prints `report` in `format`: problems and warnings to `stderr`, the summary (or the JSON
/// report) to `stdout`.
pub fn print_report(
    report: &Report,
    format: OutputFormat,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> io::Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *stdout, report).map_err(io::Error::other)?;
            writeln!(stdout)
        }
        OutputFormat::Text => {
            for document in &report.documents {
                let prefix = document.prefix();
                for problem in &document.errors {
                    if problem.path.is_empty() {
                        writeln!(stderr, "{prefix}{}", problem.message)?;
                    } else {
                        writeln!(stderr, "{prefix}{}: {}", problem.path, problem.message)?;
                    }
                }
                for warning in &document.warnings {
                    writeln!(stderr, "{prefix}warning: {warning}")?;
                }
            }
            writeln!(stdout, "{}", report.summary.line())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(value: Value) -> DocumentResult {
        check_document(&admission_registry(), "t.yaml", 1, &value)
    }

    #[test]
    fn foreign_kinds_are_skipped() {
        let result = check(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s3-credentials"}, "stringData": {"accessKey": "x"}
        }));
        assert_eq!(result.result, Outcome::Skipped);
        assert!(result.errors.is_empty());
    }

    #[test]
    fn unknown_kind_of_our_group_is_invalid() {
        let result = check(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "Gadget", "metadata": {"name": "g"}
        }));
        assert_eq!(result.result, Outcome::Invalid);
        assert_eq!(result.errors[0].path, "kind");
        assert!(
            result.errors[0].message.contains("Gadget"),
            "{:?}",
            result.errors
        );
    }

    #[test]
    fn wrong_api_version_is_invalid() {
        let result = check(json!({
            "apiVersion": "triliovault.trilio.io/v1beta1", "kind": "Target", "metadata": {"name": "t"}
        }));
        assert_eq!(result.result, Outcome::Invalid);
        assert_eq!(result.errors[0].path, "apiVersion");
    }

    #[test]
    fn non_mapping_document_is_invalid() {
        let result = check(json!(["not", "an", "object"]));
        assert_eq!(result.result, Outcome::Invalid);
        assert_eq!(result.kind, None);
    }

    #[test]
    fn huge_input_is_refused_before_parsing() {
        let limits = Limits {
            max_total_bytes: 16,
            ..Limits::default()
        };
        let results = check_text(&admission_registry(), "big.yaml", &[b'a'; 17], &limits);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].result, Outcome::Invalid);
        assert!(
            results[0].errors[0]
                .message
                .contains("larger than 16 bytes")
        );
    }

    /// `example.tvk.test/v1` Gizmo: `spec.mode` is required, and defaulted to `Safe`.
    struct GizmoAdmission;

    /// Stands in for the manager's TrilioVaultManager: a kind of our group that `identify` does
    /// not know, added to the registry on top of the app kinds.
    struct ManagerKindAdmission;

    impl KindAdmission for ManagerKindAdmission {
        fn gvk(&self) -> tvk_api::admission::GroupVersionKind {
            tvk_api::admission::GroupVersionKind {
                group: "triliovault.trilio.io".into(),
                version: "v1".into(),
                kind: "TrilioVaultManager".into(),
            }
        }
        fn plural(&self) -> &'static str {
            "triliovaultmanagers"
        }
        fn namespaced(&self) -> bool {
            true
        }
        fn validate(&self, request: &Request<'_>) -> Result<Vec<String>, Vec<FieldError>> {
            match request.object["spec"]["applicationScope"].as_str() {
                Some("Cluster" | "Namespaced") => Ok(vec![]),
                _ => Err(vec![FieldError::new(
                    "spec.applicationScope",
                    "must be Cluster or Namespaced",
                )]),
            }
        }
        fn default_patch(&self, _object: &Value) -> Result<json_patch::Patch, Vec<FieldError>> {
            Ok(json_patch::Patch(vec![]))
        }
    }

    #[test]
    fn a_kind_added_to_the_registry_is_validated_even_if_identify_does_not_know_it() {
        let mut registry = tvk_api::admission::app_admission();
        registry.extend(AdmissionRegistry::new().with(Box::new(ManagerKindAdmission)));
        let mut tvm = json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "TrilioVaultManager",
            "metadata": {"name": "triliovault-manager", "namespace": "trilio-system"},
            "spec": {"applicationScope": "Cluster"}
        });
        let result = check_document(&registry, "tvm.yaml", 1, &tvm);
        assert_eq!(result.result, Outcome::Valid, "{:?}", result.errors);
        assert_eq!(result.name.as_deref(), Some("triliovault-manager"));
        tvm["spec"]["applicationScope"] = json!("Everywhere");
        let result = check_document(&registry, "tvm.yaml", 1, &tvm);
        assert_eq!(result.result, Outcome::Invalid);
        assert_eq!(result.errors[0].path, "spec.applicationScope");
        // Without it, the same document is an unknown kind of our group.
        let result = check_document(&tvk_api::admission::app_admission(), "tvm.yaml", 1, &tvm);
        assert_eq!(result.result, Outcome::Invalid);
        assert_eq!(result.errors[0].path, "kind");
    }

    impl KindAdmission for GizmoAdmission {
        fn gvk(&self) -> tvk_api::admission::GroupVersionKind {
            tvk_api::admission::GroupVersionKind {
                group: "example.tvk.test".into(),
                version: "v1".into(),
                kind: "Gizmo".into(),
            }
        }
        fn plural(&self) -> &'static str {
            "gizmos"
        }
        fn namespaced(&self) -> bool {
            true
        }
        fn validate(&self, request: &Request<'_>) -> Result<Vec<String>, Vec<FieldError>> {
            if request.object["spec"]["mode"].is_string() {
                Ok(vec!["spec.colour is deprecated".into()])
            } else {
                Err(vec![FieldError::new("spec.mode", "required")])
            }
        }
        fn default_patch(&self, object: &Value) -> Result<json_patch::Patch, Vec<FieldError>> {
            if object["spec"].get("mode").is_some() {
                return Ok(json_patch::Patch(vec![]));
            }
            Ok(serde_json::from_value(
                json!([{"op": "add", "path": "/spec/mode", "value": "Safe"}]),
            )
            .unwrap())
        }
    }

    #[test]
    fn defaults_are_applied_before_validation() {
        let registry = AdmissionRegistry::new().with(Box::new(GizmoAdmission));
        let gizmo = json!({
            "apiVersion": "example.tvk.test/v1", "kind": "Gizmo",
            "metadata": {"name": "g1"}, "spec": {}
        });
        let result = check_document(&registry, "g.yaml", 3, &gizmo);
        assert_eq!(result.result, Outcome::Valid, "{:?}", result.errors);
        assert_eq!(result.warnings, ["spec.colour is deprecated"]);
        let mut bad = gizmo.clone();
        bad["spec"]["mode"] = json!(3);
        let result = check_document(&registry, "g.yaml", 3, &bad);
        assert_eq!(result.result, Outcome::Invalid);
        assert_eq!(
            result.errors,
            [Problem {
                path: "spec.mode".into(),
                message: "required".into()
            }]
        );
    }

    #[test]
    fn capped_read_stops_after_the_limit() {
        let endless = std::io::repeat(b'x');
        let bytes = read_capped(endless, 1024).unwrap();
        assert_eq!(bytes.len(), 1025);
    }

    #[test]
    fn prefix_names_file_document_kind_and_name() {
        let result = DocumentResult {
            file: "a.yaml".into(),
            document: Some(2),
            item: None,
            kind: Some("Target".into()),
            name: Some("nfs".into()),
            result: Outcome::Invalid,
            errors: vec![],
            warnings: vec![],
        };
        assert_eq!(result.prefix(), "a.yaml: document 2: Target/nfs: ");
    }
}
