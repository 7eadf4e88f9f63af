//! Every limit of a QUIC endpoint, with its default and what it costs in memory.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};
use taskwire_codec::{DEFAULT_MAX_FIRST_FRAME_LENGTH, DEFAULT_MAX_FRAME_LENGTH};

/// Limits of a client or server. `Copy`; setters are named after the fields and return
/// `&mut Self`.
///
/// ```
/// use std::time::Duration;
/// use taskwire_quic::Limits;
///
/// let mut limits = Limits::default();
/// limits.max_connections(10_000).max_concurrent_calls(256).idle_timeout(Duration::from_secs(60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_concurrent_calls: u32,
    pub(crate) max_concurrent_uni_streams: u32,
    pub(crate) max_frame_length: u32,
    pub(crate) max_hello_length: u32,
    pub(crate) stream_receive_window: u32,
    pub(crate) connection_receive_window: u32,
    pub(crate) send_window: u64,
    pub(crate) handshake_timeout: Duration,
    pub(crate) retry_threshold: usize,
    pub(crate) hello_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive_interval: Option<Duration>,
    pub(crate) cheap_event_budget: u32,
    pub(crate) drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_concurrent_calls: 256,
            max_concurrent_uni_streams: 0,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_hello_length: DEFAULT_MAX_FIRST_FRAME_LENGTH,
            stream_receive_window: 1024 * 1024,
            connection_receive_window: 8 * 1024 * 1024,
            send_window: 8 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            retry_threshold: Self::default_retry_threshold(),
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            cheap_event_budget: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The default of [`retry_threshold`](Self::retry_threshold): 16 handshakes.
    pub const fn default_retry_threshold() -> usize {
        16
    }

    /// Connections a server holds at once; past it new ones are refused at the QUIC
    /// handshake (`CONNECTION_REFUSED`). Default 10,000.
    ///
    /// Memory: each idle connection costs a few KiB of quinn state plus its windows as
    /// they fill.
    pub fn max_connections(&mut self, value: usize) -> &mut Self {
        self.max_connections = value;
        self
    }

    /// Connections one IP address may hold at once, so one peer cannot take every slot.
    /// Default 1,000.
    pub fn max_connections_per_ip(&mut self, value: usize) -> &mut Self {
        self.max_connections_per_ip = value;
        self
    }

    /// Calls (bidirectional streams) one connection runs at once; a client past it waits
    /// for a slot, a peer that ignores the limit is closed by QUIC (`STREAM_LIMIT_ERROR`).
    /// Announced in Negotiated. Default 256.
    ///
    /// Memory: up to this many calls' buffered frames, each bounded by the stream window.
    /// Even idle, quinn keeps state for every call slot for the connection's life: about
    /// 90 bytes per slot. A server's idle connection measured 57 KiB at the default and
    /// 123 KiB at 1,024 (`cargo bench -p taskwire-benches --bench rpc -- --only idle`).
    pub fn max_concurrent_calls(&mut self, value: u32) -> &mut Self {
        self.max_concurrent_calls = value;
        self
    }

    /// Unidirectional streams a peer may open. taskwire uses none. Default 0.
    pub fn max_concurrent_uni_streams(&mut self, value: u32) -> &mut Self {
        self.max_concurrent_uni_streams = value;
        self
    }

    /// The largest frame accepted, announced in the handshake. Default 16 MiB.
    ///
    /// Memory: a call buffers at most one frame of this size, as its bytes arrive.
    pub fn max_frame_length(&mut self, value: u32) -> &mut Self {
        self.max_frame_length = value;
        self
    }

    /// The largest Hello accepted. Default 64 KiB.
    ///
    /// Memory: what an unauthenticated peer can make the server buffer.
    pub fn max_hello_length(&mut self, value: u32) -> &mut Self {
        self.max_hello_length = value;
        self
    }

    /// Bytes a peer may send on one stream before it is read (QUIC stream flow control).
    /// Default 1 MiB, rather than quinn's unlimited-in-practice default.
    ///
    /// Memory: at most this much per stream, bounded overall by the connection window.
    pub fn stream_receive_window(&mut self, value: u32) -> &mut Self {
        self.stream_receive_window = value;
        self
    }

    /// Bytes a peer may send on all streams of a connection before they are read.
    /// Default 8 MiB.
    ///
    /// Memory: the most one connection can make the receiver buffer.
    pub fn connection_receive_window(&mut self, value: u32) -> &mut Self {
        self.connection_receive_window = value;
        self
    }

    /// Bytes buffered for sending on one connection. Default 8 MiB.
    pub fn send_window(&mut self, value: u64) -> &mut Self {
        self.send_window = value;
        self
    }

    /// How long a TLS handshake may take. Default 10 s.
    pub fn handshake_timeout(&mut self, value: Duration) -> &mut Self {
        self.handshake_timeout = value;
        self
    }

    /// Handshakes in progress at a server past which a client whose address QUIC has not
    /// validated is sent a Retry first. A Retry costs that client one round trip and costs
    /// the server nothing: the connection slot is taken only once the client has echoed the
    /// Retry token from its address, so Initial packets that are never continued, or sent
    /// from spoofed addresses, cannot hold slots. Default 16; 0 sends a Retry to every
    /// unvalidated client; `usize::MAX` never does.
    pub fn retry_threshold(&mut self, value: usize) -> &mut Self {
        self.retry_threshold = value;
        self
    }

    /// How long a server waits for the Hello after the handshake, and a client for the
    /// answer; past it the connection closes with `HELLO_TIMEOUT`. Default 10 s.
    pub fn hello_timeout(&mut self, value: Duration) -> &mut Self {
        self.hello_timeout = value;
        self
    }

    /// A connection with no traffic for this long is closed. Default 30 s.
    pub fn idle_timeout(&mut self, value: Duration) -> &mut Self {
        self.idle_timeout = value;
        self
    }

    /// Sends a QUIC PING this often on an idle connection, so that it stays open and a
    /// dead peer is noticed. Default 10 s; `None` disables it.
    pub fn keep_alive_interval(&mut self, value: Option<Duration>) -> &mut Self {
        self.keep_alive_interval = value;
        self
    }

    /// Cheap-for-the-attacker events a connection may cause (streams opened then reset
    /// or finished without a request, empty frames) before it is closed with
    /// `LIMIT_EXCEEDED`. Default 10,000 per connection.
    pub fn cheap_event_budget(&mut self, value: u32) -> &mut Self {
        self.cheap_event_budget = value;
        self
    }

    /// How long a graceful shutdown waits for calls in flight. Default 10 s.
    pub fn drain_timeout(&mut self, value: Duration) -> &mut Self {
        self.drain_timeout = value;
        self
    }

    /// quinn's transport configuration for these limits.
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_calls))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.connection_receive_window))
            .send_window(self.send_window)
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok())
            .keep_alive_interval(self.keep_alive_interval);
        Arc::new(transport)
    }
}
