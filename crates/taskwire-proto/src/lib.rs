//! taskwire's protobuf schemas as Rust types.
//!
//! Every conversation taskwire defines has a versioned protobuf package under `proto/`,
//! and a module here with the same path:
//!
//! | module | conversation |
//! |---|---|
//! | [`session::v1`] | handshake and control: Hello, Negotiated, Refused, Status, CallHeader, Ping, GoAway |
//! | [`instance::v1`] | a workflow instance and the engine core |
//! | [`environment::v1`] | a management client and the environment: images, instance lifecycle |
//! | [`management::v1`] | the environment and the engine core |
//! | [`runner::v1`] | an orchestrator dispatching jobs to runners |
//! | [`journal::v1`] | a durable-execution journal stream |
//!
//! Every message implements [`prost::Message`] for the binary encoding and
//! [`serde::Serialize`]/[`serde::Deserialize`] for the canonical proto3 JSON mapping
//! (lowerCamelCase names, 64-bit integers as strings, bytes as base64, enums by name).
//! `bytes` fields are [`bytes::Bytes`], so decoding from a `Bytes` buffer borrows instead
//! of copying.
//!
//! The [`registry`] gives every top-level message a stable `u16` type id
//! ([`WireMessage`]), groups them per conversation ([`registry::SessionMessage`] and its
//! siblings, all [`MessageSet`]s), and pairs each request with its response ([`Rpc`]).
//! [`FILE_DESCRIPTOR_SET`] is the compiled schema, for reflection and other-language tools.
//!
//! ```
//! use taskwire_proto::instance::v1::RegisterInstanceRequest;
//! use taskwire_proto::{Message, WireMessage};
//!
//! let request = RegisterInstanceRequest {
//!     instance_id: "order-7".into(),
//!     tenant_id: "acme".into(),
//!     ..Default::default()
//! };
//! let bytes = request.encode_to_vec();
//! assert_eq!(RegisterInstanceRequest::decode(bytes.as_slice()).unwrap(), request);
//! assert_eq!(RegisterInstanceRequest::NAME, "taskwire.instance.v1.RegisterInstanceRequest");
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[rustfmt::skip]
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::cast_possible_truncation,
    clippy::semicolon_if_nothing_returned
)]
mod generated;
pub mod budget;
pub mod json;
pub mod registry;
pub mod wkt;

pub use generated::taskwire::{environment, instance, journal, management, runner, session};
pub use registry::{MessageSet, MessageVisitor, Rpc, WireMessage};

/// The prost and pbjson crates the generated code is built on, re-exported so users
/// encode and decode with the same versions.
pub use {pbjson_types, prost, prost::Message};

/// The compiled schemas of every conversation, with comments and the well-known types
/// they import, as an encoded `google.protobuf.FileDescriptorSet`.
///
/// Other-language tooling and reflection (for example `prost-reflect`) load it to know
/// every message without the `.proto` sources.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/descriptor.bin");
