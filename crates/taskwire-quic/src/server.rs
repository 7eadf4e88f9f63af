//! The server: accepts connections, negotiates each session, runs calls through a
//! [`Router`], and shuts down gracefully.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt as _;
use prost::Message as _;
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream, VarInt};
use taskwire_codec::{CodecError, Flags, Frame, RawFrame};
use taskwire_proto::WireMessage;
use taskwire_proto::registry::SessionMessage;
use taskwire_proto::session::v1::go_away::GoAwayReason;
use taskwire_proto::session::v1::refused::RefusalReason;
use taskwire_proto::session::v1::{CallHeader, Codec, GoAway, Hello, Ping, Pong, Refused};
use taskwire_proto::wkt;
use taskwire_rpc::session::{ServerSession, refusal};
use taskwire_rpc::{
    CallContext, ConnectionSlot, ConnectionSlots, Dispatch, PeerInfo, RequestSender, Router, Status,
};
use taskwire_tls::PeerIdentity;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::codes;
use crate::wire::{FrameReader, encode, encode_raw_chunks, status_frame, write, write_chunks};
use crate::{Limits, QuicError};

/// What a server needs: where to listen, its TLS configuration, its limits and what it
/// offers in the handshake.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The UDP address to bind, e.g. `127.0.0.1:0` for an ephemeral port.
    pub bind_addr: SocketAddr,
    /// TLS 1.3 configuration with the ALPN `taskwire/1`, for example from
    /// `taskwire_tls::ServerConfigBuilder` with `tls13_only(true)`.
    pub tls: Arc<rustls::ServerConfig>,
    /// Limits; see [`Limits`] for defaults.
    pub limits: Limits,
    /// What the server announces in Negotiated. The frame and call limits are taken from
    /// `limits`.
    pub session: ServerSession,
    /// Decides, after a valid Hello, whether to serve the peer: a refusal (for example
    /// `UNAUTHENTICATED` without a client certificate, `RATE_LIMITED`, `OVERLOADED`)
    /// is sent as Refused. Default: admit everyone the TLS configuration admits.
    pub admission: Option<Admission>,
}

/// An admission check run after each Hello; see [`ServerConfig::admission`].
#[derive(Clone)]
pub struct Admission(Arc<AdmitFn>);

type AdmitFn = dyn Fn(&PeerInfo, &Hello) -> Result<(), Refused> + Send + Sync;

impl Admission {
    /// Wraps `check`.
    pub fn new(
        check: impl Fn(&PeerInfo, &Hello) -> Result<(), Refused> + Send + Sync + 'static,
    ) -> Admission {
        Admission(Arc::new(check))
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admission(..)")
    }
}

impl ServerConfig {
    /// A configuration with default limits and session, admitting everyone the TLS
    /// configuration admits.
    pub fn new(bind_addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> ServerConfig {
        ServerConfig {
            bind_addr,
            tls,
            limits: Limits::default(),
            session: ServerSession::default(),
            admission: None,
        }
    }
}

/// Counts a server keeps, readable while it runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections that completed the handshake.
    pub connections_accepted: AtomicU64,
    /// Connections refused at the QUIC handshake for a connection limit.
    pub connections_refused: AtomicU64,
    /// Retry packets sent to unvalidated addresses under handshake pressure.
    pub retries_sent: AtomicU64,
    /// Connections closed for a protocol violation, Hello timeout or spent budget.
    pub connections_closed_for_cause: AtomicU64,
    /// Calls started.
    pub calls_started: AtomicU64,
    /// Calls answered with a status other than success.
    pub calls_failed: AtomicU64,
    /// Calls the client cancelled.
    pub calls_cancelled: AtomicU64,
}

struct Live {
    connection: Connection,
    control: Arc<tokio::sync::Mutex<SendStream>>,
    /// The QUIC stream id of the last call stream accepted: what the GoAway reports.
    last_accepted: Arc<AtomicU64>,
}

struct Shared {
    limits: Limits,
    session: ServerSession,
    admission: Option<Admission>,
    slots: Arc<ConnectionSlots>,
    live: Mutex<HashMap<usize, Live>>,
    draining: CancellationToken,
    calls: TaskTracker,
    stats: ServerStats,
    next_connection: AtomicU64,
    /// Connections accepted whose TLS handshake has not finished.
    handshaking: Arc<AtomicUsize>,
}

/// A QUIC server. Made with [`QuicServer::new`]; run with [`QuicServer::serve`].
///
/// ```
/// # use std::sync::Arc;
/// # fn tls() -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), taskwire_tls::TlsError> {
/// #     use taskwire_tls::{CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams, ServerConfigBuilder};
/// #     let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// #     let cert = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
/// #     let server = ServerConfigBuilder::new(cert.credentials()?)
/// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
/// #     let client = ClientConfigBuilder::new(ca.ca_bundle()?)
/// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
/// #     Ok((Arc::new(server), Arc::new(client)))
/// # }
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (server_tls, client_tls) = tls()?;
/// # let tls = server_tls; drop(client_tls);
/// use taskwire_quic::{QuicServer, ServerConfig};
/// use taskwire_rpc::Router;
/// use taskwire_proto::session::v1::{Ping, Pong};
///
/// let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, tls))?;
/// let mut router = Router::new();
/// router.unary(|_ctx, ping: Ping| async move { Ok(Pong { nonce: ping.nonce, sent_at: ping.sent_at }) });
/// let handle = server.serve(router);
/// println!("listening on {}", handle.local_addr());
/// handle.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct QuicServer {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    ready: mpsc::Receiver<ServerConnection>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for QuicServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicServer")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish()
    }
}

impl QuicServer {
    /// Binds the endpoint and starts accepting connections. Must be called inside a tokio
    /// runtime.
    ///
    /// `ServerConfig::tls` must allow TLS 1.3 and should offer the ALPN
    /// [`ALPN`](crate::ALPN); the [crate example](crate#example) shows how to make it with
    /// `taskwire_tls`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # fn tls() -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), taskwire_tls::TlsError> {
    /// #     use taskwire_tls::{CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams, ServerConfigBuilder};
    /// #     let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
    /// #     let cert = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
    /// #     let server = ServerConfigBuilder::new(cert.credentials()?)
    /// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
    /// #     let client = ClientConfigBuilder::new(ca.ca_bundle()?)
    /// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
    /// #     Ok((Arc::new(server), Arc::new(client)))
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (server_tls, client_tls) = tls()?;
    /// # drop(client_tls);
    /// use taskwire_quic::{QuicServer, ServerConfig};
    ///
    /// let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, server_tls))?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(config: ServerConfig) -> Result<QuicServer, QuicError> {
        let mut tls = (*config.tls).clone();
        // QUIC allows only "none" or "unbounded" here; the stream windows bound it.
        tls.max_early_data_size = if config.limits.early_data {
            u32::MAX
        } else {
            0
        };
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
            .map_err(|e| QuicError::Tls(format!("the TLS configuration cannot serve QUIC: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(config.limits.server_transport_config());
        let endpoint = config
            .limits
            .bind(config.bind_addr, Some(server_config))
            .map_err(|e| QuicError::Io(format!("binding {}: {e}", config.bind_addr)))?;
        let mut session = config.session;
        session.codecs = vec![Codec::Protobuf];
        session.max_frame_length = config.limits.max_frame_length;
        session.max_concurrent_calls = config.limits.max_concurrent_calls;
        session.keep_alive_interval = config.limits.keep_alive_interval;
        let shared = Arc::new(Shared {
            limits: config.limits,
            session,
            admission: config.admission,
            slots: ConnectionSlots::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            live: Mutex::new(HashMap::new()),
            draining: CancellationToken::new(),
            calls: TaskTracker::new(),
            stats: ServerStats::default(),
            next_connection: AtomicU64::new(1),
            handshaking: Arc::new(AtomicUsize::new(0)),
        });
        let (ready_tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(endpoint.clone(), Arc::clone(&shared), ready_tx));
        Ok(QuicServer {
            endpoint,
            shared,
            ready,
            acceptor,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// The next connection that completed its handshake and Hello. Connections that fail
    /// on the way are logged and skipped; `None` once the server is shut down.
    pub async fn accept(&mut self) -> Option<ServerConnection> {
        self.ready.recv().await
    }

    /// Serves every connection with `router`, in the background.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # fn tls() -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), taskwire_tls::TlsError> {
    /// #     use taskwire_tls::{CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams, ServerConfigBuilder};
    /// #     let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
    /// #     let cert = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
    /// #     let server = ServerConfigBuilder::new(cert.credentials()?)
    /// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
    /// #     let client = ClientConfigBuilder::new(ca.ca_bundle()?)
    /// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
    /// #     Ok((Arc::new(server), Arc::new(client)))
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (server_tls, client_tls) = tls()?;
    /// use taskwire_proto::management::v1::{HealthRequest, HealthResponse};
    /// use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
    /// use taskwire_rpc::Router;
    ///
    /// let mut router = Router::new();
    /// router.unary(|_ctx, _request: HealthRequest| async { Ok(HealthResponse::default()) });
    /// let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, server_tls))?.serve(router);
    ///
    /// let client = QuicClient::new(ClientConfig::new(server.local_addr(), "localhost", client_tls))?;
    /// assert_eq!(client.call(HealthRequest {}).await?, HealthResponse::default());
    /// server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve(mut self, router: Router) -> ServerHandle {
        let router = Arc::new(router);
        let serving = tokio::spawn(async move {
            while let Some(connection) = self.ready.recv().await {
                let router = Arc::clone(&router);
                let span = tracing::info_span!(
                    "connection",
                    peer = ?connection.peer.address,
                    tenant = connection.peer.tenant().unwrap_or(""),
                    client = %connection.peer.name,
                );
                tokio::spawn(connection.serve(router).instrument(span));
            }
        });
        ServerHandle {
            endpoint: self.endpoint,
            shared: self.shared,
            acceptor: self.acceptor,
            serving,
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    acceptor: tokio::task::JoinHandle<()>,
    serving: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.slots.in_use())
            .finish()
    }
}

/// What a graceful shutdown achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections that were sent a GoAway.
    pub connections: usize,
    /// Whether every call in flight finished within the drain timeout.
    pub drained: bool,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.shared.stats
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.slots.in_use()
    }

    /// Shuts down gracefully: refuses new connections and Hellos, sends GoAway on every
    /// connection (naming the last call it will answer), waits up to the drain timeout for
    /// calls in flight, then closes every connection with `SHUTDOWN`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # fn tls() -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), taskwire_tls::TlsError> {
    /// #     use taskwire_tls::{CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams, ServerConfigBuilder};
    /// #     let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
    /// #     let cert = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
    /// #     let server = ServerConfigBuilder::new(cert.credentials()?)
    /// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
    /// #     let client = ClientConfigBuilder::new(ca.ca_bundle()?)
    /// #         .alpn_protocols([taskwire_quic::ALPN]).tls13_only(true).build()?;
    /// #     Ok((Arc::new(server), Arc::new(client)))
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (server_tls, client_tls) = tls()?;
    /// use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
    /// use taskwire_rpc::Router;
    ///
    /// let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, server_tls))?
    ///     .serve(Router::new());
    /// let client = QuicClient::new(ClientConfig::new(server.local_addr(), "localhost", client_tls))?;
    /// let connection = client.connect().await?;
    /// connection.ping().await?; // the server is now serving the connection
    ///
    /// let report = server.shutdown().await;
    /// assert_eq!(report.connections, 1, "one connection was sent a GoAway");
    /// assert!(report.drained, "no call was left in flight");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(self) -> ShutdownReport {
        let shared = &self.shared;
        // Cancelling under the lock orders this snapshot with every handshake's check and
        // insert, and keeps serving loops (which leave `live` on draining) from leaving
        // before they are counted.
        let live: Vec<(Connection, Arc<tokio::sync::Mutex<SendStream>>, u64)> = {
            let guard = shared.live.lock().expect("live lock");
            shared.draining.cancel();
            guard
                .values()
                .map(|l| {
                    (
                        l.connection.clone(),
                        Arc::clone(&l.control),
                        l.last_accepted.load(Ordering::Acquire),
                    )
                })
                .collect()
        };
        let drain = shared.limits.drain_timeout;
        for (connection, control, last) in &live {
            connection.set_max_concurrent_bi_streams(VarInt::from_u32(0));
            let go_away = GoAway {
                reason: GoAwayReason::Shutdown as i32,
                message: "server shutting down".into(),
                last_accepted_request_id: *last,
                drain_timeout: Some(wkt::Duration::from(drain)),
            };
            let mut bytes = BytesMut::new();
            if encode(
                &Frame::new(SessionMessage::from(go_away)),
                u32::MAX,
                &mut bytes,
            )
            .is_ok()
            {
                let mut control = control.lock().await;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), control.write_all(&bytes)).await;
            }
        }
        shared.calls.close();
        let drained = tokio::time::timeout(drain, shared.calls.wait())
            .await
            .is_ok();
        for (connection, _, _) in &live {
            connection.close(codes::CLOSE_SHUTDOWN, b"server shut down");
        }
        self.endpoint
            .close(codes::CLOSE_SHUTDOWN, b"server shut down");
        self.acceptor.abort();
        self.serving.abort();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        ShutdownReport {
            connections: live.len(),
            drained,
        }
    }

    /// Stops at once: closes the endpoint without a GoAway or drain, like a crash. For
    /// tests of what clients see when a server dies.
    pub fn abort(self) {
        self.endpoint
            .close(codes::CLOSE_SHUTDOWN, b"server aborted");
        self.acceptor.abort();
        self.serving.abort();
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    shared: Arc<Shared>,
    ready: mpsc::Sender<ServerConnection>,
) {
    // One failed connection never ends the loop: each incoming runs in its own task.
    while let Some(incoming) = endpoint.accept().await {
        if shared.draining.is_cancelled() {
            incoming.refuse();
            continue;
        }
        if !incoming.remote_address_validated()
            && shared.handshaking.load(Ordering::Relaxed) >= shared.limits.retry_threshold
        {
            // Under handshake pressure an unvalidated address proves itself first; the
            // Retry is stateless, so a flood of Initials holds nothing.
            shared.stats.retries_sent.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        let Some(slot) = shared.slots.try_acquire(incoming.remote_address().ip()) else {
            shared
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %incoming.remote_address(), "refused a connection over the connection limits");
            incoming.refuse();
            continue;
        };
        // Counted here, not in the task, so that a burst is counted as it arrives.
        let handshaking = Handshaking::start(&shared.handshaking);
        let shared = Arc::clone(&shared);
        let ready = ready.clone();
        let span = tracing::info_span!("connection", peer = %incoming.remote_address());
        tokio::spawn(
            async move {
                match handshake(incoming, slot, handshaking, &shared).await {
                    Ok(connection) => {
                        shared
                            .stats
                            .connections_accepted
                            .fetch_add(1, Ordering::Relaxed);
                        let _ = ready.send(connection).await;
                    }
                    Err(reason) => tracing::debug!(%reason, "connection failed before serving"),
                }
            }
            .instrument(span),
        );
    }
}

/// One handshake counted in [`Shared::handshaking`] until dropped.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn start(count: &Arc<AtomicUsize>) -> Handshaking {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(Arc::clone(count))
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A negotiated connection, ready to serve calls.
pub struct ServerConnection {
    connection: Connection,
    peer: Arc<PeerInfo>,
    control_send: Arc<tokio::sync::Mutex<SendStream>>,
    control_recv: FrameReader,
    shared: Arc<Shared>,
    slot: ConnectionSlot,
    live: LiveEntry,
    last_accepted: Arc<AtomicU64>,
    client_max_frame_length: u32,
}

/// A connection's entry in the server's `live` map, removed when the connection is no
/// longer served. A connection that is dropped without ever being served is closed too:
/// otherwise the entry would keep it open (and answering keep-alives) after its slot was
/// freed.
struct LiveEntry {
    shared: Arc<Shared>,
    id: usize,
    connection: Connection,
    served: bool,
}

impl Drop for LiveEntry {
    fn drop(&mut self) {
        self.shared.live.lock().expect("live lock").remove(&self.id);
        if !self.served {
            self.connection
                .close(codes::CLOSE_NO_ERROR, b"the server dropped the connection");
        }
    }
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConnection")
            .field("peer", &self.peer)
            .finish()
    }
}

async fn handshake(
    incoming: Incoming,
    slot: ConnectionSlot,
    handshaking: Handshaking,
    shared: &Arc<Shared>,
) -> Result<ServerConnection, String> {
    let limits = shared.limits;
    let connecting = incoming.accept().map_err(|e| format!("accepting: {e}"))?;
    let (connection, mut handshake) =
        start_handshake(connecting, handshaking, limits.handshake_timeout).await?;

    let close = |code, reason: &str| {
        shared
            .stats
            .connections_closed_for_cause
            .fetch_add(1, Ordering::Relaxed);
        connection.close(code, reason.as_bytes());
        reason.to_owned()
    };
    let Some((control_send, control_recv, hello_deadline)) =
        accept_hello_stream(&connection, &mut handshake, limits.hello_timeout).await?
    else {
        return Err(close(
            codes::CLOSE_HELLO_TIMEOUT,
            "no Hello before the deadline",
        ));
    };
    // A Hello read during the handshake (early data) comes from a resumed session, whose
    // client certificate (if any) rustls restored from the ticket; any other waits for the
    // handshake, which proves the certificate.
    let early = control_recv.is_0rtt();
    if !early {
        handshake_completed(&connection, &mut handshake).await?;
    }
    let identity = connection
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| {
            certs
                .first()
                .and_then(|leaf| PeerIdentity::from_certificate(leaf).ok())
        })
        .map(Arc::new);
    let mut reader = FrameReader::new(control_recv, limits.max_hello_length, true);
    let first = match tokio::time::timeout_at(hello_deadline.into(), reader.next()).await {
        Err(_) => {
            return Err(close(
                codes::CLOSE_HELLO_TIMEOUT,
                "no Hello before the deadline",
            ));
        }
        Ok(Err(CodecError::FrameTooLarge { len, max })) => {
            return Err(close(
                codes::CLOSE_HELLO_TOO_LARGE,
                &format!("Hello of {len} bytes over the {max}-byte limit"),
            ));
        }
        Ok(Err(e)) => {
            return Err(close(
                codes::CLOSE_PROTOCOL_VIOLATION,
                &format!("bad Hello frame: {e}"),
            ));
        }
        Ok(Ok(None)) => {
            return Err(close(
                codes::CLOSE_PROTOCOL_VIOLATION,
                "the Hello stream ended without a Hello",
            ));
        }
        Ok(Ok(Some(frame))) => frame,
    };
    if first.type_id != Hello::TYPE_ID {
        return Err(close(
            codes::CLOSE_PROTOCOL_VIOLATION,
            &format!(
                "the first frame must be a Hello, not type {:#06x}",
                first.type_id
            ),
        ));
    }
    let hello = match Hello::decode(first.body) {
        Ok(hello) => hello,
        Err(e) => {
            return Err(close(
                codes::CLOSE_PROTOCOL_VIOLATION,
                &format!("undecodable Hello: {e}"),
            ));
        }
    };
    let id = usize::try_from(shared.next_connection.fetch_add(1, Ordering::Relaxed))
        .unwrap_or(usize::MAX);
    let client_max_frame_length = match hello.max_frame_length {
        0 => taskwire_codec::DEFAULT_MAX_FRAME_LENGTH,
        announced => announced,
    };
    let mut peer = PeerInfo {
        address: Some(connection.remote_address()),
        identity,
        name: hello.peer_name.clone(),
        version: hello.peer_version.clone(),
        claimed_tenant: hello.tenant.clone(),
        conversations: None,
    };
    let answer = if shared.draining.is_cancelled() {
        Err(refusal(
            RefusalReason::ShuttingDown,
            "the server is shutting down",
            Some(Duration::from_secs(1)),
        ))
    } else if let Some(Err(refused)) = shared
        .admission
        .as_ref()
        .map(|admission| (admission.0)(&peer, &hello))
    {
        Err(refused)
    } else {
        shared
            .session
            .negotiate(&hello, Codec::Protobuf, &format!("q{id}"))
    };
    // The connection joins `live` under the same lock that `shutdown` holds while it
    // starts draining and takes its snapshot, so every connection that is told
    // Negotiated is also sent the GoAway. The control stream stays locked until the
    // Negotiated is written, so a GoAway can never overtake it.
    let control_send = Arc::new(tokio::sync::Mutex::new(control_send));
    let mut control = Arc::clone(&control_send)
        .try_lock_owned()
        .map_err(|_| "the new control stream was already locked".to_owned())?;
    let last_accepted = Arc::new(AtomicU64::new(0));
    let answer = answer.and_then(|negotiated| {
        let mut live = shared.live.lock().expect("live lock");
        if shared.draining.is_cancelled() {
            return Err(refusal(
                RefusalReason::ShuttingDown,
                "the server is shutting down",
                Some(Duration::from_secs(1)),
            ));
        }
        live.insert(
            id,
            Live {
                connection: connection.clone(),
                control: Arc::clone(&control_send),
                last_accepted: Arc::clone(&last_accepted),
            },
        );
        Ok(negotiated)
    });
    let mut bytes = BytesMut::new();
    match answer {
        Ok(negotiated) => {
            peer.conversations = Some(negotiated.conversations().collect());
            let written = match encode(
                &Frame::new(SessionMessage::from(negotiated)),
                u32::MAX,
                &mut bytes,
            ) {
                Ok(()) => write(&mut control, bytes.freeze(), false)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = written {
                shared.live.lock().expect("live lock").remove(&id);
                return Err(e);
            }
        }
        Err(refused) => {
            let reason = format!("refused: {}", refused.message);
            encode(
                &Frame::new(SessionMessage::from(refused)).end_stream(),
                u32::MAX,
                &mut bytes,
            )
            .map_err(|e| e.to_string())?;
            let _ = write(&mut control, bytes.freeze(), true).await;
            // Let the Refused frame reach the client before the close overtakes it.
            let _ = tokio::time::timeout(Duration::from_secs(1), control.stopped()).await;
            return Err(close(codes::CLOSE_REFUSED, &reason));
        }
    }
    drop(control);
    let peer = Arc::new(peer);
    Ok(ServerConnection {
        connection: connection.clone(),
        peer,
        control_send,
        control_recv: reader,
        shared: Arc::clone(shared),
        slot,
        live: LiveEntry {
            shared: Arc::clone(shared),
            id,
            connection: connection.clone(),
            served: false,
        },
        last_accepted,
        client_max_frame_length,
    })
}

/// Starts serving a connection before its handshake completes, so that a resumed
/// client's early data (its Hello and replay-safe calls) is answered in the server's
/// first flight. The receiver turns `true` when the handshake completes; its sender is
/// dropped if it fails, and a handshake that is not complete in time closes the
/// connection.
async fn start_handshake(
    connecting: quinn::Connecting,
    handshaking: Handshaking,
    timeout: Duration,
) -> Result<(Connection, watch::Receiver<bool>), String> {
    match connecting.into_0rtt() {
        Ok((connection, completed)) => {
            let (tx, rx) = watch::channel(false);
            let watched = connection.clone();
            tokio::spawn(async move {
                let _handshaking = handshaking;
                // quinn's answer is whether early data was accepted, and `false` on
                // failure too: the connection's state tells them apart.
                match tokio::time::timeout(timeout, completed).await {
                    Ok(_) if watched.close_reason().is_none() => drop(tx.send(true)),
                    Ok(_) => {}
                    Err(_) => watched.close(codes::CLOSE_NO_ERROR, b"TLS handshake timed out"),
                }
            });
            Ok((connection, rx))
        }
        // quinn lets every server connection go on early; kept for a quinn that does not.
        Err(connecting) => {
            let connection = tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS handshake: {e}"))?;
            drop(handshaking);
            Ok((connection, watch::channel(true).1))
        }
    }
}

/// Waits for the TLS handshake to complete.
async fn handshake_completed(
    connection: &Connection,
    handshake: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    if handshake.wait_for(|done| *done).await.is_ok() {
        return Ok(());
    }
    Err(match connection.close_reason() {
        Some(reason) => format!("TLS handshake: {reason}"),
        None => "TLS handshake timed out".to_owned(),
    })
}

/// The control stream and the deadline for its Hello, which runs from the end of the
/// handshake, or from the stream's arrival if it came first, as early data; `None` if
/// no stream came before the deadline.
async fn accept_hello_stream(
    connection: &Connection,
    handshake: &mut watch::Receiver<bool>,
    hello_timeout: Duration,
) -> Result<Option<(SendStream, RecvStream, Instant)>, String> {
    let mut accept = pin!(connection.accept_bi());
    let stream = tokio::select! {
        stream = &mut accept => Some(stream),
        () = handshake_completed(connection, handshake).map(drop) => None,
    };
    let deadline = Instant::now() + hello_timeout;
    let stream = match stream {
        Some(stream) => stream,
        None => match tokio::time::timeout_at(deadline.into(), accept).await {
            Ok(stream) => stream,
            Err(_) => return Ok(None),
        },
    };
    let (send, recv) = stream.map_err(|e| format!("waiting for the Hello stream: {e}"))?;
    Ok(Some((send, recv, deadline)))
}

impl ServerConnection {
    /// The peer.
    pub fn peer(&self) -> &Arc<PeerInfo> {
        &self.peer
    }

    /// Serves calls on this connection with `router` until it closes.
    pub async fn serve(self, router: Arc<Router>) {
        let ServerConnection {
            connection,
            peer,
            control_send,
            control_recv,
            shared,
            slot,
            mut live,
            last_accepted,
            client_max_frame_length,
        } = self;
        live.served = true;
        let budget = Arc::new(AtomicU32::new(shared.limits.cheap_event_budget));
        let mut credit = CallCredit::new(&shared.limits);
        let control = tokio::spawn(control_loop(
            connection.clone(),
            control_recv,
            Arc::clone(&control_send),
            shared.limits.max_frame_length,
        ));
        loop {
            let accepted = tokio::select! {
                accepted = connection.accept_bi() => accepted,
                () = shared.draining.cancelled() => break,
            };
            let Ok((send, recv)) = accepted else { break };
            // Recorded under the lock `shutdown` holds while it starts draining and reads
            // these, so the GoAway names every stream accepted here, and a stream that
            // arrives after it is refused unread.
            let accepted = {
                let _live = shared.live.lock().expect("live lock");
                let open = !shared.draining.is_cancelled();
                if open {
                    last_accepted.fetch_max(u64::from(send.id()), Ordering::AcqRel);
                }
                open
            };
            if !accepted {
                shared.calls.spawn(refuse_unread(send, recv));
                continue;
            }
            let in_flight = credit.call_started(&connection);
            let call = serve_call(
                send,
                recv,
                Arc::clone(&peer),
                Arc::clone(&router),
                Arc::clone(&shared),
                Arc::clone(&budget),
                connection.clone(),
                client_max_frame_length,
            )
            .map(move |()| drop(in_flight));
            // Boxed: the call's future is about 2.7 KiB, and tokio keeps a spawned future
            // inline in its task, copying it in and rewriting that slot by value as the task
            // finishes. Behind a box, those copies move a pointer.
            shared.calls.spawn(Box::pin(call).in_current_span());
        }
        if !shared.draining.is_cancelled() {
            let _ = connection.closed().await;
        }
        control.abort();
        drop(live);
        drop(slot);
    }
}

/// The stream credit a connection's peer has for calls: [`Limits::initial_call_credit`]
/// at the handshake, raised to [`Limits::max_concurrent_calls`] once half of it is in
/// use, so that an idle connection keeps quinn's per-slot state for a few slots and a
/// busy one has them all after one round trip.
struct CallCredit {
    granted: u32,
    max: u32,
    in_flight: Arc<AtomicU32>,
}

/// One call counted in flight until dropped.
struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallCredit {
    fn new(limits: &Limits) -> CallCredit {
        let max = limits.max_concurrent_calls.max(1);
        CallCredit {
            granted: limits.initial_call_credit.clamp(1, max),
            max,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    fn call_started(&mut self, connection: &Connection) -> InFlight {
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if self.granted < self.max && in_flight.saturating_mul(2) >= self.granted {
            self.granted = self.max;
            connection.set_max_concurrent_bi_streams(VarInt::from_u32(self.granted));
        }
        InFlight(Arc::clone(&self.in_flight))
    }
}

/// Answers Pings and watches for protocol violations on the control stream.
async fn control_loop(
    connection: Connection,
    mut reader: FrameReader,
    send: Arc<tokio::sync::Mutex<SendStream>>,
    max_frame_length: u32,
) {
    reader.set_max_frame_length(max_frame_length);
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(CodecError::Io(_)) => return,
            Err(e) => {
                connection.close(
                    codes::CLOSE_PROTOCOL_VIOLATION,
                    format!("bad control frame: {e}").as_bytes(),
                );
                return;
            }
        };
        match frame.type_id {
            id if id == Ping::TYPE_ID => {
                let Ok(ping) = Ping::decode(frame.body) else {
                    connection.close(codes::CLOSE_PROTOCOL_VIOLATION, b"undecodable Ping");
                    return;
                };
                let mut bytes = BytesMut::new();
                let pong = Pong {
                    nonce: ping.nonce,
                    sent_at: ping.sent_at,
                };
                if encode(
                    &Frame::new(SessionMessage::from(pong)),
                    u32::MAX,
                    &mut bytes,
                )
                .is_ok()
                {
                    let _ = send.lock().await.write_all(&bytes).await;
                }
            }
            id if id == GoAway::TYPE_ID => {}
            id if id == Hello::TYPE_ID => {
                connection.close(codes::CLOSE_PROTOCOL_VIOLATION, b"a second Hello");
                return;
            }
            other => {
                connection.close(
                    codes::CLOSE_PROTOCOL_VIOLATION,
                    format!("type {other:#06x} is not a control frame").as_bytes(),
                );
                return;
            }
        }
    }
}

/// Spends one unit of the connection's cheap-event budget; closes it when spent.
fn spend(budget: &AtomicU32, connection: &Connection, shared: &Shared) {
    let before = budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1));
    if before.is_err() || before == Ok(1) {
        shared
            .stats
            .connections_closed_for_cause
            .fetch_add(1, Ordering::Relaxed);
        connection.close(
            codes::CLOSE_LIMIT_EXCEEDED,
            b"too many streams without a call",
        );
    }
}

/// A call stream that arrived after the GoAway: answered `UNAVAILABLE` without reading
/// it (its id is past the GoAway's `last_accepted_request_id`, so it may be retried).
async fn refuse_unread(mut send: SendStream, mut recv: RecvStream) {
    let status = Status::unavailable("the server is shutting down");
    let mut chunks = Vec::new();
    if encode_raw_chunks(&status_frame(&status), u32::MAX, &mut chunks).is_ok() {
        let _ = write_chunks(&mut send, &mut chunks, true).await;
    }
    let _ = recv.stop(codes::RESET_CANCELLED);
}

/// How long the server reads what a client still sends on a stream after the call is
/// answered, so that it never stops the stream with code 0: up to the client's FIN, or
/// this long, after which it stops the stream with `CANCELLED`.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads and drops the rest of an answered call's request stream, up to its FIN.
async fn discard_until_fin(mut reader: FrameReader) {
    let ended = tokio::time::timeout(DISCARD_TIMEOUT, async {
        loop {
            match reader.next().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(CodecError::Io(_)) => return true,
                Err(_) => return false,
            }
        }
    })
    .await;
    match ended {
        Ok(true) => {}
        Ok(false) => {
            let _ = reader.stream_mut().stop(codes::RESET_FRAME_ERROR);
        }
        Err(_) => {
            let _ = reader.stream_mut().stop(codes::RESET_CANCELLED);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_call(
    mut send: SendStream,
    recv: RecvStream,
    peer: Arc<PeerInfo>,
    router: Arc<Router>,
    shared: Arc<Shared>,
    budget: Arc<AtomicU32>,
    connection: Connection,
    client_max_frame_length: u32,
) {
    let limits = shared.limits;
    // quinn's flag: the stream was accepted while the handshake was under way, so its
    // data came as early data and is not yet proven to be the client's own.
    let early_data = recv.is_0rtt();
    let mut reader = FrameReader::new(recv, limits.max_frame_length, false);
    let received = Instant::now();
    // The call is an optional CallHeader, then the first request frame.
    let mut context = CallContext::new(Arc::clone(&peer));
    let mut header_seen = false;
    let first = loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(CodecError::Io(_)) => {
                // Opened and finished or reset before any request: cheap for the peer.
                spend(&budget, &connection, &shared);
                let _ = send.reset(codes::RESET_CANCELLED);
                return;
            }
            Err(e) => {
                let status = Status::protocol_violation(e.to_string());
                return fail_stream(&mut send, reader, &status).await;
            }
        };
        if header_seen || frame.type_id != CallHeader::TYPE_ID {
            break frame;
        }
        match CallHeader::decode(frame.body) {
            Ok(header) => context = CallContext::from_header(Arc::clone(&peer), header, received),
            Err(e) => {
                let status = Status::invalid_argument(format!("bad CallHeader: {e}"));
                return fail_stream(&mut send, reader, &status).await;
            }
        }
        header_seen = true;
    };
    context.early_data = early_data;
    shared.stats.calls_started.fetch_add(1, Ordering::Relaxed);
    let type_id = first.type_id;
    let request_id = context.request_id;
    let cancel = context.cancel.clone();
    let deadline = context.deadline;
    let started = Instant::now();
    let message =
        taskwire_proto::registry::by_type_id(type_id).map_or("<extension>", |info| info.name);
    let span = tracing::debug_span!(
        "call",
        type_id = format_args!("{type_id:#06x}"),
        message,
        request_id
    );
    let outcome = async {
        let dispatch = router.dispatch(context, first);
        // Responses respect the frame limit the client announced in its Hello.
        drive(
            dispatch,
            &mut send,
            reader,
            deadline,
            &cancel,
            client_max_frame_length,
        )
        .await
    }
    .instrument(span.clone())
    .await;
    let elapsed = started.elapsed();
    if shared.draining.is_cancelled() {
        // The server closes its connections once calls finish; wait until this answer has
        // been acknowledged so the close does not overtake it.
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    }
    match &outcome {
        Outcome::Answered => tracing::debug!(parent: &span, ?elapsed, "call answered"),
        Outcome::Failed(status) => {
            shared.stats.calls_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(parent: &span, ?elapsed, %status, "call failed");
        }
        Outcome::Cancelled => {
            shared.stats.calls_cancelled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(parent: &span, ?elapsed, "call cancelled by the client");
        }
    }
}

enum Outcome {
    Answered,
    Failed(Status),
    Cancelled,
}

async fn fail_stream(send: &mut SendStream, mut reader: FrameReader, status: &Status) {
    let mut chunks = Vec::new();
    if encode_raw_chunks(&status_frame(status), u32::MAX, &mut chunks).is_ok() {
        let _ = write_chunks(send, &mut chunks, true).await;
    }
    let _ = reader.stream_mut().stop(codes::RESET_FRAME_ERROR);
}

/// Waits for the deadline, if there is one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes a call's response frames, and knows whether one is half written.
///
/// A frame is cut short when the call ends in the middle of writing it (its deadline
/// passes while the client reads nothing); after that, only a reset may follow, never a
/// status frame, which the client would read as the rest of the cut frame.
struct Responder<'a> {
    send: &'a mut SendStream,
    /// The buffers of the frame being written, kept between frames for their capacity.
    chunks: Vec<Bytes>,
    mid_frame: bool,
}

impl<'a> Responder<'a> {
    fn new(send: &'a mut SendStream) -> Self {
        Responder {
            send,
            chunks: Vec::new(),
            mid_frame: false,
        }
    }

    /// Writes one frame and, if `finish`, ends the stream.
    async fn send(&mut self, frame: &RawFrame, max: u32, finish: bool) -> Result<(), Status> {
        self.chunks.clear();
        encode_raw_chunks(frame, max, &mut self.chunks).map_err(|e| match e {
            CodecError::FrameTooLarge { len, max } => Status::resource_exhausted(format!(
                "the response of {len} bytes exceeds the client's frame limit of {max} bytes"
            ))
            .with_retry(taskwire_proto::session::v1::RetryHint::DoNotRetry),
            other => Status::internal(format!("encoding the response: {other}")),
        })?;
        self.mid_frame = true;
        let written = write_chunks(self.send, &mut self.chunks, finish)
            .await
            .map_err(|e| Status::unavailable(e.to_string()));
        self.mid_frame = false;
        self.chunks.clear();
        written
    }

    /// Ends the call with `status`: a status frame, or a reset if a frame is cut short.
    async fn fail(&mut self, status: &Status) {
        if self.mid_frame {
            let _ = self.send.reset(codes::RESET_CANCELLED);
        } else {
            let _ = self.send(&status_frame(status), u32::MAX, true).await;
        }
    }
}

/// Ends a call with its answer or its status.
async fn answer(
    responder: &mut Responder<'_>,
    result: Result<RawFrame, Status>,
    max: u32,
) -> Outcome {
    let outcome = match result {
        Ok(mut frame) => {
            frame.flags = frame.flags | Flags::END_STREAM;
            match responder.send(&frame, max, true).await {
                Ok(()) => return Outcome::Answered,
                Err(status) => status,
            }
        }
        Err(status) => status,
    };
    responder.fail(&outcome).await;
    Outcome::Failed(outcome)
}

/// Feeds request frames from the stream into a handler's channel until END_STREAM (or a
/// status frame, which ends the client's side too), then reads the rest of the stream up
/// to its FIN, as it does once the handler stops reading.
async fn pump_requests(mut reader: FrameReader, requests: RequestSender) {
    loop {
        match reader.next().await {
            Ok(Some(frame)) => {
                let end = frame.flags.is_end_stream() || frame.flags.is_status();
                // Over the buffer budget the handler reads RESOURCE_EXHAUSTED in place of
                // the frame; like a handler that stopped reading, the rest is discarded.
                if requests.send(frame).await.is_err() || end {
                    drop(requests);
                    return discard_until_fin(reader).await;
                }
            }
            Ok(None) => return,
            Err(CodecError::Io(e)) => {
                requests
                    .fail(Status::cancelled(format!("the request stream failed: {e}")))
                    .await;
                return;
            }
            Err(e) => {
                requests
                    .fail(Status::protocol_violation(e.to_string()))
                    .await;
                let _ = reader.stream_mut().stop(codes::RESET_FRAME_ERROR);
                return;
            }
        }
    }
}

/// Forwards a handler's response frames onto the stream until the handler finishes.
async fn pump_responses(
    responder: &mut Responder<'_>,
    mut responses: mpsc::Receiver<RawFrame>,
    run: futures::future::BoxFuture<'static, Result<(), Status>>,
    max: u32,
) -> Outcome {
    let mut run = pin!(run);
    let mut result = None;
    loop {
        tokio::select! {
            biased;
            frame = responses.recv() => match frame {
                Some(frame) => {
                    if let Err(status) = responder.send(&frame, max, false).await {
                        return Outcome::Failed(status);
                    }
                }
                None => break,
            },
            r = &mut run, if result.is_none() => result = Some(r),
        }
    }
    let result = match result {
        Some(r) => r,
        None => run.await,
    };
    match result {
        Ok(()) => {
            // A stream ends with a status frame, OK on success, as it does over TCP: the
            // last item cannot carry END_STREAM, since it goes out before the handler
            // knows that it is the last.
            let ok = Status::new(taskwire_rpc::StatusCode::Ok, "");
            match responder.send(&status_frame(&ok), u32::MAX, true).await {
                Ok(()) => Outcome::Answered,
                Err(status) => Outcome::Failed(status),
            }
        }
        Err(status) => {
            responder.fail(&status).await;
            Outcome::Failed(status)
        }
    }
}

async fn drive(
    dispatch: Dispatch,
    send: &mut SendStream,
    reader: FrameReader,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
    max: u32,
) -> Outcome {
    // Created before `work` borrows the stream: resolves when the client stops reading.
    // A one-way caller never reads, so its stop means nothing.
    let stopped = send.stopped();
    let one_way = matches!(dispatch, Dispatch::OneWay(_));
    let mut reader = Some(reader);
    let mut responder = Responder::new(send);
    let work = async {
        let responder = &mut responder;
        match dispatch {
            Dispatch::Rejected(status) => answer(responder, Err(status), max).await,
            Dispatch::OneWay(run) => {
                run.await;
                let _ = responder.send.finish();
                Outcome::Answered
            }
            Dispatch::Unary(run) => {
                let result = run.await;
                answer(responder, result, max).await
            }
            Dispatch::ServerStreaming { run, responses } => {
                pump_responses(responder, responses, run, max).await
            }
            // The pump outlives the handler: once nobody reads the requests, it reads the
            // stream to its FIN (for a bounded time) rather than stop it with code 0.
            Dispatch::ClientStreaming { run, requests } => {
                tokio::spawn(pump_requests(reader.take().expect("reader"), requests));
                let result = run.await;
                answer(responder, result, max).await
            }
            Dispatch::Bidi {
                run,
                requests,
                responses,
            } => {
                tokio::spawn(pump_requests(reader.take().expect("reader"), requests));
                pump_responses(responder, responses, run, max).await
            }
            _ => {
                answer(
                    responder,
                    Err(Status::unimplemented("unsupported call shape")),
                    max,
                )
                .await
            }
        }
    };
    // The handler runs until it answers, its deadline passes, or the client goes away
    // (stops reading its response stream, or the connection is lost), whichever comes
    // first: nobody would read its answer, and its memory is freed at once.
    let stopped = async move {
        match stopped.await {
            Ok(Some(_)) | Err(_) if !one_way => {}
            _ => std::future::pending().await,
        }
    };
    enum Ended {
        Work(Outcome),
        Deadline,
        Stopped,
    }
    let ended = {
        let mut work = pin!(work);
        let ended = tokio::select! {
            outcome = &mut work => Ended::Work(outcome),
            () = until(deadline) => Ended::Deadline,
            _ = stopped => Ended::Stopped,
        };
        // The token fires before the handler is dropped, so cleanup it runs on drop sees
        // the cancellation.
        if !matches!(ended, Ended::Work(_)) {
            cancel.cancel();
        }
        ended
    };
    if let Some(reader) = reader {
        tokio::spawn(discard_until_fin(reader));
    }
    match ended {
        Ended::Work(outcome) => outcome,
        Ended::Deadline => {
            let status =
                Status::deadline_exceeded("the call's deadline passed before the handler answered");
            responder.fail(&status).await;
            Outcome::Failed(status)
        }
        Ended::Stopped => {
            let _ = responder.send.reset(codes::RESET_CANCELLED);
            Outcome::Cancelled
        }
    }
}
