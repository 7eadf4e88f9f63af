//! The kit's QUIC connection: call 0 is the control stream (the first one opened), call
//! *n* the *n*-th call stream; each stream's frames, end or reset are read by a task of
//! its own.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use taskwire_codec::Builder;
use taskwire_proto::registry::AnyMessage;
use taskwire_quic::relay::{Relay, RelayConfig};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tokio_util::task::TaskTracker;

use super::{Event, Received, Target};

/// `CANCELLED`, the stream code a caller that abandons a call uses (`docs/protocol.md` §13).
const CANCELLED: u32 = 0x10;

/// How long an early-data script's first connection stays open for the session tickets
/// a server sends after its handshake.
const TICKET_WAIT: Duration = Duration::from_millis(200);

/// The delay each way of the relay an early-data script's connection to a loopback server
/// goes through: on loopback the handshake would finish before the kit has sent its first
/// steps, which then would not be early data; over a real network the round trip does it.
const LOOPBACK_EARLY_DATA_DELAY: Duration = Duration::from_millis(25);

pub(crate) struct QuicSession {
    endpoint: Endpoint,
    connection: Connection,
    sends: HashMap<u32, SendStream>,
    events: mpsc::UnboundedReceiver<(u32, Event)>,
    events_tx: mpsc::UnboundedSender<(u32, Event)>,
    /// Events of other calls that arrived while one call was awaited.
    pending: VecDeque<(u32, Event)>,
    /// How the connection ended, once it has.
    closed: Option<(Option<u64>, String)>,
    /// The stream readers. The connection's end is reported only after every reader has
    /// stopped: QUIC still hands out what arrived before the close (a Refused, a GoAway), and
    /// a script must see it before the close it preceded.
    readers: TaskTracker,
    /// The slow path of an early-data script on loopback, kept for the connection's life.
    _relay: Option<Relay>,
}

impl Drop for QuicSession {
    fn drop(&mut self) {
        self.connection
            .close(VarInt::from_u32(0), b"conformance check done");
        self.endpoint.close(VarInt::from_u32(0), b"");
    }
}

impl QuicSession {
    /// A connection to `target`; with `early_data`, one that resumes a session from a
    /// connection made just before and is returned before its handshake completes, so
    /// that what is sent first travels as early data (0-RTT).
    pub(crate) async fn connect(target: &Target, early_data: bool) -> Result<QuicSession, String> {
        let tls = target
            .tls
            .as_ref()
            .ok_or("QUIC needs TLS: give the kit a TLS configuration")?;
        let mut tls = (**tls).clone();
        tls.alpn_protocols = vec![b"taskwire/1".to_vec()];
        tls.enable_early_data = early_data;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| format!("QUIC TLS configuration: {e}"))?;
        let bind: SocketAddr = if target.addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = Endpoint::client(bind).map_err(|e| format!("a UDP socket: {e}"))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connect = |addr: SocketAddr| {
            endpoint
                .connect(addr, &target.server_name)
                .map_err(|e| format!("QUIC connect to {addr}: {e}"))
        };
        let mut relay = None;
        let connection = if early_data {
            // The session to resume: tickets follow the handshake.
            let first = connect(target.addr)?
                .await
                .map_err(|e| format!("QUIC handshake: {e}"))?;
            tokio::time::sleep(TICKET_WAIT).await;
            first.close(VarInt::from_u32(0), b"a ticket for the next connection");
            let mut addr = target.addr;
            if addr.ip().is_loopback() && addr.is_ipv4() {
                let slow = Relay::start(
                    addr,
                    RelayConfig {
                        delay: LOOPBACK_EARLY_DATA_DELAY,
                        ..RelayConfig::default()
                    },
                )
                .await
                .map_err(|e| format!("a relay in front of {addr}: {e}"))?;
                addr = slow.local_addr();
                relay = Some(slow);
            }
            connect(addr)?
                .into_0rtt()
                .map_err(|_| {
                    "the server's session tickets do not allow early data (0-RTT)".to_owned()
                })?
                .0
        } else {
            connect(target.addr)?
                .await
                .map_err(|e| format!("QUIC handshake: {e}"))?
        };
        let (events_tx, events) = mpsc::unbounded_channel();
        let watcher = connection.clone();
        let closed_tx = events_tx.clone();
        let readers = TaskTracker::new();
        let all_read = readers.clone();
        tokio::spawn(async move {
            let ended = watcher.closed().await;
            all_read.close();
            all_read.wait().await;
            let (code, reason) = match ended {
                ConnectionError::ApplicationClosed(close) => (
                    Some(close.error_code.into_inner()),
                    String::from_utf8_lossy(&close.reason).into_owned(),
                ),
                other => (None, other.to_string()),
            };
            let _ = closed_tx.send((u32::MAX, Event::Closed { code, reason }));
        });
        Ok(QuicSession {
            endpoint,
            connection,
            sends: HashMap::new(),
            events,
            events_tx,
            pending: VecDeque::new(),
            closed: None,
            readers,
            _relay: relay,
        })
    }

    /// The sending side of `call`'s stream, opened on first use: the control stream first.
    async fn stream(&mut self, call: u32) -> Result<&mut SendStream, String> {
        if call != 0 && !self.sends.contains_key(&0) {
            Box::pin(self.stream(0)).await?;
        }
        if !self.sends.contains_key(&call) {
            let (send, recv) = self
                .connection
                .open_bi()
                .await
                .map_err(|e| format!("opening a stream for call {call}: {e}"))?;
            self.readers
                .spawn(read_stream(call, recv, self.events_tx.clone()));
            self.sends.insert(call, send);
        }
        Ok(self.sends.get_mut(&call).expect("just opened"))
    }

    pub(crate) async fn send(
        &mut self,
        call: u32,
        bytes: &[u8],
        finish: bool,
    ) -> Result<(), String> {
        let stream = self.stream(call).await?;
        // The server may have stopped the stream or closed the connection: what it said is
        // still read, so a refused write is not the script's failure.
        let _ = stream.write_all(bytes).await;
        if finish {
            let _ = stream.finish();
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self, call: u32) -> Result<(), String> {
        match self.sends.get_mut(&call) {
            Some(stream) => {
                let _ = stream.finish();
                Ok(())
            }
            None => Err(format!("call {call} has no stream to finish")),
        }
    }

    pub(crate) fn cancel(&mut self, call: u32) -> Result<(), String> {
        match self.sends.get_mut(&call) {
            Some(stream) => {
                let _ = stream.reset(VarInt::from_u32(CANCELLED));
                Ok(())
            }
            None => Err(format!("call {call} has no stream to cancel")),
        }
    }

    /// Waits until the server has read `call`'s stream to its end without stopping it.
    pub(crate) async fn not_stopped(
        &mut self,
        call: u32,
        patience: Duration,
    ) -> Result<(), String> {
        let stream = self
            .sends
            .get_mut(&call)
            .ok_or_else(|| format!("call {call} has no stream"))?;
        match tokio::time::timeout(patience, stream.stopped()).await {
            Err(_) => Err(format!(
                "the server did not read call {call}'s stream to its end within {patience:?}"
            )),
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(code))) => Err(format!(
                "the server stopped call {call}'s stream with code {:#x}",
                code.into_inner()
            )),
            Ok(Err(e)) => Err(format!("call {call}'s stream: {e}")),
        }
    }

    /// The next event of `call`'s stream, or the connection's end.
    pub(crate) async fn next(&mut self, call: u32, patience: Duration) -> Result<Event, String> {
        if let Some(i) = self.pending.iter().position(|(c, _)| *c == call) {
            return Ok(self.pending.remove(i).expect("a position").1);
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some((code, reason)) = &self.closed {
                return Ok(Event::Closed {
                    code: *code,
                    reason: reason.clone(),
                });
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => {
                    return Err(format!(
                        "nothing arrived on call {call} within {patience:?}"
                    ));
                }
                Ok(None) => self.closed = Some((None, "the kit's readers stopped".into())),
                Ok(Some((_, Event::Closed { code, reason }))) => self.closed = Some((code, reason)),
                Ok(Some((c, event))) if c == call => return Ok(event),
                Ok(Some(other)) => self.pending.push_back(other),
            }
        }
    }
}

/// Reads one stream's frames until its end, its reset or the connection's loss.
async fn read_stream(call: u32, mut recv: RecvStream, events: mpsc::UnboundedSender<(u32, Event)>) {
    let mut codec = Builder::new()
        .max_frame_length(u32::MAX)
        .first_frame_done(true)
        .new_binary_codec();
    let mut buffer = BytesMut::new();
    loop {
        while let Ok(Some(raw)) = codec.decode(&mut buffer) {
            let (stream, flags) = (raw.stream_id, raw.flags);
            let received = match raw.clone().decode::<AnyMessage>() {
                Ok(frame) => Received::from_message(stream, flags, &frame.message),
                Err(e) => Received {
                    stream,
                    flags,
                    type_name: format!("<type {:#06x}>", raw.type_id),
                    body: serde_json::json!({ "undecodable": e.to_string() }),
                },
            };
            if events.send((call, Event::Frame(received))).is_err() {
                return;
            }
        }
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => buffer.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                let _ = events.send((call, Event::End));
                return;
            }
            Err(quinn::ReadError::Reset(code)) => {
                let _ = events.send((call, Event::Reset(code.into_inner())));
                return;
            }
            // The connection's end is reported once, by its watcher.
            Err(_) => return,
        }
    }
}
