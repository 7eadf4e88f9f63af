//! The TCP server: one byte stream per connection, calls multiplexed by stream id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prost::Message as _;
use taskwire_codec::tokio_util::codec::Encoder as _;
use taskwire_codec::{Builder, CodecError, Flags, Frame, RawFrame};
use taskwire_proto::WireMessage;
use taskwire_proto::session::v1::refused::RefusalReason;
use taskwire_proto::session::v1::{CallHeader, CancelCall, Codec, GoAway, Hello, Ping, Pong};
use taskwire_rpc::session::{ServerSession, refusal};
use taskwire_rpc::{CallContext, ConnectionSlots, Dispatch, PeerInfo, Router, Status};
use taskwire_tls::PeerIdentity;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::wire::{WireCodec, status_frame, write_frames};
use crate::{TcpError, TcpLimits};

/// What a TCP server needs.
#[derive(Clone, Debug)]
pub struct TcpServerConfig {
    /// The address to listen on.
    pub bind_addr: SocketAddr,
    /// TLS; `None` serves plaintext, which [`TcpServer::bind`] allows only on a loopback
    /// address and only with `allow_plaintext`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Explicit consent to plaintext on loopback. Default `false`.
    pub allow_plaintext: bool,
    /// Limits; see [`TcpLimits`].
    pub limits: TcpLimits,
    /// What the server announces in Negotiated.
    pub session: ServerSession,
}

impl TcpServerConfig {
    /// A TLS server with default limits.
    pub fn new(bind_addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> TcpServerConfig {
        TcpServerConfig {
            bind_addr,
            tls: Some(tls),
            allow_plaintext: false,
            limits: TcpLimits::default(),
            session: ServerSession::default(),
        }
    }

    /// A plaintext server on a loopback address, for local development and tests.
    ///
    /// Plaintext is still refused by [`TcpServer::bind`] if `bind_addr` is not a loopback
    /// address. See the [crate example](crate#example) for a server and client.
    ///
    /// ```
    /// use taskwire_tcp::TcpServerConfig;
    ///
    /// let config = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse().unwrap());
    /// assert!(config.tls.is_none());
    /// assert!(config.allow_plaintext);
    /// ```
    pub fn plaintext_loopback(bind_addr: SocketAddr) -> TcpServerConfig {
        TcpServerConfig {
            bind_addr,
            tls: None,
            allow_plaintext: true,
            limits: TcpLimits::default(),
            session: ServerSession::default(),
        }
    }
}

/// Counts a TCP server keeps.
#[derive(Debug, Default)]
pub struct TcpServerStats {
    /// Connections that completed the handshake.
    pub connections_accepted: AtomicU64,
    /// Connections refused for a connection limit.
    pub connections_refused: AtomicU64,
    /// Connections closed for bad input or a late Hello.
    pub connections_closed_for_cause: AtomicU64,
    /// Calls started.
    pub calls_started: AtomicU64,
    /// Calls refused because the connection had too many in flight.
    pub calls_refused: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    limits: TcpLimits,
    session: ServerSession,
    slots: Arc<ConnectionSlots>,
    stats: TcpServerStats,
    shutdown: CancellationToken,
    calls: TaskTracker,
}

/// A bound TCP server; [`serve`](TcpServer::serve) runs it.
pub struct TcpServer {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl TcpServer {
    /// Binds the listener. Plaintext is refused unless asked for and on loopback.
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use taskwire_tcp::{TcpError, TcpServer, TcpServerConfig};
    ///
    /// let loopback = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse().unwrap());
    /// let server = TcpServer::bind(loopback).await.unwrap();
    /// assert!(server.local_addr().ip().is_loopback());
    /// assert_ne!(server.local_addr().port(), 0);
    ///
    /// // Plaintext on an address other than loopback is refused before binding.
    /// let everywhere = TcpServerConfig::plaintext_loopback("0.0.0.0:0".parse().unwrap());
    /// assert!(matches!(TcpServer::bind(everywhere).await, Err(TcpError::Config(_))));
    /// # }
    /// ```
    pub async fn bind(config: TcpServerConfig) -> Result<TcpServer, TcpError> {
        if config.tls.is_none() && !(config.allow_plaintext && config.bind_addr.ip().is_loopback())
        {
            return Err(TcpError::Config(format!(
                "plaintext is allowed only on a loopback address with allow_plaintext; {} is neither",
                config.bind_addr
            )));
        }
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|e| TcpError::Io(format!("binding {}: {e}", config.bind_addr)))?;
        let mut session = config.session;
        session.max_frame_length = config.limits.max_frame_length;
        session.max_concurrent_calls = config.limits.max_concurrent_calls;
        Ok(TcpServer {
            listener,
            tls: config.tls.map(tokio_rustls::TlsAcceptor::from),
            shared: Arc::new(Shared {
                limits: config.limits,
                session,
                slots: ConnectionSlots::new(
                    config.limits.max_connections,
                    config.limits.max_connections_per_ip,
                ),
                stats: TcpServerStats::default(),
                shutdown: CancellationToken::new(),
                calls: TaskTracker::new(),
            }),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves every connection with `router`, in the background. Must be called inside
    /// a tokio runtime. See the [crate example](crate#example) for a router with a
    /// handler and a client calling it.
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use taskwire_rpc::Router;
    /// use taskwire_tcp::{TcpServer, TcpServerConfig};
    ///
    /// let server = TcpServer::bind(TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse()?)).await?;
    /// let handle = server.serve(Router::new());
    /// assert_eq!(handle.open_connections(), 0);
    /// assert!(handle.shutdown().await);
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve(self, router: Router) -> TcpServerHandle {
        let local_addr = self.local_addr();
        let shared = Arc::clone(&self.shared);
        let router = Arc::new(router);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = self.listener.accept() => accepted,
                    () = self.shared.shutdown.cancelled() => return,
                };
                // One failed accept never ends the loop.
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let Some(slot) = self.shared.slots.try_acquire(peer.ip()) else {
                    self.shared
                        .stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                let (shared, router, tls) = (
                    Arc::clone(&self.shared),
                    Arc::clone(&router),
                    self.tls.clone(),
                );
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(reason) = accept_connection(stream, peer, tls, shared, router).await
                    {
                        tracing::debug!(%peer, %reason, "connection ended");
                    }
                });
            }
        });
        TcpServerHandle {
            local_addr,
            shared,
            task,
        }
    }
}

/// A running TCP server.
#[derive(Debug)]
pub struct TcpServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn stats(&self) -> &TcpServerStats {
        &self.shared.stats
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.slots.in_use()
    }

    /// Stops accepting, waits up to the drain timeout for calls in flight, and ends.
    pub async fn shutdown(self) -> bool {
        self.shared.shutdown.cancel();
        self.shared.calls.close();
        let drained =
            tokio::time::timeout(self.shared.limits.drain_timeout, self.shared.calls.wait())
                .await
                .is_ok();
        self.task.abort();
        drained
    }
}

/// Serves one connection that is already open, over any byte stream: the same first-byte
/// sniff, Hello, limits and dispatch as a connection a [`TcpServer`] accepted, without a
/// listener, TLS or connection slots. For in-memory transports, tests and fuzzing.
///
/// `peer` and `identity` are what handlers see as the caller. Returns when the connection
/// ends: `Ok` for a clean close by the peer, otherwise why it was closed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use taskwire_rpc::Router;
/// use taskwire_tcp::TcpServerConfig;
///
/// let (client, server) = tokio::io::duplex(64 * 1024);
/// let config = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse().unwrap());
/// let served = tokio::spawn(taskwire_tcp::serve_stream(
///     server,
///     "127.0.0.1:9".parse().unwrap(),
///     None,
///     &config,
///     Arc::new(Router::new()),
/// ));
/// drop(client); // the peer goes away before its Hello
/// assert!(served.await.unwrap().is_err());
/// # }
/// ```
pub fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    config: &TcpServerConfig,
    router: Arc<Router>,
) -> impl Future<Output = Result<(), String>> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut session = config.session.clone();
    session.max_frame_length = config.limits.max_frame_length;
    session.max_concurrent_calls = config.limits.max_concurrent_calls;
    let shared = Arc::new(Shared {
        limits: config.limits,
        session,
        slots: ConnectionSlots::new(1, 1),
        stats: TcpServerStats::default(),
        shutdown: CancellationToken::new(),
        calls: TaskTracker::new(),
    });
    run_connection(stream, peer, identity, shared, router)
}

async fn accept_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    router: Arc<Router>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    match tls {
        None => run_connection(stream, peer, None, shared, router).await,
        Some(acceptor) => {
            let stream =
                tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(stream))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_owned())?
                    .map_err(|e| format!("TLS handshake: {e}"))?;
            let identity = PeerIdentity::from_connection(stream.get_ref().1)
                .ok()
                .flatten()
                .map(Arc::new);
            run_connection(stream, peer, identity, shared, router).await
        }
    }
}

/// A call on a connection, from its first frame until both sides are done with it.
struct Entry {
    cancel: CancellationToken,
    /// Where the call's further request frames go, while its handler reads them.
    requests: Option<mpsc::Sender<Result<RawFrame, Status>>>,
    /// The client may still send frames on the stream (no END_STREAM or CancelCall yet).
    client_open: bool,
    /// The server has answered (or refused) the call. An entry that is answered but
    /// still open to the client stays, so that the client's late frames are dropped
    /// rather than taken for a new call on the same stream id.
    answered: bool,
}

impl Entry {
    /// A call answered at once with a refusal while the client may still send on it.
    fn refused() -> Entry {
        Entry {
            cancel: CancellationToken::new(),
            requests: None,
            client_open: true,
            answered: true,
        }
    }

    fn done(&self) -> bool {
        self.answered && !self.client_open
    }
}

type Calls = Arc<Mutex<HashMap<u32, Entry>>>;

fn with_stream(mut frame: RawFrame, stream_id: u32, end: bool) -> RawFrame {
    frame.stream_id = stream_id;
    if end {
        frame.flags = frame.flags | Flags::END_STREAM;
    }
    frame
}

async fn run_connection<S>(
    stream: S,
    peer: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    shared: Arc<Shared>,
    router: Arc<Router>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let close = |reason: String| {
        shared
            .stats
            .connections_closed_for_cause
            .fetch_add(1, Ordering::Relaxed);
        reason
    };

    // The Hello: the first byte says the framing, then one frame within the deadline and
    // the first-frame limit.
    let deadline = Instant::now() + limits.hello_timeout;
    let hello_frame = tokio::time::timeout_at(deadline.into(), async {
        while buffer.is_empty() {
            if reader
                .read_buf(&mut buffer)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("the peer closed before its Hello".to_owned());
            }
        }
        let codec = match buffer[0] {
            1 => Codec::Protobuf,
            0 => Codec::Json,
            other => return Err(format!("first byte {other:#04x} is neither framing")),
        };
        let mut builder = Builder::new();
        builder
            .max_first_frame_length(limits.max_hello_length)
            .max_frame_length(limits.max_frame_length);
        let mut wire = WireCodec::new(codec, builder);
        let frame = taskwire_codec::io::read_frame(&mut reader, &mut wire, &mut buffer)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the peer closed before its Hello".to_owned())?;
        Ok((frame, wire))
    })
    .await;
    let (first, mut wire) = match hello_frame {
        Err(_) => return Err(close("no Hello before the deadline".into())),
        Ok(Err(reason)) => return Err(close(reason)),
        Ok(Ok(pair)) => pair,
    };
    if first.type_id != Hello::TYPE_ID || first.stream_id != 0 {
        return Err(close(format!(
            "the first frame must be a Hello on stream 0, not type {:#06x}",
            first.type_id
        )));
    }
    let hello = Hello::decode(first.body).map_err(|e| close(format!("undecodable Hello: {e}")))?;
    let codec = wire.codec();
    let answer = if shared.shutdown.is_cancelled() {
        Err(refusal(
            RefusalReason::ShuttingDown,
            "the server is shutting down",
            Some(Duration::from_secs(1)),
        ))
    } else {
        shared
            .session
            .negotiate(&hello, codec, &format!("t{}", peer.port()))
    };
    let client_max = if hello.max_frame_length == 0 {
        taskwire_codec::DEFAULT_MAX_FRAME_LENGTH
    } else {
        hello.max_frame_length
    };
    let mut out = BytesMut::new();
    let refused = answer.is_err();
    let reply = match answer {
        Ok(negotiated) => RawFrame::encode(&Frame::new(negotiated)),
        Err(refused) => RawFrame::encode(&Frame::new(refused).end_stream()),
    };
    wire.encode(&reply, &mut out).map_err(|e| e.to_string())?;
    writer.write_all(&out).await.map_err(|e| e.to_string())?;
    // Flushed, or TLS may keep the answer in its buffer.
    writer.flush().await.map_err(|e| e.to_string())?;
    if refused {
        let _ = writer.shutdown().await;
        return Err("refused".into());
    }
    shared
        .stats
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    wire.set_max_frame_length(limits.max_frame_length);

    let peer = Arc::new(PeerInfo {
        address: Some(peer),
        identity,
        name: hello.peer_name,
        version: hello.peer_version,
        claimed_tenant: hello.tenant,
    });

    // One writer owns the socket's sending half; calls hand it frames.
    let (out_tx, out_rx) = mpsc::channel::<RawFrame>(256);
    // Answers use the client's framing and respect the frame limit it announced.
    let writer_codec = WireCodec::new(
        codec,
        *Builder::new()
            .first_frame_done(true)
            .max_frame_length(client_max),
    );
    let writer_task = tokio::spawn(write_frames(
        writer,
        writer_codec,
        out_rx,
        |frame, error| {
            let status =
                Status::resource_exhausted(format!("the response could not be sent: {error}"));
            Some(status_frame(&status, frame.stream_id))
        },
    ));

    let calls: Calls = Arc::new(Mutex::new(HashMap::new()));
    let mut headers: HashMap<u32, CallHeader> = HashMap::new();
    // Woken when a call ends, so that a draining connection closes after its last one.
    let call_ended = Arc::new(tokio::sync::Notify::new());
    // Set once the server shuts down: the GoAway is sent, calls in flight run on (their
    // frames are still read) until the drain timeout, and new calls are refused.
    let mut drain_until: Option<Instant> = None;
    let result = loop {
        if drain_until.is_some() && calls.lock().expect("calls lock").is_empty() {
            break Ok(());
        }
        let frame = tokio::select! {
            frame = taskwire_codec::io::read_frame(&mut reader, &mut wire, &mut buffer) => frame,
            () = shared.shutdown.cancelled(), if drain_until.is_none() => {
                let go_away = GoAway {
                    reason: taskwire_proto::session::v1::go_away::GoAwayReason::Shutdown as i32,
                    message: "server shutting down".into(),
                    drain_timeout: Some(taskwire_proto::wkt::Duration::from(limits.drain_timeout)),
                    ..Default::default()
                };
                let _ = out_tx.send(RawFrame::encode(&Frame::new(go_away))).await;
                drain_until = Some(Instant::now() + limits.drain_timeout);
                continue;
            }
            () = until(drain_until) => break Ok(()),
            () = call_ended.notified(), if drain_until.is_some() => continue,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(CodecError::Io(e)) => break Err(format!("read failed: {e}")),
            Err(e) => break Err(close(format!("bad frame: {e}"))),
        };
        if frame.stream_id == 0 {
            match frame.type_id {
                id if id == Ping::TYPE_ID => {
                    if let Ok(ping) = Ping::decode(frame.body) {
                        let _ = out_tx
                            .send(RawFrame::encode(&Frame::new(Pong {
                                nonce: ping.nonce,
                                sent_at: ping.sent_at,
                            })))
                            .await;
                    }
                }
                id if id == CancelCall::TYPE_ID => {
                    if let Ok(cancel) = CancelCall::decode(frame.body) {
                        let stream = u32::try_from(cancel.request_id).unwrap_or(0);
                        // The client sends nothing more on the stream, and a header whose
                        // request never came is forgotten. A handler still running keeps
                        // the slot until it has stopped: freeing it sooner would let a
                        // peer that opens and cancels calls run any number of handlers.
                        headers.remove(&stream);
                        let mut calls = calls.lock().expect("calls lock");
                        if let Some(entry) = calls.get_mut(&stream) {
                            entry.cancel.cancel();
                            entry.client_open = false;
                            entry.requests = None;
                            if entry.done() {
                                calls.remove(&stream);
                            }
                        }
                    }
                }
                id if id == GoAway::TYPE_ID || id == Pong::TYPE_ID => {}
                other => {
                    break Err(close(format!(
                        "type {other:#06x} is not a control frame (a second Hello?)"
                    )));
                }
            }
            continue;
        }
        let stream_id = frame.stream_id;
        // A frame for a known call: more request items, or late ones for a call already
        // answered, which are dropped. A status frame ends the client's side too.
        let end = frame.flags.is_end_stream() || frame.flags.is_status();
        let existing = {
            let mut calls = calls.lock().expect("calls lock");
            match calls.get_mut(&stream_id) {
                Some(entry) => {
                    let requests = entry.requests.clone();
                    if end {
                        entry.client_open = false;
                        entry.requests = None;
                        if entry.done() {
                            calls.remove(&stream_id);
                        }
                    }
                    Some(requests)
                }
                None => None,
            }
        };
        if let Some(requests) = existing {
            if let Some(requests) = requests {
                let _ = requests.send(Ok(frame)).await;
            }
            continue;
        }
        if frame.type_id == CallHeader::TYPE_ID {
            if headers.len() >= limits.max_concurrent_calls as usize {
                break Err(close("too many call headers without requests".into()));
            }
            match CallHeader::decode(frame.body) {
                Ok(header) => {
                    headers.insert(stream_id, header);
                }
                Err(e) => {
                    let _ = out_tx
                        .send(status_frame(
                            &Status::invalid_argument(format!("bad CallHeader: {e}")),
                            stream_id,
                        ))
                        .await;
                }
            }
            continue;
        }
        // A new call, unless it is refused: the server is draining, or the connection is
        // at its call limit.
        let in_flight = calls.lock().expect("calls lock").len();
        let refusal = if drain_until.is_some() {
            Some(Status::unavailable("the server is shutting down"))
        } else if in_flight >= limits.max_concurrent_calls as usize {
            // Refused streams the client keeps open are remembered too; a client that
            // piles them up past twice its limit ignores the limit it agreed to.
            if in_flight >= 2 * limits.max_concurrent_calls as usize {
                break Err(close(format!(
                    "{in_flight} streams open, twice the limit of {}",
                    limits.max_concurrent_calls
                )));
            }
            shared.stats.calls_refused.fetch_add(1, Ordering::Relaxed);
            Some(Status::resource_exhausted(format!(
                "{in_flight} calls are in flight on this connection, the limit is {}",
                limits.max_concurrent_calls
            )))
        } else {
            None
        };
        if let Some(status) = refusal {
            headers.remove(&stream_id);
            let _ = out_tx.send(status_frame(&status, stream_id)).await;
            if !end {
                calls
                    .lock()
                    .expect("calls lock")
                    .insert(stream_id, Entry::refused());
            }
            continue;
        }
        let context = match headers.remove(&stream_id) {
            Some(header) => CallContext::from_header(Arc::clone(&peer), header, Instant::now()),
            None => CallContext::new(Arc::clone(&peer)),
        };
        shared.stats.calls_started.fetch_add(1, Ordering::Relaxed);
        let cancel = context.cancel.clone();
        let deadline = context.deadline;
        let dispatch = router.dispatch(context, frame);
        let requests = match &dispatch {
            Dispatch::ClientStreaming { requests, .. } | Dispatch::Bidi { requests, .. }
                if !end =>
            {
                Some(requests.clone())
            }
            _ => None,
        };
        calls.lock().expect("calls lock").insert(
            stream_id,
            Entry {
                cancel: cancel.clone(),
                requests,
                client_open: !end,
                answered: false,
            },
        );
        let (calls, out, call_ended) =
            (Arc::clone(&calls), out_tx.clone(), Arc::clone(&call_ended));
        shared.calls.spawn(async move {
            let last = drive(dispatch, stream_id, deadline, cancel, &out).await;
            // The call is marked answered before its last frame goes out: a client that
            // has its answer may start its next call at once, and must find the slot free.
            {
                let mut calls = calls.lock().expect("calls lock");
                if let Some(entry) = calls.get_mut(&stream_id) {
                    entry.answered = true;
                    entry.requests = None;
                    if entry.done() {
                        calls.remove(&stream_id);
                    }
                }
            }
            call_ended.notify_one();
            if let Some(frame) = last {
                let _ = out.send(frame).await;
            }
        });
    };
    // The connection is over: every call in flight is cancelled.
    for entry in calls.lock().expect("calls lock").values() {
        entry.cancel.cancel();
    }
    drop(out_tx);
    // A peer that stopped reading gets a second to take what is queued; then the writer
    // and its queue go, rather than outlive the connection's slot.
    let mut writer_task = writer_task;
    if tokio::time::timeout(Duration::from_secs(1), &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
    result
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs one call, sending its streamed frames on `stream_id`, and returns the frame that
/// ends it (none for a one-way call).
async fn drive(
    dispatch: Dispatch,
    stream_id: u32,
    deadline: Option<Instant>,
    cancel: CancellationToken,
    out: &mpsc::Sender<RawFrame>,
) -> Option<RawFrame> {
    let work = async {
        match dispatch {
            Dispatch::Rejected(status) => Some(status_frame(&status, stream_id)),
            Dispatch::OneWay(run) => {
                run.await;
                None
            }
            Dispatch::Unary(run) | Dispatch::ClientStreaming { run, .. } => Some(match run.await {
                Ok(frame) => with_stream(frame, stream_id, true),
                Err(status) => status_frame(&status, stream_id),
            }),
            Dispatch::ServerStreaming { run, responses }
            | Dispatch::Bidi { run, responses, .. } => {
                Some(forward(run, responses, stream_id, out).await)
            }
            _ => Some(status_frame(
                &Status::unimplemented("unsupported call shape"),
                stream_id,
            )),
        }
    };
    let last = tokio::select! {
        last = work => last,
        () = until(deadline) => {
            cancel.cancel();
            Some(status_frame(&Status::deadline_exceeded("the call's deadline passed before the handler answered"), stream_id))
        }
        () = cancel.cancelled() => Some(status_frame(&Status::cancelled("cancelled by the caller"), stream_id)),
    };
    last
}

/// Forwards a streaming handler's frames, then ends the stream: a status frame with OK
/// after the last item (a byte stream has no FIN per call), or the handler's failure.
async fn forward(
    run: futures::future::BoxFuture<'static, Result<(), Status>>,
    mut responses: mpsc::Receiver<RawFrame>,
    stream_id: u32,
    out: &mpsc::Sender<RawFrame>,
) -> RawFrame {
    let mut run = std::pin::pin!(run);
    let mut result = None;
    loop {
        tokio::select! {
            biased;
            frame = responses.recv() => match frame {
                Some(frame) => {
                    if out.send(with_stream(frame, stream_id, false)).await.is_err() {
                        return status_frame(&Status::cancelled("the connection closed"), stream_id);
                    }
                }
                None => break,
            },
            r = &mut run, if result.is_none() => result = Some(r),
        }
    }
    let result = match result {
        Some(result) => result,
        None => run.await,
    };
    match result {
        Ok(()) => status_frame(&Status::new(taskwire_rpc::StatusCode::Ok, ""), stream_id),
        Err(status) => status_frame(&status, stream_id),
    }
}
