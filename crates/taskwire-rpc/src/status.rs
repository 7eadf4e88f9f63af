//! How a call fails: a code, a message, and retry advice.

use std::fmt;
use std::time::Duration;

use taskwire_proto::session::v1::{RetryHint, Status as StatusMessage, StatusCode};
use taskwire_proto::wkt;

/// A call's failure, as handlers return it and as it travels in a status frame.
///
/// ```
/// use taskwire_rpc::{Status, StatusCode};
///
/// let status = Status::not_found("no instance order-7");
/// assert_eq!(status.code(), StatusCode::NotFound);
/// assert!(!status.is_retryable());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    code: StatusCode,
    message: String,
    retry: RetryHint,
    retry_after: Option<Duration>,
    details: Option<wkt::Struct>,
}

impl Status {
    /// A status with `code` and `message`, and no retry advice.
    pub fn new(code: StatusCode, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            retry: RetryHint::Unspecified,
            retry_after: None,
            details: None,
        }
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(StatusCode::InvalidArgument, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(StatusCode::NotFound, message)
    }

    /// `PERMISSION_DENIED`.
    pub fn permission_denied(message: impl Into<String>) -> Status {
        Status::new(StatusCode::PermissionDenied, message)
    }

    /// `FAILED_PRECONDITION`.
    pub fn failed_precondition(message: impl Into<String>) -> Status {
        Status::new(StatusCode::FailedPrecondition, message)
    }

    /// `RESOURCE_EXHAUSTED`, retryable with backoff.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(StatusCode::ResourceExhausted, message).with_retry(RetryHint::RetryWithBackoff)
    }

    /// `UNAVAILABLE`, retryable with backoff.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(StatusCode::Unavailable, message).with_retry(RetryHint::RetryWithBackoff)
    }

    /// `DEADLINE_EXCEEDED`.
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(StatusCode::DeadlineExceeded, message)
    }

    /// `CANCELLED`.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(StatusCode::Cancelled, message)
    }

    /// `UNIMPLEMENTED`.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(StatusCode::Unimplemented, message).with_retry(RetryHint::DoNotRetry)
    }

    /// `INTERNAL`.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(StatusCode::Internal, message)
    }

    /// `PROTOCOL_VIOLATION`: the peer broke the protocol.
    pub fn protocol_violation(message: impl Into<String>) -> Status {
        Status::new(StatusCode::ProtocolViolation, message).with_retry(RetryHint::DoNotRetry)
    }

    /// Sets the retry advice.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryHint) -> Status {
        self.retry = retry;
        self
    }

    /// Asks the caller to retry after `delay`, not before.
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Status {
        self.retry = RetryHint::RetryAfter;
        self.retry_after = Some(delay);
        self
    }

    /// Attaches structured details.
    #[must_use]
    pub fn with_details(mut self, details: wkt::Struct) -> Status {
        self.details = Some(details);
        self
    }

    /// The code.
    pub fn code(&self) -> StatusCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The retry advice.
    pub fn retry(&self) -> RetryHint {
        self.retry
    }

    /// How long to wait before retrying, if the callee said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Structured details, if any.
    pub fn details(&self) -> Option<&wkt::Struct> {
        self.details.as_ref()
    }

    /// Whether retrying the call may succeed: explicit advice wins; otherwise the codes
    /// gRPC treats as transient (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `ABORTED`).
    pub fn is_retryable(&self) -> bool {
        match self.retry {
            RetryHint::RetryImmediately | RetryHint::RetryWithBackoff | RetryHint::RetryAfter => {
                true
            }
            RetryHint::DoNotRetry => false,
            RetryHint::Unspecified => matches!(
                self.code,
                StatusCode::Unavailable | StatusCode::ResourceExhausted | StatusCode::Aborted
            ),
        }
    }

    /// The wire message.
    pub fn to_message(&self) -> StatusMessage {
        StatusMessage {
            code: self.code as i32,
            message: self.message.clone(),
            details: self.details.clone(),
            retry: self.retry as i32,
            retry_after: self.retry_after.map(wkt::Duration::from),
        }
    }

    /// From the wire message; unknown codes become `UNKNOWN` (the message keeps the number).
    pub fn from_message(message: StatusMessage) -> Status {
        let code = StatusCode::try_from(message.code).unwrap_or(StatusCode::Unknown);
        let text = if code == StatusCode::Unknown && message.code != StatusCode::Unknown as i32 {
            format!("(status code {}) {}", message.code, message.message)
        } else {
            message.message
        };
        Status {
            code,
            message: text,
            retry: RetryHint::try_from(message.retry).unwrap_or(RetryHint::Unspecified),
            retry_after: message.retry_after.and_then(|d| Duration::try_from(d).ok()),
            details: message.details,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retry after {after:?})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Status {}

impl From<Status> for StatusMessage {
    fn from(status: Status) -> StatusMessage {
        status.to_message()
    }
}
