//! taskwire over QUIC.
//!
//! Each call is one bidirectional QUIC stream of binary frames: the client opens it,
//! writes an optional `CallHeader` and its request, and reads the answer; the server
//! answers with the response or a status frame. Before any call, the client's first
//! stream carries the Hello and the server's Negotiated or Refused; it stays open as the
//! control stream (Ping/Pong, GoAway).
//!
//! A client that reconnects to a server it has talked to resumes the TLS session and sends
//! its Hello and its replay-safe calls (rpcs marked `taskwire.options.v1.replay_safe`,
//! [`Rpc::REPLAY_SAFE`](taskwire_proto::Rpc::REPLAY_SAFE)) as 0-RTT early data, answered
//! in the server's first flight; every other call waits for the handshake, and the server
//! refuses any other call that arrives early. See [`Limits::early_data`] and
//! [`EarlyData`].
//!
//! Limits ([`Limits`]) bound every resource a peer can make the endpoint spend, each with
//! a documented default; [`codes`] lists the close and reset codes a peer sees past them.
//! [`relay`] is a seeded, in-process lossy UDP relay for fault tests.
//!
//! # Example
//!
//! Certificates from a CA made on the spot with `taskwire_tls` (QUIC needs TLS 1.3 and the
//! ALPN [`ALPN`]), a server on 127.0.0.1 answering one rpc, and a client with a
//! certificate for tenant `acme` calling it:
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use taskwire_proto::runner::v1::execution_outcome::{Outcome, Success};
//! use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
//! use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
//! use taskwire_rpc::{Router, Status};
//! use taskwire_tls::{
//!     CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
//!     ServerCertParams, ServerConfigBuilder,
//! };
//!
//! let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
//! let server_cert = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
//! let client_cert = ca.issue_client(&ClientCertParams::new("acme", "worker-1"))?;
//! let server_tls = ServerConfigBuilder::new(server_cert.credentials()?)
//!     .client_auth(ClientAuth::Optional(ca.ca_bundle()?))
//!     .alpn_protocols([taskwire_quic::ALPN])
//!     .tls13_only(true)
//!     .build()?;
//! let client_tls = ClientConfigBuilder::new(ca.ca_bundle()?)
//!     .client_credentials(client_cert.credentials()?)
//!     .alpn_protocols([taskwire_quic::ALPN])
//!     .tls13_only(true)
//!     .build()?;
//!
//! let mut router = Router::new();
//! router.unary(|ctx, job: ExecutionRequest| async move {
//!     // The tenant the client certificate proves.
//!     if ctx.peer.tenant() != Some("acme") {
//!         return Err(Status::permission_denied("only acme runs jobs here"));
//!     }
//!     Ok(ExecutionOutcome {
//!         job_id: job.job_id,
//!         request_id: job.request_id,
//!         outcome: Some(Outcome::Success(Success::default())),
//!     })
//! });
//! let server = QuicServer::new(ServerConfig::new("127.0.0.1:0".parse()?, Arc::new(server_tls)))?
//!     .serve(router);
//!
//! let client_config = ClientConfig::new(server.local_addr(), "localhost", Arc::new(client_tls));
//! let client = QuicClient::new(client_config)?;
//! let connection = client.connect().await?;
//! let job = ExecutionRequest {
//!     job_id: "job-7".into(),
//!     request_id: "attempt-1".into(),
//!     ..Default::default()
//! };
//! let outcome = taskwire_quic::send_request(&connection, job).await?;
//! assert_eq!(outcome.job_id, "job-7");
//! assert_eq!(outcome.request_id, "attempt-1");
//! assert!(matches!(outcome.outcome, Some(Outcome::Success(_))));
//!
//! connection.close();
//! let report = server.shutdown().await;
//! assert!(report.drained);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod client;
pub mod codes;
mod limits;
pub mod relay;
mod runner;
mod server;
mod wire;

pub use client::{
    BidiStream, ClientConfig, ClientStream, Connection, EarlyData, Negotiation, QuicClient,
    ReconnectPolicy, ResponseStream, send_request,
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
