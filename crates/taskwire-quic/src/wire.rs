//! Frames on QUIC streams: every call is one bidirectional stream of binary frames with
//! stream id 0.

use bytes::{Bytes, BytesMut};
use quinn::{RecvStream, SendStream};
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{BinaryCodec, Builder, CodecError, Flags, Frame, RawFrame};
use taskwire_proto::MessageSet;
use taskwire_rpc::{CallError, Status};

/// Reads frames from one QUIC stream, bounded by a frame limit.
pub(crate) struct FrameReader {
    stream: RecvStream,
    codec: BinaryCodec,
    buffer: BytesMut,
}

impl FrameReader {
    pub(crate) fn new(stream: RecvStream, max_frame_length: u32, first_frame: bool) -> Self {
        let codec = Builder::new()
            .max_frame_length(max_frame_length)
            .first_frame_done(!first_frame)
            .new_binary_codec();
        FrameReader {
            stream,
            codec,
            buffer: BytesMut::new(),
        }
    }

    /// The next frame; `None` when the peer finished the stream between frames.
    ///
    /// Reads the chunks quinn has already received (`read_chunk`) and appends them, instead
    /// of reading into room reserved beforehand as `AsyncRead` does: a stream waiting for
    /// its next frame, such as an idle connection's control stream, then holds no empty
    /// read buffer, and a call's stream allocates for its request, not for 8 KiB.
    pub(crate) async fn next(&mut self) -> Result<Option<RawFrame>, CodecError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(frame));
            }
            match self.stream.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk.bytes),
                Ok(None) => return self.codec.decode_eof(&mut self.buffer),
                Err(error) => return Err(CodecError::Io(error.into())),
            }
        }
    }

    /// Changes the frame limit, for example from the Hello's to the connection's.
    pub(crate) fn set_max_frame_length(&mut self, max: u32) {
        self.codec.set_max_frame_length(max);
    }

    pub(crate) fn stream_mut(&mut self) -> &mut RecvStream {
        &mut self.stream
    }
}

/// A binary codec for one connection's frames past the Hello, within `max` bytes.
fn codec(max: u32) -> BinaryCodec {
    Builder::new()
        .max_frame_length(max)
        .first_frame_done(true)
        .new_binary_codec()
}

/// Appends a raw frame as buffers for [`write_chunks`]: a long body (a download's item)
/// goes to quinn as it is, after the header, instead of being copied behind it.
pub(crate) fn encode_raw_chunks(
    frame: &RawFrame,
    max: u32,
    chunks: &mut Vec<Bytes>,
) -> Result<(), CodecError> {
    codec(max).encode_raw_chunks(frame, chunks)
}

/// Appends a typed frame.
pub(crate) fn encode<M: MessageSet>(
    frame: &Frame<M>,
    max: u32,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    codec(max).encode(frame, out)
}

/// Appends a typed frame as buffers for [`write_chunks`]: long `bytes` fields (an upload's
/// chunks) stay the message's own buffers instead of being copied into the frame's.
pub(crate) fn encode_chunks<M: MessageSet>(
    frame: &Frame<M>,
    max: u32,
    chunks: &mut Vec<Bytes>,
) -> Result<(), CodecError> {
    codec(max).encode_chunks(frame, chunks)
}

/// The status frame that ends a call.
pub(crate) fn status_frame(status: &Status) -> RawFrame {
    let mut frame = RawFrame::encode(&Frame::new(status.to_message()));
    frame.flags = frame.flags | Flags::END_STREAM;
    frame
}

/// Writes `bytes` and, if `finish`, ends the stream.
pub(crate) async fn write(
    stream: &mut SendStream,
    bytes: Bytes,
    finish: bool,
) -> Result<(), CallError> {
    write_chunks(stream, &mut [bytes], finish).await
}

/// Writes `chunks`, emptying them, and, if `finish`, ends the stream. quinn keeps the
/// buffers themselves instead of copying them into its own, as `write_all` would.
pub(crate) async fn write_chunks(
    stream: &mut SendStream,
    chunks: &mut [Bytes],
    finish: bool,
) -> Result<(), CallError> {
    stream
        .write_all_chunks(chunks)
        .await
        .map_err(|e| CallError::Unavailable(format!("writing to the stream: {e}")))?;
    if finish {
        let _ = stream.finish();
    }
    Ok(())
}

/// A codec error on a call stream, as the caller sees it.
pub(crate) fn read_error(error: CodecError) -> CallError {
    match error {
        CodecError::Io(io) => CallError::Unavailable(format!("reading the stream: {io}")),
        other => CallError::Codec(other),
    }
}
