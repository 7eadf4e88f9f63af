//! RRQ's messages to and from `taskwire.runner.v1`, losslessly wherever the two agree.
//!
//! `docs/rrq.md` has the whole table. In short:
//!
//! | RRQ | runner.v1 |
//! |---|---|
//! | request (`protocol_version` "2") | `ExecutionRequest` (the version is checked, not carried) |
//! | `context.job_id` | `ExecutionRequest.job_id` (RRQ repeats it) |
//! | `params` (object) | `params` (`Struct`) |
//! | `trace_context`, `correlation_context`, `worker_id`: `null` | empty |
//! | `success` + `result` | `Success` (`null` is unset) |
//! | `retry` + `error.message` + `retry_after_seconds` | `RetryAfter` (`message`, `delay`) |
//! | `timeout` + `error.message` | `Timeout` (`error.type` is `"timeout"`) |
//! | `error` + type `handler_not_found` + RRQ's message | `HandlerNotFound` |
//! | `error` + type `cancelled` | `Cancelled` |
//! | any other `error` | `Failure` (`message`, `type`, `code`, `details`) |
//! | cancel (`request_id` `null`) | `CancelRequest` (`request_id` empty) |
//!
//! What cannot cross, and why:
//! * JSON numbers become `google.protobuf.Value` doubles: integers past 2^53 lose
//!   precision, and an integral float such as `1.0` comes back as `1`. (Python and
//!   JavaScript runners compare them equal; taskwire writes integral doubles as integers
//!   so that `{"n": 7}` stays `7`.)
//! * `null` and empty are one value in proto3: an empty `trace_context` comes back `null`,
//!   an empty error `type` comes back `null`.
//! * `retry` keeps only the message and the delay: an error `type`, `code` or `details`
//!   sent with a retry has no place in `RetryAfter`. The delay keeps nanoseconds.
//! * runner.v1's `Timeout.elapsed`, `Cancelled.hard_killed`, `CancelRequest.reason` and
//!   `CancelResponse` have no RRQ field: RRQ sends no answer to a cancel.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Number, Value as Json};
use taskwire_proto::runner::v1::execution_outcome::{
    Cancelled, Failure, HandlerNotFound, Outcome, RetryAfter, Success, Timeout,
};
use taskwire_proto::runner::v1::execution_request::ExecutionContext;
use taskwire_proto::runner::v1::{CancelRequest, ExecutionOutcome, ExecutionRequest};
use taskwire_proto::wkt::{self, ListValue, Struct, Value, value::Kind};

use crate::message::{Cancel, Context, OutcomeError, PROTOCOL_VERSION, Request, Response, Status};

/// `error.type` of an attempt whose function the runner does not have. RRQ fails the job
/// at once instead of retrying it.
pub const HANDLER_NOT_FOUND: &str = "handler_not_found";
/// `error.type` of an attempt that was cancelled.
pub const CANCELLED: &str = "cancelled";
/// `error.type` of an attempt that ran past its deadline.
pub const TIMEOUT: &str = "timeout";

const NOT_FOUND_PREFIX: &str = "No handler registered for function '";

/// The message RRQ's runners give a missing handler.
pub fn handler_not_found_message(function_name: &str) -> String {
    format!("{NOT_FOUND_PREFIX}{function_name}'")
}

/// An RRQ request as a runner.v1 `ExecutionRequest`. The protocol version is not carried:
/// check it first (RRQ answers other versions with an error outcome).
pub fn execution_request(request: Request) -> ExecutionRequest {
    let context = request.context;
    ExecutionRequest {
        request_id: request.request_id,
        job_id: request.job_id,
        function_name: request.function_name,
        params: Some(to_struct(request.params)),
        context: Some(ExecutionContext {
            attempt: context.attempt,
            enqueue_time: Some(context.enqueue_time),
            queue_name: context.queue_name,
            deadline: context.deadline,
            trace_context: context.trace_context.unwrap_or_default(),
            worker_id: context.worker_id.unwrap_or_default(),
            correlation_context: context.correlation_context.unwrap_or_default(),
        }),
    }
}

/// A runner.v1 `ExecutionRequest` as an RRQ request. A request without an enqueue time
/// gets the current time, since RRQ requires one.
pub fn rrq_request(request: ExecutionRequest) -> Request {
    let context = request.context.unwrap_or_default();
    let non_empty_map =
        |map: std::collections::BTreeMap<String, String>| (!map.is_empty()).then_some(map);
    Request {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        context: Context {
            job_id: request.job_id.clone(),
            attempt: context.attempt,
            enqueue_time: context
                .enqueue_time
                .unwrap_or_else(|| wkt::Timestamp::from(SystemTime::now())),
            queue_name: context.queue_name,
            deadline: context.deadline,
            trace_context: non_empty_map(context.trace_context),
            correlation_context: non_empty_map(context.correlation_context),
            worker_id: non_empty(context.worker_id),
        },
        request_id: request.request_id,
        job_id: request.job_id,
        function_name: request.function_name,
        params: request.params.map(from_struct).unwrap_or_default(),
    }
}

/// An RRQ response as a runner.v1 `ExecutionOutcome`.
pub fn execution_outcome(response: Response) -> ExecutionOutcome {
    let outcome = match response.status {
        Status::Success => Outcome::Success(Success {
            result: (!response.result.is_null()).then(|| to_value(response.result)),
        }),
        Status::Retry => Outcome::RetryAfter(RetryAfter {
            message: response.error.map(|e| e.message).unwrap_or_default(),
            delay: response.retry_after_seconds.and_then(seconds_to_duration),
        }),
        Status::Timeout => Outcome::Timeout(Timeout {
            message: response.error.map(|e| e.message).unwrap_or_default(),
            elapsed: None,
        }),
        Status::Error => failure_outcome(response.error),
    };
    ExecutionOutcome {
        job_id: response.job_id.unwrap_or_default(),
        request_id: response.request_id.unwrap_or_default(),
        outcome: Some(outcome),
    }
}

fn failure_outcome(error: Option<OutcomeError>) -> Outcome {
    let Some(error) = error else {
        return Outcome::Failure(Failure::default());
    };
    let plain = error.code.is_none() && error.details.is_none();
    match error.r#type.as_deref() {
        Some(HANDLER_NOT_FOUND) if plain => {
            if let Some(name) = error
                .message
                .strip_prefix(NOT_FOUND_PREFIX)
                .and_then(|rest| rest.strip_suffix('\''))
            {
                return Outcome::HandlerNotFound(HandlerNotFound {
                    function_name: name.to_owned(),
                });
            }
        }
        Some(CANCELLED) if plain => {
            return Outcome::Cancelled(Cancelled {
                reason: error.message,
                hard_killed: false,
            });
        }
        _ => {}
    }
    Outcome::Failure(Failure {
        message: error.message,
        r#type: error.r#type.unwrap_or_default(),
        code: error.code.unwrap_or_default(),
        details: error.details.map(to_struct),
    })
}

/// A runner.v1 `ExecutionOutcome` as an RRQ response. An outcome with no result set
/// breaks runner.v1's rules; it becomes an `error` that says so.
pub fn rrq_response(outcome: ExecutionOutcome) -> Response {
    let error = |message: String, r#type: Option<&str>| {
        Some(OutcomeError {
            message,
            r#type: r#type.map(str::to_owned),
            code: None,
            details: None,
        })
    };
    let (status, result, error, retry_after_seconds) = match outcome.outcome {
        Some(Outcome::Success(success)) => (
            Status::Success,
            success.result.map_or(Json::Null, from_value),
            None,
            None,
        ),
        Some(Outcome::Failure(failure)) => (
            Status::Error,
            Json::Null,
            Some(OutcomeError {
                message: failure.message,
                r#type: non_empty(failure.r#type),
                code: non_empty(failure.code),
                details: failure.details.map(from_struct),
            }),
            None,
        ),
        Some(Outcome::RetryAfter(retry)) => (
            Status::Retry,
            Json::Null,
            (!retry.message.is_empty())
                .then_some(retry.message)
                .and_then(|message| error(message, None)),
            retry.delay.map(duration_to_seconds),
        ),
        Some(Outcome::Timeout(timeout)) => (
            Status::Timeout,
            Json::Null,
            error(timeout.message, Some(TIMEOUT)),
            None,
        ),
        Some(Outcome::Cancelled(cancelled)) => {
            let reason = if cancelled.reason.is_empty() {
                "Job cancelled".to_owned()
            } else {
                cancelled.reason
            };
            (
                Status::Error,
                Json::Null,
                error(reason, Some(CANCELLED)),
                None,
            )
        }
        Some(Outcome::HandlerNotFound(missing)) => (
            Status::Error,
            Json::Null,
            error(
                handler_not_found_message(&missing.function_name),
                Some(HANDLER_NOT_FOUND),
            ),
            None,
        ),
        None => (
            Status::Error,
            Json::Null,
            error(
                "the runner's outcome set none of its results".to_owned(),
                Some("protocol_violation"),
            ),
            None,
        ),
    };
    Response {
        job_id: Some(outcome.job_id),
        request_id: Some(outcome.request_id),
        status,
        result,
        error,
        retry_after_seconds,
    }
}

/// An RRQ cancel as a runner.v1 `CancelRequest`.
pub fn cancel_request(cancel: Cancel) -> CancelRequest {
    CancelRequest {
        job_id: cancel.job_id,
        request_id: cancel.request_id.unwrap_or_default(),
        hard_kill: cancel.hard_kill,
        reason: String::new(),
    }
}

/// A runner.v1 `CancelRequest` as an RRQ cancel (its reason has no RRQ field).
pub fn rrq_cancel(request: CancelRequest) -> Cancel {
    Cancel {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        job_id: request.job_id,
        request_id: non_empty(request.request_id),
        hard_kill: request.hard_kill,
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Seconds as RRQ gives them, as a protobuf duration; `None` for NaN or infinity, or
/// past the duration's range.
fn seconds_to_duration(seconds: f64) -> Option<wkt::Duration> {
    if !seconds.is_finite() {
        return None;
    }
    let magnitude = Duration::try_from_secs_f64(seconds.abs()).ok()?;
    let whole = i64::try_from(magnitude.as_secs()).ok()?;
    let nanos = i32::try_from(magnitude.subsec_nanos()).ok()?;
    let duration = if seconds < 0.0 {
        wkt::Duration {
            seconds: -whole,
            nanos: -nanos,
        }
    } else {
        wkt::Duration {
            seconds: whole,
            nanos,
        }
    };
    duration.is_valid().then_some(duration)
}

#[allow(clippy::cast_precision_loss)] // Durations within ±10,000 years fit a double well.
fn duration_to_seconds(duration: wkt::Duration) -> f64 {
    duration.seconds as f64 + f64::from(duration.nanos) / 1e9
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn to_struct(object: Map<String, Json>) -> Struct {
    Struct {
        fields: object
            .into_iter()
            .map(|(key, value)| (key, to_value(value)))
            .collect(),
    }
}

/// A JSON value as a `google.protobuf.Value`: numbers become doubles.
pub fn to_value(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        // Every JSON number has a double; large integers round to the nearest.
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Json::Object(object) => Kind::StructValue(to_struct(object)),
    };
    Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as a JSON object.
pub fn from_struct(object: Struct) -> Map<String, Json> {
    object
        .fields
        .into_iter()
        .map(|(key, value)| (key, from_value(value)))
        .collect()
}

/// The largest magnitude below which every integer is a double.
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// A `google.protobuf.Value` as JSON: integral doubles within ±2^53 are written as
/// integers, so an RRQ `7` comes back `7`; NaN and infinity, which JSON cannot write,
/// become `null`.
pub fn from_value(value: Value) -> Json {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() <= EXACT_INTEGERS {
                #[allow(clippy::cast_possible_truncation)] // Integral and within ±2^53.
                Json::Number(Number::from(n as i64))
            } else {
                Number::from_f64(n).map_or(Json::Null, Json::Number)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.into_iter().map(from_value).collect())
        }
        Some(Kind::StructValue(object)) => Json::Object(from_struct(object)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_keep_their_sign_and_fraction() {
        let delay = seconds_to_duration(-1.25).unwrap();
        assert_eq!((delay.seconds, delay.nanos), (-1, -250_000_000));
        assert!((duration_to_seconds(delay) + 1.25).abs() < 1e-12);
        assert_eq!(seconds_to_duration(f64::NAN), None);
        assert_eq!(seconds_to_duration(1e300), None);
        assert_eq!(duration_to_seconds(seconds_to_duration(0.1).unwrap()), 0.1);
    }

    #[test]
    fn integral_doubles_are_written_as_integers_and_others_as_floats() {
        let number = |n: f64| {
            from_value(Value {
                kind: Some(Kind::NumberValue(n)),
            })
        };
        assert_eq!(number(7.0).to_string(), "7");
        assert_eq!(number(-0.0).to_string(), "0");
        assert_eq!(number(2.5).to_string(), "2.5");
        assert_eq!(number(1e300).to_string(), "1e+300");
        assert_eq!(number(f64::INFINITY), Json::Null);
    }

    #[test]
    fn a_custom_handler_not_found_message_stays_a_failure() {
        let custom = failure_outcome(Some(OutcomeError {
            message: "nothing here".into(),
            r#type: Some(HANDLER_NOT_FOUND.into()),
            code: None,
            details: None,
        }));
        assert!(matches!(custom, Outcome::Failure(ref f) if f.r#type == HANDLER_NOT_FOUND));
        let back = rrq_response(ExecutionOutcome {
            outcome: Some(custom),
            ..Default::default()
        });
        let error = back.error.unwrap();
        assert_eq!(
            (error.message.as_str(), error.r#type.as_deref()),
            ("nothing here", Some(HANDLER_NOT_FOUND))
        );
    }
}
