//! One TCP connection on the server: the handshake, then a loop that hands each event to
//! a method of [`Connection`]: a control frame on stream 0, a frame of a call, a frame the
//! codec refused, and the server's shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prost::Message as _;
use taskwire_codec::tokio_util::codec::Encoder as _;
use taskwire_codec::{Builder, CodecError, Frame, RawFrame, RefusedFrame};
use taskwire_proto::WireMessage;
use taskwire_proto::session::v1::go_away::GoAwayReason;
use taskwire_proto::session::v1::refused::RefusalReason;
use taskwire_proto::session::v1::{
    CallHeader, CancelCall, Codec, GoAway, Hello, Negotiated, Ping, Pong,
};
use taskwire_rpc::session::refusal;
use taskwire_rpc::{CallContext, Dispatch, PeerInfo, Router, Status, Undelivered};
use taskwire_tls::PeerIdentity;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc};

use crate::TcpLimits;
use crate::call::{self, Calls, Entry};
use crate::server::Shared;
use crate::wire::{WireCodec, status_frame, write_frames};

/// Serves one connection over any byte stream until it ends: `Ok` for a clean close by
/// the peer or a finished drain, otherwise why it was closed.
pub(crate) async fn serve<S>(
    stream: S,
    address: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    shared: Arc<Shared>,
    router: Arc<Router>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let agreed = match handshake(&mut reader, &mut writer, &mut buffer, &shared, address).await {
        Ok(agreed) => agreed,
        Err(failure) => return Err(failure.close(writer, &shared).await),
    };
    shared
        .stats
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    let Agreed {
        mut wire,
        hello,
        negotiated,
    } = agreed;
    let codec = wire.codec();
    let client_max = match hello.max_frame_length {
        0 => taskwire_codec::DEFAULT_MAX_FRAME_LENGTH,
        announced => announced,
    };
    let peer = Arc::new(PeerInfo {
        address: Some(address),
        identity,
        name: hello.peer_name,
        version: hello.peer_version,
        claimed_tenant: hello.tenant,
        conversations: Some(negotiated.conversations().collect()),
    });

    // One writer owns the socket's sending half; calls hand it frames. Answers use the
    // client's framing and respect the frame limit it announced.
    let (out, out_rx) = mpsc::channel::<RawFrame>(256);
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

    let mut connection = Connection {
        limits: shared.limits,
        shared,
        router,
        peer,
        out,
        calls: Arc::new(Mutex::new(HashMap::new())),
        headers: HashMap::new(),
        call_ended: Arc::new(Notify::new()),
        drain_until: None,
        last_accepted: 0,
    };
    let result = match connection.run(&mut reader, &mut wire, &mut buffer).await {
        Ok(ended) => ended,
        Err(close) => connection.close_for_cause(close),
    };
    connection.finish(writer_task).await;
    result
}

/// What the handshake agreed on.
struct Agreed {
    /// The reader's codec, in the client's framing, its limit raised past the Hello's.
    wire: WireCodec,
    hello: Hello,
    negotiated: Negotiated,
}

/// Why a connection ended before it was negotiated.
struct Failure {
    reason: String,
    /// The framing the client chose, if it was known, so that a GoAway can say why.
    framing: Option<Codec>,
    /// Bad input or a late Hello, as opposed to a refusal or a peer that went away.
    for_cause: bool,
}

impl Failure {
    fn gone(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            framing: None,
            for_cause: false,
        }
    }

    fn bad(reason: impl Into<String>, framing: Option<Codec>) -> Failure {
        Failure {
            reason: reason.into(),
            framing,
            for_cause: true,
        }
    }

    /// Counts the failure, tells the peer why with a GoAway where the framing is known
    /// (`docs/protocol.md` §9), and closes the sending half.
    async fn close<S: AsyncWrite>(self, mut writer: WriteHalf<S>, shared: &Shared) -> String {
        if self.for_cause {
            shared
                .stats
                .connections_closed_for_cause
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(framing) = self.framing {
            let mut codec = WireCodec::new(framing, *Builder::new().first_frame_done(true));
            let mut bytes = BytesMut::new();
            let go_away = RawFrame::encode(&Frame::new(protocol_error(&self.reason)));
            if codec.encode(&go_away, &mut bytes).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = writer.write_all(&bytes).await;
                    let _ = writer.flush().await;
                })
                .await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
        self.reason
    }
}

/// The GoAway a server sends before it closes a connection for bad input.
fn protocol_error(reason: &str) -> GoAway {
    GoAway {
        reason: GoAwayReason::ProtocolError as i32,
        message: reason.to_owned(),
        ..Default::default()
    }
}

/// The first byte says the framing; then one Hello on stream 0 within the deadline and
/// the first-frame limit, answered with Negotiated or Refused in the same framing.
async fn handshake<S>(
    reader: &mut ReadHalf<S>,
    writer: &mut WriteHalf<S>,
    buffer: &mut BytesMut,
    shared: &Shared,
    address: SocketAddr,
) -> Result<Agreed, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = shared.limits;
    let deadline = Instant::now() + limits.hello_timeout;
    let mut framing = None;
    let read = tokio::time::timeout_at(deadline.into(), async {
        while buffer.is_empty() {
            match reader.read_buf(buffer).await {
                Ok(0) => return Err(Failure::gone("the peer closed before its Hello")),
                Ok(_) => {}
                Err(e) => return Err(Failure::gone(e.to_string())),
            }
        }
        let codec = match buffer[0] {
            1 => Codec::Protobuf,
            0 => Codec::Json,
            other => {
                return Err(Failure::bad(
                    format!("first byte {other:#04x} is neither framing"),
                    None,
                ));
            }
        };
        framing = Some(codec);
        let mut builder = Builder::new();
        builder
            .max_first_frame_length(limits.max_hello_length)
            .max_frame_length(limits.max_frame_length);
        let mut wire = WireCodec::new(codec, builder);
        match taskwire_codec::io::read_frame(reader, &mut wire, buffer).await {
            Ok(Some(frame)) => Ok((frame, wire)),
            Ok(None) => Err(Failure::gone("the peer closed before its Hello")),
            Err(CodecError::Io(e)) => Err(Failure::gone(e.to_string())),
            Err(e) => Err(Failure::bad(format!("bad Hello frame: {e}"), Some(codec))),
        }
    })
    .await;
    let (first, mut wire) = match read {
        Err(_) => return Err(Failure::bad("no Hello before the deadline", framing)),
        Ok(result) => result?,
    };
    let codec = wire.codec();
    if first.type_id != Hello::TYPE_ID || first.stream_id != 0 {
        return Err(Failure::bad(
            format!(
                "the first frame must be a Hello on stream 0, not type {:#06x} on stream {}",
                first.type_id, first.stream_id
            ),
            Some(codec),
        ));
    }
    let hello = Hello::decode(first.body)
        .map_err(|e| Failure::bad(format!("undecodable Hello: {e}"), Some(codec)))?;
    let answer = if shared.shutdown.is_cancelled() {
        Err(refusal(
            RefusalReason::ShuttingDown,
            "the server is shutting down",
            Some(Duration::from_secs(1)),
        ))
    } else {
        shared
            .session
            .negotiate(&hello, codec, &format!("t{}", address.port()))
    };
    let reply = match &answer {
        Ok(negotiated) => RawFrame::encode(&Frame::new(negotiated.clone())),
        Err(refused) => RawFrame::encode(&Frame::new(refused.clone()).end_stream()),
    };
    let mut out = BytesMut::new();
    wire.encode(&reply, &mut out)
        .map_err(|e| Failure::gone(e.to_string()))?;
    // Flushed, or TLS may keep the answer in its buffer.
    let written = async {
        writer.write_all(&out).await?;
        writer.flush().await
    };
    written.await.map_err(|e| Failure::gone(e.to_string()))?;
    let negotiated =
        answer.map_err(|refused| Failure::gone(format!("refused: {}", refused.message)))?;
    wire.set_max_frame_length(limits.max_frame_length);
    Ok(Agreed {
        wire,
        hello,
        negotiated,
    })
}

/// A reason to close the connection for bad input.
struct Close(String);

/// A negotiated connection: its calls and where their frames go.
struct Connection {
    shared: Arc<Shared>,
    router: Arc<Router>,
    peer: Arc<PeerInfo>,
    limits: TcpLimits,
    /// The writer's queue.
    out: mpsc::Sender<RawFrame>,
    calls: Calls,
    /// Call headers waiting on their stream for the request.
    headers: HashMap<u32, CallHeader>,
    /// Woken when a call ends, so that a draining connection closes after its last one.
    call_ended: Arc<Notify>,
    /// Set once the server shuts down: the GoAway is sent, calls in flight run on (their
    /// frames are still read) until then, and new calls are refused.
    drain_until: Option<Instant>,
    /// The highest stream id a call was accepted on: what a GoAway reports.
    last_accepted: u32,
}

impl Connection {
    /// Reads frames and hands each to its method until the connection ends.
    async fn run<S: AsyncRead>(
        &mut self,
        reader: &mut ReadHalf<S>,
        wire: &mut WireCodec,
        buffer: &mut BytesMut,
    ) -> Result<Result<(), String>, Close> {
        loop {
            if self.drain_until.is_some() && self.calls.lock().expect("calls lock").is_empty() {
                return Ok(Ok(()));
            }
            let call_ended = Arc::clone(&self.call_ended);
            let read = tokio::select! {
                read = taskwire_codec::io::read_frame(reader, wire, buffer) => read,
                () = self.shared.shutdown.cancelled(), if self.drain_until.is_none() => {
                    self.on_shutdown().await;
                    continue;
                }
                () = call::until(self.drain_until) => return Ok(Ok(())),
                () = call_ended.notified(), if self.drain_until.is_some() => continue,
            };
            match read {
                Ok(Some(frame)) if frame.stream_id == 0 => self.on_control(frame).await?,
                Ok(Some(frame)) => self.on_call_frame(frame).await?,
                Ok(None) => return Ok(Ok(())),
                Err(CodecError::Io(e)) => return Ok(Err(format!("read failed: {e}"))),
                Err(error) => match error.refused_frame() {
                    Some(frame) if frame.stream_id != 0 => self.on_refused(&error, frame).await?,
                    _ => return Err(Close(format!("bad frame: {error}"))),
                },
            }
        }
    }

    /// A frame on stream 0: Ping, CancelCall, and the frames a server ignores there.
    async fn on_control(&mut self, frame: RawFrame) -> Result<(), Close> {
        match frame.type_id {
            id if id == Ping::TYPE_ID => {
                let ping = Ping::decode(frame.body)
                    .map_err(|e| Close(format!("undecodable Ping: {e}")))?;
                let pong = Pong {
                    nonce: ping.nonce,
                    sent_at: ping.sent_at,
                };
                let _ = self.out.send(RawFrame::encode(&Frame::new(pong))).await;
            }
            id if id == CancelCall::TYPE_ID => {
                let cancel = CancelCall::decode(frame.body)
                    .map_err(|e| Close(format!("undecodable CancelCall: {e}")))?;
                let stream = u32::try_from(cancel.request_id).unwrap_or(0);
                // The client sends nothing more on the stream, and a header whose request
                // never came is forgotten. A handler still running keeps the slot until it
                // has stopped: freeing it sooner would let a peer that opens and cancels
                // calls run any number of handlers.
                self.headers.remove(&stream);
                let mut calls = self.calls.lock().expect("calls lock");
                if let Some(entry) = calls.get(&stream) {
                    entry.cancel.cancel();
                }
                call::client_ended(&mut calls, stream);
            }
            id if id == GoAway::TYPE_ID || id == Pong::TYPE_ID => {}
            other => {
                return Err(Close(format!(
                    "type {other:#06x} is not a control frame (a second Hello?)"
                )));
            }
        }
        Ok(())
    }

    /// Hands a frame to the call open on its stream, if there is one: more request items,
    /// or late ones of a call already answered, which are dropped. A status frame ends the
    /// client's side as END_STREAM does. `None` if no call is open on the stream.
    async fn deliver_to_open_call(
        &mut self,
        stream_id: u32,
        frame: Result<RawFrame, Status>,
        end: bool,
    ) -> Option<()> {
        let requests = {
            let mut calls = self.calls.lock().expect("calls lock");
            let entry = calls.get_mut(&stream_id)?;
            let requests = entry.requests.clone();
            if frame.is_err() {
                // A refused item fails the call; later items are dropped.
                entry.requests = None;
            }
            if end {
                call::client_ended(&mut calls, stream_id);
            }
            requests
        };
        let Some(requests) = requests else {
            return Some(());
        };
        match frame {
            Ok(frame) => {
                if let Err(Undelivered::OverBudget(status)) = requests.send(frame).await {
                    // The handler reads the refusal; the call's later items are dropped.
                    tracing::debug!(stream_id, %status, "request frame over the buffer budget");
                    self.stop_delivering(stream_id);
                }
            }
            Err(status) => requests.fail(status).await,
        }
        Some(())
    }

    fn stop_delivering(&self, stream_id: u32) {
        if let Some(entry) = self.calls.lock().expect("calls lock").get_mut(&stream_id) {
            entry.requests = None;
        }
    }

    /// A frame of a call: a call header, the request that starts a call, or a frame of a
    /// call already open.
    async fn on_call_frame(&mut self, frame: RawFrame) -> Result<(), Close> {
        let stream_id = frame.stream_id;
        let end = frame.flags.is_end_stream() || frame.flags.is_status();
        if frame.type_id == CallHeader::TYPE_ID
            && !self
                .calls
                .lock()
                .expect("calls lock")
                .contains_key(&stream_id)
        {
            if self.headers.len() >= self.limits.max_concurrent_calls as usize {
                return Err(Close("too many call headers without requests".into()));
            }
            match CallHeader::decode(frame.body) {
                Ok(header) => {
                    self.headers.insert(stream_id, header);
                }
                Err(e) => {
                    let status = Status::invalid_argument(format!("bad CallHeader: {e}"));
                    self.refuse(stream_id, status, end).await;
                }
            }
            return Ok(());
        }
        let status_frame = frame.flags.is_status();
        if self
            .deliver_to_open_call(stream_id, Ok(frame.clone()), end)
            .await
            .is_some()
        {
            return Ok(());
        }
        if status_frame {
            // A status frame ends a client's side; it never opens a call.
            self.headers.remove(&stream_id);
            return Ok(());
        }
        self.start_call(frame, end).await
    }

    /// A frame the codec refused with its boundary intact: the call it belongs to is
    /// answered with the error (`docs/protocol.md` §9), and the connection goes on.
    async fn on_refused(&mut self, error: &CodecError, frame: RefusedFrame) -> Result<(), Close> {
        let status = call::status_for_refused(error);
        let end = frame.flags.is_end_stream();
        if self
            .deliver_to_open_call(frame.stream_id, Err(status.clone()), end)
            .await
            .is_none()
        {
            self.headers.remove(&frame.stream_id);
            self.refuse(frame.stream_id, status, end).await;
        }
        Ok(())
    }

    /// Answers `stream_id` with `status` without running anything; while the client may
    /// still send on it, its frames are dropped.
    async fn refuse(&mut self, stream_id: u32, status: Status, end: bool) {
        let _ = self.out.send(status_frame(&status, stream_id)).await;
        if !end {
            self.calls
                .lock()
                .expect("calls lock")
                .insert(stream_id, Entry::refused());
        }
    }

    /// Starts the call `first` opens, unless it is refused: the server is draining, or the
    /// connection is at its call limit.
    async fn start_call(&mut self, first: RawFrame, end: bool) -> Result<(), Close> {
        let stream_id = first.stream_id;
        let limit = self.limits.max_concurrent_calls as usize;
        let in_flight = self.calls.lock().expect("calls lock").len();
        let refusal = if self.drain_until.is_some() {
            Some(Status::unavailable("the server is shutting down"))
        } else if in_flight >= limit {
            // Refused streams the client keeps open are remembered too; a client that
            // piles them up past twice its limit ignores the limit it agreed to.
            if in_flight >= 2 * limit {
                return Err(Close(format!(
                    "{in_flight} streams open, twice the limit of {limit}"
                )));
            }
            self.shared
                .stats
                .calls_refused
                .fetch_add(1, Ordering::Relaxed);
            Some(Status::resource_exhausted(format!(
                "{in_flight} calls are in flight on this connection, the limit is {limit}"
            )))
        } else {
            None
        };
        if let Some(status) = refusal {
            self.headers.remove(&stream_id);
            self.refuse(stream_id, status, end).await;
            return Ok(());
        }
        let context = match self.headers.remove(&stream_id) {
            Some(header) => {
                CallContext::from_header(Arc::clone(&self.peer), header, Instant::now())
            }
            None => CallContext::new(Arc::clone(&self.peer)),
        };
        self.shared
            .stats
            .calls_started
            .fetch_add(1, Ordering::Relaxed);
        self.last_accepted = self.last_accepted.max(stream_id);
        let cancel = context.cancel.clone();
        let deadline = context.deadline;
        let dispatch = self.router.dispatch(context, first);
        let requests = match &dispatch {
            Dispatch::ClientStreaming { requests, .. } | Dispatch::Bidi { requests, .. }
                if !end =>
            {
                Some(requests.clone())
            }
            _ => None,
        };
        self.calls.lock().expect("calls lock").insert(
            stream_id,
            Entry {
                cancel: cancel.clone(),
                requests,
                client_open: !end,
                answered: false,
            },
        );
        let (calls, out, call_ended) = (
            Arc::clone(&self.calls),
            self.out.clone(),
            Arc::clone(&self.call_ended),
        );
        self.shared.calls.spawn(async move {
            let last = call::drive(dispatch, stream_id, deadline, cancel, &out).await;
            // The call is marked answered before its last frame goes out: a client that
            // has its answer may start its next call at once, and must find the slot free.
            // The frame is queued before the connection may close, since the queue stays
            // open while this task holds `out`.
            call::server_answered(&calls, stream_id);
            call_ended.notify_one();
            if let Some(frame) = last {
                let _ = out.send(frame).await;
            }
        });
        Ok(())
    }

    /// The server shuts down: a GoAway names the last call accepted, the calls in flight
    /// run on until the drain timeout, and new calls are refused.
    async fn on_shutdown(&mut self) {
        let go_away = GoAway {
            reason: GoAwayReason::Shutdown as i32,
            message: "server shutting down".into(),
            last_accepted_request_id: u64::from(self.last_accepted),
            drain_timeout: Some(taskwire_proto::wkt::Duration::from(
                self.limits.drain_timeout,
            )),
        };
        let _ = self.out.send(RawFrame::encode(&Frame::new(go_away))).await;
        self.drain_until = Some(Instant::now() + self.limits.drain_timeout);
    }

    /// Closing for bad input: counted, and the peer is told why with a GoAway.
    fn close_for_cause(&mut self, close: Close) -> Result<(), String> {
        self.shared
            .stats
            .connections_closed_for_cause
            .fetch_add(1, Ordering::Relaxed);
        let _ = self
            .out
            .try_send(RawFrame::encode(&Frame::new(protocol_error(&close.0))));
        Err(close.0)
    }

    /// The connection is over: every call in flight is cancelled, and the writer gets a
    /// second to deliver what is queued (a peer that stopped reading loses it) before it
    /// and its queue go, rather than outlive the connection's slot.
    async fn finish(self, mut writer_task: tokio::task::JoinHandle<()>) {
        for entry in self.calls.lock().expect("calls lock").values() {
            entry.cancel.cancel();
        }
        drop(self.out);
        if tokio::time::timeout(Duration::from_secs(1), &mut writer_task)
            .await
            .is_err()
        {
            writer_task.abort();
        }
    }
}
