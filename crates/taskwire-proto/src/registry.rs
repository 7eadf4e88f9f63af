//! The wire registry: a stable `u16` type id for every top-level message.
//!
//! A frame carries its message's type id in its header, so a router dispatches without
//! decoding the body. Ids never change once released; a removed message's id is never
//! reused. The id space is split into ranges:
//!
//! | range | owner |
//! |---|---|
//! | `0x0000` | never used: a zero id is always an error |
//! | `0x0001..=0x00FF` | [`Conversation::Session`] |
//! | `0x0100..=0x01FF` | [`Conversation::Instance`] |
//! | `0x0200..=0x02FF` | [`Conversation::Environment`] |
//! | `0x0300..=0x03FF` | [`Conversation::Management`] |
//! | `0x0400..=0x04FF` | [`Conversation::Runner`] |
//! | `0x0500..=0x05FF` | [`Conversation::Journal`] |
//! | `0x0600..=0x7FFF` | reserved for future taskwire conversations |
//! | [`EXTENSION_RANGE`] `0x8000..=0xEFFF` | users' own extension messages |
//! | [`PRIVATE_RANGE`] `0xF000..=0xFFFF` | private and experimental use; never in a public schema |
//!
//! ```
//! use taskwire_proto::registry::{self, Conversation};
//! use taskwire_proto::{session::v1::Hello, WireMessage};
//!
//! let info = registry::by_type_id(Hello::TYPE_ID).unwrap();
//! assert_eq!(info.name, "taskwire.session.v1.Hello");
//! assert_eq!(info.conversation, Conversation::Session);
//! ```

use std::fmt;
use std::ops::RangeInclusive;

use bytes::{BufMut, Bytes};
use serde::{Deserializer, Serializer};

pub use crate::generated::registry::{
    AnyMessage, Conversation, EnvironmentMessage, InstanceMessage, JournalMessage,
    ManagementMessage, RunnerMessage, SessionMessage,
};

/// Type ids for users' own extension messages, routed like taskwire's own.
pub const EXTENSION_RANGE: RangeInclusive<u16> = 0x8000..=0xEFFF;

/// Type ids for private and experimental messages that never appear in a public schema.
pub const PRIVATE_RANGE: RangeInclusive<u16> = 0xF000..=0xFFFF;

/// A message with a stable wire identity.
///
/// Implemented by the code generator for every top-level taskwire message. Users
/// implement it for their own extension messages, with ids in [`EXTENSION_RANGE`] or
/// [`PRIVATE_RANGE`].
pub trait WireMessage:
    prost::Message
    + fmt::Debug
    + Default
    + Clone
    + PartialEq
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The message's type id, carried in every frame header.
    const TYPE_ID: u16;
    /// The message's full protobuf name, carried in JSON frames.
    const NAME: &'static str;
}

/// A closed set of messages that a frame can be decoded into, chosen by type id.
///
/// The generator implements it for each conversation's enum ([`SessionMessage`], ...) and
/// for [`AnyMessage`]; every [`WireMessage`] is a set of one.
pub trait MessageSet: Sized + Clone + fmt::Debug + Send + Sync + 'static {
    /// Whether `type_id` names a message of this set.
    fn contains(type_id: u16) -> bool;
    /// The type id of the message of this set with the full protobuf name `name`, given as
    /// text or as bytes (a name read off the wire needs no UTF-8 check first: only ASCII
    /// names match).
    fn type_id_of(name: impl AsRef<[u8]>) -> Option<u16>;
    /// Decodes a protobuf body as the message `type_id` names; `None` if that message is
    /// not in this set.
    fn decode_body(type_id: u16, body: Bytes) -> Option<Result<Self, prost::DecodeError>>;
    /// The type id of this message.
    fn type_id(&self) -> u16;
    /// The full protobuf name of this message.
    fn name(&self) -> &'static str;
    /// The length of this message's protobuf encoding (its binary frame body).
    fn body_len(&self) -> usize;
    /// Appends this message's protobuf encoding to `buf`, which must have room for
    /// [`body_len`](Self::body_len) bytes.
    fn encode_body<B: BufMut>(&self, buf: &mut B);
    /// Deserializes the canonical JSON body of the message `type_id` names.
    fn deserialize_json_body<'de, D: Deserializer<'de>>(
        type_id: u16,
        body: D,
    ) -> Result<Self, D::Error>;
    /// Serializes this message's body as canonical JSON.
    fn serialize_json_body<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    /// Hands this message to `visitor` as its own type.
    fn visit<V: MessageVisitor>(&self, visitor: V) -> V::Output;
}

/// Work on one message as its own type, given to [`MessageSet::visit`].
///
/// A conversation enum's [`type_id`](MessageSet::type_id),
/// [`body_len`](MessageSet::body_len) and [`encode_body`](MessageSet::encode_body) each
/// dispatch on the variant; an encoder written as a visitor dispatches once and then runs
/// code compiled for that one message type.
pub trait MessageVisitor {
    /// What the visit gives back.
    type Output;
    /// Works on `message`, whose type id is `T::TYPE_ID`.
    fn visit<T: WireMessage>(self, message: &T) -> Self::Output;
}

impl<M: WireMessage> MessageSet for M {
    fn contains(type_id: u16) -> bool {
        type_id == M::TYPE_ID
    }

    fn type_id_of(name: impl AsRef<[u8]>) -> Option<u16> {
        (name.as_ref() == M::NAME.as_bytes()).then_some(M::TYPE_ID)
    }

    // Always inlined, as the conversation enums' is: the message is then decoded where the
    // frame returns it.
    #[inline(always)]
    fn decode_body(type_id: u16, body: Bytes) -> Option<Result<Self, prost::DecodeError>> {
        if type_id != M::TYPE_ID {
            return None;
        }
        let mut message = M::default();
        Some(message.merge(body).map(|()| message))
    }

    fn type_id(&self) -> u16 {
        M::TYPE_ID
    }

    fn name(&self) -> &'static str {
        M::NAME
    }

    fn body_len(&self) -> usize {
        prost::Message::encoded_len(self)
    }

    fn encode_body<B: BufMut>(&self, buf: &mut B) {
        prost::Message::encode_raw(self, buf);
    }

    fn deserialize_json_body<'de, D: Deserializer<'de>>(
        type_id: u16,
        body: D,
    ) -> Result<Self, D::Error> {
        if type_id != M::TYPE_ID {
            return Err(<D::Error as serde::de::Error>::custom(format_args!(
                "type id {type_id:#06x} is not {}",
                M::NAME
            )));
        }
        M::deserialize(body)
    }

    fn serialize_json_body<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize(serializer)
    }

    #[inline]
    fn visit<V: MessageVisitor>(&self, visitor: V) -> V::Output {
        visitor.visit(self)
    }
}

/// How the messages of one rpc travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallShape {
    /// One request, then one response or status.
    Unary,
    /// One request, then a stream of responses ended by a status or end of stream.
    ServerStreaming,
    /// A stream of requests, then one response or status.
    ClientStreaming,
    /// Streams both ways at once.
    BidiStreaming,
    /// One request and no response: the sender does not wait.
    OneWay,
}

/// A request message paired at compile time with its response and call shape.
///
/// Implemented by the code generator for every rpc in a `service` block of `proto/`. For
/// client-streaming rpcs the implementing type is the stream item.
pub trait Rpc: WireMessage {
    /// `/package.Service/Method`, as declared in the schema.
    const METHOD: &'static str;
    /// How this rpc's messages travel.
    const SHAPE: CallShape;
    /// Whether executing the call again changes nothing a caller relies on, so that it
    /// may travel as TLS early data (QUIC 0-RTT), which an attacker can replay. Set by
    /// the schema option `taskwire.options.v1.replay_safe`; default `false`.
    const REPLAY_SAFE: bool = false;
    /// The response message (for streaming responses, the stream item). One-way rpcs
    /// declare `google.protobuf.Empty`, which never travels.
    type Response: prost::Message + Default + serde::Serialize + serde::de::DeserializeOwned;
}

/// One row of the registry table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// The stable type id.
    pub type_id: u16,
    /// The full protobuf name, e.g. `taskwire.session.v1.Hello`.
    pub name: &'static str,
    /// The conversation whose package declares the message.
    pub conversation: Conversation,
}

/// One rpc declared in the schemas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcInfo {
    /// `/package.Service/Method`.
    pub method: &'static str,
    /// The type id of the request (for client streaming, of the stream item).
    pub request_type_id: u16,
    /// The type id of the response, or `None` for one-way rpcs.
    pub response_type_id: Option<u16>,
    /// How the rpc's messages travel.
    pub shape: CallShape,
    /// Whether the schema marks the rpc safe to replay (`taskwire.options.v1.replay_safe`),
    /// so that it may travel as TLS early data.
    pub replay_safe: bool,
}

/// Every registered message, sorted by type id.
pub fn messages() -> &'static [MessageInfo] {
    crate::generated::registry::MESSAGES
}

/// Every rpc declared in the schemas.
pub fn rpcs() -> &'static [RpcInfo] {
    crate::generated::registry::RPCS
}

/// The registered message with this type id.
pub fn by_type_id(type_id: u16) -> Option<&'static MessageInfo> {
    let table = messages();
    table
        .binary_search_by_key(&type_id, |info| info.type_id)
        .ok()
        .map(|index| &table[index])
}

/// The registered message with this full protobuf name.
pub fn by_name(name: &str) -> Option<&'static MessageInfo> {
    let type_id = AnyMessage::type_id_of(name)?;
    by_type_id(type_id)
}

/// The rpc whose request (or client-stream item) has this type id.
pub fn rpc_by_request(type_id: u16) -> Option<&'static RpcInfo> {
    rpcs().iter().find(|rpc| rpc.request_type_id == type_id)
}
