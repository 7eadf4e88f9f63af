//! RRQ's runner protocol, spoken by taskwire.
//!
//! [RRQ](https://pypi.org/project/rrq/) is a job queue on Redis whose orchestrator hands
//! jobs to runner processes over TCP: a 4-byte length, then a JSON envelope
//! `{"type": "request" | "response" | "cancel", "payload": {...}}`. This crate speaks it
//! exactly, as RRQ 0.11 does, and connects it to taskwire's runner conversation:
//!
//! * [`RrqCodec`]: the framing, as a tokio-util `Decoder`/`Encoder` made from the same
//!   [`Builder`](taskwire_codec::Builder) limits as taskwire's own codecs, with the same
//!   typed [`CodecError`](taskwire_codec::CodecError)s;
//! * [`message`]: RRQ's protocol v2 messages, every member of the real system's frames;
//! * [`mapping`]: those messages to and from `taskwire.runner.v1`, losslessly where the
//!   two agree (the module docs list what cannot cross);
//! * [`RrqRunner`]: a runner RRQ's orchestrator drives, serving the runner handlers of a
//!   taskwire [`Router`](taskwire_rpc::Router), the same code that serves taskwire's runner
//!   conversation over QUIC or TCP;
//! * [`RrqClient`]: the other direction, RRQ's runners (such as `rrq-runner`) driven by
//!   taskwire's [`Orchestrator`](taskwire_rpc::runner::Orchestrator).
//!
//! Bridges combine them with [`relay_router`](taskwire_rpc::runner::relay_router): an
//! [`RrqRunner`] serving a relay to a remote taskwire runner (over QUIC or TCP with mutual
//! TLS) puts RRQ's jobs on other machines, which RRQ's loopback-only runners cannot do;
//! a taskwire server serving a relay to an [`RrqClient`] hands remote jobs to a local RRQ
//! runner. `taskwire bridge rrq` runs both, and `docs/rrq.md` explains them.
//!
//! # Example
//!
//! A taskwire runner handler, served to RRQ's orchestrator on loopback:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use taskwire_proto::runner::v1::execution_outcome::{Outcome, Success};
//! use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
//! use taskwire_rpc::Router;
//! use taskwire_rrq::{RrqRunner, RunnerConfig};
//!
//! let mut router = Router::new();
//! router.unary(|_ctx, job: ExecutionRequest| async move {
//!     Ok(ExecutionOutcome {
//!         job_id: job.job_id,
//!         request_id: job.request_id,
//!         outcome: Some(Outcome::Success(Success { result: None })),
//!     })
//! });
//! // rrq.toml: [rrq.runners.python] type = "socket", tcp_port = 9000
//! let runner = RrqRunner::bind(RunnerConfig::new("127.0.0.1:9000".parse()?)).await?.serve(router);
//! # runner.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod codec;
pub mod mapping;
pub mod message;
mod runner;

pub use client::{ClientConfig, DEFAULT_CONNECT_TIMEOUT, RrqClient};
pub use codec::{LENGTH_PREFIX_LEN, RrqCodec};
pub use message::{Cancel, Context, Message, OutcomeError, Request, Response, Status};
pub use runner::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
    RrqRunner, RunnerConfig, RunnerHandle, RunnerStats,
};

/// Why a runner could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RrqError {
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket could not be opened.
    #[error("I/O error: {0}")]
    Io(String),
}

/// Test support shared by this crate's tests, its fuzz target and the CLI: the decoder
/// properties every input must keep.
pub mod fuzzing {
    use bytes::BytesMut;
    use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};

    use crate::RrqCodec;

    /// The frame limit the fuzzer decodes with, 512 KiB, as taskwire's codec targets: run
    /// with `-malloc_limit_mb=1`, any allocation sized by a declared length rather than by
    /// the bytes received is a crash.
    pub const FUZZ_MAX_FRAME_LENGTH: u32 = 512 * 1024;

    /// Decodes `data` as a stream of RRQ frames, as a connection would, and checks what
    /// every input must keep: no panic, each message re-encodes to a frame that decodes
    /// to the same message, and nothing is decoded after the first error.
    pub fn check_stream(data: &[u8]) {
        let mut codec = RrqCodec::from_builder(
            taskwire_codec::Builder::new().max_frame_length(FUZZ_MAX_FRAME_LENGTH),
        );
        let mut buffer = BytesMut::from(data);
        loop {
            match codec.decode_eof(&mut buffer) {
                Ok(Some(message)) => roundtrip(&message),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Encodes `message`, decodes the frame, and checks that the same message comes back.
    pub fn roundtrip(message: &crate::Message) {
        let mut codec = RrqCodec::new();
        let mut wire = BytesMut::new();
        codec
            .encode(message, &mut wire)
            .expect("a decoded message re-encodes");
        let again = codec
            .decode(&mut wire)
            .expect("a re-encoded message decodes")
            .expect("a whole frame");
        assert_eq!(
            &again, message,
            "the message changed through encode and decode"
        );
        assert!(wire.is_empty(), "the frame left bytes behind");
    }
}
