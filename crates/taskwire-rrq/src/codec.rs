//! RRQ's framing: a 4-byte big-endian length, then one UTF-8 JSON envelope.
//!
//! ```text
//! +------------+---------------------------------------------------------------+
//! | len u32 BE | {"type":"request","payload":{"protocol_version":"2",...}}     |
//! |            |  (len bytes; len is 1..=16 MiB)                               |
//! +------------+---------------------------------------------------------------+
//! ```
//!
//! The limits come from the same [`Builder`] as taskwire's own codecs: a declared length
//! over [`Builder::max_frame_length`] (16 MiB, RRQ's own cap) is refused before anything
//! is buffered for it, a frame whose JSON would decode past
//! [`Builder::max_decoded_size`] is refused before it is parsed, and the buffer grows only
//! with bytes that arrived. A length of 0, which RRQ refuses too, is
//! [`CodecError::EmptyFrame`]. RRQ has no handshake, so the first-frame limit does not
//! apply. Errors are the codec's [`CodecError`]s; after one, close the connection, as
//! RRQ's runtimes do.

use std::borrow::Cow;

use bytes::{Buf as _, BufMut as _, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{Builder, CodecError, JsonError, JsonErrorKind};

use crate::message::{Cancel, Message, Request, Response};

/// The length prefix: 4 bytes, big-endian.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Decodes and encodes RRQ frames as [`Message`]s.
///
/// ```
/// use bytes::BytesMut;
/// use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
/// use taskwire_rrq::{Cancel, Message, RrqCodec};
///
/// let mut codec = RrqCodec::new();
/// let cancel = Cancel { protocol_version: "2".into(), job_id: "j1".into(), request_id: None, hard_kill: false };
/// let mut wire = BytesMut::new();
/// codec.encode(&Message::Cancel(cancel.clone()), &mut wire)?;
/// assert_eq!(&wire[4..], br#"{"type":"cancel","payload":{"protocol_version":"2","job_id":"j1","request_id":null,"hard_kill":false}}"#);
/// assert_eq!(codec.decode(&mut wire)?, Some(Message::Cancel(cancel)));
/// # Ok::<(), taskwire_codec::CodecError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RrqCodec {
    max_frame_length: u32,
    max_decoded_size: usize,
    /// The length of the frame whose prefix was read and whose text has not all arrived.
    pending: Option<u32>,
}

impl Default for RrqCodec {
    fn default() -> Self {
        RrqCodec::new()
    }
}

impl RrqCodec {
    /// A codec with the [`Builder`]'s defaults: 16 MiB frames, as RRQ's own cap.
    pub fn new() -> RrqCodec {
        RrqCodec::from_builder(&Builder::new())
    }

    /// A codec with `builder`'s frame length and decoded-size limits.
    pub fn from_builder(builder: &Builder) -> RrqCodec {
        RrqCodec {
            max_frame_length: builder.get_max_frame_length(),
            max_decoded_size: builder.get_max_decoded_size(),
            pending: None,
        }
    }

    /// The largest frame decoded or encoded, in bytes of JSON text.
    pub fn max_frame_length(&self) -> u32 {
        self.max_frame_length
    }
}

impl Decoder for RrqCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(prefix) = src.first_chunk::<LENGTH_PREFIX_LEN>() else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes(*prefix);
                if len == 0 {
                    src.advance(LENGTH_PREFIX_LEN);
                    return Err(CodecError::EmptyFrame);
                }
                if len > self.max_frame_length {
                    return Err(CodecError::FrameTooLarge {
                        len: u64::from(len),
                        max: self.max_frame_length,
                    });
                }
                src.advance(LENGTH_PREFIX_LEN);
                self.pending = Some(len);
                len
            }
        };
        // Never reserve the declared length: the buffer grows only as bytes arrive.
        let len = len as usize;
        if src.len() < len {
            return Ok(None);
        }
        self.pending = None;
        let parsed = parse(&src[..len], self.max_decoded_size);
        src.advance(len);
        parsed.map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if let Some(message) = self.decode(src)? {
            return Ok(Some(message));
        }
        let received = src.len() as u64;
        let prefix = LENGTH_PREFIX_LEN as u64;
        match self.pending {
            Some(len) => Err(CodecError::Truncated {
                expected: prefix + u64::from(len),
                received: prefix + received,
            }),
            None if received > 0 => Err(CodecError::Truncated {
                expected: prefix,
                received,
            }),
            None => Ok(None),
        }
    }
}

impl Encoder<&Message> for RrqCodec {
    type Error = CodecError;

    fn encode(&mut self, message: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        dst.put_u32(0);
        let written = serde_json::to_writer((&mut *dst).writer(), message);
        let len = (dst.len() - start - LENGTH_PREFIX_LEN) as u64;
        let checked = match written {
            Err(error) => Err(CodecError::Json(JsonError::new(
                JsonErrorKind::Body {
                    type_name: message.type_name(),
                },
                0,
                0,
                error.to_string(),
            ))),
            Ok(()) if len > u64::from(self.max_frame_length) => Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_length,
            }),
            // Cannot fail: the length is at most the u32 limit.
            Ok(()) => u32::try_from(len).map_err(|_| CodecError::FrameTooLarge {
                len,
                max: self.max_frame_length,
            }),
        };
        match checked {
            Ok(len) => {
                dst[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
                Ok(())
            }
            Err(error) => {
                dst.truncate(start);
                Err(error)
            }
        }
    }
}

impl Encoder<Message> for RrqCodec {
    type Error = CodecError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&message, dst)
    }
}

/// The envelope as read: members in any order, unknown ones ignored (RRQ's runtimes do
/// the same), the payload kept as text until the type is known.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Parses one frame's JSON text.
pub(crate) fn parse(text: &[u8], max_decoded_size: usize) -> Result<Message, CodecError> {
    if taskwire_proto::budget::needs_walk(text.len(), max_decoded_size) {
        taskwire_proto::budget::json_decoded_size(text, max_decoded_size).map_err(|over| {
            CodecError::DecodedTooLarge {
                type_id: 0,
                name: "an RRQ frame",
                counted: over.counted,
                max: over.max,
                frame: None,
            }
        })?;
    }
    let envelope: RawEnvelope<'_> = serde_json::from_slice(text).map_err(|error| {
        use serde_json::error::Category;
        let kind = match error.classify() {
            Category::Data => JsonErrorKind::Envelope,
            Category::Syntax | Category::Eof | Category::Io => JsonErrorKind::Syntax,
        };
        json_error(kind, &error)
    })?;
    let payload = envelope.payload.get();
    let body_error = |type_name: &'static str| {
        move |error: serde_json::Error| json_error(JsonErrorKind::Body { type_name }, &error)
    };
    match envelope.kind.as_ref() {
        "request" => serde_json::from_str::<Request>(payload)
            .map(Message::Request)
            .map_err(body_error("request")),
        "response" => serde_json::from_str::<Response>(payload)
            .map(Message::Response)
            .map_err(body_error("response")),
        "cancel" => serde_json::from_str::<Cancel>(payload)
            .map(Message::Cancel)
            .map_err(body_error("cancel")),
        other => Err(CodecError::Json(JsonError::new(
            JsonErrorKind::UnknownTypeName {
                name: other.to_owned(),
            },
            0,
            0,
            format!("RRQ frames are \"request\", \"response\" or \"cancel\", not {other:?}"),
        ))),
    }
}

fn json_error(kind: JsonErrorKind, error: &serde_json::Error) -> CodecError {
    CodecError::Json(JsonError::new(
        kind,
        error.line(),
        error.column(),
        error.to_string(),
    ))
}
