//! taskwire: one wire layer for durable-execution engines, job orchestrators and their
//! workers.
//!
//! This crate re-exports the member crates behind features, so an application depends
//! on one crate and picks what it needs.
//!
//! # Feature flags
//!
//! | feature | default | what it brings |
//! |---|---|---|
//! | `proto` | yes | `proto`: every conversation's message types, canonical JSON, the wire registry |
//! | `codec` | yes | `codec`: binary and JSON framing codecs, limits, typed errors |
//! | `json` | no | the JSON framing (part of `codec`; named so a dependency on it is explicit) |
//! | `tls` | no | `tls`: a private CA, certificates, rustls configs, peer identity, rotation |
//! | `quic` | no | `rpc` (router, call model) and `quic`: the QUIC transport |
//! | `tcp` | no | `rpc` and `tcp`: the TCP transport and the runner orchestrator |
//! | `rrq` | no | `rpc` and `rrq`: RRQ's runner protocol, a runner RRQ drives, a client for RRQ's runners |
//! | `restate` | no | `restate`: Restate's service protocol, an endpoint whose handlers Restate invokes durably |
//! | `full` | no | all of the above |
//!
//! ```
//! use taskwire::proto::WireMessage;
//! use taskwire::proto::runner::v1::ExecutionRequest;
//!
//! assert_eq!(ExecutionRequest::NAME, "taskwire.runner.v1.ExecutionRequest");
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Message types, canonical JSON and the wire registry (`taskwire-proto`).
#[cfg(feature = "proto")]
#[cfg_attr(docsrs, doc(cfg(feature = "proto")))]
pub use taskwire_proto as proto;

/// The framing codecs (`taskwire-codec`).
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub use taskwire_codec as codec;

/// TLS tooling (`taskwire-tls`).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use taskwire_tls as tls;

/// The transport-neutral call model and router (`taskwire-rpc`).
#[cfg(any(feature = "quic", feature = "tcp", feature = "rrq"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "quic", feature = "tcp", feature = "rrq")))
)]
pub use taskwire_rpc as rpc;

/// The QUIC transport (`taskwire-quic`).
#[cfg(feature = "quic")]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
pub use taskwire_quic as quic;

/// The TCP transport (`taskwire-tcp`).
#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub use taskwire_tcp as tcp;

/// RRQ's runner protocol (`taskwire-rrq`).
#[cfg(feature = "rrq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rrq")))]
pub use taskwire_rrq as rrq;

/// Restate's service protocol (`taskwire-restate`).
#[cfg(feature = "restate")]
#[cfg_attr(docsrs, doc(cfg(feature = "restate")))]
pub use taskwire_restate as restate;
