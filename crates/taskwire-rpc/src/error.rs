//! How a caller sees a failed call.

use std::time::Duration;

use taskwire_codec::CodecError;
use taskwire_proto::session::v1::refused::RefusalReason;

use crate::Status;

/// Why a call failed, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The callee answered with a status.
    #[error("call failed: {0}")]
    Status(Status),
    /// The server refused the connection during the handshake.
    #[error("connection refused by the server: {reason:?}: {message}")]
    Refused {
        /// Why.
        reason: RefusalReason,
        /// The server's explanation.
        message: String,
        /// When to try again, if the server said.
        retry_after: Option<Duration>,
    },
    /// The connection is gone or could not be made; the call may be retried elsewhere or
    /// after reconnecting.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call's deadline passed before an answer arrived.
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(Duration),
    /// Too many calls are in flight on this connection.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The peer sent something the protocol does not allow at this point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl CallError {
    /// Whether the same call may succeed if retried (possibly after reconnecting).
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Status(status) => status.is_retryable(),
            CallError::Refused { reason, .. } => matches!(
                reason,
                RefusalReason::RateLimited
                    | RefusalReason::Overloaded
                    | RefusalReason::ShuttingDown
            ),
            CallError::Unavailable(_) | CallError::ResourceExhausted(_) => true,
            CallError::DeadlineExceeded(_) | CallError::Protocol(_) | CallError::Codec(_) => false,
        }
    }

    /// The status this error amounts to, as a handler relaying it would report it.
    pub fn to_status(&self) -> Status {
        match self {
            CallError::Status(status) => status.clone(),
            CallError::Refused { message, .. } => Status::unavailable(message.clone()),
            CallError::Unavailable(message) => Status::unavailable(message.clone()),
            CallError::DeadlineExceeded(after) => {
                Status::deadline_exceeded(format!("after {after:?}"))
            }
            CallError::ResourceExhausted(message) => Status::resource_exhausted(message.clone()),
            CallError::Protocol(message) => Status::protocol_violation(message.clone()),
            CallError::Codec(error) => Status::protocol_violation(error.to_string()),
        }
    }
}

impl From<Status> for CallError {
    fn from(status: Status) -> CallError {
        CallError::Status(status)
    }
}
