//! Discovery: the endpoint manifest Restate reads from `GET /discover`.
//!
//! Restate lists the manifest versions it reads in `accept`
//! (`application/vnd.restate.endpointmanifest.v1+json` to `v4+json` from restate-server
//! 1.7); the endpoint answers in the newest one both know, naming it in `content-type`.
//! Fields a version does not define are left out of it: service timeouts from v2, retry
//! policies from v4.

use serde_json::{Map, Value, json};

use crate::service::{Endpoint, ServiceDef};

/// The manifest versions this endpoint writes.
pub const MANIFEST_VERSIONS: std::ops::RangeInclusive<u32> = 1..=4;

/// The service protocol versions this endpoint speaks.
pub const PROTOCOL_VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;

/// How Restate and the endpoint share one invocation's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolMode {
    /// Both sides write at once, over HTTP/2.
    BidiStream,
    /// Restate sends the whole journal, then reads the answer (HTTP/1.1 works).
    RequestResponse,
}

impl ProtocolMode {
    fn manifest_name(self) -> &'static str {
        match self {
            ProtocolMode::BidiStream => "BIDI_STREAM",
            ProtocolMode::RequestResponse => "REQUEST_RESPONSE",
        }
    }
}

/// The content type of manifest `version`.
pub fn content_type(version: u32) -> String {
    format!("application/vnd.restate.endpointmanifest.v{version}+json")
}

/// The newest manifest version both `accept` and this endpoint know, if any.
pub fn negotiate(accept: &str) -> Option<u32> {
    accept
        .split(',')
        .filter_map(|item| {
            let media = item.split(';').next()?.trim();
            let version = media
                .strip_prefix("application/vnd.restate.endpointmanifest.v")?
                .strip_suffix("+json")?;
            version.parse::<u32>().ok()
        })
        .filter(|v| MANIFEST_VERSIONS.contains(v))
        .max()
}

fn millis(duration: std::time::Duration) -> Value {
    json!(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn service(service: &ServiceDef, version: u32) -> Value {
    let handlers: Vec<Value> = service
        .handlers
        .iter()
        .map(|handler| {
            let mut h = Map::new();
            h.insert("name".into(), json!(handler.name));
            if let Some(kind) = handler.kind.manifest_name() {
                h.insert("ty".into(), json!(kind));
            }
            // A handler without input takes any body, and ignores it.
            let mut input = Map::new();
            input.insert("required".into(), json!(false));
            input.insert(
                "contentType".into(),
                json!(handler.input_content_type.unwrap_or("*/*")),
            );
            h.insert("input".into(), Value::Object(input));
            let mut output = Map::new();
            if let Some(content_type) = handler.output_content_type {
                output.insert("contentType".into(), json!(content_type));
            }
            output.insert("setContentTypeIfEmpty".into(), json!(false));
            h.insert("output".into(), Value::Object(output));
            Value::Object(h)
        })
        .collect();
    let mut s = Map::new();
    s.insert("name".into(), json!(service.name));
    s.insert("ty".into(), json!(service.kind.manifest_name()));
    s.insert("handlers".into(), Value::Array(handlers));
    let options = &service.options;
    if version >= 2 {
        if let Some(timeout) = options.inactivity_timeout {
            s.insert("inactivityTimeout".into(), millis(timeout));
        }
        if let Some(timeout) = options.abort_timeout {
            s.insert("abortTimeout".into(), millis(timeout));
        }
    }
    if version >= 4 {
        if let Some(interval) = options.retry_initial_interval {
            s.insert("retryPolicyInitialInterval".into(), millis(interval));
        }
        if let Some(attempts) = options.retry_max_attempts {
            s.insert("retryPolicyMaxAttempts".into(), json!(attempts));
        }
    }
    Value::Object(s)
}

/// The manifest of `endpoint` in manifest `version`, for `mode`.
pub fn manifest(endpoint: &Endpoint, version: u32, mode: ProtocolMode) -> Value {
    json!({
        "protocolMode": mode.manifest_name(),
        "minProtocolVersion": PROTOCOL_VERSIONS.start(),
        "maxProtocolVersion": PROTOCOL_VERSIONS.end(),
        "services": endpoint.services().map(|s| service(s, version)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::negotiate;

    #[test]
    fn the_newest_common_manifest_version_is_chosen() {
        let restate = "application/vnd.restate.endpointmanifest.v1+json, application/vnd.restate.endpointmanifest.v2+json, application/vnd.restate.endpointmanifest.v3+json, application/vnd.restate.endpointmanifest.v4+json";
        assert_eq!(negotiate(restate), Some(4));
        assert_eq!(
            negotiate("application/vnd.restate.endpointmanifest.v2+json"),
            Some(2)
        );
        assert_eq!(
            negotiate("application/vnd.restate.endpointmanifest.v9+json"),
            None
        );
        assert_eq!(negotiate("application/json"), None);
    }
}
