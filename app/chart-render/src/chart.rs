//! The chart as a Helm 3 release record stores it (`release.chart`).

use base64::Engine as _;
use serde_json::Value;

use crate::RenderError;

/// A chart as a Helm 3 release record stores it: `release.chart` JSON = {metadata (Chart.yaml
/// fields, camelCase as Helm's JSON), lock, templates: [{name, data: base64}], values,
/// schema, files: [{name, data: base64}]} — Helm does NOT store subcharts in the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// `Chart.yaml` as Helm's JSON (`name`, `version`, `appVersion`, `apiVersion`, …).
    pub metadata: Value,
    /// `Chart.lock`, when the chart had one.
    pub lock: Option<Value>,
    /// Templates, named as in the chart (`templates/deployment.yaml`, `templates/_helpers.tpl`).
    pub templates: Vec<ChartFile>,
    /// The chart's default values (`values.yaml`).
    pub values: Value,
    /// `values.schema.json` (not enforced by rendering).
    pub schema: Option<Vec<u8>>,
    /// Other files of the chart (what `.Files` reads).
    pub files: Vec<ChartFile>,
}

/// One file of a chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartFile {
    /// Path inside the chart (`templates/service.yaml`, `config/app.conf`).
    pub name: String,
    /// Contents.
    pub data: Vec<u8>,
}

impl Chart {
    /// Reads `release.chart` of a decoded Helm 3 release record.
    pub fn from_release_json(chart: &Value) -> Result<Chart, RenderError> {
        let obj = chart
            .as_object()
            .ok_or_else(|| RenderError::InvalidChart("`chart` is not a JSON object".into()))?;
        let metadata = obj.get("metadata").cloned().unwrap_or(Value::Null);
        let name = metadata.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            return Err(RenderError::InvalidChart(
                "`chart.metadata.name` is missing or empty".into(),
            ));
        }
        if name.contains('/') || name.contains("..") {
            return Err(RenderError::InvalidChart(format!(
                "chart name {name:?} is not a valid chart name"
            )));
        }
        let values = match obj.get("values") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(RenderError::InvalidChart(
                    "`chart.values` is not a JSON object".into(),
                ));
            }
        };
        let schema = match obj.get("schema") {
            Some(Value::String(s)) if !s.is_empty() => Some(decode_b64(s, "schema")?),
            _ => None,
        };
        Ok(Chart {
            templates: files(obj.get("templates"), "templates")?,
            files: files(obj.get("files"), "files")?,
            lock: obj.get("lock").filter(|l| !l.is_null()).cloned(),
            metadata,
            values,
            schema,
        })
    }

    /// The chart's name (`Chart.yaml` `name`).
    pub fn name(&self) -> &str {
        self.metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

fn files(list: Option<&Value>, what: &str) -> Result<Vec<ChartFile>, RenderError> {
    let Some(list) = list.filter(|l| !l.is_null()) else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| RenderError::InvalidChart(format!("`chart.{what}` is not a list")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                RenderError::InvalidChart(format!("`chart.{what}[{i}].name` is missing"))
            })?;
            let data = match f.get("data") {
                Some(Value::String(s)) => decode_b64(s, &format!("{what}[{i}] ({name})"))?,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => {
                    return Err(RenderError::InvalidChart(format!(
                        "`chart.{what}[{i}].data` ({name}) is not a base64 string"
                    )));
                }
            };
            Ok(ChartFile {
                name: name.to_string(),
                data,
            })
        })
        .collect()
}

fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>, RenderError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| RenderError::InvalidChart(format!("`chart.{what}` is not valid base64: {e}")))
}
