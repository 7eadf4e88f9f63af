//! What a handler takes and returns, and what steps, state, calls and awakeables carry:
//! JSON through serde ([`Json`]), raw bytes ([`Raw`]), or nothing (`()`).

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TerminalError;

/// A value with a byte form on the wire and in the journal.
pub trait Payload: Sized + Send + 'static {
    /// The content type the manifest announces for it, or `None` for no body.
    const CONTENT_TYPE: Option<&'static str>;

    /// Its bytes.
    fn to_bytes(&self) -> Result<Bytes, TerminalError>;

    /// From bytes; a failure is a terminal 400: the same bytes would fail again.
    fn from_bytes(bytes: Bytes) -> Result<Self, TerminalError>;
}

/// A value carried as JSON (`application/json`), through serde.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Payload for Json<T> {
    const CONTENT_TYPE: Option<&'static str> = Some("application/json");

    fn to_bytes(&self) -> Result<Bytes, TerminalError> {
        serde_json::to_vec(&self.0)
            .map(Bytes::from)
            .map_err(|e| TerminalError::with_code(500, format!("cannot write JSON: {e}")))
    }

    fn from_bytes(bytes: Bytes) -> Result<Self, TerminalError> {
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| TerminalError::with_code(400, format!("invalid JSON: {e}")))
    }
}

/// Bytes carried as they are (`application/octet-stream`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Raw(pub Bytes);

impl Payload for Raw {
    const CONTENT_TYPE: Option<&'static str> = Some("application/octet-stream");

    fn to_bytes(&self) -> Result<Bytes, TerminalError> {
        Ok(self.0.clone())
    }

    fn from_bytes(bytes: Bytes) -> Result<Self, TerminalError> {
        Ok(Raw(bytes))
    }
}

/// No value: an empty body. Any input is accepted and ignored.
impl Payload for () {
    const CONTENT_TYPE: Option<&'static str> = None;

    fn to_bytes(&self) -> Result<Bytes, TerminalError> {
        Ok(Bytes::new())
    }

    fn from_bytes(_: Bytes) -> Result<Self, TerminalError> {
        Ok(())
    }
}
