//! The orchestrator side of the runner conversation over a TCP connection.
//!
//! [`Orchestrator`] lives in `taskwire-rpc` and works over any [`RunnerChannel`]; a
//! [`TcpConnection`] is one.
//!
//! ```no_run
//! # async fn run(connection: taskwire_tcp::TcpConnection) -> Result<(), taskwire_tcp::runner::RunnerError> {
//! use std::time::Duration;
//! use taskwire_proto::runner::v1::ExecutionRequest;
//! use taskwire_tcp::runner::Orchestrator;
//!
//! let orchestrator = Orchestrator::new(connection);
//! let job = ExecutionRequest { request_id: "r1".into(), job_id: "j1".into(), function_name: "send_email".into(), ..Default::default() };
//! let outcome = orchestrator.execute(job, Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use taskwire_proto::runner::v1::{
    CancelRequest, CancelResponse, ExecutionOutcome, ExecutionRequest,
};
pub use taskwire_rpc::runner::{Orchestrator, RunnerChannel, RunnerError};
use taskwire_rpc::{CallError, CallOptions};

use crate::{TcpClient, TcpConnection};

impl RunnerChannel for TcpConnection {
    async fn execute(
        &self,
        request: ExecutionRequest,
        timeout: Duration,
    ) -> Result<ExecutionOutcome, CallError> {
        // Dropping the call at its deadline sends CancelCall, which cancels the handler.
        self.call_with(request, CallOptions::new().timeout(timeout))
            .await
    }

    async fn cancel(&self, request: CancelRequest) -> Result<CancelResponse, CallError> {
        self.call(request).await
    }
}

impl RunnerChannel for TcpClient {
    /// Uses the cached connection, reconnecting first if it is gone; a call that was sent
    /// is never sent again.
    async fn execute(
        &self,
        request: ExecutionRequest,
        timeout: Duration,
    ) -> Result<ExecutionOutcome, CallError> {
        // Connecting spends part of the deadline; the call gets what is left.
        let deadline = tokio::time::Instant::now() + timeout;
        let connection = tokio::time::timeout_at(deadline, self.connection())
            .await
            .map_err(|_| CallError::DeadlineExceeded(timeout))??;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        connection.execute(request, remaining).await
    }

    async fn cancel(&self, request: CancelRequest) -> Result<CancelResponse, CallError> {
        self.connection().await?.call(request).await
    }
}
