//! How handlers fail, and how the endpoint does.

use std::fmt;

/// A failure that ends the invocation: it is recorded in the journal as the invocation's
/// result, Restate does not retry it, and the caller sees its code and message.
///
/// Not a `std::error::Error`, so that `?` can tell it from an ordinary error, which
/// [`HandlerError`] makes retryable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalError {
    code: u16,
    message: String,
}

/// The code of a [`TerminalError`] made without one: 500.
pub const DEFAULT_TERMINAL_CODE: u16 = 500;

/// The code of the error an await returns once the invocation is cancelled: 409.
pub const CANCELLED_CODE: u16 = 409;

impl TerminalError {
    /// A terminal failure with code 500.
    pub fn new(message: impl Into<String>) -> TerminalError {
        TerminalError::with_code(DEFAULT_TERMINAL_CODE, message)
    }

    /// A terminal failure with an HTTP-like `code` (Restate's ingress answers with it).
    pub fn with_code(code: u16, message: impl Into<String>) -> TerminalError {
        TerminalError {
            code,
            message: message.into(),
        }
    }

    /// The error every await returns once the invocation is cancelled.
    pub fn cancelled() -> TerminalError {
        TerminalError::with_code(CANCELLED_CODE, "cancelled")
    }

    /// The code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn to_failure(&self) -> crate::protocol::Failure {
        crate::protocol::Failure {
            code: u32::from(self.code),
            message: self.message.clone(),
            metadata: Vec::new(),
        }
    }

    pub(crate) fn from_failure(failure: &crate::protocol::Failure) -> TerminalError {
        TerminalError::with_code(
            u16::try_from(failure.code).unwrap_or(DEFAULT_TERMINAL_CODE),
            failure.message.clone(),
        )
    }
}

impl fmt::Display for TerminalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "terminal error {}: {}", self.code, self.message)
    }
}

/// Why a handler (or a step it ran) failed.
///
/// `?` on a [`TerminalError`] makes a terminal one; on any other error a retryable one:
/// the attempt ends with an error, Restate retries the invocation under its retry
/// policy, and the journal replays up to where it failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerError {
    /// Ends the invocation with this failure; never retried.
    Terminal(TerminalError),
    /// Ends this attempt; Restate retries the invocation.
    Retryable(Box<dyn std::error::Error + Send + Sync>),
    /// Ends this attempt; Restate retries it after `delay` instead of its policy's next
    /// delay (`ErrorMessage.next_retry_delay`), this once.
    RetryAfter {
        /// What went wrong.
        error: Box<dyn std::error::Error + Send + Sync>,
        /// When to try again.
        delay: std::time::Duration,
    },
}

impl HandlerError {
    /// A retryable failure from a message.
    pub fn retryable(message: impl Into<String>) -> HandlerError {
        HandlerError::Retryable(message.into().into())
    }

    /// A retryable failure to retry after `delay`.
    pub fn retry_after(message: impl Into<String>, delay: std::time::Duration) -> HandlerError {
        HandlerError::RetryAfter {
            error: message.into().into(),
            delay,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Terminal(error) => error.fmt(f),
            HandlerError::Retryable(error) => write!(f, "retryable error: {error}"),
            HandlerError::RetryAfter { error, delay } => {
                write!(f, "retryable error (retry after {delay:?}): {error}")
            }
        }
    }
}

impl From<TerminalError> for HandlerError {
    fn from(error: TerminalError) -> HandlerError {
        HandlerError::Terminal(error)
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for HandlerError {
    fn from(error: E) -> HandlerError {
        HandlerError::Retryable(error.into())
    }
}

/// What a handler returns.
pub type HandlerResult<T> = Result<T, HandlerError>;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The listener could not bind.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A service or handler definition is not valid.
    #[error("invalid definition: {0}")]
    Definition(String),
}
