//! The fixed 12-byte header of a binary frame.

use std::fmt;
use std::ops::BitOr;

use taskwire_proto::WireMessage;
use taskwire_proto::session::v1::Status;

use crate::CodecError;

/// The binary framing version this crate speaks. A peer that reads any other value in a
/// frame's first byte stops: a later version may change everything after that byte.
pub const VERSION: u8 = 1;

/// The length of a binary frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// The type id of `taskwire.session.v1.Status`, the only message a status frame carries.
pub(crate) const STATUS_TYPE_ID: u16 = Status::TYPE_ID;

/// The flag bits of a frame.
///
/// Version 1 defines two; the other six are reserved, must be sent as zero, and make a
/// receiver reject the frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// The sender sends nothing more on this frame's stream.
    pub const END_STREAM: Flags = Flags(0b0000_0001);
    /// The body is a `taskwire.session.v1.Status` that ends the call.
    pub const STATUS: Flags = Flags(0b0000_0010);
    /// Bits that version 1 reserves.
    pub const RESERVED_BITS: u8 = 0b1111_1100;

    /// No flags.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// The flags in `bits`, or `None` if a reserved bit is set.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & Self::RESERVED_BITS == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether [`Flags::END_STREAM`] is set.
    pub const fn is_end_stream(self) -> bool {
        self.contains(Flags::END_STREAM)
    }

    /// Whether [`Flags::STATUS`] is set.
    pub const fn is_status(self) -> bool {
        self.contains(Flags::STATUS)
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.is_end_stream() {
            names.push("END_STREAM");
        }
        if self.is_status() {
            names.push("STATUS");
        }
        if names.is_empty() {
            f.write_str("Flags(empty)")
        } else {
            write!(f, "Flags({})", names.join(" | "))
        }
    }
}

/// The header of a binary frame, as it is on the wire.
///
/// ```text
///  0         1         2         4           8          12
///  +---------+---------+---------+-----------+----------+
///  | version |  flags  | type id | stream id | body len |
///  |   u8    |   u8    | u16 BE  |  u32 BE   |  u32 BE  |
///  +---------+---------+---------+-----------+----------+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// End of stream and status bits.
    pub flags: Flags,
    /// The registry type id of the body's message; never 0.
    pub type_id: u16,
    /// The call this frame belongs to on a multiplexed connection, or 0.
    pub stream_id: u32,
    /// The length of the protobuf body that follows, in bytes.
    pub body_len: u32,
}

impl FrameHeader {
    /// Parses and checks a header: the version, the reserved flag bits, a non-zero type id,
    /// and that the status flag is set exactly on Status frames. The body length is checked
    /// against limits by the caller, which knows them.
    #[inline]
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, CodecError> {
        let version = bytes[0];
        if version != VERSION {
            return Err(CodecError::UnsupportedVersion {
                got: version,
                supported: VERSION..=VERSION,
            });
        }
        let flags =
            Flags::from_bits(bytes[1]).ok_or(CodecError::ReservedFlags { flags: bytes[1] })?;
        let header = FrameHeader {
            flags,
            type_id: u16::from_be_bytes([bytes[2], bytes[3]]),
            stream_id: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            body_len: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        };
        header.check()?;
        Ok(header)
    }

    /// Checks the rules that hold in both directions: a registered-looking type id and a
    /// status flag that matches the type.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), CodecError> {
        if self.type_id == 0 {
            return Err(CodecError::UnknownMessageType {
                type_id: 0,
                frame: None,
            });
        }
        if self.flags.is_status() != (self.type_id == STATUS_TYPE_ID) {
            return Err(CodecError::StatusFlagMismatch {
                type_id: self.type_id,
                flags: self.flags.bits(),
            });
        }
        Ok(())
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0] = VERSION;
        out[1] = self.flags.bits();
        out[2..4].copy_from_slice(&self.type_id.to_be_bytes());
        out[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out
    }
}
