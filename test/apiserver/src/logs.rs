//! `pods/{name}/log`: a container's log, read from the CRI-format file whoever plays the
//! kubelet names in the Pod's [`ANNOTATION_LOG_DIR`] annotation (`<dir>/<container>.log`,
//! lines `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, as the kubelet's `/var/log/pods`),
//! with the query parameters of the real endpoint: `container`, `tailLines`, `limitBytes`,
//! `sinceSeconds`, `sinceTime`, `timestamps`. `follow` is not streamed: the log so far is
//! returned. `previous` is refused (no restarts here).

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;

/// Pod annotation naming the directory of the Pod's container logs (`<container>.log`).
pub const ANNOTATION_LOG_DIR: &str = "tvk-test-apiserver/log-dir";

/// One parsed line of a CRI log file.
struct LogLine<'a> {
    time: &'a str,
    at: Option<jiff::Timestamp>,
    text: &'a str,
    /// `F` (a full line, ends with a newline) or `P` (a partial line).
    full: bool,
}

fn parse_line(line: &str) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(LogLine {
        time,
        at: time.parse().ok(),
        text,
        full: tag != "P",
    })
}

fn query_int(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    match query.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!("{key}: Invalid value: {v:?}: must be an integer"))
        }),
    }
}

fn positive(value: Option<i64>, key: &str, min: i64) -> Result<Option<i64>, ApiError> {
    match value {
        Some(v) if v < min => Err(ApiError::bad_request(format!(
            "{key}: Invalid value: {v}: must be greater than or equal to {min}"
        ))),
        other => Ok(other),
    }
}

/// The log of `pod` (its stored object) as the query asks (pure but for reading the file).
pub(crate) fn pod_log(pod: &Value, query: &HashMap<String, String>) -> Result<String, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None => match containers.as_slice() {
            [one] => (*one).to_string(),
            [] => {
                return Err(ApiError::bad_request(format!(
                    "pod {name} has no containers"
                )));
            }
            many => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                )));
            }
        },
    };
    if query.get("previous").is_some_and(|v| v == "true") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let tail_lines = positive(query_int(query, "tailLines")?, "tailLines", 0)?;
    let limit_bytes = positive(query_int(query, "limitBytes")?, "limitBytes", 1)?;
    let since_seconds = positive(query_int(query, "sinceSeconds")?, "sinceSeconds", 1)?;
    let since_time: Option<jiff::Timestamp> = match query.get("sinceTime") {
        None => None,
        Some(t) => Some(t.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "sinceTime: Invalid value: {t:?}: must be an RFC 3339 time"
            ))
        })?),
    };
    if since_seconds.is_some() && since_time.is_some() {
        return Err(ApiError::bad_request(
            "at most one of sinceTime or sinceSeconds may be specified",
        ));
    }
    let timestamps = query.get("timestamps").is_some_and(|v| v == "true");
    let since = match (since_seconds, since_time) {
        (Some(s), _) => jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(s))
            .ok(),
        (None, t) => t,
    };

    let Some(dir) = pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            ANNOTATION_LOG_DIR.replace('/', "~1")
        ))
        .and_then(Value::as_str)
    else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    };
    let file = std::path::Path::new(dir).join(format!("{container}.log"));
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "cannot read the log of container {container} in pod {name} ({}): {e}",
                file.display()
            )));
        }
    };
    let lines: Vec<LogLine<'_>> = text
        .lines()
        .filter_map(parse_line)
        .filter(|l| match (since, l.at) {
            (Some(since), Some(at)) => at >= since,
            _ => true,
        })
        .collect();
    let skip = match tail_lines.and_then(|t| usize::try_from(t).ok()) {
        // Lines as the reader sees them: a partial entry joins the next one.
        Some(t) => {
            let ends: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.full)
                .map(|(i, _)| i)
                .collect();
            if t == 0 {
                lines.len()
            } else if ends.len() > t {
                ends[ends.len() - t - 1] + 1
            } else {
                0
            }
        }
        None => 0,
    };
    let mut out = String::new();
    let mut line_start = true;
    for l in &lines[skip..] {
        if timestamps && line_start {
            out.push_str(l.time);
            out.push(' ');
        }
        out.push_str(l.text);
        if l.full {
            out.push('\n');
        }
        line_start = l.full;
    }
    if let Some(limit) = limit_bytes.and_then(|l| usize::try_from(l).ok())
        && out.len() > limit
    {
        let mut end = limit;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn tail_limit_since_and_timestamps_select_like_the_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let old = "2020-01-01T00:00:00.000000000Z";
        let new = jiff::Timestamp::now().to_string();
        std::fs::write(
            dir.path().join("c.log"),
            format!(
                "{old} stdout F one\n{old} stderr F two\n{new} stdout P thr\n{new} stdout F ee\n{new} stdout F four\n"
            ),
        )
        .unwrap();
        let pod = json!({"metadata": {"name": "p", "annotations": {ANNOTATION_LOG_DIR: dir.path()}},
            "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(pod_log(&pod, &q(&[])).unwrap(), "one\ntwo\nthree\nfour\n");
        assert_eq!(
            pod_log(&pod, &q(&[("tailLines", "2")])).unwrap(),
            "three\nfour\n"
        );
        assert_eq!(pod_log(&pod, &q(&[("tailLines", "0")])).unwrap(), "");
        assert_eq!(
            pod_log(&pod, &q(&[("limitBytes", "6")])).unwrap(),
            "one\ntw"
        );
        assert_eq!(
            pod_log(&pod, &q(&[("sinceSeconds", "3600")])).unwrap(),
            "three\nfour\n"
        );
        assert_eq!(
            pod_log(&pod, &q(&[("tailLines", "1"), ("timestamps", "true")])).unwrap(),
            format!("{new} four\n")
        );
        let e = pod_log(&pod, &q(&[("container", "x")])).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container x is not valid for pod p")
        );
        assert_eq!(
            pod_log(&pod, &q(&[("tailLines", "-1")])).unwrap_err().code,
            400
        );
        let waiting = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        assert!(
            pod_log(&waiting, &q(&[]))
                .unwrap_err()
                .message
                .contains("waiting to start")
        );
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert!(
            pod_log(&two, &q(&[]))
                .unwrap_err()
                .message
                .contains("choose one of: [a b]")
        );
    }
}
