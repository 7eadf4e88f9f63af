//! RRQ's runner protocol v2 messages, field for field as RRQ 0.11 writes them.
//!
//! Every member RRQ sends is here, in RRQ's order. Encoding writes every member, `null`
//! included, as RRQ's orchestrator and Python runner do; decoding ignores members it does
//! not know and takes the optional ones as absent when missing, as RRQ's own runtimes do.
//! A missing required member is an error, which RRQ's Python runner also treats as fatal
//! for the connection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskwire_proto::wkt::Timestamp;

/// The protocol version this crate speaks, carried in every request and cancel.
pub const PROTOCOL_VERSION: &str = "2";

fn protocol_version() -> String {
    PROTOCOL_VERSION.to_owned()
}

/// One RRQ frame's message: the envelope's `type` picks the variant and `payload` is its
/// body.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `"request"`: the orchestrator asks a runner to run one attempt of a job.
    Request(Request),
    /// `"response"`: the runner reports how the attempt ended.
    Response(Response),
    /// `"cancel"`: the orchestrator asks a runner to stop an attempt.
    Cancel(Cancel),
}

impl Message {
    /// The envelope's `type` for this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Request(_) => "request",
            Message::Response(_) => "response",
            Message::Cancel(_) => "cancel",
        }
    }
}

/// The envelope, `{"type": ..., "payload": ...}` in that order, as RRQ writes it (what
/// [`RrqCodec`](crate::RrqCodec) puts after the length prefix).
impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut envelope = serializer.serialize_struct("Envelope", 2)?;
        envelope.serialize_field("type", self.type_name())?;
        match self {
            Message::Request(request) => envelope.serialize_field("payload", request)?,
            Message::Response(response) => envelope.serialize_field("payload", response)?,
            Message::Cancel(cancel) => envelope.serialize_field("payload", cancel)?,
        }
        envelope.end()
    }
}

impl From<Request> for Message {
    fn from(request: Request) -> Message {
        Message::Request(request)
    }
}

impl From<Response> for Message {
    fn from(response: Response) -> Message {
        Message::Response(response)
    }
}

impl From<Cancel> for Message {
    fn from(cancel: Cancel) -> Message {
        Message::Cancel(cancel)
    }
}

/// `ExecutionRequest`: one attempt of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always [`PROTOCOL_VERSION`] from RRQ 0.11; `"2"` when missing.
    #[serde(default = "protocol_version")]
    pub protocol_version: String,
    /// This attempt's id, new for every attempt; the response echoes it.
    pub request_id: String,
    /// The job's id, the same for every attempt.
    pub job_id: String,
    /// The handler to run.
    pub function_name: String,
    /// The handler's arguments; `{}` when missing.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Where and how the attempt runs.
    pub context: Context,
}

/// `ExecutionContext`: the attempt's details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The job's id again (RRQ repeats it here).
    pub job_id: String,
    /// 1 for the first attempt, then one more per retry.
    pub attempt: u32,
    /// When the job was enqueued.
    #[serde(with = "rfc3339")]
    pub enqueue_time: Timestamp,
    /// The queue's full key, such as `rrq:queue:default`.
    pub queue_name: String,
    /// When the attempt must have ended: the attempt's start plus the job timeout.
    #[serde(default, with = "rfc3339::option")]
    pub deadline: Option<Timestamp>,
    /// Trace propagation fields (`traceparent`, `tracestate`), or `null`.
    #[serde(default)]
    pub trace_context: Option<BTreeMap<String, String>>,
    /// Correlation fields the orchestrator derived from the job, or `null`.
    #[serde(default)]
    pub correlation_context: Option<BTreeMap<String, String>>,
    /// The orchestrator worker that dispatched the attempt, or `null`.
    #[serde(default)]
    pub worker_id: Option<String>,
}

/// `ExecutionOutcome`: how an attempt ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's job id. RRQ's orchestrator treats a missing or different one as a
    /// broken runner connection.
    #[serde(default)]
    pub job_id: Option<String>,
    /// The request's id, which matches the answer to its request.
    #[serde(default)]
    pub request_id: Option<String>,
    /// How the attempt ended.
    pub status: Status,
    /// The handler's result for `success`; `null` otherwise and when missing.
    #[serde(default)]
    pub result: Value,
    /// What went wrong, for `error`, `timeout` and (optionally) `retry`.
    #[serde(default)]
    pub error: Option<OutcomeError>,
    /// For `retry`: seconds until the next attempt; `null` lets the orchestrator back off.
    #[serde(default)]
    pub retry_after_seconds: Option<f64>,
}

impl Response {
    /// A response to `request` with `status` and nothing else.
    pub fn to(request: &Request, status: Status) -> Response {
        Response {
            job_id: Some(request.job_id.clone()),
            request_id: Some(request.request_id.clone()),
            status,
            result: Value::Null,
            error: None,
            retry_after_seconds: None,
        }
    }

    /// A `status` response to `request` carrying an error with `message` and `type`.
    pub fn failed(
        request: &Request,
        status: Status,
        message: impl Into<String>,
        r#type: Option<&str>,
    ) -> Response {
        Response {
            error: Some(OutcomeError {
                message: message.into(),
                r#type: r#type.map(str::to_owned),
                code: None,
                details: None,
            }),
            ..Response::to(request, status)
        }
    }
}

/// The four ways an attempt ends, as RRQ names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The handler returned `result`. The job is completed.
    Success,
    /// The handler asked to be run again, after `retry_after_seconds` if given.
    Retry,
    /// The attempt ran past its deadline. RRQ fails the job without a retry.
    Timeout,
    /// The handler failed. RRQ retries the job unless `error.type` is
    /// `handler_not_found`.
    Error,
}

/// `ExecutionError`: what went wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeError {
    /// A human-readable message; RRQ stores it as the job's `last_error`.
    pub message: String,
    /// The error's class: `handler_not_found`, `timeout`, `cancelled`, or the handler's
    /// own; `null` for an ordinary exception.
    #[serde(default)]
    pub r#type: Option<String>,
    /// An application error code, or `null`.
    #[serde(default)]
    pub code: Option<String>,
    /// Structured context, or `null`.
    #[serde(default)]
    pub details: Option<Map<String, Value>>,
}

/// `CancelRequest`: stop an attempt in flight. Sent on a connection of its own; nothing
/// answers it. The cancelled attempt answers on its own connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    /// Always [`PROTOCOL_VERSION`]; `"2"` when missing.
    #[serde(default = "protocol_version")]
    pub protocol_version: String,
    /// The job to cancel.
    pub job_id: String,
    /// The attempt to cancel; `null` means every attempt of the job in flight.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Whether to stop the handler at once rather than ask it to stop.
    #[serde(default)]
    pub hard_kill: bool,
}

/// RFC 3339 timestamps with nine fractional digits and `Z`, as RRQ's orchestrator writes
/// them; any RFC 3339 offset and 1 to 9 fractional digits are read.
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use taskwire_proto::wkt::Timestamp;

    /// `timestamp` as RRQ writes it: `2026-12-02T06:51:36.753695162Z`.
    pub(crate) fn format(timestamp: &Timestamp) -> String {
        let whole = Timestamp {
            seconds: timestamp.seconds,
            nanos: 0,
        }
        .to_string();
        let date_time = whole.strip_suffix('Z').unwrap_or(&whole);
        format!("{date_time}.{:09}Z", timestamp.nanos.unsigned_abs())
    }

    pub(crate) fn serialize<S: Serializer>(
        timestamp: &Timestamp,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(timestamp))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    pub(crate) mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use taskwire_proto::wkt::Timestamp;

        pub(crate) fn serialize<S: Serializer>(
            timestamp: &Option<Timestamp>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match timestamp {
                Some(timestamp) => super::serialize(timestamp, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Timestamp>, D::Error> {
            let text = Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.map(|text| text.parse().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_with_nine_digits_and_read_with_any_offset() {
        let t: Timestamp = "2026-12-02T06:51:36.753695Z".parse().unwrap();
        assert_eq!(rfc3339::format(&t), "2026-12-02T06:51:36.753695000Z");
        let whole: Timestamp = "2026-12-02T06:51:36Z".parse().unwrap();
        assert_eq!(rfc3339::format(&whole), "2026-12-02T06:51:36.000000000Z");
        let offset: Timestamp = "2026-12-02T08:51:36.5+02:00".parse().unwrap();
        assert_eq!(rfc3339::format(&offset), "2026-12-02T06:51:36.500000000Z");
    }

    #[test]
    fn missing_optional_members_take_rrq_defaults_and_unknown_ones_are_ignored() {
        let request: Request = serde_json::from_str(
            r#"{"request_id":"r","job_id":"j","function_name":"f","extra":[1],
                "context":{"job_id":"j","attempt":1,"enqueue_time":"2026-12-02T06:51:36Z","queue_name":"q","more":{}}}"#,
        )
        .unwrap();
        assert_eq!(request.protocol_version, "2");
        assert!(request.params.is_empty());
        assert_eq!(request.context.deadline, None);
        assert_eq!(request.context.worker_id, None);
        let missing_context = serde_json::from_str::<Request>(
            r#"{"request_id":"r","job_id":"j","function_name":"f"}"#,
        )
        .unwrap_err();
        assert!(
            missing_context
                .to_string()
                .contains("missing field `context`")
        );
    }

    #[test]
    fn responses_write_every_member_with_explicit_nulls() {
        let response = Response {
            job_id: Some("j".into()),
            request_id: Some("r".into()),
            status: Status::Retry,
            result: Value::Null,
            error: Some(OutcomeError {
                message: "not yet".into(),
                r#type: None,
                code: None,
                details: None,
            }),
            retry_after_seconds: Some(1.0),
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"job_id":"j","request_id":"r","status":"retry","result":null,"error":{"message":"not yet","type":null,"code":null,"details":null},"retry_after_seconds":1.0}"#
        );
    }
}
