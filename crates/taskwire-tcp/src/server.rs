//! The TCP server: one byte stream per connection, calls multiplexed by stream id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use taskwire_rpc::session::ServerSession;
use taskwire_rpc::{ConnectionSlot, ConnectionSlots, Router};
use taskwire_tls::PeerIdentity;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pending::{PendingHandshake, PendingHandshakes};
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
    /// TLS handshakes pushed out of the pending budget by newer ones
    /// ([`TcpLimits::max_pending_handshakes`](crate::TcpLimits::max_pending_handshakes)).
    pub handshakes_pushed_out: AtomicU64,
}

/// What a server's connections share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) limits: TcpLimits,
    pub(crate) session: ServerSession,
    slots: Arc<ConnectionSlots>,
    pending: Arc<PendingHandshakes>,
    pub(crate) stats: TcpServerStats,
    pub(crate) shutdown: CancellationToken,
    /// The calls in flight on every connection.
    pub(crate) calls: TaskTracker,
    /// The connections, each until its writer has delivered its last frame.
    connections: TaskTracker,
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
                pending: PendingHandshakes::new(config.limits.max_pending_handshakes),
                stats: TcpServerStats::default(),
                shutdown: CancellationToken::new(),
                calls: TaskTracker::new(),
                connections: TaskTracker::new(),
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
                // Admitted here, in arrival order, so that the oldest is pushed out first.
                let pending = self.tls.as_ref().map(|_| self.shared.pending.admit());
                let (shared, router, tls) = (
                    Arc::clone(&self.shared),
                    Arc::clone(&router),
                    self.tls.clone(),
                );
                self.shared.connections.spawn(async move {
                    if let Err(reason) =
                        accept_connection(stream, peer, tls, pending, shared, router).await
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

    /// Stops accepting, sends every connection a GoAway, waits up to the drain timeout for
    /// the calls in flight, then for each connection to deliver its last answers (a peer
    /// that stopped reading gets a second), and ends. `true` if every call finished in the
    /// drain timeout.
    ///
    /// Every call the server accepted is answered before this returns (unless its
    /// client stops reading, or the drain timeout cuts it off), so a process may exit
    /// right after it without losing an answer.
    pub async fn shutdown(self) -> bool {
        let shared = &self.shared;
        shared.shutdown.cancel();
        shared.calls.close();
        shared.connections.close();
        let drained = tokio::time::timeout(shared.limits.drain_timeout, shared.calls.wait())
            .await
            .is_ok();
        // Each connection closes once its calls are done, after its writer has delivered
        // what is queued, within a second.
        let _ = tokio::time::timeout(Duration::from_secs(2), shared.connections.wait()).await;
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
        pending: PendingHandshakes::new(1),
        stats: TcpServerStats::default(),
        shutdown: CancellationToken::new(),
        calls: TaskTracker::new(),
        connections: TaskTracker::new(),
    });
    crate::connection::serve(stream, peer, identity, shared, router)
}

async fn accept_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pending: Option<PendingHandshake>,
    shared: Arc<Shared>,
    router: Arc<Router>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    match (tls, pending) {
        (Some(acceptor), Some(pending)) => {
            let handshake =
                tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                done = handshake => done
                    .map_err(|_| "TLS handshake timed out".to_owned())?
                    .map_err(|e| format!("TLS handshake: {e}"))?,
                () = pending.evicted() => {
                    shared.stats.handshakes_pushed_out.fetch_add(1, Ordering::Relaxed);
                    return Err("TLS handshake pushed out by newer ones".to_owned());
                }
            };
            drop(pending);
            let _slot = take_slot(&shared, peer)?;
            let identity = PeerIdentity::from_connection(stream.get_ref().1)
                .ok()
                .flatten()
                .map(Arc::new);
            crate::connection::serve(stream, peer, identity, shared, router).await
        }
        _ => {
            let _slot = take_slot(&shared, peer)?;
            crate::connection::serve(stream, peer, None, shared, router).await
        }
    }
}

/// A connection slot for `peer`, or an error that counts the refusal.
fn take_slot(shared: &Shared, peer: SocketAddr) -> Result<ConnectionSlot, String> {
    shared.slots.try_acquire(peer.ip()).ok_or_else(|| {
        shared
            .stats
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        "refused: over the connection limits".to_owned()
    })
}
