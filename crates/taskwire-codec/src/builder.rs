//! The builder every codec is made from.

use taskwire_proto::MessageSet;
use taskwire_proto::registry::AnyMessage;

use crate::{BinaryCodec, BinaryMessageCodec, JsonCodec};

/// The default maximum frame length: 16 MiB.
///
/// For binary frames it bounds the body length; for JSON frames, the length prefix.
/// Peers announce their own limit in Hello/Negotiated; a sender must respect the limit of
/// the receiver.
pub const DEFAULT_MAX_FRAME_LENGTH: u32 = 16 * 1024 * 1024;

pub use taskwire_proto::budget::DEFAULT_MAX_DECODED_SIZE;

/// The default maximum length of a connection's first frame (the Hello): 64 KiB.
///
/// An unauthenticated peer can make the server buffer at most this much before the
/// handshake has told it anything.
pub const DEFAULT_MAX_FIRST_FRAME_LENGTH: u32 = 64 * 1024;

/// Configures and makes codecs. `Copy`, so one configured builder can stamp out a codec
/// per connection.
///
/// ```
/// use taskwire_codec::Builder;
///
/// let mut builder = Builder::new();
/// builder.max_frame_length(1 << 20).max_first_frame_length(4096);
/// let codec = builder.new_binary_codec();
/// assert_eq!(codec.max_frame_length(), 1 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Builder {
    pub(crate) max_frame_length: u32,
    pub(crate) max_first_frame_length: u32,
    pub(crate) first_frame_done: bool,
    pub(crate) max_decoded_size: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the documented defaults.
    pub const fn new() -> Builder {
        Builder {
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_first_frame_length: DEFAULT_MAX_FIRST_FRAME_LENGTH,
            first_frame_done: false,
            max_decoded_size: DEFAULT_MAX_DECODED_SIZE,
        }
    }

    /// The largest frame decoded or encoded, in bytes (binary: the body; JSON: the JSON
    /// text). Default [`DEFAULT_MAX_FRAME_LENGTH`] (16 MiB).
    ///
    /// Memory: a connection buffers at most one frame of this size, and only as its bytes
    /// arrive.
    pub fn max_frame_length(&mut self, max: u32) -> &mut Self {
        self.max_frame_length = max;
        self
    }

    /// The largest first frame of a connection. Default
    /// [`DEFAULT_MAX_FIRST_FRAME_LENGTH`] (64 KiB). The smaller of this and
    /// [`max_frame_length`](Self::max_frame_length) applies.
    ///
    /// Memory: what an unauthenticated peer can make the receiver buffer.
    pub fn max_first_frame_length(&mut self, max: u32) -> &mut Self {
        self.max_first_frame_length = max;
        self
    }

    /// The most memory one decoded body may take, by the decoded-size rule of
    /// `docs/protocol.md` §8: a body over it is refused with
    /// [`CodecError::DecodedTooLarge`](crate::CodecError::DecodedTooLarge) before it is
    /// decoded. Default [`DEFAULT_MAX_DECODED_SIZE`] (64 MiB).
    ///
    /// Memory: bounds what a frame can expand into. Protobuf lets two bytes stand for a
    /// whole embedded message, so without it a 16 MiB frame could decode into gigabytes.
    pub fn max_decoded_size(&mut self, max: usize) -> &mut Self {
        self.max_decoded_size = max;
        self
    }

    /// Whether the codecs start past the first frame, for a connection whose handshake
    /// was read by another codec (for example after sniffing the framing). Default `false`.
    pub fn first_frame_done(&mut self, done: bool) -> &mut Self {
        self.first_frame_done = done;
        self
    }

    /// The maximum frame length set by [`max_frame_length`](Self::max_frame_length).
    pub const fn get_max_frame_length(&self) -> u32 {
        self.max_frame_length
    }

    /// The first-frame limit set by [`max_first_frame_length`](Self::max_first_frame_length).
    pub const fn get_max_first_frame_length(&self) -> u32 {
        self.max_first_frame_length
    }

    /// The decoded-size budget set by [`max_decoded_size`](Self::max_decoded_size).
    pub const fn get_max_decoded_size(&self) -> usize {
        self.max_decoded_size
    }

    /// A binary codec yielding raw frames for routing.
    pub fn new_binary_codec(&self) -> BinaryCodec {
        BinaryCodec::from_builder(*self)
    }

    /// A binary codec yielding messages of the set `M`, for example one conversation's
    /// enum (`SessionMessage`) or a single message type.
    pub fn new_binary_message_codec<M: MessageSet>(&self) -> BinaryMessageCodec<M> {
        BinaryMessageCodec::from_builder(*self)
    }

    /// A JSON codec yielding messages of the set `M` ([`AnyMessage`] by default).
    pub fn new_json_codec<M: MessageSet>(&self) -> JsonCodec<M> {
        JsonCodec::from_builder(*self)
    }

    /// A JSON codec for every registered message.
    pub fn new_any_json_codec(&self) -> JsonCodec<AnyMessage> {
        JsonCodec::from_builder(*self)
    }
}

/// The limit state one codec carries: its limits and whether the first frame of each
/// direction has passed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_frame_length: u32,
    pub(crate) max_first_frame_length: u32,
    pub(crate) first_decoded: bool,
    pub(crate) first_encoded: bool,
    pub(crate) max_decoded_size: usize,
}

impl Limits {
    pub(crate) fn new(builder: Builder) -> Self {
        Limits {
            max_frame_length: builder.max_frame_length,
            max_first_frame_length: builder.max_first_frame_length,
            first_decoded: builder.first_frame_done,
            first_encoded: builder.first_frame_done,
            max_decoded_size: builder.max_decoded_size,
        }
    }

    fn limit(&self, first_done: bool) -> u32 {
        if first_done {
            self.max_frame_length
        } else {
            self.max_frame_length.min(self.max_first_frame_length)
        }
    }

    pub(crate) fn decode_limit(&self) -> u32 {
        self.limit(self.first_decoded)
    }

    pub(crate) fn encode_limit(&self) -> u32 {
        self.limit(self.first_encoded)
    }

    /// Checks a length against `max`; lengths are `u64` so that encoders can report sizes
    /// over `u32::MAX` instead of truncating them.
    pub(crate) fn check(len: u64, max: u32) -> Result<u32, crate::CodecError> {
        if len > u64::from(max) {
            return Err(crate::CodecError::FrameTooLarge { len, max });
        }
        // Cannot fail: max is a u32.
        u32::try_from(len).map_err(|_| crate::CodecError::FrameTooLarge { len, max })
    }
}
