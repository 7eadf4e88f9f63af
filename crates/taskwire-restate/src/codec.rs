//! The service protocol's framing: an 8-byte header, then the protobuf body.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------------------------------+-+-----------------------------+
//! |        type (u16 BE)          |A|   reserved flags (15 bits)  |
//! +-------------------------------+-+-----------------------------+
//! |                       body length (u32 BE)                    |
//! +---------------------------------------------------------------+
//! |                  protobuf body (length bytes)                 |
//! ```
//!
//! `A` is REQUESTED_ACK. [`RestateCodec`] yields [`Frame`]s, whose bodies are slices of
//! the read buffer; [`Frame::decode`] turns one into a typed [`Message`]. The limits come
//! from the codec [`Builder`]: a declared length over `max_frame_length` (16 MiB by
//! default; Restate's own hard limit is 32 MiB) is refused before anything is buffered
//! for it, and a body that would decode past `max_decoded_size` is refused before it is
//! decoded, by the same decoded-size rule as taskwire's own messages.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{Builder, CodecError};

use crate::generated::registry::{Message, MessageType};

/// The header's length.
pub const HEADER_LEN: usize = 8;

/// The REQUESTED_ACK flag (a V7 `ProposeRunCompletion` asking for an ack).
pub const REQUESTED_ACK: u16 = 0x8000;

/// One message on the stream, its body still encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its type.
    pub message_type: MessageType,
    /// The header's flags.
    pub flags: u16,
    /// The protobuf body.
    pub body: Bytes,
}

impl Frame {
    /// The frame of `message`, with no flags.
    pub fn new(message: &Message) -> Frame {
        Frame {
            message_type: message.message_type(),
            flags: 0,
            body: Bytes::from(message.encode_body()),
        }
    }

    /// Decodes the body as its type's message, refusing first a body whose decoded size
    /// would pass `max_decoded_size`. A custom or unknown type is
    /// [`CodecError::UnknownMessageType`]: nothing here can read it.
    pub fn decode(&self, max_decoded_size: usize) -> Result<Message, CodecError> {
        self.check_decoded_size(max_decoded_size)?;
        let code = self.message_type.code();
        let name = self.message_type.name().unwrap_or("<unknown>");
        match Message::decode(self.message_type, self.body.clone()) {
            None => Err(CodecError::UnknownMessageType {
                type_id: code,
                frame: None,
            }),
            Some(decoded) => decoded.map_err(|source| CodecError::Protobuf {
                type_id: code,
                name,
                source,
                frame: None,
            }),
        }
    }

    /// Refuses a body that would decode into more than `max_decoded_size` bytes, by the
    /// decoded-size rule of taskwire's own messages (`docs/protocol.md` §8.1), without
    /// decoding it.
    pub fn check_decoded_size(&self, max_decoded_size: usize) -> Result<(), CodecError> {
        let code = self.message_type.code();
        let name = self.message_type.name().unwrap_or("<unknown>");
        if taskwire_proto::budget::needs_walk(self.body.len(), max_decoded_size) {
            taskwire_proto::budget::decoded_size_in(
                &crate::generated::shapes::TABLE,
                code,
                &self.body,
                max_decoded_size,
            )
            .map_err(|over| CodecError::DecodedTooLarge {
                type_id: code,
                name,
                counted: over.counted,
                max: over.max,
                frame: None,
            })?;
        }
        Ok(())
    }
}

/// Decodes and encodes the service protocol's frames.
///
/// ```
/// use bytes::BytesMut;
/// use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
/// use taskwire_restate::protocol::EndMessage;
/// use taskwire_restate::{Frame, Message, RestateCodec};
///
/// let mut codec = RestateCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(&Frame::new(&Message::End(EndMessage {})), &mut wire)?;
/// assert_eq!(&wire[..], &[0x00, 0x03, 0, 0, 0, 0, 0, 0]);
/// let frame = codec.decode(&mut wire)?.expect("a whole frame");
/// assert_eq!(frame.decode(1 << 20)?, Message::End(EndMessage {}));
/// # Ok::<(), taskwire_codec::CodecError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RestateCodec {
    max_frame_length: u32,
    /// The header of the frame whose body has not all arrived.
    pending: Option<(u16, u16, u32)>,
}

impl Default for RestateCodec {
    fn default() -> Self {
        RestateCodec::new()
    }
}

impl RestateCodec {
    /// A codec with the [`Builder`]'s defaults (16 MiB frames).
    pub fn new() -> RestateCodec {
        RestateCodec::from_builder(&Builder::new())
    }

    /// A codec with `builder`'s frame length limit.
    pub fn from_builder(builder: &Builder) -> RestateCodec {
        RestateCodec {
            max_frame_length: builder.get_max_frame_length(),
            pending: None,
        }
    }

    /// The largest body decoded or encoded.
    pub fn max_frame_length(&self) -> u32 {
        self.max_frame_length
    }
}

impl Decoder for RestateCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let (code, flags, len) = match self.pending {
            Some(header) => header,
            None => {
                let Some(header) = src.first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let code = u16::from_be_bytes([header[0], header[1]]);
                let flags = u16::from_be_bytes([header[2], header[3]]);
                let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                if len > self.max_frame_length {
                    return Err(CodecError::FrameTooLarge {
                        len: u64::from(len),
                        max: self.max_frame_length,
                    });
                }
                src.advance(HEADER_LEN);
                self.pending = Some((code, flags, len));
                (code, flags, len)
            }
        };
        // Never reserve the declared length: the buffer grows only as bytes arrive.
        if src.len() < len as usize {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(Frame {
            message_type: MessageType::from_code(code),
            flags,
            body: src.split_to(len as usize).freeze(),
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let received = src.len() as u64;
        let header = HEADER_LEN as u64;
        match self.pending {
            Some((_, _, len)) => Err(CodecError::Truncated {
                expected: header + u64::from(len),
                received: header + received,
            }),
            None if received > 0 => Err(CodecError::Truncated {
                expected: header,
                received,
            }),
            None => Ok(None),
        }
    }
}

impl Encoder<&Frame> for RestateCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = frame.body.len() as u64;
        if len > u64::from(self.max_frame_length) {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_length,
            });
        }
        // Cannot fail: the length is at most the u32 limit.
        let len = u32::try_from(len).map_err(|_| CodecError::FrameTooLarge {
            len,
            max: self.max_frame_length,
        })?;
        dst.reserve(HEADER_LEN + frame.body.len());
        dst.put_u16(frame.message_type.code());
        dst.put_u16(frame.flags);
        dst.put_u32(len);
        dst.extend_from_slice(&frame.body);
        Ok(())
    }
}

impl Encoder<Frame> for RestateCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}
