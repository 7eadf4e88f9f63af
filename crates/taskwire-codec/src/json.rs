//! The JSON framing: a 4-byte big-endian length, then one UTF-8 JSON object.
//!
//! ```text
//! +------------+--------------------------------------------------------------+
//! | len u32 BE | {"type":"<full protobuf name>","stream":<u32>,"end":<bool>,  |
//! |            |  "body":<canonical proto3 JSON of the message>}             |
//! +------------+--------------------------------------------------------------+
//! ```
//!
//! `type` and `body` are required; `stream` (default 0) and `end` (default false) are
//! optional. Encoders write the members in that order and leave defaults out, so the
//! bytes are canonical; decoders accept any order, and refuse unknown or repeated members.

use std::cell::Cell;
use std::fmt;
use std::io::Write as _;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use taskwire_proto::MessageSet;
use taskwire_proto::registry::{self, AnyMessage};
use tokio_util::codec::{Decoder, Encoder};

use crate::builder::{Builder, Limits};
use crate::header::STATUS_TYPE_ID;
use crate::{CodecError, Flags, Frame, JsonError, JsonErrorKind, RefusedFrame};

/// The length of a JSON frame's length prefix in bytes.
pub const JSON_LENGTH_PREFIX_LEN: usize = 4;

/// Decodes and encodes JSON frames as messages of the set `M` ([`AnyMessage`] by default).
/// Made by [`Builder::new_json_codec`].
#[derive(Debug)]
pub struct JsonCodec<M = AnyMessage> {
    limits: Limits,
    /// The length of the frame whose JSON text is being received.
    pending: Option<u32>,
    _messages: PhantomData<fn() -> M>,
}

impl<M: MessageSet> Default for JsonCodec<M> {
    fn default() -> Self {
        Builder::new().new_json_codec()
    }
}

impl<M: MessageSet> JsonCodec<M> {
    pub(crate) fn from_builder(builder: Builder) -> Self {
        JsonCodec {
            limits: Limits::new(builder),
            pending: None,
            _messages: PhantomData,
        }
    }

    /// The maximum frame length past the first frame.
    pub fn max_frame_length(&self) -> u32 {
        self.limits.max_frame_length
    }

    /// Changes the maximum frame length, for example to the limit a peer announced.
    pub fn set_max_frame_length(&mut self, max: u32) {
        self.limits.max_frame_length = max;
    }
}

impl<M: MessageSet> Decoder for JsonCodec<M> {
    type Item = Frame<M>;
    type Error = CodecError;

    // Always inlined into the read loop: out of line, the frame it returns is copied once
    // more on the caller's side, and a conversation enum's frame is copied by `memcpy`.
    #[inline(always)]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame<M>>, CodecError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(prefix) = src.first_chunk::<JSON_LENGTH_PREFIX_LEN>() else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes(*prefix);
                Limits::check(u64::from(len), self.limits.decode_limit())?;
                src.advance(JSON_LENGTH_PREFIX_LEN);
                self.pending = Some(len);
                len
            }
        };
        // Never reserve the declared length: the buffer grows only as bytes arrive.
        if src.len() < len as usize {
            return Ok(None);
        }
        self.pending = None;
        self.limits.first_decoded = true;
        // Parsed in place, then skipped: JSON bodies share no bytes with the buffer, so
        // splitting the text off (two reference-count updates) would buy nothing.
        let text = &src[..len as usize];
        if let Err(over) = check_decoded_size(text, self.limits.max_decoded_size) {
            let over = confine_decoded_too_large(over, text);
            src.advance(len as usize);
            return Err(over);
        }
        // The canonical path builds the frame where it is returned: a conversation enum is
        // over 128 bytes, so each move of it on the way out would be a call to `memcpy`.
        if let Some(CanonicalEnvelope {
            type_id,
            stream_id,
            flags,
            body,
        }) = CanonicalEnvelope::parse::<M>(text)
        {
            let mut de = serde_json::Deserializer::from_slice(body);
            let parsed = M::deserialize_json_body(type_id, &mut de);
            if parsed.is_ok() && de.end().is_ok() {
                drop(de);
                src.advance(len as usize);
                // Mapped, not unwrapped: `parsed` is `Ok`, and this keeps the frame to one move.
                return parsed
                    .map(|message| {
                        Some(Frame {
                            stream_id,
                            flags,
                            message,
                        })
                    })
                    .map_err(|error| body_error(type_id, &error));
            }
        }
        let parsed = parse_general(text);
        src.advance(len as usize);
        parsed.map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame<M>>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let received = src.len() as u64;
        let prefix = JSON_LENGTH_PREFIX_LEN as u64;
        match self.pending {
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated {
                expected: prefix,
                received,
            }),
            Some(len) => Err(CodecError::Truncated {
                expected: prefix + u64::from(len),
                received: prefix + received,
            }),
        }
    }
}

impl<M: MessageSet> Encoder<Frame<M>> for JsonCodec<M> {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame<M>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

impl<M: MessageSet> Encoder<&Frame<M>> for JsonCodec<M> {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame<M>, dst: &mut BytesMut) -> Result<(), CodecError> {
        let type_id = frame.message.type_id();
        if frame.flags.is_status() != (type_id == STATUS_TYPE_ID) {
            return Err(CodecError::StatusFlagMismatch {
                type_id,
                flags: frame.flags.bits(),
            });
        }
        let start = dst.len();
        dst.put_u32(0);
        let written = write_envelope(frame, dst);
        let len = dst.len() - start - JSON_LENGTH_PREFIX_LEN;
        let checked = written.and_then(|()| Limits::check(len as u64, self.limits.encode_limit()));
        match checked {
            Ok(len) => {
                dst[start..start + JSON_LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
                self.limits.first_encoded = true;
                Ok(())
            }
            Err(error) => {
                dst.truncate(start);
                Err(error)
            }
        }
    }
}

fn write_envelope<M: MessageSet>(frame: &Frame<M>, dst: &mut BytesMut) -> Result<(), CodecError> {
    let mut out = AppendWriter(dst);
    // Names are protobuf identifiers joined by dots: nothing in them needs escaping.
    // Plain byte writes: the formatting machinery costs more than the envelope itself.
    out.write_all(b"{\"type\":\"")?;
    out.write_all(frame.message.name().as_bytes())?;
    out.write_all(b"\"")?;
    if frame.stream_id != 0 {
        out.write_all(b",\"stream\":")?;
        let mut digits = [0u8; 10];
        out.write_all(decimal(frame.stream_id, &mut digits))?;
    }
    if frame.flags.is_end_stream() {
        out.write_all(b",\"end\":true")?;
    }
    out.write_all(b",\"body\":")?;
    serde_json::to_writer(&mut out, &BodyRef(&frame.message))
        .map_err(|error| body_error(frame.message.type_id(), &error))?;
    out.write_all(b"}")?;
    Ok(())
}

/// Appends what it is given to a `BytesMut`. serde_json writes a message in many small
/// pieces (each key, quote and value): through `BytesMut::writer`, each piece goes
/// through `BufMut::put`, out of line, and a 128 B message cost about 40% more
/// instructions than into a `Vec`. `extend_from_slice` is inlined.
struct AppendWriter<'a>(&'a mut BytesMut);

impl std::io::Write for AppendWriter<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` in decimal, written into the end of `buffer`.
fn decimal(mut value: u32, buffer: &mut [u8; 10]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

struct BodyRef<'a, M>(&'a M);

impl<M: MessageSet> serde::Serialize for BodyRef<'_, M> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_json_body(serializer)
    }
}

/// A body that does not match its type, or (encoding) that serde_json refused.
fn body_error(type_id: u16, error: &serde_json::Error) -> CodecError {
    CodecError::Json(JsonError::new(
        JsonErrorKind::Body {
            type_name: type_name(type_id),
        },
        error.line(),
        error.column(),
        error.to_string(),
    ))
}

fn type_name(type_id: u16) -> &'static str {
    registry::by_type_id(type_id).map_or("<unregistered>", |info| info.name)
}

/// An over-budget frame is confined to its call when its text is well-formed and its
/// envelope names the stream; otherwise the connection cannot trust where it was going.
#[cold]
pub(crate) fn confine_decoded_too_large(error: CodecError, text: &[u8]) -> CodecError {
    match error {
        CodecError::DecodedTooLarge {
            type_id,
            name,
            counted,
            max,
            frame: None,
        } => CodecError::DecodedTooLarge {
            type_id,
            name,
            counted,
            max,
            frame: well_formed(text)
                .ok()
                .and_then(|()| envelope_frame(text).ok()),
        },
        other => other,
    }
}

/// Checks that `text` is one well-formed JSON value within the nesting limit, with valid
/// UTF-8 and escapes everywhere, whatever the members mean.
fn well_formed(text: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    serde::Deserialize::deserialize(&mut de)
        .map(|taskwire_proto::json::UnknownValue| ())
        .and_then(|()| de.end())
}

/// The stream and flags a well-formed envelope carries, or the envelope's first fault:
/// what a frame refused for its `type` or body is confined to.
fn envelope_frame(text: &[u8]) -> Result<RefusedFrame, serde_json::Error> {
    struct EnvelopeFrame;
    impl<'de> Visitor<'de> for EnvelopeFrame {
        type Value = RefusedFrame;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a taskwire JSON frame: an object with `type` and `body`")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RefusedFrame, A::Error> {
            let (mut type_seen, mut body_seen) = (false, false);
            let mut stream_id: Option<u32> = None;
            let mut end: Option<bool> = None;
            while let Some(member) = map.next_key::<Member>()? {
                let (seen, name) = match member {
                    Member::Type => (std::mem::replace(&mut type_seen, true), "type"),
                    Member::Body => (std::mem::replace(&mut body_seen, true), "body"),
                    Member::Stream => (stream_id.is_some(), "stream"),
                    Member::End => (end.is_some(), "end"),
                };
                if seen {
                    return Err(de::Error::duplicate_field(name));
                }
                match member {
                    Member::Type => {
                        map.next_value::<&str>()?;
                    }
                    Member::Body => {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                    Member::Stream => stream_id = Some(map.next_value()?),
                    Member::End => end = Some(map.next_value()?),
                }
            }
            if !type_seen {
                return Err(de::Error::missing_field("type"));
            }
            if !body_seen {
                return Err(de::Error::missing_field("body"));
            }
            Ok(RefusedFrame {
                stream_id: stream_id.unwrap_or(0),
                flags: if end == Some(true) {
                    Flags::END_STREAM
                } else {
                    Flags::empty()
                },
            })
        }
    }
    serde_json::Deserializer::from_slice(text).deserialize_map(EnvelopeFrame)
}

/// Which part of the envelope a data error came from, for a precise error kind.
#[derive(Default)]
enum Blame {
    #[default]
    Envelope,
    UnknownType(String),
    Body(u16),
}

/// Parses one frame's JSON text.
/// Refuses a JSON frame whose decoded size (`docs/protocol.md` §8) is over `max`.
pub(crate) fn check_decoded_size(text: &[u8], max: usize) -> Result<(), CodecError> {
    if taskwire_proto::budget::needs_walk(text.len(), max) {
        taskwire_proto::budget::json_decoded_size(text, max).map_err(|over| {
            CodecError::DecodedTooLarge {
                type_id: 0,
                name: "a JSON frame",
                counted: over.counted,
                max: over.max,
                frame: None,
            }
        })?;
    }
    Ok(())
}

/// The members of a canonical envelope, which every taskwire encoder writes: members in
/// the order `type`, `stream`, `end`, `body`, defaults left out, no whitespace, no escapes
/// in the name. Reading it directly skips serde's map machinery, which costs about 1,500
/// instructions a frame (0.68× of bare serde_json at 128 bytes). `None` for any other
/// text: the general parser then gives the same frame for valid text and the precise
/// error for the rest, so this path changes speed, never results (`fuzzing::json_frames`
/// checks that the decoder and the general parser agree).
struct CanonicalEnvelope<'a> {
    type_id: u16,
    stream_id: u32,
    flags: Flags,
    /// The body's JSON text, not yet parsed.
    body: &'a [u8],
}

impl<'a> CanonicalEnvelope<'a> {
    #[inline]
    fn parse<M: MessageSet>(text: &'a [u8]) -> Option<Self> {
        let rest = text.strip_prefix(b"{\"type\":\"")?;
        let name_end = memchr::memchr(b'"', rest)?;
        let type_id = M::type_id_of(&rest[..name_end])?;
        let mut rest = &rest[name_end + 1..];
        let mut stream_id = 0;
        if let Some(after) = rest.strip_prefix(b",\"stream\":") {
            let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
            // JSON forbids leading zeros; u32 bounds the value. Either way: the general path.
            if digits == 0 || (digits > 1 && after[0] == b'0') {
                return None;
            }
            stream_id = std::str::from_utf8(&after[..digits]).ok()?.parse().ok()?;
            rest = &after[digits..];
        }
        let mut flags = if type_id == STATUS_TYPE_ID {
            Flags::STATUS
        } else {
            Flags::empty()
        };
        if let Some(after) = rest.strip_prefix(b",\"end\":true") {
            flags = flags | Flags::END_STREAM;
            rest = after;
        }
        let body = rest.strip_prefix(b",\"body\":")?.strip_suffix(b"}")?;
        // Parsed alone, the body may nest one level deeper than inside the envelope
        // (serde_json takes at most 127 levels). Only a body with 127 or more opening
        // brackets (so 254 bytes or more) could use that level, in a type that nests
        // without bound or in a member its schema does not know.
        if body.len() >= 254 && opening_brackets_reach(body, 127) {
            return None;
        }
        Some(CanonicalEnvelope {
            type_id,
            stream_id,
            flags,
            body,
        })
    }
}

/// Whether `text` holds at least `n` of `[` and `{`, strings included. One comparison per
/// byte (`[` is `{` without bit 5), summed in bytes over runs of 255 so that the loop
/// vectorizes 32 bytes at a time; it stops at the first run that reaches `n`.
fn opening_brackets_reach(text: &[u8], n: usize) -> bool {
    let mut count = 0;
    for run in text.chunks(255) {
        let in_run = run
            .iter()
            .fold(0u8, |sum, &b| sum.wrapping_add(u8::from(b | 0x20 == b'{')));
        count += usize::from(in_run);
        if count >= n {
            return true;
        }
    }
    false
}

/// Parses any JSON frame text, naming the part of the envelope an error came from.
pub(crate) fn parse_general<M: MessageSet>(text: &[u8]) -> Result<Frame<M>, CodecError> {
    let blame = Cell::new(Blame::Envelope);
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = EnvelopeSeed::<M> {
        blame: &blame,
        _messages: PhantomData,
    }
    .deserialize(&mut de)
    .and_then(|frame| de.end().map(|()| frame));
    parsed.map_err(|error| refusal(text, &error, blame.take()))
}

/// Why `text` was refused. The parser stops at the first fault it meets, but the kinds
/// rank: a text that is not well-formed JSON anywhere is `Syntax`, then an invalid
/// envelope is `Envelope`, and only a frame whose whole envelope is valid is refused for
/// its `type` or body, confined to the stream the envelope names (`docs/protocol.md` §3).
#[cold]
fn refusal(text: &[u8], error: &serde_json::Error, blame: Blame) -> CodecError {
    use serde_json::error::Category;
    let json_error = |kind, error: &serde_json::Error| {
        JsonError::new(kind, error.line(), error.column(), error.to_string())
    };
    if !matches!(error.classify(), Category::Data) {
        return CodecError::Json(json_error(JsonErrorKind::Syntax, error));
    }
    if let Err(syntax) = well_formed(text) {
        return CodecError::Json(json_error(JsonErrorKind::Syntax, &syntax));
    }
    let kind = match blame {
        Blame::Envelope => return CodecError::Json(json_error(JsonErrorKind::Envelope, error)),
        Blame::UnknownType(name) => JsonErrorKind::UnknownTypeName { name },
        Blame::Body(type_id) => JsonErrorKind::Body {
            type_name: type_name(type_id),
        },
    };
    match envelope_frame(text) {
        Ok(frame) => CodecError::Json(json_error(kind, error).confined_to(frame)),
        Err(envelope) => CodecError::Json(json_error(JsonErrorKind::Envelope, &envelope)),
    }
}

struct EnvelopeSeed<'a, M> {
    blame: &'a Cell<Blame>,
    _messages: PhantomData<fn() -> M>,
}

impl<'de, M: MessageSet> DeserializeSeed<'de> for EnvelopeSeed<'_, M> {
    type Value = Frame<M>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Frame<M>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

const MEMBERS: &[&str] = &["type", "stream", "end", "body"];

enum Member {
    Type,
    Stream,
    End,
    Body,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Member, D::Error> {
        struct MemberVisitor;
        impl Visitor<'_> for MemberVisitor {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of `type`, `stream`, `end`, `body`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Member, E> {
                match v {
                    "type" => Ok(Member::Type),
                    "stream" => Ok(Member::Stream),
                    "end" => Ok(Member::End),
                    "body" => Ok(Member::Body),
                    other => Err(E::unknown_field(other, MEMBERS)),
                }
            }
        }
        deserializer.deserialize_identifier(MemberVisitor)
    }
}

impl<'de, M: MessageSet> Visitor<'de> for EnvelopeSeed<'_, M> {
    type Value = Frame<M>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a taskwire JSON frame: an object with `type` and `body`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame<M>, A::Error> {
        let mut type_id: Option<u16> = None;
        let mut stream_id: Option<u32> = None;
        let mut end: Option<bool> = None;
        let mut body: Option<M> = None;
        // A body that precedes `type` is kept as unparsed text until the type is known.
        let mut early_body: Option<&'de RawValue> = None;
        while let Some(member) = map.next_key::<Member>()? {
            match member {
                Member::Type => {
                    if type_id.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    }
                    let seed = TypeNameSeed::<M> {
                        blame: self.blame,
                        _messages: PhantomData,
                    };
                    type_id = Some(map.next_value_seed(seed)?);
                }
                Member::Stream => {
                    if stream_id.is_some() {
                        return Err(de::Error::duplicate_field("stream"));
                    }
                    stream_id = Some(map.next_value()?);
                }
                Member::End => {
                    if end.is_some() {
                        return Err(de::Error::duplicate_field("end"));
                    }
                    end = Some(map.next_value()?);
                }
                Member::Body => {
                    if body.is_some() || early_body.is_some() {
                        return Err(de::Error::duplicate_field("body"));
                    }
                    match type_id {
                        Some(type_id) => {
                            let seed = BodySeed::<M> {
                                type_id,
                                blame: self.blame,
                                _messages: PhantomData,
                            };
                            body = Some(map.next_value_seed(seed)?);
                        }
                        None => early_body = Some(map.next_value()?),
                    }
                }
            }
        }
        let type_id = type_id.ok_or_else(|| de::Error::missing_field("type"))?;
        let message = match (body, early_body) {
            (Some(message), _) => message,
            (None, Some(raw)) => {
                let seed = BodySeed::<M> {
                    type_id,
                    blame: self.blame,
                    _messages: PhantomData,
                };
                seed.deserialize(raw).map_err(de::Error::custom)?
            }
            (None, None) => return Err(de::Error::missing_field("body")),
        };
        let mut flags = if type_id == STATUS_TYPE_ID {
            Flags::STATUS
        } else {
            Flags::empty()
        };
        if end == Some(true) {
            flags = flags | Flags::END_STREAM;
        }
        Ok(Frame {
            stream_id: stream_id.unwrap_or(0),
            flags,
            message,
        })
    }
}

/// Resolves `type` to a type id of `M` without allocating.
struct TypeNameSeed<'a, M> {
    blame: &'a Cell<Blame>,
    _messages: PhantomData<fn() -> M>,
}

impl<'de, M: MessageSet> DeserializeSeed<'de> for TypeNameSeed<'_, M> {
    type Value = u16;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u16, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<M: MessageSet> Visitor<'_> for TypeNameSeed<'_, M> {
    type Value = u16;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a full protobuf message name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<u16, E> {
        M::type_id_of(name).ok_or_else(|| {
            self.blame.set(Blame::UnknownType(name.to_owned()));
            E::custom(format_args!("unknown message type name {name:?}"))
        })
    }
}

/// Deserializes the body as the message `type_id` names, blaming the body for errors.
struct BodySeed<'a, M> {
    type_id: u16,
    blame: &'a Cell<Blame>,
    _messages: PhantomData<fn() -> M>,
}

impl<'de, M: MessageSet> DeserializeSeed<'de> for BodySeed<'_, M> {
    type Value = M;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<M, D::Error> {
        self.blame.set(Blame::Body(self.type_id));
        let message = M::deserialize_json_body(self.type_id, deserializer)?;
        self.blame.set(Blame::Envelope);
        Ok(message)
    }
}
