//! Every limit of a QUIC endpoint, with its default and what it costs in memory.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use quinn::{Endpoint, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
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
    pub(crate) initial_call_credit: u32,
    pub(crate) max_concurrent_uni_streams: u32,
    pub(crate) max_frame_length: u32,
    pub(crate) max_hello_length: u32,
    pub(crate) stream_receive_window: u32,
    pub(crate) connection_receive_window: u32,
    pub(crate) send_window: u64,
    pub(crate) max_udp_payload_size: u16,
    pub(crate) socket_buffer_size: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) early_data: bool,
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
            initial_call_credit: 16,
            max_concurrent_uni_streams: 0,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_hello_length: DEFAULT_MAX_FIRST_FRAME_LENGTH,
            stream_receive_window: 1024 * 1024,
            connection_receive_window: 8 * 1024 * 1024,
            send_window: 8 * 1024 * 1024,
            max_udp_payload_size: ETHERNET_UDP_PAYLOAD,
            socket_buffer_size: 2 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            early_data: true,
            retry_threshold: Self::default_retry_threshold(),
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            cheap_event_budget: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The largest UDP payload a 1,500-byte MTU carries over IPv6 (over IPv4: 1,472), and
/// quinn's bound for MTU discovery.
const ETHERNET_UDP_PAYLOAD: u16 = 1452;

/// The largest datagram for which quinn's 10-datagram segmentation-offload sends fit in
/// one UDP send of at most 65,507 bytes.
const MAX_UDP_PAYLOAD: u16 = 6_500;

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

    /// Calls a server lets a new connection open at once before it has seen any: the
    /// QUIC stream credit of the handshake. When half of it is in use the server raises
    /// the credit (a `MAX_STREAMS` frame) to
    /// [`max_concurrent_calls`](Self::max_concurrent_calls), so a burst waits one round
    /// trip once and an idle connection keeps few stream slots. Default 16; set it to
    /// `max_concurrent_calls` to grant everything at once. Servers only.
    ///
    /// Memory: quinn keeps about 90 bytes per slot granted, for the connection's life, so
    /// the default costs 1.4 KiB per idle connection where granting 256 at once costs
    /// 22 KiB.
    pub fn initial_call_credit(&mut self, value: u32) -> &mut Self {
        self.initial_call_credit = value;
        self
    }

    /// Whether connections that resume a TLS session use early data (QUIC 0-RTT). A client
    /// sends its Hello and its replay-safe calls
    /// ([`Rpc::REPLAY_SAFE`](taskwire_proto::Rpc::REPLAY_SAFE)) in the first flight of a
    /// resumed connection and holds every other call until the handshake completes; if
    /// the server rejects the early data, those calls and the Hello are sent again after
    /// the handshake, unseen by the caller. A server accepts early data only on sessions
    /// from its own stateful, single-use tickets (the session stores of `taskwire_tls`
    /// and rustls's default), and answers any call in it that is not replay-safe with
    /// `UNAVAILABLE` without running it (`docs/protocol.md` §13). Default `true`.
    ///
    /// Memory: nothing beyond the TLS session caches (rustls keeps 256 sessions, 1–2 KiB
    /// each, on either side); early data is held within the usual stream windows.
    pub fn early_data(&mut self, value: bool) -> &mut Self {
        self.early_data = value;
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

    /// The largest UDP payload this endpoint sends, and (at least 1,472) accepts. Packets
    /// start at 1,200 bytes; MTU discovery then probes up to this size, and black-hole
    /// detection comes back down if the path drops large datagrams, so a value above the
    /// path's MTU costs a few lost probes, not the connection. Default 1,452 (a 1,500-byte
    /// Ethernet MTU over IPv6), right for the internet.
    ///
    /// Raise it where the path carries larger datagrams (loopback, a sidecar, jumbo
    /// frames): every packet costs a fixed amount of CPU on both sides whatever its size,
    /// so bulk transfers speed up with it. A 64 MiB upload on loopback went from about
    /// 850 MB/s at the default to 1,760 MB/s at 6,000 (`docs/performance.md`). Both ends
    /// must raise it: a sender sends no more than its receiver accepts.
    ///
    /// Values are clamped to 1,200..=6,500: quinn hands the kernel up to 10 datagrams per
    /// segmentation-offload send, which must fit UDP's 65,507 bytes; past 6,500 such sends
    /// fail and throughput collapses (measured: 4–300 MB/s at 8,000–12,000).
    ///
    /// Memory: per endpoint, not per connection: quinn's receive buffer is the accepted
    /// size × 64 (GRO segments) × 32 (datagrams per batch), 2.9 MiB at the default and
    /// 12.7 MiB at 6,500, of zeroed pages that become resident only as bursts fill them.
    pub fn max_udp_payload_size(&mut self, value: u16) -> &mut Self {
        self.max_udp_payload_size = value.clamp(1200, MAX_UDP_PAYLOAD);
        self
    }

    /// The socket send and receive buffers requested from the OS for the endpoint's UDP
    /// socket (`SO_SNDBUF`/`SO_RCVBUF`), which the OS caps at `net.core.wmem_max` and
    /// `rmem_max`. Default 2 MiB: the OS default (about 208 KiB on Linux) drops datagrams
    /// when a burst outruns the reader, which QUIC then takes for congestion.
    ///
    /// Memory: kernel memory per endpoint, up to twice this for each direction.
    pub fn socket_buffer_size(&mut self, value: usize) -> &mut Self {
        self.socket_buffer_size = value;
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

    /// quinn's transport configuration for a server with these limits: as
    /// [`transport_config`](Self::transport_config), with the stream credit of
    /// [`initial_call_credit`](Self::initial_call_credit).
    pub fn server_transport_config(&self) -> Arc<TransportConfig> {
        let credit = self
            .initial_call_credit
            .clamp(1, self.max_concurrent_calls.max(1));
        Arc::new(self.transport(credit))
    }

    /// quinn's transport configuration for these limits.
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        Arc::new(self.transport(self.max_concurrent_calls))
    }

    /// quinn's transport configuration for a client with these limits: as
    /// [`transport_config`](Self::transport_config), but granting the server no streams,
    /// because calls are opened by the client only. quinn keeps state for every stream it
    /// grants, so a client connection is lighter and quicker to set up without them.
    pub fn client_transport_config(&self) -> Arc<TransportConfig> {
        Arc::new(self.transport(0))
    }

    fn transport(&self, bidi_stream_credit: u32) -> TransportConfig {
        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(bidi_stream_credit))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.connection_receive_window))
            .send_window(self.send_window)
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok())
            .keep_alive_interval(self.keep_alive_interval);
        let mut discovery = MtuDiscoveryConfig::default();
        discovery.upper_bound(self.max_udp_payload_size);
        transport.mtu_discovery_config(Some(discovery));
        transport
    }

    /// A quinn endpoint on `addr` with these limits' socket buffers and datagram size,
    /// serving with `server` if given. Call it inside a tokio runtime.
    pub(crate) fn bind(
        &self,
        addr: SocketAddr,
        server: Option<quinn::ServerConfig>,
    ) -> std::io::Result<Endpoint> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Requests only: the OS caps them at its maximums, which is not an error.
        let _ = socket.set_recv_buffer_size(self.socket_buffer_size);
        let _ = socket.set_send_buffer_size(self.socket_buffer_size);
        socket.bind(&addr.into())?;
        let mut config = EndpointConfig::default();
        config
            .max_udp_payload_size(self.max_udp_payload_size.max(1472))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let runtime = quinn::default_runtime().ok_or_else(|| {
            std::io::Error::other("a QUIC endpoint needs a tokio runtime to run in")
        })?;
        Endpoint::new(config, server, socket.into(), runtime)
    }
}
