//! The binary framing: a 12-byte header, then the protobuf body.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use taskwire_proto::{MessageSet, budget, registry};
use tokio_util::codec::{Decoder, Encoder};

use crate::builder::{Builder, Limits};
use crate::chunks::{ChunkWriter, MIN_SHARED_LEN};
use crate::header::{FrameHeader, HEADER_LEN};
use crate::{CodecError, Flags, Frame, RefusedFrame};

/// A binary frame with its body still encoded: what a router needs to dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// End of stream and status bits.
    pub flags: Flags,
    /// The registry type id of the body's message.
    pub type_id: u16,
    /// The call this frame belongs to, or 0.
    pub stream_id: u32,
    /// The protobuf body: a slice of the read buffer, not a copy.
    pub body: Bytes,
}

impl RawFrame {
    /// Decodes the body as a message of the set `M`, within the default decoded-size
    /// budget ([`DEFAULT_MAX_DECODED_SIZE`](crate::DEFAULT_MAX_DECODED_SIZE)).
    #[inline]
    pub fn decode<M: MessageSet>(self) -> Result<Frame<M>, CodecError> {
        self.decode_within(budget::DEFAULT_MAX_DECODED_SIZE)
    }

    /// Decodes the body as a message of the set `M`, refusing a body whose decoded size
    /// (see [`Builder::max_decoded_size`]) is over `max_decoded_size`.
    #[inline]
    pub fn decode_within<M: MessageSet>(
        self,
        max_decoded_size: usize,
    ) -> Result<Frame<M>, CodecError> {
        let type_id = self.type_id;
        let frame = RefusedFrame {
            stream_id: self.stream_id,
            flags: self.flags,
        };
        let message = decode_body::<M>(type_id, self.body, max_decoded_size, frame)?;
        Ok(Frame {
            stream_id: self.stream_id,
            flags: self.flags,
            message,
        })
    }

    /// Encodes `frame`'s message into a raw frame.
    pub fn encode<M: MessageSet>(frame: &Frame<M>) -> RawFrame {
        let mut body = BytesMut::with_capacity(frame.message.body_len());
        frame.message.encode_body(&mut body);
        RawFrame {
            flags: frame.flags,
            type_id: frame.message.type_id(),
            stream_id: frame.stream_id,
            body: body.freeze(),
        }
    }
}

/// Decodes the body of `frame`, whose bytes have been consumed whole: an error is confined
/// to it.
#[inline]
pub(crate) fn decode_body<M: MessageSet>(
    type_id: u16,
    body: Bytes,
    max_decoded_size: usize,
    frame: RefusedFrame,
) -> Result<M, CodecError> {
    check_budget(type_id, &body, max_decoded_size, frame)?;
    body_result(type_id, M::decode_body(type_id, body), frame)
}

/// Refuses a body whose decoded size is over the budget.
#[inline]
fn check_budget(
    type_id: u16,
    body: &[u8],
    max_decoded_size: usize,
    frame: RefusedFrame,
) -> Result<(), CodecError> {
    // Small bodies cannot reach the budget even at the worst expansion: no walk.
    if budget::needs_walk(body.len(), max_decoded_size) {
        budget::decoded_size(type_id, body, max_decoded_size).map_err(|over| {
            CodecError::DecodedTooLarge {
                type_id,
                name: type_name(type_id),
                counted: over.counted,
                max: over.max,
                frame: Some(frame),
            }
        })?;
    }
    Ok(())
}

#[inline]
fn body_result<M>(
    type_id: u16,
    decoded: Option<Result<M, prost::DecodeError>>,
    frame: RefusedFrame,
) -> Result<M, CodecError> {
    match decoded {
        None => Err(CodecError::UnknownMessageType {
            type_id,
            frame: Some(frame),
        }),
        Some(Ok(message)) => Ok(message),
        Some(Err(source)) => Err(CodecError::Protobuf {
            type_id,
            name: type_name(type_id),
            source,
            frame: Some(frame),
        }),
    }
}

fn type_name(type_id: u16) -> &'static str {
    registry::by_type_id(type_id).map_or("<unregistered>", |info| info.name)
}

/// Decodes and encodes binary frames as [`RawFrame`]s, for routing without decoding
/// bodies. Made by [`Builder::new_binary_codec`].
///
/// Encodes [`RawFrame`]s and, without an intermediate buffer, typed [`Frame`]s.
#[derive(Debug)]
pub struct BinaryCodec {
    limits: Limits,
    /// The header of the frame whose body is being received.
    pending: Option<FrameHeader>,
    /// Body bytes still to be skipped: those of a frame refused for type id 0, discarded
    /// as they arrive rather than buffered.
    skipping: u32,
}

impl Default for BinaryCodec {
    fn default() -> Self {
        Builder::new().new_binary_codec()
    }
}

impl BinaryCodec {
    pub(crate) fn from_builder(builder: Builder) -> Self {
        BinaryCodec {
            limits: Limits::new(builder),
            pending: None,
            skipping: 0,
        }
    }

    /// A codec with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The maximum frame length past the first frame.
    pub fn max_frame_length(&self) -> u32 {
        self.limits.max_frame_length
    }

    /// Changes the maximum frame length, for example to the limit a peer announced in
    /// its Hello or Negotiated.
    pub fn set_max_frame_length(&mut self, max: u32) {
        self.limits.max_frame_length = max;
    }

    // Always inlined: out of line, its call, saved registers and returned `Result` cost
    // about as much as writing the header itself.
    #[inline(always)]
    fn encode_header(
        &mut self,
        header: FrameHeader,
        body_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let header = self.header_bytes(header, body_len)?;
        dst.reserve(HEADER_LEN + body_len);
        // `extend_from_slice` is `#[inline]`, unlike `BufMut::put_slice`: the 12-byte copy
        // then compiles to two stores instead of a call to `memcpy`.
        dst.extend_from_slice(&header);
        Ok(())
    }

    /// Checks `header` and the body length against the frame rules and the limit, and
    /// gives the header's bytes.
    #[inline(always)]
    fn header_bytes(
        &mut self,
        header: FrameHeader,
        body_len: usize,
    ) -> Result<[u8; HEADER_LEN], CodecError> {
        header.check()?;
        let body_len = Limits::check(body_len as u64, self.limits.encode_limit())?;
        self.limits.first_encoded = true;
        Ok(FrameHeader { body_len, ..header }.to_bytes())
    }

    /// Encodes `frame` as buffers appended to `chunks`, for a writer that takes several at
    /// once, such as quinn's `write_all_chunks`. Each `bytes` field of at least
    /// [`MIN_SHARED_LEN`](crate::MIN_SHARED_LEN) bytes is appended as the message's own
    /// buffer instead of being copied; a frame with none is one buffer.
    ///
    /// Concatenated, the chunks are the bytes [`encode`](Encoder::encode) writes, under the
    /// same checks and limits; on an error nothing is appended.
    pub fn encode_chunks<M: MessageSet>(
        &mut self,
        frame: &Frame<M>,
        chunks: &mut Vec<Bytes>,
    ) -> Result<(), CodecError> {
        let header = FrameHeader {
            flags: frame.flags,
            type_id: frame.message.type_id(),
            stream_id: frame.stream_id,
            body_len: 0,
        };
        let body_len = frame.message.body_len();
        let header = self.header_bytes(header, body_len)?;
        let mut writer = ChunkWriter::new(HEADER_LEN + body_len, chunks);
        writer.put_slice(&header);
        frame.message.encode_body(&mut writer);
        writer.finish();
        Ok(())
    }

    /// Encodes a raw frame as buffers appended to `chunks`, as
    /// [`encode_chunks`](Self::encode_chunks) does a typed one: a body of at least
    /// [`MIN_SHARED_LEN`] bytes is appended as the frame's own buffer, after the header; a
    /// shorter one is copied in behind it, as one buffer.
    pub fn encode_raw_chunks(
        &mut self,
        frame: &RawFrame,
        chunks: &mut Vec<Bytes>,
    ) -> Result<(), CodecError> {
        let header = FrameHeader {
            flags: frame.flags,
            type_id: frame.type_id,
            stream_id: frame.stream_id,
            body_len: 0,
        };
        let header = self.header_bytes(header, frame.body.len())?;
        if frame.body.len() >= MIN_SHARED_LEN {
            chunks.push(Bytes::copy_from_slice(&header));
            chunks.push(frame.body.clone());
        } else {
            let mut buffer = BytesMut::with_capacity(HEADER_LEN + frame.body.len());
            buffer.extend_from_slice(&header);
            buffer.extend_from_slice(&frame.body);
            chunks.push(buffer.freeze());
        }
        Ok(())
    }
}

impl BinaryCodec {
    /// Parses the next frame's header once its whole body is in `src`, and leaves `src`
    /// starting at that body. `None` until the body has arrived.
    #[inline]
    fn next_header(&mut self, src: &mut BytesMut) -> Result<Option<FrameHeader>, CodecError> {
        if self.skipping > 0 {
            self.skip(src);
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        let header = match self.pending {
            Some(header) => header,
            None => {
                let Some(head) = src.first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let header = FrameHeader::parse(head).map_err(|error| self.refuse(error, src))?;
                Limits::check(u64::from(header.body_len), self.limits.decode_limit())?;
                src.advance(HEADER_LEN);
                self.pending = Some(header);
                header
            }
        };
        // Never reserve the declared length: the buffer grows only as bytes arrive.
        if src.len() < header.body_len as usize {
            return Ok(None);
        }
        self.pending = None;
        self.limits.first_decoded = true;
        Ok(Some(header))
    }
}

impl BinaryCodec {
    /// Discards what has arrived of a refused frame's body.
    #[cold]
    fn skip(&mut self, src: &mut BytesMut) {
        let n = u32::try_from(src.len()).map_or(self.skipping, |len| len.min(self.skipping));
        src.advance(n as usize);
        self.skipping -= n;
    }

    /// Confines a header error to its frame where the rest of the header can be trusted:
    /// type id 0, with a valid version and flags and a body within the limit, is a frame
    /// boundary like any other, so its body is skipped and the call refused
    /// (`docs/protocol.md` §9). Every other header error leaves the codec where it was.
    #[cold]
    fn refuse(&mut self, error: CodecError, src: &mut BytesMut) -> CodecError {
        let CodecError::UnknownMessageType { type_id: 0, .. } = error else {
            return error;
        };
        let head: [u8; HEADER_LEN] = src[..HEADER_LEN].try_into().expect("a whole header");
        let body_len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        if Limits::check(u64::from(body_len), self.limits.decode_limit()).is_err() {
            return error;
        }
        src.advance(HEADER_LEN);
        self.limits.first_decoded = true;
        self.skipping = body_len;
        self.skip(src);
        CodecError::UnknownMessageType {
            type_id: 0,
            frame: Some(RefusedFrame {
                stream_id: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
                // Valid: FrameHeader::parse checked the flags before the type id.
                flags: Flags::from_bits(head[1]).unwrap_or_default(),
            }),
        }
    }
}

impl Decoder for BinaryCodec {
    type Item = RawFrame;
    type Error = CodecError;

    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, CodecError> {
        let Some(header) = self.next_header(src)? else {
            return Ok(None);
        };
        let body = src.split_to(header.body_len as usize).freeze();
        Ok(Some(RawFrame {
            flags: header.flags,
            type_id: header.type_id,
            stream_id: header.stream_id,
            body,
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let received = src.len() as u64;
        if self.skipping > 0 {
            return Err(CodecError::Truncated {
                expected: u64::from(self.skipping),
                received,
            });
        }
        match self.pending {
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated {
                expected: HEADER_LEN as u64,
                received,
            }),
            Some(header) => Err(CodecError::Truncated {
                expected: HEADER_LEN as u64 + u64::from(header.body_len),
                received: HEADER_LEN as u64 + received,
            }),
        }
    }
}

impl Encoder<RawFrame> for BinaryCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: RawFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<&RawFrame> for BinaryCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &RawFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let header = FrameHeader {
            flags: frame.flags,
            type_id: frame.type_id,
            stream_id: frame.stream_id,
            body_len: 0,
        };
        self.encode_header(header, frame.body.len(), dst)?;
        dst.put_slice(&frame.body);
        Ok(())
    }
}

impl<M: MessageSet> Encoder<Frame<M>> for BinaryCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame<M>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

impl<M: MessageSet> Encoder<&Frame<M>> for BinaryCodec {
    type Error = CodecError;

    #[inline]
    fn encode(&mut self, frame: &Frame<M>, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.message.visit(EncodeFrame {
            codec: self,
            flags: frame.flags,
            stream_id: frame.stream_id,
            dst,
        })
    }
}

/// Encodes a frame once its message's own type is known. Through a visitor, a conversation
/// enum dispatches on its variant once, where asking it for the type id, the body length
/// and the body dispatches three times; each message type then gets the same code a frame of
/// that one type compiles to.
struct EncodeFrame<'a> {
    codec: &'a mut BinaryCodec,
    flags: Flags,
    stream_id: u32,
    dst: &'a mut BytesMut,
}

impl registry::MessageVisitor for EncodeFrame<'_> {
    type Output = Result<(), CodecError>;

    #[inline(always)]
    fn visit<T: registry::WireMessage>(self, message: &T) -> Result<(), CodecError> {
        let header = FrameHeader {
            flags: self.flags,
            type_id: T::TYPE_ID,
            stream_id: self.stream_id,
            body_len: 0,
        };
        self.codec
            .encode_header(header, message.encoded_len(), self.dst)?;
        message.encode_raw(self.dst);
        Ok(())
    }
}

/// Decodes binary frames straight into messages of the set `M`, such as one
/// conversation's enum; encodes them back. Made by [`Builder::new_binary_message_codec`].
///
/// A frame whose type id is not in `M` is [`CodecError::UnknownMessageType`].
#[derive(Debug)]
pub struct BinaryMessageCodec<M> {
    raw: BinaryCodec,
    _messages: PhantomData<fn() -> M>,
}

impl<M: MessageSet> Default for BinaryMessageCodec<M> {
    fn default() -> Self {
        Builder::new().new_binary_message_codec()
    }
}

impl<M: MessageSet> BinaryMessageCodec<M> {
    pub(crate) fn from_builder(builder: Builder) -> Self {
        BinaryMessageCodec {
            raw: BinaryCodec::from_builder(builder),
            _messages: PhantomData,
        }
    }

    /// The raw codec underneath, for its limits.
    pub fn raw_mut(&mut self) -> &mut BinaryCodec {
        &mut self.raw
    }
}

impl<M: MessageSet> Decoder for BinaryMessageCodec<M> {
    type Item = Frame<M>;
    type Error = CodecError;

    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame<M>>, CodecError> {
        let Some(header) = self.raw.next_header(src)? else {
            return Ok(None);
        };
        let body = src.split_to(header.body_len as usize).freeze();
        let frame = RefusedFrame {
            stream_id: header.stream_id,
            flags: header.flags,
        };
        Ok(Some(Frame {
            stream_id: header.stream_id,
            flags: header.flags,
            message: decode_body(
                header.type_id,
                body,
                self.raw.limits.max_decoded_size,
                frame,
            )?,
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame<M>>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        // No whole frame is left: the raw codec tells a clean end from a truncated frame.
        let max = self.raw.limits.max_decoded_size;
        self.raw
            .decode_eof(src)?
            .map(|raw| raw.decode_within(max))
            .transpose()
    }
}

impl<M: MessageSet> Encoder<Frame<M>> for BinaryMessageCodec<M> {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame<M>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.raw.encode(&frame, dst)
    }
}

impl<M: MessageSet> Encoder<&Frame<M>> for BinaryMessageCodec<M> {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame<M>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.raw.encode(frame, dst)
    }
}
