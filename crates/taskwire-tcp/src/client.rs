//! The TCP client: one connection, many calls multiplexed by stream id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use taskwire_codec::tokio_util::codec::Encoder as _;
use taskwire_codec::{Builder, Frame, RawFrame};
use taskwire_proto::session::v1::{CancelCall, Codec, GoAway, Status as StatusMessage};
use taskwire_proto::{MessageSet, Rpc, WireMessage};
use taskwire_rpc::session::{Agreed, ClientSession, agreed_from_frame};
use taskwire_rpc::{CallError, CallOptions, decode_answer, decode_status};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::TcpLimits;
use crate::wire::{WireCodec, status_frame, write_frames};

/// What a TCP client needs.
#[derive(Clone, Debug)]
pub struct TcpClientConfig {
    /// The server's address.
    pub server_addr: SocketAddr,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// TLS; `None` connects in plaintext, allowed only to a loopback address.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The framing: `Codec::Protobuf` (default) or `Codec::Json`.
    pub codec: Codec,
    /// Limits; see [`TcpLimits`].
    pub limits: TcpLimits,
    /// What the client announces in its Hello.
    pub session: ClientSession,
}

impl TcpClientConfig {
    /// A TLS client with binary frames and default limits.
    pub fn new(
        server_addr: SocketAddr,
        server_name: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        TcpClientConfig {
            server_addr,
            server_name: server_name.into(),
            tls: Some(tls),
            codec: Codec::Protobuf,
            limits: TcpLimits::default(),
            session: ClientSession::default(),
        }
    }

    /// A plaintext client to a loopback address.
    ///
    /// [`TcpClient::connect`] refuses plaintext to any other address. See the
    /// [crate example](crate#example) for a server and client.
    ///
    /// ```
    /// use taskwire_tcp::TcpClientConfig;
    ///
    /// let mut config = TcpClientConfig::plaintext_loopback("127.0.0.1:7000".parse().unwrap());
    /// // Without a client certificate, the tenant is only a claim made in the Hello.
    /// config.session.tenant = "acme".into();
    /// assert!(config.tls.is_none());
    /// ```
    pub fn plaintext_loopback(server_addr: SocketAddr) -> Self {
        TcpClientConfig {
            server_addr,
            server_name: String::new(),
            tls: None,
            codec: Codec::Protobuf,
            limits: TcpLimits::default(),
            session: ClientSession::default(),
        }
    }
}

/// Connects TCP clients. Clones share one cached connection (see
/// [`connection`](Self::connection)).
#[derive(Clone, Debug)]
pub struct TcpClient {
    config: TcpClientConfig,
    current: Arc<tokio::sync::Mutex<Option<TcpConnection>>>,
}

struct Inner {
    writer: mpsc::Sender<RawFrame>,
    pending: Mutex<HashMap<u32, mpsc::Sender<RawFrame>>>,
    next_stream: AtomicU32,
    in_flight: Arc<Semaphore>,
    agreed: Agreed,
    closed: AtomicBool,
    going_away: AtomicBool,
}

/// A negotiated TCP connection. Cheap to clone. It closes when the last handle and the
/// last call are dropped.
#[derive(Clone)]
pub struct TcpConnection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TcpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnection")
            .field("agreed", &self.inner.agreed)
            .finish()
    }
}

impl TcpClient {
    /// A client for `config`. Nothing is connected until [`connect`](Self::connect); see
    /// the [crate example](crate#example).
    ///
    /// ```
    /// use taskwire_tcp::{TcpClient, TcpClientConfig};
    ///
    /// let client = TcpClient::new(TcpClientConfig::plaintext_loopback("127.0.0.1:7000".parse().unwrap()));
    /// # drop(client);
    /// ```
    pub fn new(config: TcpClientConfig) -> TcpClient {
        TcpClient {
            config,
            current: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The cached connection if it is still usable, otherwise a new one (one attempt),
    /// which is cached in its place. [`connect`](Self::connect) always makes a new one.
    pub async fn connection(&self) -> Result<TcpConnection, CallError> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref()
            && connection.is_usable()
        {
            return Ok(connection.clone());
        }
        *current = None;
        let connection = self.connect().await?;
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// Connects, negotiates, and starts the connection's reader and writer. Must be
    /// called inside a tokio runtime. See the [crate example](crate#example) for calls.
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use taskwire_rpc::{CallError, Router};
    /// use taskwire_tcp::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
    ///
    /// let config = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse()?);
    /// let server = TcpServer::bind(config).await?.serve(Router::new());
    ///
    /// let client = TcpClient::new(TcpClientConfig::plaintext_loopback(server.local_addr()));
    /// let connection = client.connect().await?;
    /// assert!(connection.is_usable());
    /// assert_eq!(connection.agreed().max_concurrent_calls, 64);
    ///
    /// // Plaintext to an address other than loopback is refused without connecting.
    /// let remote = TcpClient::new(TcpClientConfig::plaintext_loopback("192.0.2.1:7000".parse()?));
    /// assert!(matches!(remote.connect().await, Err(CallError::Unavailable(_))));
    ///
    /// drop(connection);
    /// server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(&self) -> Result<TcpConnection, CallError> {
        let config = &self.config;
        if config.tls.is_none() && !config.server_addr.ip().is_loopback() {
            return Err(CallError::Unavailable(format!(
                "plaintext is allowed only to a loopback address, not {}",
                config.server_addr
            )));
        }
        let unavailable = |e: std::io::Error| {
            CallError::Unavailable(format!("connecting to {}: {e}", config.server_addr))
        };
        let stream = tokio::time::timeout(
            config.limits.handshake_timeout,
            TcpStream::connect(config.server_addr),
        )
        .await
        .map_err(|_| CallError::Unavailable("connecting timed out".into()))?
        .map_err(unavailable)?;
        let _ = stream.set_nodelay(true);
        match &config.tls {
            None => self.negotiate(stream).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(config.server_name.clone())
                    .map_err(|e| {
                        CallError::Unavailable(format!("server name {:?}: {e}", config.server_name))
                    })?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
                let stream = tokio::time::timeout(
                    config.limits.handshake_timeout,
                    connector.connect(name, stream),
                )
                .await
                .map_err(|_| CallError::Unavailable("TLS handshake timed out".into()))?
                .map_err(|e| CallError::Unavailable(format!("TLS handshake: {e}")))?;
                self.negotiate(stream).await
            }
        }
    }

    async fn negotiate<S>(&self, stream: S) -> Result<TcpConnection, CallError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = &self.config;
        let limits = config.limits;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut codec = WireCodec::new(
            config.codec,
            *Builder::new().max_frame_length(limits.max_hello_length),
        );
        let mut bytes = BytesMut::new();
        let hello = config.session.hello(config.codec);
        codec.encode(&RawFrame::encode(&Frame::new(hello)), &mut bytes)?;
        // Flushed, or TLS may keep the Hello in its buffer.
        async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        }
        .await
        .map_err(|e| CallError::Unavailable(e.to_string()))?;
        let mut reader_codec = WireCodec::new(
            config.codec,
            *Builder::new().max_frame_length(config.session.max_frame_length),
        );
        let mut buffer = BytesMut::new();
        let answer = tokio::time::timeout(
            limits.hello_timeout,
            taskwire_codec::io::read_frame(&mut reader, &mut reader_codec, &mut buffer),
        )
        .await
        .map_err(|_| CallError::Unavailable("the server did not answer the Hello in time".into()))?
        .map_err(|error| match error {
            // A server past its connection limit closes unread, and the client's Hello in
            // its receive buffer turns the close into a reset: unavailable, as a close is.
            taskwire_codec::CodecError::Io(e) => {
                CallError::Unavailable(format!("the connection failed during the handshake: {e}"))
            }
            other => CallError::Codec(other),
        })?
        .ok_or_else(|| {
            CallError::Unavailable("the server closed the connection during the handshake".into())
        })?;
        let agreed = agreed_from_frame(answer)?;
        let writer_codec = WireCodec::new(
            config.codec,
            *Builder::new()
                .first_frame_done(true)
                .max_frame_length(agreed.max_frame_length),
        );
        let (tx, rx) = mpsc::channel(256);
        let inner = Arc::new(Inner {
            writer: tx,
            pending: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(1),
            in_flight: Arc::new(Semaphore::new(agreed.max_concurrent_calls as usize)),
            agreed,
            closed: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
        });
        let failed_call = Arc::downgrade(&inner);
        tokio::spawn(write_frames(
            writer,
            writer_codec,
            rx,
            move |frame, error| {
                // A frame under the limit as protobuf can be over it as JSON; its call fails
                // here, where the encoding is known, rather than wait for an answer.
                tracing::warn!(%error, stream = frame.stream_id, "a frame could not be encoded");
                if let Some(inner) = failed_call.upgrade()
                    && let Some(call) = inner
                        .pending
                        .lock()
                        .expect("pending lock")
                        .remove(&frame.stream_id)
                {
                    let status = taskwire_rpc::Status::resource_exhausted(format!(
                        "the request could not be sent: {error}"
                    ));
                    let _ = call.try_send(status_frame(&status, frame.stream_id));
                }
                // The server may hold the call's header or earlier items: it forgets them.
                Some(cancel_frame(
                    frame.stream_id,
                    "the request could not be encoded",
                ))
            },
        ));
        tokio::spawn(read_loop(
            reader,
            reader_codec,
            buffer,
            Arc::downgrade(&inner),
        ));
        Ok(TcpConnection { inner })
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    mut codec: WireCodec,
    mut buffer: BytesMut,
    inner: Weak<Inner>,
) {
    while let Ok(Some(frame)) =
        taskwire_codec::io::read_frame(&mut reader, &mut codec, &mut buffer).await
    {
        // The reader holds the connection weakly: when the last handle and the last call
        // are gone, the writer's channel closes, the writer shuts the stream down and
        // the server closes its side, which ends this loop.
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if frame.stream_id == 0 {
            if frame.type_id == GoAway::TYPE_ID {
                inner.going_away.store(true, Ordering::Release);
            }
            continue;
        }
        let done = frame.flags.is_end_stream();
        let sender = {
            let mut pending = inner.pending.lock().expect("pending lock");
            if done {
                pending.remove(&frame.stream_id)
            } else {
                pending.get(&frame.stream_id).cloned()
            }
        };
        if let Some(sender) = sender {
            let _ = sender.send(frame).await;
        }
    }
    if let Some(inner) = inner.upgrade() {
        inner.closed.store(true, Ordering::Release);
        // Waking every waiting call: their channels close, and they fail with UNAVAILABLE.
        inner.pending.lock().expect("pending lock").clear();
    }
}

/// Queues one message on `stream_id` for the writer, refusing it first if it is over the
/// server's frame limit.
async fn send_message<M: MessageSet>(
    inner: &Inner,
    stream_id: u32,
    message: M,
    end: bool,
) -> Result<(), CallError> {
    let frame = if end {
        Frame::new(message).end_stream()
    } else {
        Frame::new(message)
    };
    let mut frame = RawFrame::encode(&frame);
    frame.stream_id = stream_id;
    check_frame_length(inner, &frame)?;
    inner
        .writer
        .send(frame)
        .await
        .map_err(|_| CallError::Unavailable("the connection is closed".into()))
}

/// The next stream id: 1, 2, 3, … and `None` once they are used up, since ids are never
/// reused on a connection (nor is 0, the control stream's).
fn allocate_stream_id(next: &AtomicU32) -> Option<u32> {
    next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
        .ok()
}

/// Refuses a frame over the server's frame limit before it is queued.
fn check_frame_length(inner: &Inner, frame: &RawFrame) -> Result<(), CallError> {
    if frame.body.len() > inner.agreed.max_frame_length as usize {
        return Err(CallError::Codec(
            taskwire_codec::CodecError::FrameTooLarge {
                len: frame.body.len() as u64,
                max: inner.agreed.max_frame_length,
            },
        ));
    }
    Ok(())
}

/// Sends CancelCall and forgets the stream unless the call completed: the server has
/// answered and the client has ended its side. (A server that answered keeps the stream
/// until the client's side ends, so that late frames are not taken for a new call.)
struct CallGuard {
    inner: Arc<Inner>,
    stream_id: u32,
    done: bool,
    /// The client has not ended its side of the stream yet.
    client_open: bool,
    /// Held until the CancelCall (if any) is queued: the server frees an answered call's
    /// slot at the CancelCall (a running one when its handler stops), and the client must
    /// not reuse it before.
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done || self.client_open {
            self.inner
                .pending
                .lock()
                .expect("pending lock")
                .remove(&self.stream_id);
            let cancel = cancel_frame(self.stream_id, "the caller gave up");
            if let Err(mpsc::error::TrySendError::Full(cancel)) = self.inner.writer.try_send(cancel)
            {
                // The queue is full (an upload beside this call): the CancelCall waits its
                // turn, behind this stream's own frames, and the slot with it. Without it
                // the server would keep the call for the connection's life.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let writer = self.inner.writer.clone();
                    let permit = self.permit.take();
                    runtime.spawn(async move {
                        let _ = writer.send(cancel).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// The CancelCall that ends the client's side of `stream_id` and frees its slot.
fn cancel_frame(stream_id: u32, reason: &str) -> RawFrame {
    RawFrame::encode(&Frame::new(CancelCall {
        request_id: u64::from(stream_id),
        reason: reason.into(),
    }))
}

impl TcpConnection {
    /// The limits negotiated for this connection.
    pub fn agreed(&self) -> Agreed {
        self.inner.agreed
    }

    /// Whether new calls can be made.
    pub fn is_usable(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire) && !self.inner.going_away.load(Ordering::Acquire)
    }

    /// Opens a stream and sends its first frames; the permit bounds calls in flight.
    async fn open<M: MessageSet>(
        &self,
        first: M,
        options: &CallOptions,
        end: bool,
    ) -> Result<(CallGuard, mpsc::Receiver<RawFrame>), CallError> {
        let (guard, rx) = self.open_header_only(options).await?;
        send_message(&self.inner, guard.stream_id, first, end).await?;
        Ok((guard, rx))
    }

    /// A unary call.
    pub async fn call<R>(&self, request: R) -> Result<R::Response, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        self.call_with(request, CallOptions::default()).await
    }

    /// A unary call with options. Dropping the future sends CancelCall, and the server
    /// cancels the handler.
    pub async fn call_with<R>(
        &self,
        request: R,
        options: CallOptions,
    ) -> Result<R::Response, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        self.unary(request, options).await
    }

    /// A unary call whose types are known only at run time, such as a request parsed
    /// from JSON into an [`AnyMessage`](taskwire_proto::registry::AnyMessage): the answer
    /// is decoded as a message of the same set.
    pub async fn call_message<M: MessageSet>(
        &self,
        request: M,
        options: CallOptions,
    ) -> Result<M, CallError> {
        self.unary(request, options).await
    }

    async fn unary<Q: MessageSet, A: MessageSet>(
        &self,
        request: Q,
        options: CallOptions,
    ) -> Result<A, CallError> {
        let timeout = options.get_timeout();
        let call = async {
            let (mut guard, mut rx) = self.open(request, &options, true).await?;
            let frame = rx.recv().await.ok_or_else(|| {
                CallError::Unavailable("the connection closed before the answer".into())
            })?;
            guard.done = true;
            decode_answer::<A>(frame)
        };
        match timeout {
            Some(timeout) => tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| CallError::DeadlineExceeded(timeout))?,
            None => call.await,
        }
    }

    /// A one-way call.
    pub async fn send_event<R: Rpc>(&self, request: R) -> Result<(), CallError> {
        self.send_message(request).await
    }

    /// A one-way call whose type is known only at run time (see
    /// [`call_message`](Self::call_message)).
    pub async fn send_message<M: MessageSet>(&self, request: M) -> Result<(), CallError> {
        let (mut guard, _rx) = self.open(request, &CallOptions::default(), true).await?;
        guard.done = true;
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .remove(&guard.stream_id);
        Ok(())
    }

    /// A server-streaming call: items, then `Ok(None)` at the end.
    pub async fn server_stream<R>(
        &self,
        request: R,
        options: CallOptions,
    ) -> Result<TcpResponseStream<R::Response>, CallError>
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
    ) -> Result<TcpResponseStream<M>, CallError> {
        self.open_server_stream(request, options).await
    }

    async fn open_server_stream<Q: MessageSet, A: MessageSet>(
        &self,
        request: Q,
        options: CallOptions,
    ) -> Result<TcpResponseStream<A>, CallError> {
        let (guard, rx) = self.open(request, &options, true).await?;
        Ok(TcpResponseStream {
            guard,
            rx,
            finished: false,
            _items: std::marker::PhantomData,
        })
    }

    /// A client-streaming call opening with `first`: [`send`](TcpClientStream::send) more
    /// items, then [`finish`](TcpClientStream::finish) for the answer. Each item is its own
    /// frame, so other calls' frames interleave with a long upload.
    pub async fn client_stream<R>(
        &self,
        first: R,
        options: CallOptions,
    ) -> Result<TcpClientStream<R>, CallError>
    where
        R: Rpc,
        R::Response: WireMessage,
    {
        self.streaming(first, options).await
    }

    /// A bidirectional stream opening with `first`, carrying messages of the set `M`.
    pub async fn bidi<M: MessageSet>(
        &self,
        first: M,
        options: CallOptions,
    ) -> Result<TcpClientStream<M>, CallError> {
        self.streaming(first, options).await
    }

    async fn streaming<M: MessageSet>(
        &self,
        first: M,
        options: CallOptions,
    ) -> Result<TcpClientStream<M>, CallError> {
        let timeout = options.get_timeout();
        // The opening frame is held back like every later one (see `send`), so the
        // header goes out now and the first item with the next send or the finish.
        let (mut guard, rx) = self.open_header_only(&options).await?;
        guard.client_open = true;
        Ok(TcpClientStream {
            inner: Arc::clone(&self.inner),
            stream_id: guard.stream_id,
            guard,
            rx,
            held: Some(first),
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        })
    }

    /// Registers a stream and sends its call header, if any, without a request yet.
    async fn open_header_only(
        &self,
        options: &CallOptions,
    ) -> Result<(CallGuard, mpsc::Receiver<RawFrame>), CallError> {
        if !self.is_usable() {
            return Err(CallError::Unavailable(
                "the connection is closed or going away".into(),
            ));
        }
        let permit = Arc::clone(&self.inner.in_flight)
            .try_acquire_owned()
            .map_err(|_| {
                CallError::ResourceExhausted(format!(
                    "{} calls are already in flight on this connection",
                    self.inner.agreed.max_concurrent_calls
                ))
            })?;
        let Some(stream_id) = allocate_stream_id(&self.inner.next_stream) else {
            self.inner.going_away.store(true, Ordering::Release);
            return Err(CallError::Unavailable(
                "this connection has used every stream id; connect again".into(),
            ));
        };
        let (tx, rx) = mpsc::channel(16);
        {
            let mut pending = self.inner.pending.lock().expect("pending lock");
            // Checked under the lock the reader clears the calls with when the connection
            // ends: a call registered after that clear would never be woken.
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(CallError::Unavailable("the connection is closed".into()));
            }
            pending.insert(stream_id, tx);
        }
        let guard = CallGuard {
            inner: Arc::clone(&self.inner),
            stream_id,
            done: false,
            client_open: false,
            permit: Some(permit),
        };
        if options.has_header() {
            let mut header = RawFrame::encode(&Frame::new(options.to_header(u64::from(stream_id))));
            header.stream_id = stream_id;
            self.inner
                .writer
                .send(header)
                .await
                .map_err(|_| CallError::Unavailable("the connection is closed".into()))?;
        }
        Ok((guard, rx))
    }

    /// Waits until the connection's reader has seen the server close, for tests and tools.
    pub async fn closed(&self) {
        while !self.inner.closed.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Items of a server-streaming call over TCP. Dropping it cancels the call.
pub struct TcpResponseStream<T> {
    guard: CallGuard,
    rx: mpsc::Receiver<RawFrame>,
    finished: bool,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TcpResponseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpResponseStream")
            .field("finished", &self.finished)
            .finish()
    }
}

impl<T: MessageSet> TcpResponseStream<T> {
    /// The next item; `Ok(None)` when the server ended the stream successfully.
    pub async fn message(&mut self) -> Result<Option<T>, CallError> {
        if self.finished {
            return Ok(None);
        }
        let Some(frame) = self.rx.recv().await else {
            self.finished = true;
            return Err(CallError::Unavailable(
                "the connection closed mid-stream".into(),
            ));
        };
        if frame.type_id == StatusMessage::TYPE_ID {
            self.finished = true;
            self.guard.done = true;
            return match decode_status(frame)? {
                Some(status) => Err(CallError::Status(status)),
                None => Ok(None),
            };
        }
        decode_answer::<T>(frame).map(Some)
    }
}

/// The sending side (and, for bidirectional calls, the receiving side) of a streaming
/// call over TCP. Dropping it unfinished cancels the call.
pub struct TcpClientStream<M> {
    inner: Arc<Inner>,
    stream_id: u32,
    guard: CallGuard,
    rx: mpsc::Receiver<RawFrame>,
    /// The last item given, sent when the next arrives or with END_STREAM at the finish,
    /// so the final frame carries END_STREAM without an empty frame of its own.
    held: Option<M>,
    deadline: Option<tokio::time::Instant>,
}

impl<M> std::fmt::Debug for TcpClientStream<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClientStream")
            .field("stream_id", &self.stream_id)
            .finish()
    }
}

impl<M: MessageSet> TcpClientStream<M> {
    async fn send_frame(&self, message: M, end: bool) -> Result<(), CallError> {
        send_message(&self.inner, self.stream_id, message, end).await
    }

    /// Whether the server has ended the stream (its answer or closing status has arrived,
    /// or the stream failed here): items sent now would only be dropped.
    fn server_ended(&self) -> bool {
        !self
            .inner
            .pending
            .lock()
            .expect("pending lock")
            .contains_key(&self.stream_id)
    }

    /// Sends one more item (waiting while the connection's send queue is full). After the
    /// server has answered (it may refuse an upload early), items are dropped and the
    /// answer is what [`finish`](TcpClientStream::finish) or [`message`](Self::message)
    /// returns. Fails after [`close_send`](Self::close_send).
    pub async fn send(&mut self, item: impl Into<M>) -> Result<(), CallError> {
        if !self.guard.client_open {
            return Err(CallError::Protocol(
                "the client's side of this stream is already closed".into(),
            ));
        }
        if self.server_ended() {
            self.held = None;
            return Ok(());
        }
        if let Some(previous) = self.held.replace(item.into()) {
            self.send_frame(previous, false).await?;
        }
        Ok(())
    }

    /// Ends the client's side of the stream: END_STREAM on the item held back, or, when
    /// [`message`](Self::message) already sent it, a status frame with code OK (a shared
    /// byte stream has no per-call end; `docs/protocol.md` §14). If the server has already
    /// ended the stream, a CancelCall instead, which frees the call without any frame that
    /// could be taken for a new one. Once only.
    pub async fn close_send(&mut self) -> Result<(), CallError> {
        if !self.guard.client_open {
            return Ok(());
        }
        let last = if self.server_ended() {
            self.held = None;
            cancel_frame(self.stream_id, "the client's side ends")
        } else {
            match self.held.take() {
                Some(item) => {
                    let mut frame = RawFrame::encode(&Frame::new(item).end_stream());
                    frame.stream_id = self.stream_id;
                    check_frame_length(&self.inner, &frame)?;
                    frame
                }
                None => {
                    let ok = taskwire_rpc::Status::new(taskwire_rpc::StatusCode::Ok, "");
                    status_frame(&ok, self.stream_id)
                }
            }
        };
        self.inner
            .writer
            .send(last)
            .await
            .map_err(|_| CallError::Unavailable("the connection is closed".into()))?;
        // Only now: a close that failed leaves the side open, and dropping the stream
        // then sends the CancelCall.
        self.guard.client_open = false;
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<RawFrame, CallError> {
        let next = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| CallError::DeadlineExceeded(Duration::ZERO))?,
            None => self.rx.recv().await,
        };
        let Some(frame) = next else {
            return Err(CallError::Unavailable(
                "the connection closed mid-call".into(),
            ));
        };
        if frame.type_id == StatusMessage::TYPE_ID || frame.flags.is_end_stream() {
            self.guard.done = true;
        }
        Ok(frame)
    }

    /// The next message from the server; `Ok(None)` after its closing OK status, and
    /// [`CallError::Status`] if it ended the stream with a failure.
    ///
    /// An item still held back by [`send`](Self::send) goes out first: the server may be
    /// waiting for it before it answers.
    pub async fn message(&mut self) -> Result<Option<M>, CallError> {
        if let Some(item) = self.held.take()
            && !self.server_ended()
        {
            self.send_frame(item, false).await?;
        }
        let frame = self.next_frame().await?;
        if frame.type_id == StatusMessage::TYPE_ID {
            return match decode_status(frame)? {
                Some(status) => Err(CallError::Status(status)),
                None => Ok(None),
            };
        }
        Ok(Some(frame.decode::<M>()?.message))
    }
}

impl<R> TcpClientStream<R>
where
    R: Rpc,
    R::Response: WireMessage,
{
    /// Ends the stream and waits for the answer.
    pub async fn finish(mut self) -> Result<R::Response, CallError> {
        self.close_send().await?;
        let frame = self.next_frame().await?;
        decode_answer::<R::Response>(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_run_out_instead_of_wrapping_to_the_control_stream() {
        let next = AtomicU32::new(1);
        assert_eq!(allocate_stream_id(&next), Some(1));
        assert_eq!(allocate_stream_id(&next), Some(2));
        let next = AtomicU32::new(u32::MAX - 1);
        assert_eq!(allocate_stream_id(&next), Some(u32::MAX - 1));
        assert_eq!(allocate_stream_id(&next), None);
        assert_eq!(allocate_stream_id(&next), None, "and stays used up");
    }
}
