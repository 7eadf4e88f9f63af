//! The runner conversation over QUIC: a [`Connection`] and a [`QuicClient`] are
//! [`RunnerChannel`]s, so `taskwire_rpc::runner::Orchestrator` dispatches jobs over them.
//! The client reconnects as needed; a call that was already sent is never re-sent.

use std::time::Duration;

use taskwire_proto::runner::v1::{
    CancelRequest, CancelResponse, ExecutionOutcome, ExecutionRequest,
};
use taskwire_rpc::runner::RunnerChannel;
use taskwire_rpc::{CallError, CallOptions};

use crate::{Connection, QuicClient};

impl RunnerChannel for Connection {
    async fn execute(
        &self,
        request: ExecutionRequest,
        timeout: Duration,
    ) -> Result<ExecutionOutcome, CallError> {
        self.call_with(request, CallOptions::new().timeout(timeout))
            .await
    }

    async fn cancel(&self, request: CancelRequest) -> Result<CancelResponse, CallError> {
        self.call(request).await
    }
}

impl RunnerChannel for QuicClient {
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
        connection
            .call_with(request, CallOptions::new().timeout(remaining))
            .await
    }

    async fn cancel(&self, request: CancelRequest) -> Result<CancelResponse, CallError> {
        self.call(request).await
    }
}
