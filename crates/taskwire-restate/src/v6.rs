//! The V5/V6 forms of the messages that V7 changed incompatibly. The vendored schema is
//! the current one (V7); restate-server 1.7 invokes endpoints at V6.

use serde::{Deserialize, Serialize};

/// `SuspensionMessage` (0x0001) as V5 and V6 send it: what the invocation waits for, as
/// flat lists. (V7 reserves these fields and sends a tree of futures in field 4.)
///
/// The list of signals should name signal 1 (cancellation): a suspended invocation wakes
/// only for what its suspension names.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SuspensionMessage {
    /// Completion ids of the commands whose results it waits for.
    #[prost(uint32, repeated, tag = "1")]
    pub waiting_completions: Vec<u32>,
    /// Signal indexes it waits for (awakeables, and 1 for cancellation).
    #[prost(uint32, repeated, tag = "2")]
    pub waiting_signals: Vec<u32>,
    /// Named signals it waits for.
    #[prost(string, repeated, tag = "3")]
    pub waiting_named_signals: Vec<String>,
}
