//! The handshake, as plain functions: the client builds a Hello, the server negotiates
//! it into Negotiated or Refused, the client reads the answer. Transports only move the
//! three messages (and enforce the Hello deadline and size).

use std::time::Duration;

use taskwire_codec::{DEFAULT_MAX_FRAME_LENGTH, RawFrame};
use taskwire_proto::MessageSet as _;
use taskwire_proto::registry::SessionMessage;
use taskwire_proto::session::v1::refused::RefusalReason;
use taskwire_proto::session::v1::{Codec, Conversation, Hello, Negotiated, Refused};
use taskwire_proto::wkt;

use crate::CallError;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The ALPN protocol id of version 1, for TLS on every transport.
pub const ALPN: &[u8] = b"taskwire/1";

/// The smallest frame limit a peer may announce: 4 KiB. Anything smaller cannot carry a
/// status with a useful message.
pub const MIN_FRAME_LENGTH: u32 = 4 * 1024;

/// The concurrent-call limit a Hello or Negotiated means by 0: 64.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 64;

/// What a client asks for.
#[derive(Clone, Debug)]
pub struct ClientSession {
    /// The client's name, for the server's logs.
    pub name: String,
    /// The client's version.
    pub version: String,
    /// The tenant the client acts for (a claim; the certificate is the proof).
    pub tenant: String,
    /// The conversations the client will use. Default: all.
    pub conversations: Vec<Conversation>,
    /// The largest frame the client accepts. Default 16 MiB.
    pub max_frame_length: u32,
    /// How many calls the client will run at once. Default 0 (the server decides).
    pub max_concurrent_calls: u32,
    /// Capability bits. Default: all this crate implements.
    pub capabilities: u64,
}

/// Capability bits this crate implements: cancellation, deadlines, trace context,
/// graceful drain.
pub const CAPABILITIES: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5);

impl Default for ClientSession {
    fn default() -> Self {
        ClientSession {
            name: "taskwire".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            tenant: String::new(),
            conversations: all_conversations(),
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_concurrent_calls: 0,
            capabilities: CAPABILITIES,
        }
    }
}

fn all_conversations() -> Vec<Conversation> {
    vec![
        Conversation::Session,
        Conversation::Instance,
        Conversation::Environment,
        Conversation::Management,
        Conversation::Runner,
        Conversation::Journal,
    ]
}

impl ClientSession {
    /// The Hello for a connection using `codec`.
    pub fn hello(&self, codec: Codec) -> Hello {
        Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            conversations: self.conversations.iter().map(|c| *c as i32).collect(),
            codecs: vec![codec as i32],
            max_frame_length: self.max_frame_length,
            peer_name: self.name.clone(),
            peer_version: self.version.clone(),
            tenant: self.tenant.clone(),
            capabilities: self.capabilities,
            max_concurrent_calls: self.max_concurrent_calls,
        }
    }
}

/// What a server offers.
#[derive(Clone, Debug)]
pub struct ServerSession {
    /// The server's name.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// The conversations served. Default: all.
    pub conversations: Vec<Conversation>,
    /// The codecs served. Default: protobuf and JSON.
    pub codecs: Vec<Codec>,
    /// The largest frame the server accepts. Default 16 MiB.
    pub max_frame_length: u32,
    /// How many calls one connection may run at once. Default 64.
    pub max_concurrent_calls: u32,
    /// How often the server expects traffic or a Ping on an idle connection.
    pub keep_alive_interval: Option<Duration>,
    /// Capability bits. Default: all this crate implements.
    pub capabilities: u64,
}

impl Default for ServerSession {
    fn default() -> Self {
        ServerSession {
            name: "taskwire".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            conversations: all_conversations(),
            codecs: vec![Codec::Protobuf, Codec::Json],
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            keep_alive_interval: None,
            capabilities: CAPABILITIES,
        }
    }
}

/// A refusal with the server's version range.
pub fn refusal(
    reason: RefusalReason,
    message: impl Into<String>,
    retry_after: Option<Duration>,
) -> Refused {
    Refused {
        reason: reason as i32,
        message: message.into(),
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        retry_after: retry_after.map(wkt::Duration::from),
    }
}

impl ServerSession {
    /// Answers `hello`, which arrived in the framing `codec`, on connection `connection_id`.
    ///
    /// ```
    /// use taskwire_proto::session::v1::Codec;
    /// use taskwire_rpc::session::{ClientSession, ServerSession};
    ///
    /// let hello = ClientSession::default().hello(Codec::Protobuf);
    /// let negotiated = ServerSession::default().negotiate(&hello, Codec::Protobuf, "c1").unwrap();
    /// assert_eq!(negotiated.version, 1);
    /// ```
    pub fn negotiate(
        &self,
        hello: &Hello,
        codec: Codec,
        connection_id: &str,
    ) -> Result<Negotiated, Refused> {
        let low = hello.min_version.max(PROTOCOL_VERSION);
        let high = hello.max_version.min(PROTOCOL_VERSION);
        if hello.min_version > hello.max_version || low > high {
            return Err(refusal(
                RefusalReason::UnsupportedVersion,
                format!(
                    "the client speaks versions {}..={}, this server {PROTOCOL_VERSION}..={PROTOCOL_VERSION}",
                    hello.min_version, hello.max_version
                ),
                None,
            ));
        }
        let mut accepted = Vec::new();
        for wanted in &hello.conversations {
            match Conversation::try_from(*wanted) {
                Ok(Conversation::Unspecified) => {}
                Ok(c) if self.conversations.contains(&c) => accepted.push(*wanted),
                _ => {
                    let name = Conversation::try_from(*wanted).map_or_else(
                        |_| format!("conversation {wanted}"),
                        |c| c.as_str_name().to_owned(),
                    );
                    return Err(refusal(
                        RefusalReason::ConversationNotSupported,
                        format!("{name} is not served here"),
                        None,
                    ));
                }
            }
        }
        // An empty list means protobuf alone (`Hello.codecs`).
        let offered = if hello.codecs.is_empty() {
            codec == Codec::Protobuf
        } else {
            hello.codecs.contains(&(codec as i32))
        };
        if !offered || !self.codecs.contains(&codec) {
            return Err(refusal(
                RefusalReason::CodecNotSupported,
                format!("codec {} is not offered by both sides", codec.as_str_name()),
                None,
            ));
        }
        let client_frames = if hello.max_frame_length == 0 {
            DEFAULT_MAX_FRAME_LENGTH
        } else {
            hello.max_frame_length
        };
        if client_frames < MIN_FRAME_LENGTH {
            return Err(refusal(
                RefusalReason::FrameLimitTooSmall,
                format!(
                    "a frame limit of {client_frames} bytes is under the minimum of {MIN_FRAME_LENGTH}"
                ),
                None,
            ));
        }
        let calls = match hello.max_concurrent_calls {
            0 => self.max_concurrent_calls,
            client => client.min(self.max_concurrent_calls),
        };
        Ok(Negotiated {
            version: high,
            codec: codec as i32,
            max_frame_length: self.max_frame_length,
            max_concurrent_calls: calls,
            server_name: self.name.clone(),
            server_version: self.version.clone(),
            keep_alive_interval: self.keep_alive_interval.map(wkt::Duration::from),
            connection_id: connection_id.to_owned(),
            warnings: Vec::new(),
            conversations: accepted,
            capabilities: hello.capabilities & self.capabilities,
        })
    }
}

/// The limits a negotiated connection runs under, as the client sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The protocol version.
    pub version: u32,
    /// The largest frame the server accepts: the client's encoder limit.
    pub max_frame_length: u32,
    /// How many calls may run at once.
    pub max_concurrent_calls: u32,
}

/// Reads the frame a server answered a Hello with: Negotiated gives the agreed limits;
/// Refused becomes [`CallError::Refused`]; any other message is a protocol error.
pub fn agreed_from_frame(frame: RawFrame) -> Result<Agreed, CallError> {
    let answer = match frame.decode::<SessionMessage>()?.message {
        SessionMessage::Negotiated(n) => Ok(n),
        SessionMessage::Refused(r) => Err(r),
        other => {
            return Err(CallError::Protocol(format!(
                "the server answered the Hello with {}",
                other.name()
            )));
        }
    };
    agreed(answer)
}

/// Reads the server's answer: Negotiated gives the agreed limits; Refused becomes
/// [`CallError::Refused`].
pub fn agreed(answer: Result<Negotiated, Refused>) -> Result<Agreed, CallError> {
    match answer {
        Ok(n) if n.version != PROTOCOL_VERSION => Err(CallError::Protocol(format!(
            "the server chose version {}, which was not offered",
            n.version
        ))),
        Ok(n) => Ok(Agreed {
            version: n.version,
            max_frame_length: if n.max_frame_length == 0 {
                DEFAULT_MAX_FRAME_LENGTH
            } else {
                n.max_frame_length
            },
            max_concurrent_calls: if n.max_concurrent_calls == 0 {
                DEFAULT_MAX_CONCURRENT_CALLS
            } else {
                n.max_concurrent_calls
            },
        }),
        Err(refused) => Err(CallError::Refused {
            reason: RefusalReason::try_from(refused.reason).unwrap_or(RefusalReason::Unspecified),
            message: refused.message,
            retry_after: refused.retry_after.and_then(|d| Duration::try_from(d).ok()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        ClientSession::default().hello(Codec::Protobuf)
    }

    fn reason(refused: Refused) -> RefusalReason {
        RefusalReason::try_from(refused.reason).unwrap()
    }

    #[test]
    fn a_default_client_and_server_agree_on_version_1() {
        let n = ServerSession::default()
            .negotiate(&hello(), Codec::Protobuf, "c1")
            .unwrap();
        let agreed = agreed(Ok(n.clone())).unwrap();
        assert_eq!(
            (
                agreed.version,
                agreed.max_frame_length,
                agreed.max_concurrent_calls
            ),
            (1, 16 << 20, 64)
        );
        assert_eq!(n.connection_id, "c1");
        assert_eq!(n.conversations.len(), 6);
    }

    #[test]
    fn versions_without_overlap_are_refused_with_the_server_range() {
        let mut h = hello();
        (h.min_version, h.max_version) = (2, 3);
        let refused = ServerSession::default()
            .negotiate(&h, Codec::Protobuf, "c")
            .unwrap_err();
        assert_eq!(reason(refused.clone()), RefusalReason::UnsupportedVersion);
        assert_eq!((refused.min_version, refused.max_version), (1, 1));
        (h.min_version, h.max_version) = (1, 0);
        assert_eq!(
            reason(
                ServerSession::default()
                    .negotiate(&h, Codec::Protobuf, "c")
                    .unwrap_err()
            ),
            RefusalReason::UnsupportedVersion
        );
    }

    #[test]
    fn unserved_conversations_and_codecs_are_refused() {
        let server = ServerSession {
            conversations: vec![Conversation::Runner],
            codecs: vec![Codec::Protobuf],
            ..Default::default()
        };
        let refused = server
            .negotiate(&hello(), Codec::Protobuf, "c")
            .unwrap_err();
        assert_eq!(reason(refused), RefusalReason::ConversationNotSupported);
        let h = ClientSession {
            conversations: vec![Conversation::Runner],
            ..Default::default()
        }
        .hello(Codec::Json);
        assert_eq!(
            reason(server.negotiate(&h, Codec::Json, "c").unwrap_err()),
            RefusalReason::CodecNotSupported
        );
        let mut h = ClientSession {
            conversations: vec![Conversation::Runner],
            ..Default::default()
        }
        .hello(Codec::Protobuf);
        h.conversations.push(99);
        assert_eq!(
            reason(server.negotiate(&h, Codec::Protobuf, "c").unwrap_err()),
            RefusalReason::ConversationNotSupported
        );
    }

    #[test]
    fn a_tiny_frame_limit_is_refused_and_call_limits_take_the_smaller() {
        let mut h = hello();
        h.max_frame_length = 100;
        assert_eq!(
            reason(
                ServerSession::default()
                    .negotiate(&h, Codec::Protobuf, "c")
                    .unwrap_err()
            ),
            RefusalReason::FrameLimitTooSmall
        );
        h.max_frame_length = 0;
        h.max_concurrent_calls = 8;
        assert_eq!(
            ServerSession::default()
                .negotiate(&h, Codec::Protobuf, "c")
                .unwrap()
                .max_concurrent_calls,
            8
        );
    }

    #[test]
    fn a_refusal_reaches_the_client_as_a_typed_error() {
        let refused = refusal(
            RefusalReason::RateLimited,
            "slow down",
            Some(Duration::from_secs(3)),
        );
        match agreed(Err(refused)) {
            Err(CallError::Refused {
                reason,
                retry_after,
                message,
            }) => {
                assert_eq!(reason, RefusalReason::RateLimited);
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert_eq!(message, "slow down");
            }
            other => panic!("{other:?}"),
        }
    }
}
