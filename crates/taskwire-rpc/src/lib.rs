//! taskwire's call model, independent of the transport.
//!
//! The QUIC and TCP transports move frames; this crate says what the frames mean:
//!
//! * [`session`]: the Hello → Negotiated/Refused handshake as plain functions, so both
//!   transports negotiate identically and the rules are unit-tested without sockets.
//! * [`Router`]: a handler per request type, for every call shape (unary, server
//!   streaming, client streaming, bidirectional, one-way). Handlers get the request, a
//!   [`CallContext`] (peer identity, deadline, cancellation token, trace context) and, for
//!   streams, typed [`RequestStream`]s and [`ResponseSink`]s.
//! * [`TenantBudget`]: bytes held on behalf of tenants against a server-wide total and a
//!   share per tenant; the router counts queued request frames against one.
//! * [`Status`]: how a call fails, carried on the wire as `taskwire.session.v1.Status`.
//! * [`CallError`]: how a caller sees a failure, typed by cause.
//! * [`CallOptions`]: per-call deadline, trace context and idempotency key, which travel
//!   in a `CallHeader` frame.
//! * [`runner`]: the orchestrator side of the runner conversation over any
//!   [`RunnerChannel`](runner::RunnerChannel).
#![forbid(unsafe_code)]

mod answer;
mod budget;
mod context;
mod error;
pub mod journal;
mod router;
pub mod runner;
pub mod session;
mod slots;
mod status;
mod stream;

pub use answer::{decode_answer, decode_status};
pub use budget::{
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_BUFFERED_BYTES_PER_TENANT, Reservation, TenantBudget,
};
pub use context::{CallContext, CallOptions, PeerInfo, TraceContext};
pub use error::CallError;
pub use router::{Dispatch, Router};
pub use slots::{ConnectionSlot, ConnectionSlots};
pub use status::Status;
pub use stream::{RequestSender, RequestStream, ResponseSink, Undelivered, channel_capacity};
pub use taskwire_proto::session::v1::StatusCode;
