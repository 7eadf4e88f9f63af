//! The QUIC application error codes taskwire uses, as listed in `docs/protocol.md`.
//!
//! Connection close codes tell a peer why its connection ended; stream reset codes why one
//! call's stream did.

use quinn::VarInt;

/// Connection closed normally (after draining, or by the client).
pub const CLOSE_NO_ERROR: VarInt = VarInt::from_u32(0x00);
/// The peer broke the protocol: a bad frame, a second Hello, calls before the Hello.
pub const CLOSE_PROTOCOL_VIOLATION: VarInt = VarInt::from_u32(0x01);
/// The Hello did not arrive within the server's deadline.
pub const CLOSE_HELLO_TIMEOUT: VarInt = VarInt::from_u32(0x02);
/// The Hello was over the first-frame limit.
pub const CLOSE_HELLO_TOO_LARGE: VarInt = VarInt::from_u32(0x03);
/// The server sent Refused; the reason is in that frame.
pub const CLOSE_REFUSED: VarInt = VarInt::from_u32(0x04);
/// The server shut down after a GoAway and its drain.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0x05);
/// The peer spent a budget: too many connections, or too many cheap-for-the-attacker
/// events (streams opened and reset, empty frames).
pub const CLOSE_LIMIT_EXCEEDED: VarInt = VarInt::from_u32(0x06);

/// The caller cancelled the call (dropped it, or its deadline passed); from the server, the
/// call's deadline passed in the middle of a response frame (`docs/protocol.md` §13).
pub const RESET_CANCELLED: VarInt = VarInt::from_u32(0x10);
/// The stream carried a frame that could not be decoded or was over the limit.
pub const RESET_FRAME_ERROR: VarInt = VarInt::from_u32(0x11);

/// The name of a close code, for errors and logs.
pub fn close_code_name(code: VarInt) -> &'static str {
    match code.into_inner() {
        0x00 => "NO_ERROR",
        0x01 => "PROTOCOL_VIOLATION",
        0x02 => "HELLO_TIMEOUT",
        0x03 => "HELLO_TOO_LARGE",
        0x04 => "REFUSED",
        0x05 => "SHUTDOWN",
        0x06 => "LIMIT_EXCEEDED",
        _ => "UNKNOWN",
    }
}
