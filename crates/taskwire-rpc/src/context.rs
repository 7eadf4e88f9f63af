//! What a handler knows about its call, and what a caller can ask of one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use taskwire_proto::session::v1::{CallHeader, Conversation};
use taskwire_proto::wkt;
use taskwire_tls::PeerIdentity;
use tokio_util::sync::CancellationToken;

/// Who is on the other end of a connection.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The peer's address, where the transport has one.
    pub address: Option<SocketAddr>,
    /// The identity its client certificate proved, where mutual TLS was used.
    pub identity: Option<Arc<PeerIdentity>>,
    /// The peer's name and version from its Hello.
    pub name: String,
    /// The peer's software version from its Hello.
    pub version: String,
    /// The tenant the peer named in its Hello. Not proof of anything: authorize by
    /// [`identity`](Self::identity).
    pub claimed_tenant: String,
    /// The conversations negotiated on the connection (`Negotiated.conversations`; the
    /// session conversation is always open): a call of any other is refused. `None` where
    /// no handshake took place (a dialect's caller), which opens them all.
    pub conversations: Option<Vec<Conversation>>,
}

impl PeerInfo {
    /// The tenant the peer's certificate proves, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .and_then(|identity| identity.tenant.as_deref())
    }

    /// Whether calls of `conversation` may run on this connection.
    ///
    /// ```
    /// use taskwire_proto::session::v1::Conversation;
    /// use taskwire_rpc::PeerInfo;
    ///
    /// let peer = PeerInfo { conversations: Some(vec![Conversation::Management]), ..Default::default() };
    /// assert!(peer.negotiated(Conversation::Management));
    /// assert!(peer.negotiated(Conversation::Session), "always open");
    /// assert!(!peer.negotiated(Conversation::Instance));
    /// assert!(PeerInfo::default().negotiated(Conversation::Instance), "no handshake: all open");
    /// ```
    pub fn negotiated(&self, conversation: Conversation) -> bool {
        conversation == Conversation::Session
            || self
                .conversations
                .as_ref()
                .is_none_or(|open| open.contains(&conversation))
    }
}

/// W3C trace context of a call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// The `traceparent` value, or empty.
    pub traceparent: String,
    /// The `tracestate` value, or empty.
    pub tracestate: String,
}

/// Everything a handler knows about its call besides the request.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The caller.
    pub peer: Arc<PeerInfo>,
    /// The call's request id, unique per connection (0 if the caller sent no call header).
    pub request_id: u64,
    /// When the caller stops waiting, if it said. The transport cancels the handler and
    /// answers `DEADLINE_EXCEEDED` when it passes.
    pub deadline: Option<Instant>,
    /// Fires when the call is cancelled: the caller went away, cancelled it, or its
    /// deadline passed. Long handlers should watch it.
    pub cancel: CancellationToken,
    /// The caller's trace context.
    pub trace: TraceContext,
    /// The caller's idempotency key, or empty.
    pub idempotency_key: String,
    /// Application metadata from the call header.
    pub metadata: BTreeMap<String, String>,
    /// Whether the call was read before the connection's TLS handshake completed, so from
    /// early data (QUIC 0-RTT) on a resumed connection, which an on-path attacker can
    /// replay. Set by the transport; the router refuses such calls unless their rpc is
    /// replay-safe.
    pub early_data: bool,
}

impl CallContext {
    /// A context for a call with no header.
    pub fn new(peer: Arc<PeerInfo>) -> CallContext {
        CallContext {
            peer,
            request_id: 0,
            deadline: None,
            cancel: CancellationToken::new(),
            trace: TraceContext::default(),
            idempotency_key: String::new(),
            metadata: BTreeMap::new(),
            early_data: false,
        }
    }

    /// A context from a received call header: `deadline` and `timeout` both count, the
    /// earlier wins; a deadline in the past is already due.
    pub fn from_header(peer: Arc<PeerInfo>, header: CallHeader, received: Instant) -> CallContext {
        let mut context = CallContext::new(peer);
        context.request_id = header.request_id;
        let absolute = header.deadline.and_then(|at| {
            let at = SystemTime::try_from(at).ok()?;
            Some(match at.duration_since(SystemTime::now()) {
                Ok(remaining) => received + remaining,
                Err(_) => received,
            })
        });
        let relative = header
            .timeout
            .and_then(|timeout| Duration::try_from(timeout).ok())
            .and_then(|timeout| received.checked_add(timeout));
        context.deadline = match (absolute, relative) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        context.trace = TraceContext {
            traceparent: header.traceparent,
            tracestate: header.tracestate,
        };
        context.idempotency_key = header.idempotency_key;
        context.metadata = header.metadata;
        context
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}

/// What a caller can ask of one call. The default asks nothing, and the call is sent
/// without a call header.
///
/// ```
/// use std::time::Duration;
/// use taskwire_rpc::CallOptions;
///
/// let options = CallOptions::new().timeout(Duration::from_secs(2)).idempotency_key("checkpoint-42");
/// assert!(options.has_header());
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) trace: TraceContext,
    pub(crate) idempotency_key: String,
    pub(crate) metadata: BTreeMap<String, String>,
}

impl CallOptions {
    /// No options.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Gives up after `timeout`; the callee learns the deadline and stops too. Default:
    /// no deadline.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Continues the trace `traceparent` (W3C). Default: not traced.
    #[must_use]
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> CallOptions {
        self.trace.traceparent = traceparent.into();
        self
    }

    /// Makes a retried call apply once at a callee that deduplicates. Default: none.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> CallOptions {
        self.idempotency_key = key.into();
        self
    }

    /// Adds application metadata. Default: none.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> CallOptions {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The call's timeout, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether anything here needs a call header on the wire.
    pub fn has_header(&self) -> bool {
        self.timeout.is_some()
            || !self.trace.traceparent.is_empty()
            || !self.idempotency_key.is_empty()
            || !self.metadata.is_empty()
    }

    /// The call header for the call with `request_id`. The deadline is sent both ways:
    /// absolute (for logs and for callees that trust clocks) and relative (robust to
    /// clock skew); the callee takes the earlier.
    pub fn to_header(&self, request_id: u64) -> CallHeader {
        CallHeader {
            request_id,
            deadline: self
                .timeout
                .map(|t| wkt::Timestamp::from(SystemTime::now() + t)),
            timeout: self.timeout.map(wkt::Duration::from),
            traceparent: self.trace.traceparent.clone(),
            tracestate: self.trace.tracestate.clone(),
            idempotency_key: self.idempotency_key.clone(),
            metadata: self.metadata.clone(),
        }
    }
}
