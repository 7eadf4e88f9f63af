//! The one error type every codec returns.

use std::fmt;
use std::ops::RangeInclusive;

use crate::Flags;

/// Why a frame could not be decoded or encoded.
///
/// Every variant names the offending values. Most errors leave the decoder somewhere
/// inside a frame: close the connection (after a `GoAway` where the transport allows)
/// rather than read on. An error whose [`refused_frame`](CodecError::refused_frame) is
/// `Some` is confined to one frame that the decoder consumed whole: answer that call with
/// the error and go on decoding (`docs/protocol.md` §9).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame's declared or encoded length is over the limit in force.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The declared or encoded length.
        len: u64,
        /// The limit in force (the first-frame limit for a connection's first frame).
        max: u32,
    },
    /// The first byte of a binary frame is not a version this peer speaks.
    #[error("unsupported frame version {got}; supported: {}..={}", supported.start(), supported.end())]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
        /// The versions this peer supports.
        supported: RangeInclusive<u8>,
    },
    /// The type id is 0 or not a message the receiver's set contains.
    #[error("unknown message type id {type_id:#06x}")]
    UnknownMessageType {
        /// The type id received.
        type_id: u16,
        /// The frame, when the decoder consumed it whole and can go on.
        frame: Option<RefusedFrame>,
    },
    /// A flag bit that version 1 reserves is set.
    #[error("reserved flag bits set in flags {flags:#04x} (reserved mask 0xfc)")]
    ReservedFlags {
        /// The whole flags byte received.
        flags: u8,
    },
    /// The status flag is set on a frame whose type is not Status, or missing on one whose
    /// type is.
    #[error("status flag disagrees with type id {type_id:#06x} (flags {flags:#04x})")]
    StatusFlagMismatch {
        /// The frame's type id.
        type_id: u16,
        /// The frame's flags byte.
        flags: u8,
    },
    /// A frame declared a length of 0 where its framing forbids empty frames (RRQ's
    /// JSON envelope; taskwire's own framings never produce this error).
    #[error("empty frame: the length prefix is 0")]
    EmptyFrame,
    /// The input ended inside a frame. A clean end of input between frames is not an
    /// error: decoders return `None` there.
    #[error("input ended inside a frame after {received} of {expected} bytes")]
    Truncated {
        /// The bytes the frame needs (header or length prefix, plus body when known).
        expected: u64,
        /// The bytes that arrived.
        received: u64,
    },
    /// The protobuf body does not decode as the message its type id names.
    #[error("invalid protobuf body for {name} ({type_id:#06x}): {source}")]
    Protobuf {
        /// The frame's type id.
        type_id: u16,
        /// The message's full name, or `"<unregistered>"`.
        name: &'static str,
        /// What prost reported.
        source: prost::DecodeError,
        /// The frame, when the decoder consumed it whole and can go on.
        frame: Option<RefusedFrame>,
    },
    /// The body would decode into more memory than the decoded-size budget allows
    /// (`docs/protocol.md` §8): refused before decoding.
    #[error(
        "{name} ({type_id:#06x}) would decode to more than {max} bytes (counted {counted} before stopping)"
    )]
    DecodedTooLarge {
        /// The frame's type id (0 for a JSON frame, whose type is read later).
        type_id: u16,
        /// The message's full name, or what the frame is.
        name: &'static str,
        /// The decoded size counted when the check stopped: more than `max`.
        counted: usize,
        /// The budget in force.
        max: usize,
        /// The frame, when the decoder consumed it whole and can go on (for JSON, when
        /// the text is well-formed and its envelope names the stream).
        frame: Option<RefusedFrame>,
    },
    /// A JSON frame is malformed, names an unknown type, or its body does not match it.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The kind of a [`CodecError`], without its values: for matching, metrics and the
/// `error` field of the conformance vectors (see [`ErrorKind::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`CodecError::FrameTooLarge`].
    FrameTooLarge,
    /// [`CodecError::UnsupportedVersion`].
    UnsupportedVersion,
    /// [`CodecError::UnknownMessageType`].
    UnknownMessageType,
    /// [`CodecError::ReservedFlags`].
    ReservedFlags,
    /// [`CodecError::StatusFlagMismatch`].
    StatusFlagMismatch,
    /// [`CodecError::EmptyFrame`].
    EmptyFrame,
    /// [`CodecError::Truncated`].
    Truncated,
    /// [`CodecError::Protobuf`].
    Protobuf,
    /// [`CodecError::DecodedTooLarge`].
    DecodedTooLarge,
    /// [`JsonErrorKind::Syntax`].
    JsonSyntax,
    /// [`JsonErrorKind::Envelope`].
    JsonEnvelope,
    /// [`JsonErrorKind::UnknownTypeName`].
    JsonUnknownType,
    /// [`JsonErrorKind::Body`].
    JsonBody,
    /// [`CodecError::Io`].
    Io,
}

impl ErrorKind {
    /// The kind's stable snake_case name, as used in `docs/protocol.md` and the vectors.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::FrameTooLarge => "frame_too_large",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::UnknownMessageType => "unknown_message_type",
            ErrorKind::ReservedFlags => "reserved_flags",
            ErrorKind::StatusFlagMismatch => "status_flag_mismatch",
            ErrorKind::EmptyFrame => "empty_frame",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Protobuf => "protobuf",
            ErrorKind::DecodedTooLarge => "decoded_too_large",
            ErrorKind::JsonSyntax => "json_syntax",
            ErrorKind::JsonEnvelope => "json_envelope",
            ErrorKind::JsonUnknownType => "json_unknown_type",
            ErrorKind::JsonBody => "json_body",
            ErrorKind::Io => "io",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The frame an error was confined to: the decoder consumed it whole, so the next frame
/// starts where it ended, and the call on `stream_id` can be answered with the error while
/// the connection goes on. See [`CodecError::refused_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefusedFrame {
    /// The stream id the frame carried.
    pub stream_id: u32,
    /// The frame's flags (END_STREAM: the peer sends nothing more on the stream).
    pub flags: Flags,
}

impl CodecError {
    /// The frame this error is confined to, when the decoder consumed exactly that frame
    /// and can decode the next one: an unknown type (including type id 0 with a body
    /// within the limit, whose body is skipped as it arrives), a body that does not
    /// decode, a body over the decoded-size budget, and a JSON frame whose envelope is
    /// valid but whose `type` is unknown or whose body does not match it. `None` for every
    /// error after which the connection cannot go on (and for encoding errors).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use taskwire_codec::tokio_util::codec::Decoder;
    /// use taskwire_codec::Builder;
    ///
    /// let mut codec = Builder::new().first_frame_done(true).new_any_json_codec();
    /// let text = br#"{"type":"taskwire.session.v1.Ping","stream":7,"body":{"nonce":"x"}}"#;
    /// let mut input = BytesMut::new();
    /// input.extend_from_slice(&(text.len() as u32).to_be_bytes());
    /// input.extend_from_slice(text);
    /// let error = codec.decode(&mut input).unwrap_err();
    /// assert_eq!(error.refused_frame().map(|frame| frame.stream_id), Some(7));
    /// assert!(input.is_empty(), "the frame was consumed whole");
    /// ```
    pub fn refused_frame(&self) -> Option<RefusedFrame> {
        match self {
            CodecError::UnknownMessageType { frame, .. }
            | CodecError::Protobuf { frame, .. }
            | CodecError::DecodedTooLarge { frame, .. } => *frame,
            CodecError::Json(error) => error.frame,
            _ => None,
        }
    }

    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CodecError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            CodecError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            CodecError::UnknownMessageType { .. } => ErrorKind::UnknownMessageType,
            CodecError::ReservedFlags { .. } => ErrorKind::ReservedFlags,
            CodecError::StatusFlagMismatch { .. } => ErrorKind::StatusFlagMismatch,
            CodecError::EmptyFrame => ErrorKind::EmptyFrame,
            CodecError::Truncated { .. } => ErrorKind::Truncated,
            CodecError::Protobuf { .. } => ErrorKind::Protobuf,
            CodecError::DecodedTooLarge { .. } => ErrorKind::DecodedTooLarge,
            CodecError::Json(e) => match e.kind() {
                JsonErrorKind::Syntax => ErrorKind::JsonSyntax,
                JsonErrorKind::Envelope => ErrorKind::JsonEnvelope,
                JsonErrorKind::UnknownTypeName { .. } => ErrorKind::JsonUnknownType,
                JsonErrorKind::Body { .. } => ErrorKind::JsonBody,
            },
            CodecError::Io(_) => ErrorKind::Io,
        }
    }
}

/// Why a JSON frame was refused.
#[derive(Debug, thiserror::Error)]
#[error("{kind} at line {line}, column {column}: {detail}")]
pub struct JsonError {
    kind: JsonErrorKind,
    line: usize,
    column: usize,
    detail: String,
    frame: Option<RefusedFrame>,
}

impl JsonError {
    /// An error of `kind` at a 1-based `line` and `column` (0 if unknown) of a frame's
    /// JSON text. For framings built on this crate's limits and errors, such as the
    /// dialects of other systems; this crate's own codecs make them as they decode.
    pub fn new(kind: JsonErrorKind, line: usize, column: usize, detail: String) -> Self {
        JsonError {
            kind,
            line,
            column,
            detail,
            frame: None,
        }
    }

    /// The same error, confined to `frame` (see [`CodecError::refused_frame`]).
    pub(crate) fn confined_to(mut self, frame: RefusedFrame) -> Self {
        self.frame = Some(frame);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &JsonErrorKind {
        &self.kind
    }

    /// The 1-based line within the frame's JSON text where it went wrong, or 0 if unknown.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The 1-based column within that line, or 0 if unknown.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The parser's description.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// The kinds of [`JsonError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonErrorKind {
    /// Not one well-formed UTF-8 JSON value: bad syntax, invalid UTF-8, a lone surrogate
    /// escape, nesting deeper than 128 levels, or data after the object.
    Syntax,
    /// Well-formed JSON, but not a valid envelope: not an object, a missing `type` or
    /// `body`, a member given twice, an unknown member, or a member of the wrong type.
    Envelope,
    /// `type` names no message the receiver knows.
    UnknownTypeName {
        /// The name received.
        name: String,
    },
    /// The body is not the canonical JSON of the message `type` names.
    Body {
        /// The full name of the message the body should be.
        type_name: &'static str,
    },
}

impl fmt::Display for JsonErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonErrorKind::Syntax => f.write_str("JSON syntax error"),
            JsonErrorKind::Envelope => f.write_str("invalid JSON frame envelope"),
            JsonErrorKind::UnknownTypeName { name } => {
                write!(f, "unknown message type name {name:?}")
            }
            JsonErrorKind::Body { type_name } => write!(f, "body does not match {type_name}"),
        }
    }
}
