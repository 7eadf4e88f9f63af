//! taskwire over TCP, for networks that block UDP and workers without a QUIC stack.
//!
//! The same [`Router`](taskwire_rpc::Router), handshake and calls as the QUIC transport,
//! over one TLS (or, on loopback when asked, plaintext) byte stream per connection:
//!
//! * The client's first frame is its Hello, in the framing it wants: binary (first byte
//!   `0x01`) or JSON (first byte `0x00`, the top of a length prefix). The server answers in
//!   the same framing, and both keep it.
//! * Calls are multiplexed: every frame carries its call's stream id (the client's
//!   choice, starting at 1); stream 0 carries Ping/Pong, CancelCall and GoAway. Frames of
//!   different calls interleave, so a long upload, sent as many frames, does not hold
//!   small calls back.
//! * A connection runs at most `max_concurrent_calls` calls; the next one is answered
//!   `RESOURCE_EXHAUSTED` at once.
//! * Dropping a call's future sends `CancelCall`; the server cancels the handler.
//! * A streaming response ends with a status frame (`STATUS_CODE_OK` on success), since a
//!   shared byte stream has no per-call end.
//!
//! [`runner`] is the orchestrator side of the runner conversation, built on this.
//!
//! # Example
//!
//! A plaintext server on loopback answering the management `Health` rpc, a client
//! calling it, and a graceful shutdown:
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use taskwire_proto::management::v1::health_response::ServingStatus;
//! use taskwire_proto::management::v1::{HealthRequest, HealthResponse};
//! use taskwire_rpc::Router;
//! use taskwire_tcp::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
//!
//! let mut router = Router::new();
//! router.unary(|_ctx, _request: HealthRequest| async move {
//!     Ok(HealthResponse {
//!         status: ServingStatus::Serving as i32,
//!         version: "1.2.3".into(),
//!         ..Default::default()
//!     })
//! });
//!
//! // Plaintext is allowed only on a loopback address; port 0 picks a free port.
//! let config = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse()?);
//! let server = TcpServer::bind(config).await?.serve(router);
//!
//! let client = TcpClient::new(TcpClientConfig::plaintext_loopback(server.local_addr()));
//! let connection = client.connect().await?;
//! let health: HealthResponse = connection.call(HealthRequest {}).await?;
//! assert_eq!(health.status(), ServingStatus::Serving);
//! assert_eq!(health.version, "1.2.3");
//!
//! drop(connection);
//! assert!(server.shutdown().await, "no call was left in flight");
//! # Ok(())
//! # }
//! ```
//!
//! Over TLS, make the configs with `taskwire_tls` and use [`TcpServerConfig::new`] and
//! [`TcpClientConfig::new`] instead; everything else is the same.
#![forbid(unsafe_code)]

mod call;
mod client;
mod connection;
mod pending;
pub mod runner;
mod server;
mod wire;

use std::time::Duration;

pub use client::{TcpClient, TcpClientConfig, TcpClientStream, TcpConnection, TcpResponseStream};
pub use server::{TcpServer, TcpServerConfig, TcpServerHandle, TcpServerStats, serve_stream};

/// Limits of a TCP client or server, with documented defaults. `Copy`; setters named
/// after fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_concurrent_calls: u32,
    pub(crate) max_frame_length: u32,
    pub(crate) max_hello_length: u32,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_pending_handshakes: usize,
    pub(crate) hello_timeout: Duration,
    pub(crate) drain_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_concurrent_calls: 64,
            max_frame_length: taskwire_codec::DEFAULT_MAX_FRAME_LENGTH,
            max_hello_length: taskwire_codec::DEFAULT_MAX_FIRST_FRAME_LENGTH,
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 64,
            hello_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl TcpLimits {
    /// Connections a server holds at once; past it new ones are closed unread.
    /// Default 10,000.
    pub fn max_connections(&mut self, value: usize) -> &mut Self {
        self.max_connections = value;
        self
    }

    /// Connections one IP address may hold. Default 1,000.
    pub fn max_connections_per_ip(&mut self, value: usize) -> &mut Self {
        self.max_connections_per_ip = value;
        self
    }

    /// Calls one connection runs at once, announced in Negotiated; past it a call is
    /// answered `RESOURCE_EXHAUSTED`. Default 64.
    ///
    /// Memory: each call in flight holds at most 16 queued request frames.
    pub fn max_concurrent_calls(&mut self, value: u32) -> &mut Self {
        self.max_concurrent_calls = value;
        self
    }

    /// The largest frame accepted. Default 16 MiB.
    ///
    /// Memory: a connection buffers at most one frame of this size, as it arrives.
    pub fn max_frame_length(&mut self, value: u32) -> &mut Self {
        self.max_frame_length = value;
        self
    }

    /// The largest Hello accepted. Default 64 KiB.
    pub fn max_hello_length(&mut self, value: u32) -> &mut Self {
        self.max_hello_length = value;
        self
    }

    /// How long TCP connect plus the TLS handshake may take. Default 10 s.
    pub fn handshake_timeout(&mut self, value: Duration) -> &mut Self {
        self.handshake_timeout = value;
        self
    }

    /// TLS handshakes a server runs at once, apart from its connection slots: a connection
    /// takes a slot only once its handshake is done, and a handshake arriving at a full
    /// budget pushes out the oldest one, so connections that never finish TLS cannot keep
    /// real clients out. Default 64.
    ///
    /// Memory: each pending handshake holds rustls's handshake state, a few KiB.
    pub fn max_pending_handshakes(&mut self, value: usize) -> &mut Self {
        self.max_pending_handshakes = value;
        self
    }

    /// How long a server waits for a complete Hello (a client for the answer); past it
    /// the connection is closed. Default 10 s.
    pub fn hello_timeout(&mut self, value: Duration) -> &mut Self {
        self.hello_timeout = value;
        self
    }

    /// How long a shutdown waits for calls in flight. Default 10 s.
    pub fn drain_timeout(&mut self, value: Duration) -> &mut Self {
        self.drain_timeout = value;
        self
    }
}

/// Why a TCP endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    /// The configuration is not allowed (plaintext off loopback, say).
    #[error("configuration: {0}")]
    Config(String),
    /// The socket could not be bound.
    #[error("I/O: {0}")]
    Io(String),
}
