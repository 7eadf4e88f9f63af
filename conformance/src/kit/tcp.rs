//! The kit's TCP connection: one byte stream, frames sorted by stream id as they arrive.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use taskwire_codec::{Builder, CodecError};
use taskwire_proto::registry::AnyMessage;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Event, Received, Target};
use crate::vectors::Framing;

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) struct TcpSession {
    writer: Writer,
    events: mpsc::UnboundedReceiver<Event>,
    /// Frames of other calls that arrived while one call was awaited.
    pending: VecDeque<Received>,
    /// How the connection ended, once it has.
    closed: Option<String>,
}

impl TcpSession {
    pub(crate) async fn connect(target: &Target, framing: Framing) -> Result<TcpSession, String> {
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("TCP connect to {}: {e}", target.addr))?;
        let _ = stream.set_nodelay(true);
        let (events_tx, events) = mpsc::unbounded_channel();
        let writer: Writer = match &target.tls {
            None => {
                let (reader, writer) = tokio::io::split(stream);
                tokio::spawn(read_frames(reader, framing, events_tx));
                Box::new(writer)
            }
            Some(tls) => {
                let mut tls = (**tls).clone();
                tls.alpn_protocols = vec![b"taskwire/1".to_vec()];
                let name = rustls::pki_types::ServerName::try_from(target.server_name.clone())
                    .map_err(|e| format!("server name {:?}: {e}", target.server_name))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                let (reader, writer) = tokio::io::split(stream);
                tokio::spawn(read_frames(reader, framing, events_tx));
                Box::new(writer)
            }
        };
        Ok(TcpSession {
            writer,
            events,
            pending: VecDeque::new(),
            closed: None,
        })
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        // A server that has closed the connection may refuse the bytes: what it said
        // before is still read, so the failure is not the script's.
        let _ = self.writer.write_all(bytes).await;
        let _ = self.writer.flush().await;
        Ok(())
    }

    /// The next frame on stream `call`, or the connection's end.
    pub(crate) async fn next(&mut self, call: u32, patience: Duration) -> Result<Event, String> {
        if let Some(i) = self.pending.iter().position(|f| f.stream == call) {
            let frame = self.pending.remove(i).expect("a position");
            return Ok(Event::Frame(frame));
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(reason) = &self.closed {
                return Ok(Event::Closed {
                    code: None,
                    reason: reason.clone(),
                });
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => {
                    return Err(format!(
                        "nothing arrived on stream {call} within {patience:?}"
                    ));
                }
                Ok(None) => self.closed = Some("the reader stopped".into()),
                Ok(Some(Event::Frame(frame))) if frame.stream == call => {
                    return Ok(Event::Frame(frame));
                }
                Ok(Some(Event::Frame(frame))) => self.pending.push_back(frame),
                Ok(Some(Event::Closed { reason, .. })) => self.closed = Some(reason),
                Ok(Some(other)) => return Ok(other),
            }
        }
    }
}

/// Decodes what the server sends until the connection ends.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    framing: Framing,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut builder = Builder::new();
    builder.max_frame_length(u32::MAX).first_frame_done(true);
    let mut binary = builder.new_binary_codec();
    let mut json = builder.new_any_json_codec();
    let mut buffer = BytesMut::new();
    let reason = loop {
        let decoded = match framing {
            Framing::Binary => {
                taskwire_codec::io::read_frame(&mut reader, &mut binary, &mut buffer)
                    .await
                    .and_then(|frame| {
                        frame
                            .map(|raw| {
                                let (stream, flags) = (raw.stream_id, raw.flags);
                                raw.decode::<AnyMessage>().map(|frame| {
                                    Received::from_message(stream, flags, &frame.message)
                                })
                            })
                            .transpose()
                    })
            }
            Framing::Json => {
                let frame =
                    taskwire_codec::io::read_frame(&mut reader, &mut json, &mut buffer).await;
                frame.map(|frame| {
                    frame.map(|f| Received::from_message(f.stream_id, f.flags, &f.message))
                })
            }
        };
        match decoded {
            Ok(Some(frame)) => {
                if events.send(Event::Frame(frame)).is_err() {
                    return;
                }
            }
            Ok(None) => break "the server closed the connection".to_owned(),
            Err(CodecError::Io(e)) => break format!("the connection failed: {e}"),
            Err(e) => break format!("the server sent a frame the kit cannot decode: {e}"),
        }
    };
    let _ = events.send(Event::Closed { code: None, reason });
}
