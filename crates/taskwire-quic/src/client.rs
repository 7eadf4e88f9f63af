//! The client: connects, negotiates, and makes typed calls of every shape; reconnects
//! with backoff.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use quinn::{Endpoint, RecvStream, SendStream};
use rand::Rng as _;
use taskwire_codec::{Frame, RawFrame};
use taskwire_proto::registry::SessionMessage;
use taskwire_proto::session::v1::{Codec, GoAway, Ping, Pong, Status as StatusMessage};
use taskwire_proto::{MessageSet, Rpc, WireMessage};
use taskwire_rpc::session::{
    Agreed, ClientSession, DEFAULT_MAX_CONCURRENT_CALLS, PROTOCOL_VERSION, agreed_from_frame,
};
use taskwire_rpc::{CallError, CallOptions, decode_answer, decode_status};
use tokio::sync::{oneshot, watch};

use crate::codes;
use crate::wire::{FrameReader, encode, encode_chunks, read_error, write, write_chunks};
use crate::{Limits, QuicError};

/// What a client needs: whom to reach and how to trust it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's UDP address.
    pub server_addr: SocketAddr,
    /// The name the server's certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// TLS 1.3 configuration with the ALPN `taskwire/1`, for example from
    /// `taskwire_tls::ClientConfigBuilder` with `tls13_only(true)`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Limits; see [`Limits`] for defaults.
    pub limits: Limits,
    /// What the client announces in its Hello.
    pub session: ClientSession,
    /// The local address to bind. Default `0.0.0.0:0` (or `[::]:0` for IPv6 servers).
    pub bind_addr: Option<SocketAddr>,
    /// How [`QuicClient::connection`] reconnects.
    pub reconnect: ReconnectPolicy,
}

impl ClientConfig {
    /// A configuration with default limits, session and reconnection policy.
    pub fn new(
        server_addr: SocketAddr,
        server_name: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
    ) -> ClientConfig {
        ClientConfig {
            server_addr,
            server_name: server_name.into(),
            tls,
            limits: Limits::default(),
            session: ClientSession::default(),
            bind_addr: None,
            reconnect: ReconnectPolicy::default(),
        }
    }
}

/// Exponential backoff with full jitter between reconnection attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// The first delay's upper bound. Default 50 ms.
    pub initial_backoff: Duration,
    /// The largest delay. Default 5 s.
    pub max_backoff: Duration,
    /// Attempts before giving up with `UNAVAILABLE`. Default 10.
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_attempts: 10,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (0-based): uniformly random up to
    /// `min(max, initial × 2^attempt)`, so that many clients do not retry in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << attempt.min(20))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// A QUIC client: one endpoint, one cached connection, reconnected on demand.
#[derive(Debug)]
pub struct QuicClient {
    endpoint: Endpoint,
    config: ClientConfig,
    client_config: quinn::ClientConfig,
    current: tokio::sync::Mutex<Option<Connection>>,
}

impl QuicClient {
    /// Binds the client's endpoint. Must be called inside a tokio runtime. Nothing is
    /// connected until [`connect`](Self::connect) or [`connection`](Self::connection).
    ///
    /// `ClientConfig::tls` must allow TLS 1.3 and should offer the ALPN
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
    /// # drop(server_tls);
    /// use taskwire_quic::{ClientConfig, QuicClient};
    ///
    /// let client = QuicClient::new(ClientConfig::new("127.0.0.1:7000".parse()?, "localhost", client_tls))?;
    /// assert_ne!(client.local_addr()?.port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(config: ClientConfig) -> Result<QuicClient, QuicError> {
        // A copy shares the session cache (an `Arc`) with the caller's config.
        let mut tls = (*config.tls).clone();
        tls.enable_early_data = config.limits.early_data;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).map_err(|e| {
                QuicError::Tls(format!(
                    "the TLS configuration cannot make QUIC connections: {e}"
                ))
            })?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        client_config.transport_config(config.limits.client_transport_config());
        let bind = config.bind_addr.unwrap_or_else(|| {
            if config.server_addr.is_ipv6() {
                "[::]:0".parse().expect("literal")
            } else {
                "0.0.0.0:0".parse().expect("literal")
            }
        });
        let endpoint = config
            .limits
            .bind(bind, None)
            .map_err(|e| QuicError::Io(format!("binding {bind}: {e}")))?;
        Ok(QuicClient {
            endpoint,
            config,
            client_config,
            current: tokio::sync::Mutex::new(None),
        })
    }

    /// Makes a new connection and negotiates its session. Each call makes another
    /// connection; [`connection`](Self::connection) reuses one.
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
    ///
    /// let connection = client.connect().await?;
    /// assert_eq!(connection.agreed().version, 1);
    /// assert!(connection.is_usable());
    /// connection.ping().await?;
    /// server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(&self) -> Result<Connection, CallError> {
        let (connection, negotiation) = self.connect_pipelined().await?;
        negotiation.await?;
        Ok(connection)
    }

    /// Makes a new connection and sends its Hello without waiting for the answer: calls
    /// made on the connection at once go out right behind the Hello, which saves the round
    /// trip [`connect`](Self::connect) waits for. The server reads them only once it has
    /// accepted the session (`docs/protocol.md` §13).
    ///
    /// The returned [`Negotiation`] resolves to the agreed limits, or to the refusal; if the
    /// server refuses, the calls made meanwhile fail as the connection closes. Until the
    /// answer arrives, [`Connection::agreed`] gives the limits calls are held to: frames up to
    /// 64 KiB, the default limit of a Hello.
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
    /// use taskwire_proto::session::v1::Ping;
    /// use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
    /// use taskwire_rpc::Router;
    ///
    /// let mut router = Router::new();
    /// router.unary(|_ctx, ping: Ping| async move {
    ///     Ok(taskwire_proto::session::v1::Pong { nonce: ping.nonce, sent_at: None })
    /// });
    /// let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, server_tls))?
    ///     .serve(router);
    /// let client = QuicClient::new(ClientConfig::new(server.local_addr(), "localhost", client_tls))?;
    ///
    /// let (connection, negotiation) = client.connect_pipelined().await?;
    /// let pong = connection.call(Ping { nonce: 7, sent_at: None }).await?; // behind the Hello
    /// assert_eq!(pong.nonce, 7);
    /// assert_eq!(negotiation.await?, connection.agreed());
    /// server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_pipelined(&self) -> Result<(Connection, Negotiation), CallError> {
        let (connection, early) = self.handshake().await?;
        let limits = self.config.limits;
        let mut hello = BytesMut::new();
        encode(
            &Frame::new(SessionMessage::from(
                self.config.session.hello(Codec::Protobuf),
            )),
            limits.max_hello_length,
            &mut hello,
        )?;
        let hello = hello.freeze();
        let (control_send, reader) = tokio::time::timeout(
            limits.hello_timeout,
            send_hello(&connection, hello.clone(), limits.max_frame_length),
        )
        .await
        .map_err(|_| hello_timed_out())??;
        let state = if early.is_some() {
            EarlyData::Pending
        } else {
            EarlyData::NotSent
        };
        let (handshake_tx, handshake_rx) = watch::channel(state);
        let inner = self.inner(connection, control_send, handshake_rx);
        let (tx, rx) = oneshot::channel();
        let negotiate = Negotiate {
            inner: Arc::downgrade(&inner),
            reader,
            hello,
            limits,
            handshake: handshake_tx,
        };
        tokio::spawn(negotiate.run(early, tx));
        Ok((Connection { inner }, Negotiation { answer: rx }))
    }

    /// The QUIC and TLS handshakes, within the handshake timeout; or, for a connection
    /// that resumes a session with early data, the connection at once and the future of
    /// the server's verdict on its early data.
    async fn handshake(
        &self,
    ) -> Result<(quinn::Connection, Option<quinn::ZeroRttAccepted>), CallError> {
        let connecting = self
            .endpoint
            .connect_with(
                self.client_config.clone(),
                self.config.server_addr,
                &self.config.server_name,
            )
            .map_err(|e| {
                CallError::Unavailable(format!("connecting to {}: {e}", self.config.server_addr))
            })?;
        let connecting = match connecting.into_0rtt() {
            Ok((connection, accepted)) => return Ok((connection, Some(accepted))),
            Err(connecting) => connecting,
        };
        let connection = tokio::time::timeout(self.config.limits.handshake_timeout, connecting)
            .await
            .map_err(|_| {
                CallError::Unavailable(format!(
                    "TLS handshake with {} timed out",
                    self.config.server_addr
                ))
            })?
            .map_err(|e| {
                CallError::Unavailable(format!(
                    "TLS handshake with {}: {e}",
                    self.config.server_addr
                ))
            })?;
        Ok((connection, None))
    }

    fn inner(
        &self,
        connection: quinn::Connection,
        control: SendStream,
        handshake: watch::Receiver<EarlyData>,
    ) -> Arc<Inner> {
        Arc::new(Inner {
            connection,
            handshake,
            agreed: OnceLock::new(),
            next_request_id: AtomicU64::new(1),
            going_away: AtomicBool::new(false),
            response_limit: self.config.session.max_frame_length,
            control: tokio::sync::Mutex::new(control),
            pongs: Mutex::new(Vec::new()),
        })
    }

    /// The cached connection if it is alive; otherwise a new one, retried with
    /// [`ReconnectPolicy`] backoff. A refusal that cannot be retried is returned at once.
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
    ///
    /// let first = client.connection().await?;
    /// let again = client.connection().await?; // the cached one
    /// assert_eq!(server.open_connections(), 1);
    ///
    /// first.close();
    /// let fresh = client.connection().await?; // the closed one is replaced
    /// assert!(fresh.is_usable() && !again.is_usable());
    /// server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connection(&self) -> Result<Connection, CallError> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref()
            && connection.is_usable()
        {
            return Ok(connection.clone());
        }
        *current = None;
        let policy = self.config.reconnect;
        let mut last = None;
        for attempt in 0..policy.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(policy.backoff(attempt - 1)).await;
            }
            match self.connect().await {
                Ok(connection) => {
                    *current = Some(connection.clone());
                    return Ok(connection);
                }
                Err(error) if !error.is_retryable() => return Err(error),
                Err(error) => {
                    tracing::debug!(attempt, %error, "connection attempt failed");
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| CallError::Unavailable("no connection attempt was made".into())))
    }

    /// A unary call on the cached connection (reconnecting if needed).
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
    /// use taskwire_proto::management::v1::health_response::ServingStatus;
    /// use taskwire_proto::management::v1::{HealthRequest, HealthResponse};
    /// use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
    /// use taskwire_rpc::Router;
    ///
    /// let mut router = Router::new();
    /// router.unary(|_ctx, _request: HealthRequest| async {
    ///     Ok(HealthResponse { status: ServingStatus::Serving as i32, ..Default::default() })
    /// });
    /// let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, server_tls))?.serve(router);
    /// let client = QuicClient::new(ClientConfig::new(server.local_addr(), "localhost", client_tls))?;
    ///
    /// let health = client.call(HealthRequest {}).await?;
    /// assert_eq!(health.status(), ServingStatus::Serving);
    /// server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call<R>(&self, request: R) -> Result<R::Response, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        self.connection().await?.call(request).await
    }

    /// The client's local address.
    pub fn local_addr(&self) -> Result<SocketAddr, QuicError> {
        self.endpoint
            .local_addr()
            .map_err(|e| QuicError::Io(e.to_string()))
    }

    /// Closes the cached connection and the endpoint.
    pub async fn close(&self) {
        if let Some(connection) = self.current.lock().await.take() {
            connection.close();
        }
        self.endpoint.close(codes::CLOSE_NO_ERROR, b"client closed");
    }
}

/// Opens the control stream and writes the encoded Hello on it.
async fn send_hello(
    connection: &quinn::Connection,
    hello: Bytes,
    max_frame_length: u32,
) -> Result<(SendStream, FrameReader), CallError> {
    let (mut send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| CallError::Unavailable(format!("opening the control stream: {e}")))?;
    write(&mut send, hello, false).await?;
    Ok((send, FrameReader::new(recv, max_frame_length, false)))
}

/// What became of a connection's TLS early data (QUIC 0-RTT); see
/// [`Limits::early_data`](crate::Limits::early_data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EarlyData {
    /// None was sent: the connection did not resume a session that allows it, or early
    /// data is off. The handshake was complete before the connection was returned.
    NotSent,
    /// Sent; the handshake is under way. Calls that are not replay-safe wait for it.
    Pending,
    /// Sent and accepted by the server; the handshake is complete.
    Accepted,
    /// Sent and rejected by the server (for example, it restarted and lost its session
    /// tickets): it saw none of it, so the Hello and the replay-safe calls in it were sent
    /// again once the handshake completed.
    Rejected,
}

/// A new connection's negotiation, in its own task: it waits for the server's verdict on
/// early data (sending the Hello again if it was rejected), then for the answer to the
/// Hello, then reads the control stream.
struct Negotiate {
    inner: Weak<Inner>,
    reader: FrameReader,
    hello: Bytes,
    limits: Limits,
    handshake: watch::Sender<EarlyData>,
}

impl Negotiate {
    async fn run(
        mut self,
        early: Option<quinn::ZeroRttAccepted>,
        answer_to: oneshot::Sender<Result<Agreed, CallError>>,
    ) {
        if let Some(accepted) = early
            && let Err(error) = self.settle_early_data(accepted).await
        {
            if let Some(inner) = self.inner.upgrade() {
                inner
                    .connection
                    .close(codes::CLOSE_NO_ERROR, b"the TLS handshake failed");
            }
            let _ = answer_to.send(Err(error));
            return;
        }
        let answer = tokio::time::timeout(self.limits.hello_timeout, read_answer(&mut self.reader))
            .await
            .unwrap_or_else(|_| Err(hello_timed_out()));
        let Some(inner) = self.inner.upgrade() else {
            let _ = answer_to.send(answer);
            return;
        };
        match answer {
            Ok(agreed) => {
                let _ = inner.agreed.set(agreed);
                drop(inner);
                let _ = answer_to.send(Ok(agreed));
                control_loop(self.inner, self.reader).await;
            }
            Err(error) => {
                // A refusing server closes the connection itself; any other failure
                // leaves a session that can never be agreed.
                inner
                    .connection
                    .close(codes::CLOSE_PROTOCOL_VIOLATION, b"no session agreed");
                let _ = answer_to.send(Err(error));
            }
        }
    }

    /// Waits for the handshake of a connection that sent early data. If the server
    /// rejected it, the Hello is sent again on a new control stream before any held call
    /// may open its stream, so the control stream is still the first one the server sees.
    async fn settle_early_data(
        &mut self,
        accepted: quinn::ZeroRttAccepted,
    ) -> Result<(), CallError> {
        let accepted = tokio::time::timeout(self.limits.handshake_timeout, accepted)
            .await
            .map_err(|_| CallError::Unavailable("the TLS handshake timed out".into()))?;
        let inner = self
            .inner
            .upgrade()
            .ok_or_else(|| CallError::Unavailable("the connection was dropped".into()))?;
        if let Some(reason) = inner.connection.close_reason() {
            return Err(CallError::Unavailable(format!("TLS handshake: {reason}")));
        }
        if accepted {
            let _ = self.handshake.send(EarlyData::Accepted);
            return Ok(());
        }
        tracing::debug!("the server rejected early data; sending the Hello again");
        let (send, reader) = tokio::time::timeout(
            self.limits.hello_timeout,
            send_hello(
                &inner.connection,
                self.hello.clone(),
                self.limits.max_frame_length,
            ),
        )
        .await
        .map_err(|_| hello_timed_out())??;
        *inner.control.lock().await = send;
        self.reader = reader;
        let _ = self.handshake.send(EarlyData::Rejected);
        Ok(())
    }
}

/// Reads the server's answer to the Hello.
async fn read_answer(reader: &mut FrameReader) -> Result<Agreed, CallError> {
    let frame = reader.next().await.map_err(read_error)?.ok_or_else(|| {
        CallError::Unavailable(
            "the server closed the control stream without answering the Hello".into(),
        )
    })?;
    agreed_from_frame(frame)
}

fn hello_timed_out() -> CallError {
    CallError::Unavailable("the server did not answer the Hello in time".into())
}

/// The limits a pipelining client holds its calls to until the server's answer arrives:
/// frames up to the first-frame limit, the default limit of a Hello (`docs/protocol.md`
/// §13).
const BEFORE_NEGOTIATED: Agreed = Agreed {
    version: PROTOCOL_VERSION,
    max_frame_length: taskwire_codec::DEFAULT_MAX_FIRST_FRAME_LENGTH,
    max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
};

/// The server's answer to a pipelined connection's Hello (see
/// [`QuicClient::connect_pipelined`]): the agreed limits, or the refusal.
#[derive(Debug)]
pub struct Negotiation {
    answer: oneshot::Receiver<Result<Agreed, CallError>>,
}

impl Future for Negotiation {
    type Output = Result<Agreed, CallError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.answer).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(CallError::Unavailable(
                    "the connection ended before the server answered the Hello".into(),
                ))
            })
        })
    }
}

struct Inner {
    connection: quinn::Connection,
    /// Calls that are not replay-safe wait for the handshake; see [`EarlyData`].
    handshake: watch::Receiver<EarlyData>,
    /// Set once the server's Negotiated arrives; before that (a pipelined connection),
    /// calls are held to [`BEFORE_NEGOTIATED`].
    agreed: OnceLock<Agreed>,
    next_request_id: AtomicU64,
    going_away: AtomicBool,
    /// The client's own frame limit, announced in its Hello, bounds what it reads.
    response_limit: u32,
    control: tokio::sync::Mutex<SendStream>,
    pongs: Mutex<Vec<(u64, oneshot::Sender<()>)>>,
}

impl Inner {
    fn agreed(&self) -> Agreed {
        self.agreed.get().copied().unwrap_or(BEFORE_NEGOTIATED)
    }

    /// Whether what is sent now travels as early data.
    fn in_early_data(&self) -> bool {
        *self.handshake.borrow() == EarlyData::Pending
    }

    /// Waits for the handshake if early data is being sent; at once otherwise.
    async fn handshake_settled(&self) {
        if self.in_early_data() {
            self.early_data_rejected().await;
        }
    }

    /// Waits until the handshake is over (or the connection has failed, which the next
    /// use of it reports), and says whether the server rejected the early data.
    async fn early_data_rejected(&self) -> bool {
        let mut handshake = self.handshake.clone();
        handshake
            .wait_for(|state| *state != EarlyData::Pending)
            .await
            .is_ok_and(|state| *state == EarlyData::Rejected)
    }
}

/// The last [`Connection`] handle and the last call stream are gone: the connection
/// closes, as a quinn connection does when its last handle drops. Without this the
/// control stream, which the control loop holds open, would keep it alive until the
/// server's idle timeout, or forever with keep-alives.
impl Drop for Inner {
    fn drop(&mut self) {
        self.connection
            .close(codes::CLOSE_NO_ERROR, b"dropped by the client");
    }
}

/// Reads GoAway and Pong frames from the server. It holds the connection weakly, so it
/// does not keep it open; it ends when the connection closes.
async fn control_loop(inner: Weak<Inner>, mut reader: FrameReader) {
    while let Ok(Some(frame)) = reader.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if frame.type_id == GoAway::TYPE_ID {
            inner.going_away.store(true, Ordering::Release);
            if let Ok(go_away) = GoAway::decode(frame.body) {
                tracing::info!(
                    reason = go_away.reason,
                    last = go_away.last_accepted_request_id,
                    "server sent GoAway"
                );
            }
        } else if frame.type_id == Pong::TYPE_ID
            && let Ok(pong) = Pong::decode(frame.body)
        {
            let mut pongs = inner.pongs.lock().expect("pongs lock");
            if let Some(index) = pongs.iter().position(|(nonce, _)| *nonce == pong.nonce) {
                let _ = pongs.swap_remove(index).1.send(());
            }
        }
    }
}

/// A negotiated connection. Cheap to clone; calls on clones share it. It closes when the
/// last handle and the last call stream are dropped, or at [`Connection::close`].
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.inner.connection.remote_address())
            .field("agreed", &self.inner.agreed.get())
            .finish()
    }
}

/// Resets both halves of a call's stream with `CANCELLED` unless the call completed, so
/// that dropping a call's future tells the server, whose handler's token then fires.
struct CallStream {
    send: SendStream,
    reader: FrameReader,
    /// The buffers of the frame being written, kept between writes for their capacity.
    chunks: Vec<Bytes>,
    done: bool,
    /// Keeps the connection open while the call is in use, even after every
    /// [`Connection`] handle is dropped.
    _connection: Arc<Inner>,
}

impl CallStream {
    fn recv(&mut self) -> &mut RecvStream {
        self.reader.stream_mut()
    }

    /// A write its deadline interrupted may have cut a frame short, and nothing may follow
    /// a cut frame (`docs/protocol.md` §13): resets the sending side, so that neither a
    /// later item nor `finish` writes after it.
    fn reset_if_cut<T>(&mut self, written: &Result<T, CallError>) {
        if matches!(written, Err(CallError::DeadlineExceeded(_))) {
            let _ = self.send.reset(codes::RESET_CANCELLED);
        }
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.send.reset(codes::RESET_CANCELLED);
            let _ = self.recv().stop(codes::RESET_CANCELLED);
        }
    }
}

/// Whether the server answered a call `UNAVAILABLE`: for a call sent as early data, the
/// answer of a server that does not hold it replay-safe (`docs/protocol.md` §13).
fn refused_as_early_data(error: &CallError) -> bool {
    matches!(error, CallError::Status(status) if status.code() == taskwire_rpc::StatusCode::Unavailable)
}

fn unavailable(error: impl std::fmt::Display) -> CallError {
    CallError::Unavailable(error.to_string())
}

/// How long [`Connection::ping`] waits for its Pong.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

impl Connection {
    /// The limits negotiated for this connection; on a pipelined connection whose
    /// Negotiated has not arrived yet, the limits its calls are held to until then (see
    /// [`QuicClient::connect_pipelined`]).
    pub fn agreed(&self) -> Agreed {
        self.inner.agreed()
    }

    /// What became of the connection's early data, so far.
    pub fn early_data(&self) -> EarlyData {
        *self.inner.handshake.borrow()
    }

    /// Whether new calls can be made: the connection is open and the server has not
    /// sent GoAway.
    pub fn is_usable(&self) -> bool {
        self.inner.connection.close_reason().is_none()
            && !self.inner.going_away.load(Ordering::Acquire)
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.inner.connection.close_reason()
    }

    /// quinn's statistics for this connection.
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.inner.connection.stats()
    }

    /// The server's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.connection.remote_address()
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.inner
            .connection
            .close(codes::CLOSE_NO_ERROR, b"closed by the client");
    }

    /// Measures a round trip on the control stream.
    pub async fn ping(&self) -> Result<Duration, CallError> {
        let nonce = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pongs = self.inner.pongs.lock().expect("pongs lock");
            // Pings that timed out, failed or were dropped left their senders behind.
            pongs.retain(|(_, waiting)| !waiting.is_closed());
            pongs.push((nonce, tx));
        }
        let mut bytes = BytesMut::new();
        encode(
            &Frame::new(SessionMessage::from(Ping {
                nonce,
                sent_at: None,
            })),
            u32::MAX,
            &mut bytes,
        )?;
        // The control stream's early data is lost if the server rejects it.
        self.inner.handshake_settled().await;
        let started = Instant::now();
        self.inner
            .control
            .lock()
            .await
            .write_all(&bytes)
            .await
            .map_err(unavailable)?;
        tokio::time::timeout(PING_TIMEOUT, rx)
            .await
            .map_err(|_| CallError::Unavailable("no Pong".into()))?
            .map_err(|_| CallError::Unavailable("the connection closed".into()))?;
        Ok(started.elapsed())
    }

    fn check_usable(&self) -> Result<(), CallError> {
        if let Some(reason) = self.inner.connection.close_reason() {
            return Err(CallError::Unavailable(format!(
                "the connection is closed: {reason}"
            )));
        }
        if self.inner.going_away.load(Ordering::Acquire) {
            return Err(CallError::Unavailable(
                "the server is going away; reconnect".into(),
            ));
        }
        Ok(())
    }

    /// Opens a call's stream and writes its opening frames; `end` marks the request as
    /// the last frame the client sends. Waits for the handshake first: only unary calls
    /// that are replay-safe travel as early data (see [`unary`](Self::unary)).
    async fn open<M: MessageSet>(
        &self,
        first: M,
        options: &CallOptions,
        end: bool,
    ) -> Result<CallStream, CallError> {
        let chunks = self.encode_call(first, options, end)?;
        self.inner.handshake_settled().await;
        self.open_encoded(chunks, end).await
    }

    /// A call's opening frames: its header, if it has options, and its first message.
    fn encode_call<M: MessageSet>(
        &self,
        first: M,
        options: &CallOptions,
        end: bool,
    ) -> Result<Vec<Bytes>, CallError> {
        let max = self.inner.agreed().max_frame_length;
        let request_id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut chunks = Vec::new();
        if options.has_header() {
            encode_chunks(
                &Frame::new(SessionMessage::from(options.to_header(request_id))),
                max,
                &mut chunks,
            )?;
        }
        let frame = if end {
            Frame::new(first).end_stream()
        } else {
            Frame::new(first)
        };
        encode_chunks(&frame, max, &mut chunks)?;
        Ok(chunks)
    }

    /// Opens a call's stream and writes the encoded opening frames.
    async fn open_encoded(
        &self,
        mut chunks: Vec<Bytes>,
        end: bool,
    ) -> Result<CallStream, CallError> {
        self.check_usable()?;
        let (mut send, recv) = self.inner.connection.open_bi().await.map_err(unavailable)?;
        write_chunks(&mut send, &mut chunks, end).await?;
        chunks.clear();
        Ok(CallStream {
            send,
            reader: FrameReader::new(recv, self.inner.response_limit, false),
            chunks,
            done: false,
            _connection: Arc::clone(&self.inner),
        })
    }

    /// A unary call.
    pub async fn call<R>(&self, request: R) -> Result<R::Response, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        self.call_with(request, CallOptions::default()).await
    }

    /// A unary call with options (deadline, trace context, idempotency key).
    pub async fn call_with<R>(
        &self,
        request: R,
        options: CallOptions,
    ) -> Result<R::Response, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        self.unary(request, options, R::REPLAY_SAFE).await
    }

    /// A unary call whose types are known only at run time, such as a request parsed
    /// from JSON into an [`AnyMessage`](taskwire_proto::registry::AnyMessage): the answer
    /// is decoded as a message of the same set.
    ///
    /// ```no_run
    /// # async fn run(connection: taskwire_quic::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// use taskwire_proto::MessageSet;
    /// use taskwire_proto::registry::AnyMessage;
    /// use taskwire_rpc::CallOptions;
    ///
    /// let type_id = AnyMessage::type_id_of("taskwire.management.v1.HealthRequest").unwrap();
    /// let request = AnyMessage::deserialize_json_body(type_id, &mut serde_json::Deserializer::from_str("{}"))?;
    /// let answer: AnyMessage = connection.call_message(request, CallOptions::default()).await?;
    /// println!("{}", answer.name());
    /// # Ok(()) }
    /// ```
    pub async fn call_message<M: MessageSet>(
        &self,
        request: M,
        options: CallOptions,
    ) -> Result<M, CallError> {
        let replay_safe = taskwire_proto::registry::rpc_by_request(request.type_id())
            .is_some_and(|rpc| rpc.replay_safe);
        self.unary(request, options, replay_safe).await
    }

    /// A unary call. On a resumed connection whose handshake is still under way, a
    /// `replay_safe` call goes out at once as early data; if the server then rejects the
    /// early data (it never saw the call), or answers it `UNAVAILABLE` (as a server that
    /// does not hold it replay-safe does, without running it), it is sent again after the
    /// handshake. Any other call waits for the handshake.
    async fn unary<Q: MessageSet, A: MessageSet>(
        &self,
        request: Q,
        options: CallOptions,
        replay_safe: bool,
    ) -> Result<A, CallError> {
        let call = async {
            let chunks = self.encode_call(request, &options, true)?;
            let early = replay_safe && self.inner.in_early_data();
            if !early {
                self.inner.handshake_settled().await;
            }
            let answered = self.answer(chunks.clone()).await;
            match answered {
                Err(error) if early => {
                    // Lost with rejected early data, or refused by a server that does not
                    // hold the call replay-safe: it did not run; again after the handshake.
                    let rejected = self.inner.early_data_rejected().await;
                    if rejected || refused_as_early_data(&error) {
                        self.answer(chunks).await
                    } else {
                        Err(error)
                    }
                }
                answered => answered,
            }
        };
        with_timeout(options.get_timeout(), call).await
    }

    /// Sends a unary call's encoded request and reads its answer.
    async fn answer<A: MessageSet>(&self, chunks: Vec<Bytes>) -> Result<A, CallError> {
        let mut stream = self.open_encoded(chunks, true).await?;
        let frame = stream
            .reader
            .next()
            .await
            .map_err(read_error)?
            .ok_or_else(|| CallError::Unavailable("the stream ended without an answer".into()))?;
        stream.done = true;
        decode_answer::<A>(frame)
    }

    /// A one-way call: sent, and not answered.
    pub async fn send_event<R: Rpc>(&self, request: R) -> Result<(), CallError> {
        self.send_message(request).await
    }

    /// A one-way call whose type is known only at run time (see
    /// [`call_message`](Self::call_message)).
    pub async fn send_message<M: MessageSet>(&self, request: M) -> Result<(), CallError> {
        let mut stream = self.open(request, &CallOptions::default(), true).await?;
        stream.done = true;
        let _ = stream.recv().stop(codes::CLOSE_NO_ERROR);
        Ok(())
    }

    /// A server-streaming call: the items arrive on the returned stream.
    pub async fn server_stream<R>(
        &self,
        request: R,
        options: CallOptions,
    ) -> Result<ResponseStream<R::Response>, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        self.open_server_stream(request, options).await
    }

    /// A server-streaming call whose types are known only at run time (see
    /// [`call_message`](Self::call_message)): items are decoded as messages of the set.
    pub async fn server_stream_messages<M: MessageSet>(
        &self,
        request: M,
        options: CallOptions,
    ) -> Result<ResponseStream<M>, CallError> {
        self.open_server_stream(request, options).await
    }

    async fn open_server_stream<Q: MessageSet, A: MessageSet>(
        &self,
        request: Q,
        options: CallOptions,
    ) -> Result<ResponseStream<A>, CallError> {
        let deadline = options.get_timeout().map(|t| Instant::now() + t);
        let stream = self.open(request, &options, true).await?;
        Ok(ResponseStream {
            stream,
            deadline,
            finished: false,
            _items: std::marker::PhantomData,
        })
    }

    /// A client-streaming call opening with `first`: send more items, then
    /// [`finish`](ClientStream::finish) for the answer.
    pub async fn client_stream<R>(
        &self,
        first: R,
        options: CallOptions,
    ) -> Result<ClientStream<R>, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        let deadline = options.get_timeout().map(|t| Instant::now() + t);
        let stream = self.open(first, &options, false).await?;
        Ok(ClientStream {
            stream,
            deadline,
            max: self.inner.agreed().max_frame_length,
            early_answer: None,
            _items: std::marker::PhantomData,
        })
    }

    /// A bidirectional stream opening with `first`, carrying messages of the set `M` both
    /// ways.
    pub async fn bidi<M: MessageSet>(
        &self,
        first: M,
        options: CallOptions,
    ) -> Result<BidiStream<M>, CallError> {
        let deadline = options.get_timeout().map(|t| Instant::now() + t);
        let stream = self.open(first, &options, false).await?;
        Ok(BidiStream {
            stream,
            deadline,
            max: self.inner.agreed().max_frame_length,
            finished: false,
            _items: std::marker::PhantomData,
        })
    }
}

async fn with_timeout<T>(
    timeout: Option<Duration>,
    call: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| CallError::DeadlineExceeded(timeout))?,
        None => call.await,
    }
}

async fn until<T>(
    deadline: Option<Instant>,
    future: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future)
            .await
            .map_err(|_| {
                CallError::DeadlineExceeded(deadline.saturating_duration_since(Instant::now()))
            })?,
        None => future.await,
    }
}

/// Items of a server-streaming call. Dropping it cancels the call.
pub struct ResponseStream<T> {
    stream: CallStream,
    deadline: Option<Instant>,
    finished: bool,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ResponseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("finished", &self.finished)
            .finish()
    }
}

impl<T: MessageSet> ResponseStream<T> {
    /// The next item; `Ok(None)` when the server ended the stream successfully.
    pub async fn message(&mut self) -> Result<Option<T>, CallError> {
        if self.finished {
            return Ok(None);
        }
        let next = until(self.deadline, async {
            self.stream.reader.next().await.map_err(read_error)
        })
        .await;
        match next {
            Ok(None) => {
                self.finished = true;
                self.stream.done = true;
                Ok(None)
            }
            Ok(Some(frame)) => {
                if frame.flags.is_end_stream() || frame.flags.is_status() {
                    self.finished = true;
                    self.stream.done = true;
                }
                // A stream ends with a status frame, OK on success (`docs/protocol.md`
                // §7); a server of an earlier draft ended it with the FIN alone.
                if frame.flags.is_status() {
                    return decode_status(frame)?
                        .map_or(Ok(None), |status| Err(CallError::Status(status)));
                }
                decode_answer::<T>(frame).map(Some).inspect_err(|_| {
                    self.finished = true;
                    self.stream.done = true;
                })
            }
            Err(error) => {
                self.finished = true;
                Err(error)
            }
        }
    }
}

/// The sending side of a client-streaming call. Dropping it unfinished cancels the call.
pub struct ClientStream<R> {
    stream: CallStream,
    deadline: Option<Instant>,
    max: u32,
    /// A successful answer that came before the upload ended, kept for `finish`.
    early_answer: Option<RawFrame>,
    _items: std::marker::PhantomData<fn(R)>,
}

impl<R> std::fmt::Debug for ClientStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream").finish()
    }
}

impl<R> ClientStream<R>
where
    R: Rpc,
    R::Response: WireMessage,
{
    /// Sends one more item, waiting while the server reads slower than the client sends
    /// (QUIC flow control). Fails with the server's status if it already answered with a
    /// failure. If it already answered with success (it stopped reading early), the item is
    /// not sent and [`finish`](Self::finish) returns that answer.
    pub async fn send(&mut self, item: R) -> Result<(), CallError> {
        if self.early_answer.is_some() {
            return Ok(());
        }
        encode_chunks(&Frame::new(item), self.max, &mut self.stream.chunks)?;
        let written = until(self.deadline, async {
            self.stream
                .send
                .write_all_chunks(&mut self.stream.chunks)
                .await
                .map_err(unavailable)
        })
        .await;
        self.stream.chunks.clear();
        self.stream.reset_if_cut(&written);
        if written.is_err() {
            // The server may have answered early (a refused upload): its status is the
            // better error.
            if let Ok(Ok(Some(frame))) =
                tokio::time::timeout(Duration::from_millis(500), self.stream.reader.next()).await
            {
                self.stream.done = true;
                decode_answer::<R::Response>(frame.clone())?;
                self.early_answer = Some(frame);
                return Ok(());
            }
        }
        written
    }

    /// Ends the stream and waits for the answer.
    pub async fn finish(mut self) -> Result<R::Response, CallError> {
        if let Some(frame) = self.early_answer.take() {
            return decode_answer::<R::Response>(frame);
        }
        let _ = self.stream.send.finish();
        let frame = until(self.deadline, async {
            self.stream.reader.next().await.map_err(read_error)
        })
        .await?
        .ok_or_else(|| CallError::Unavailable("the stream ended without an answer".into()))?;
        self.stream.done = true;
        decode_answer::<R::Response>(frame)
    }
}

/// Both sides of a bidirectional stream. Dropping it unfinished cancels the call.
pub struct BidiStream<M> {
    stream: CallStream,
    deadline: Option<Instant>,
    max: u32,
    finished: bool,
    _items: std::marker::PhantomData<fn(M) -> M>,
}

impl<M> std::fmt::Debug for BidiStream<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BidiStream")
            .field("finished", &self.finished)
            .finish()
    }
}

impl<M: MessageSet> BidiStream<M> {
    /// Sends a message; `end` marks it as the client's last.
    pub async fn send(&mut self, message: impl Into<M>, end: bool) -> Result<(), CallError> {
        let frame = if end {
            Frame::new(message.into()).end_stream()
        } else {
            Frame::new(message.into())
        };
        encode_chunks(&frame, self.max, &mut self.stream.chunks)?;
        let written = until(self.deadline, async {
            write_chunks(&mut self.stream.send, &mut self.stream.chunks, end).await
        })
        .await;
        self.stream.chunks.clear();
        self.stream.reset_if_cut(&written);
        written
    }

    /// The next message from the server; `Ok(None)` when it ended the stream. A status
    /// frame ends the stream with [`CallError::Status`].
    pub async fn message(&mut self) -> Result<Option<M>, CallError> {
        if self.finished {
            return Ok(None);
        }
        let next = until(self.deadline, async {
            self.stream.reader.next().await.map_err(read_error)
        })
        .await;
        match next? {
            None => {
                self.finished = true;
                self.stream.done = true;
                Ok(None)
            }
            Some(frame) if frame.type_id == StatusMessage::TYPE_ID => {
                self.finished = true;
                self.stream.done = true;
                match decode_status(frame)? {
                    Some(status) => Err(CallError::Status(status)),
                    None => Ok(None),
                }
            }
            Some(frame) => {
                if frame.flags.is_end_stream() {
                    self.finished = true;
                    self.stream.done = true;
                }
                Ok(Some(frame.decode::<M>()?.message))
            }
        }
    }
}

/// `send_request(&connection, request)`: a unary call whose response type is known from
/// the request's type at compile time.
///
/// ```no_run
/// # async fn run(connection: taskwire_quic::Connection) -> Result<(), taskwire_rpc::CallError> {
/// use taskwire_proto::instance::v1::{RegisterInstanceRequest, RegisterInstanceResponse};
///
/// let request = RegisterInstanceRequest { instance_id: "order-7".into(), ..Default::default() };
/// let response: RegisterInstanceResponse = taskwire_quic::send_request(&connection, request).await?;
/// # Ok(()) }
/// ```
pub async fn send_request<R>(connection: &Connection, request: R) -> Result<R::Response, CallError>
where
    R: Rpc,
    R::Response: WireMessage,
{
    connection.call(request).await
}
