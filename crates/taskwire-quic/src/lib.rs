//! taskwire over QUIC.
//!
//! Each call is one bidirectional QUIC stream of binary frames: the client opens it,
//! writes an optional `CallHeader` and its request, and reads the answer; the server
//! answers with the response or a status frame. Before any call, the client's first
//! stream carries the Hello and the server's Negotiated or Refused; it stays open as the
//! control stream (Ping/Pong, GoAway).
//!
//! ```no_run
//! # async fn run(server_tls: std::sync::Arc<rustls::ServerConfig>, client_tls: std::sync::Arc<rustls::ClientConfig>) -> Result<(), Box<dyn std::error::Error>> {
//! use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
//! use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
//! use taskwire_rpc::Router;
//!
//! let mut router = Router::new();
//! router.unary(|_ctx, job: ExecutionRequest| async move {
//!     Ok(ExecutionOutcome { job_id: job.job_id, request_id: job.request_id, ..Default::default() })
//! });
//! let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, server_tls))?.serve(router);
//!
//! let client = QuicClient::new(ClientConfig::new(server.local_addr(), "localhost", client_tls))?;
//! let connection = client.connect().await?;
//! let outcome = taskwire_quic::send_request(&connection, ExecutionRequest::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Limits ([`Limits`]) bound every resource a peer can make the endpoint spend, each with
//! a documented default; [`codes`] lists the close and reset codes a peer sees past them.
//! [`relay`] is a seeded, in-process lossy UDP relay for fault tests.
#![forbid(unsafe_code)]

mod client;
pub mod codes;
mod limits;
pub mod relay;
mod server;
mod wire;

pub use client::{
    BidiStream, ClientConfig, ClientStream, Connection, QuicClient, ReconnectPolicy,
    ResponseStream, send_request,
};
pub use limits::Limits;
pub use server::{
    Admission, QuicServer, ServerConfig, ServerConnection, ServerHandle, ServerStats,
    ShutdownReport,
};
pub use taskwire_rpc::session::ALPN;

/// Why an endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The TLS configuration cannot be used for QUIC (it must allow TLS 1.3).
    #[error("TLS: {0}")]
    Tls(String),
    /// The socket could not be bound.
    #[error("I/O: {0}")]
    Io(String),
}
