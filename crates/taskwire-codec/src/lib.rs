//! taskwire's framing: how messages become bytes on a connection and back.
//!
//! Two framings carry the same messages:
//!
//! * **Binary** ([`BinaryCodec`], [`BinaryMessageCodec`]): a fixed 12-byte header, then
//!   the protobuf body. The header names the message by its registry type id, so a
//!   router dispatches without decoding the body.
//! * **JSON** ([`JsonCodec`]): a 4-byte big-endian length, then one UTF-8 JSON object
//!   naming the message by its full protobuf name and carrying its canonical proto3 JSON.
//!   A worker in any language speaks it with a socket and a JSON library.
//!
//! ```text
//! binary:  +---------+-------+---------+-----------+----------+----------------+
//!          | version | flags | type id | stream id | body len | protobuf body  |
//!          |   u8    |  u8   | u16 BE  |  u32 BE   |  u32 BE  | body len bytes |
//!          +---------+-------+---------+-----------+----------+----------------+
//! json:    +------------+-------------------------------------------------------+
//!          | len u32 BE | {"type":"taskwire.runner.v1.ExecutionRequest",        |
//!          |            |  "stream":7,"end":true,"body":{...}}  (len bytes)     |
//!          +------------+-------------------------------------------------------+
//! ```
//!
//! `docs/protocol.md` is the normative description; `conformance/vectors/` holds the
//! golden bytes every implementation must reproduce.
//!
//! # Limits and memory
//!
//! Every codec enforces a maximum frame length ([`DEFAULT_MAX_FRAME_LENGTH`], 16 MiB) and a
//! smaller one for the first frame of a connection, the Hello
//! ([`DEFAULT_MAX_FIRST_FRAME_LENGTH`], 64 KiB), in both directions. A declared length is
//! checked before anything proportional to it is allocated, and no codec reserves the
//! declared length: a peer that declares 16 MiB and sends 10 bytes costs 10 bytes.
//! Bodies decode as slices of the read buffer, so `bytes` fields are zero-copy.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use taskwire_codec::{Builder, Frame};
//! use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
//! use taskwire_proto::registry::RunnerMessage;
//! use taskwire_proto::runner::v1::CancelRequest;
//!
//! let mut codec = Builder::new().new_binary_message_codec::<RunnerMessage>();
//! let cancel = CancelRequest { job_id: "job-1".into(), hard_kill: true, ..Default::default() };
//! let mut wire = BytesMut::new();
//! codec.encode(Frame::new(RunnerMessage::from(cancel.clone())).with_stream_id(3), &mut wire)?;
//!
//! let frame = codec.decode(&mut wire)?.expect("a whole frame");
//! assert_eq!(frame.stream_id, 3);
//! assert_eq!(frame.message, RunnerMessage::CancelRequest(cancel));
//! # Ok::<(), taskwire_codec::CodecError>(())
//! ```
// `deny`, not `forbid`: `chunks` allows the one `unsafe impl` it needs, and says why.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod binary;
mod builder;
mod chunks;
mod error;
pub mod fuzzing;
mod header;
pub mod io;
mod json;

pub use binary::{BinaryCodec, BinaryMessageCodec, RawFrame};
pub use builder::{
    Builder, DEFAULT_MAX_DECODED_SIZE, DEFAULT_MAX_FIRST_FRAME_LENGTH, DEFAULT_MAX_FRAME_LENGTH,
};
pub use chunks::MIN_SHARED_LEN;
pub use error::{CodecError, ErrorKind, JsonError, JsonErrorKind, RefusedFrame};
pub use header::{Flags, FrameHeader, HEADER_LEN, VERSION};
pub use json::{JSON_LENGTH_PREFIX_LEN, JsonCodec};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The tokio-util version whose `Decoder`/`Encoder` traits the codecs implement.
pub use tokio_util;

/// One message with its per-frame routing fields: what a typed codec yields and takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame<M> {
    /// The call this frame belongs to on a multiplexed connection; 0 where the transport
    /// gives each call its own stream (QUIC).
    pub stream_id: u32,
    /// End of stream and status bits. [`Frame::new`] sets [`Flags::STATUS`] for
    /// `taskwire.session.v1.Status` messages; encoders refuse a frame where the two disagree.
    pub flags: Flags,
    /// The message.
    pub message: M,
}

impl<M: taskwire_proto::MessageSet> Frame<M> {
    /// A frame on stream 0 with the flags `message` requires and no others.
    pub fn new(message: M) -> Self {
        let flags = if message.type_id() == header::STATUS_TYPE_ID {
            Flags::STATUS
        } else {
            Flags::empty()
        };
        Frame {
            stream_id: 0,
            flags,
            message,
        }
    }

    /// Sets the stream id.
    #[must_use]
    pub fn with_stream_id(mut self, stream_id: u32) -> Self {
        self.stream_id = stream_id;
        self
    }

    /// Marks this frame as the last one its sender sends on its stream.
    #[must_use]
    pub fn end_stream(mut self) -> Self {
        self.flags = self.flags | Flags::END_STREAM;
        self
    }
}
