//! Typed streams of messages between a transport and a handler or caller.
//!
//! Both ends are bounded channels of frames: a slow reader stops the transport reading,
//! which stops the peer through the transport's flow control. Memory per stream is at
//! most [`channel_capacity`] frames, and request frames queued for a handler are also
//! counted against the router's [`TenantBudget`] until the handler takes them.

use std::marker::PhantomData;
use std::sync::Arc;

use taskwire_codec::{Frame, RawFrame};
use taskwire_proto::MessageSet;
use tokio::sync::mpsc;

use crate::Status;
use crate::budget::{Reservation, TenantBudget};

/// How many frames a stream buffers between the transport and its reader: 16.
pub const fn channel_capacity() -> usize {
    16
}

/// A request frame (or the failure that ends the stream) waiting for its handler, with
/// the budget its bytes are counted against until the handler takes it.
#[derive(Debug)]
pub(crate) struct Queued {
    item: Result<RawFrame, Status>,
    _held: Option<Reservation>,
}

/// A channel for one call's request frames: the transport's end and the handler's.
pub(crate) fn request_channel(
    budget: Arc<TenantBudget>,
    tenant: &str,
) -> (RequestSender, mpsc::Receiver<Queued>) {
    let (frames, receiver) = mpsc::channel(channel_capacity());
    let sender = RequestSender {
        frames,
        budget,
        tenant: Arc::from(tenant),
    };
    (sender, receiver)
}

/// Where a transport puts a call's further request frames for its handler.
///
/// Each frame's body is reserved against the router's
/// [`buffer_budget`](crate::Router::buffer_budget), for the call's tenant, before it is
/// queued, and given back when the handler takes it. A frame that would pass the
/// tenant's share or the server's budget is not queued: the handler reads
/// `RESOURCE_EXHAUSTED` in its place, and the transport delivers nothing more to it.
#[derive(Clone, Debug)]
pub struct RequestSender {
    frames: mpsc::Sender<Queued>,
    budget: Arc<TenantBudget>,
    tenant: Arc<str>,
}

/// Why a request frame did not reach its handler.
#[derive(Debug)]
#[non_exhaustive]
pub enum Undelivered {
    /// The handler stopped reading (it answered, failed or was cancelled).
    HandlerGone,
    /// Queueing the frame would have passed a budget: the handler was given this status
    /// instead, and the call's later frames must be dropped.
    OverBudget(Status),
}

impl RequestSender {
    /// Queues `frame` for the handler, waiting while its queue is full (the transport's
    /// backpressure), after reserving its body against the budget.
    pub async fn send(&self, frame: RawFrame) -> Result<(), Undelivered> {
        let held = match self.budget.reserve(&self.tenant, frame.body.len() as u64) {
            Ok(held) => held,
            Err(status) => {
                self.fail(status.clone()).await;
                return Err(Undelivered::OverBudget(status));
            }
        };
        self.frames
            .send(Queued {
                item: Ok(frame),
                _held: Some(held),
            })
            .await
            .map_err(|_| Undelivered::HandlerGone)
    }

    /// Queues a call's first frame without counting it: the transport read and holds it
    /// within its per-connection limits before any handler exists.
    pub(crate) fn queue_first(&self, first: RawFrame) {
        let _ = self.frames.try_send(Queued {
            item: Ok(first),
            _held: None,
        });
    }

    /// Ends the handler's stream with `status` (the peer reset the stream, or sent a frame
    /// the codec refused). Nothing is reserved for it.
    pub async fn fail(&self, status: Status) {
        let _ = self
            .frames
            .send(Queued {
                item: Err(status),
                _held: None,
            })
            .await;
    }

    /// Whether the handler has stopped reading.
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

/// Messages arriving on a stream, decoded as the set `M`.
#[derive(Debug)]
pub struct RequestStream<M> {
    frames: mpsc::Receiver<Queued>,
    finished: bool,
    _messages: PhantomData<fn() -> M>,
}

impl<M: MessageSet> RequestStream<M> {
    /// A stream reading from `frames`. The transport sends `Err` to end the stream with a
    /// failure (the peer reset it, or sent a status frame), and closes the channel at a
    /// clean end of stream.
    pub(crate) fn new(frames: mpsc::Receiver<Queued>) -> Self {
        RequestStream {
            frames,
            finished: false,
            _messages: PhantomData,
        }
    }

    /// The next message; `Ok(None)` at the end of the stream.
    pub async fn message(&mut self) -> Result<Option<M>, Status> {
        Ok(self.frame().await?.map(|frame| frame.message))
    }

    /// The next frame, with its flags; `Ok(None)` at the end of the stream.
    pub async fn frame(&mut self) -> Result<Option<Frame<M>>, Status> {
        if self.finished {
            return Ok(None);
        }
        // Taking the frame gives its bytes back to the budget: from here they are the
        // handler's to keep or drop.
        match self.frames.recv().await.map(|queued| queued.item) {
            None => {
                self.finished = true;
                Ok(None)
            }
            Some(Err(status)) => {
                self.finished = true;
                Err(status)
            }
            Some(Ok(raw)) if raw.flags.is_status() => {
                // A peer with no item left to carry END_STREAM ends its side with a status
                // frame (`docs/protocol.md` §14): OK is a clean end, any other code a failure.
                self.finished = true;
                match crate::decode_status(raw) {
                    Ok(None) => Ok(None),
                    Ok(Some(status)) => Err(status),
                    Err(error) => Err(Status::protocol_violation(error.to_string())),
                }
            }
            Some(Ok(raw)) => {
                if raw.flags.is_end_stream() {
                    self.finished = true;
                }
                let type_id = raw.type_id;
                raw.decode::<M>().map(Some).map_err(|error| match error {
                    taskwire_codec::CodecError::UnknownMessageType { .. } => {
                        Status::protocol_violation(format!(
                            "unexpected message type {type_id:#06x} on this stream"
                        ))
                    }
                    error @ taskwire_codec::CodecError::DecodedTooLarge { .. } => {
                        Status::resource_exhausted(error.to_string())
                    }
                    other => Status::invalid_argument(other.to_string()),
                })
            }
        }
    }
}

/// Sends messages of the set `M` on a stream.
#[derive(Debug)]
pub struct ResponseSink<M> {
    frames: mpsc::Sender<RawFrame>,
    _messages: PhantomData<fn(M)>,
}

impl<M> Clone for ResponseSink<M> {
    fn clone(&self) -> Self {
        ResponseSink {
            frames: self.frames.clone(),
            _messages: PhantomData,
        }
    }
}

impl<M: MessageSet> ResponseSink<M> {
    /// A sink writing into `frames`, which the transport drains onto the wire.
    pub fn new(frames: mpsc::Sender<RawFrame>) -> Self {
        ResponseSink {
            frames,
            _messages: PhantomData,
        }
    }

    /// Sends one message, waiting while the peer is slower than the sender.
    pub async fn send(&self, message: impl Into<M>) -> Result<(), Status> {
        let frame = RawFrame::encode(&Frame::new(message.into()));
        self.frames
            .send(frame)
            .await
            .map_err(|_| Status::cancelled("the stream was closed by the peer"))
    }

    /// Whether the peer has gone: sends would fail.
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use taskwire_proto::registry::JournalMessage;

    use super::*;
    use crate::StatusCode;

    fn status_frame(code: StatusCode) -> RawFrame {
        RawFrame::encode(&Frame::new(Status::new(code, "from the peer").to_message()).end_stream())
    }

    #[tokio::test]
    async fn an_ok_status_frame_ends_the_stream_cleanly_and_a_failure_ends_it_with_its_status() {
        let (tx, rx) = request_channel(TenantBudget::buffered_frames(), "acme");
        let mut stream = RequestStream::<JournalMessage>::new(rx);
        tx.send(status_frame(StatusCode::Ok)).await.unwrap();
        assert_eq!(stream.message().await, Ok(None));
        // Finished: nothing after the end is read.
        tx.send(status_frame(StatusCode::Internal)).await.unwrap();
        assert_eq!(stream.message().await, Ok(None));

        let (tx, rx) = request_channel(TenantBudget::buffered_frames(), "acme");
        let mut stream = RequestStream::<JournalMessage>::new(rx);
        tx.send(status_frame(StatusCode::Aborted)).await.unwrap();
        let failure = stream.message().await.unwrap_err();
        assert_eq!(failure.code(), StatusCode::Aborted);
        assert_eq!(failure.message(), "from the peer");
    }

    fn journal_frame(body: usize) -> RawFrame {
        let mut frame = status_frame(StatusCode::Ok);
        frame.flags = taskwire_codec::Flags::default();
        frame.body = bytes::Bytes::from(vec![0u8; body]);
        frame
    }

    #[tokio::test]
    async fn queued_frames_count_against_the_tenant_until_the_handler_takes_them() {
        let budget = TenantBudget::new("buffered", 1_000, 300);
        let (tx, rx) = request_channel(Arc::clone(&budget), "acme");
        let (other_tx, _other_rx) = request_channel(Arc::clone(&budget), "globex");
        let mut stream = RequestStream::<JournalMessage>::new(rx);
        tx.send(journal_frame(200)).await.unwrap();
        assert_eq!(budget.held_by("acme"), 200);
        let refused = tx.send(journal_frame(200)).await.unwrap_err();
        let Undelivered::OverBudget(status) = refused else {
            panic!("expected OverBudget, got {refused:?}");
        };
        assert_eq!(status.code(), StatusCode::ResourceExhausted);
        assert!(status.message().contains("share of 300"), "{status}");
        // The other tenant's share is untouched by acme's.
        other_tx.send(journal_frame(300)).await.unwrap();
        assert_eq!(budget.held(), 500);

        // The accepted frame is delivered, then the refusal in place of the refused one.
        let first = stream.frames.recv().await.unwrap();
        assert_eq!(first.item.as_ref().unwrap().body.len(), 200);
        drop(first);
        assert_eq!(budget.held_by("acme"), 0, "taken frames are given back");
        let failure = stream.message().await.unwrap_err();
        assert_eq!(failure.code(), StatusCode::ResourceExhausted);
    }
}
