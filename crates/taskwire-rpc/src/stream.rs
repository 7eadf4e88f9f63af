//! Typed streams of messages between a transport and a handler or caller.
//!
//! Both ends are bounded channels of frames: a slow reader stops the transport reading,
//! which stops the peer through the transport's flow control. Memory per stream is at
//! most [`channel_capacity`] frames.

use std::marker::PhantomData;

use taskwire_codec::{Frame, RawFrame};
use taskwire_proto::MessageSet;
use tokio::sync::mpsc;

use crate::Status;

/// How many frames a stream buffers between the transport and its reader: 16.
pub const fn channel_capacity() -> usize {
    16
}

/// Messages arriving on a stream, decoded as the set `M`.
#[derive(Debug)]
pub struct RequestStream<M> {
    frames: mpsc::Receiver<Result<RawFrame, Status>>,
    finished: bool,
    _messages: PhantomData<fn() -> M>,
}

impl<M: MessageSet> RequestStream<M> {
    /// A stream reading from `frames`. The transport sends `Err` to end the stream with a
    /// failure (the peer reset it, or sent a status frame), and closes the channel at a
    /// clean end of stream.
    pub fn new(frames: mpsc::Receiver<Result<RawFrame, Status>>) -> Self {
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
        match self.frames.recv().await {
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
        let (tx, rx) = mpsc::channel(4);
        let mut stream = RequestStream::<JournalMessage>::new(rx);
        tx.send(Ok(status_frame(StatusCode::Ok))).await.unwrap();
        assert_eq!(stream.message().await, Ok(None));
        // Finished: nothing after the end is read.
        tx.send(Ok(status_frame(StatusCode::Internal)))
            .await
            .unwrap();
        assert_eq!(stream.message().await, Ok(None));

        let (tx, rx) = mpsc::channel(4);
        let mut stream = RequestStream::<JournalMessage>::new(rx);
        tx.send(Ok(status_frame(StatusCode::Aborted)))
            .await
            .unwrap();
        let failure = stream.message().await.unwrap_err();
        assert_eq!(failure.code(), StatusCode::Aborted);
        assert_eq!(failure.message(), "from the peer");
    }
}
