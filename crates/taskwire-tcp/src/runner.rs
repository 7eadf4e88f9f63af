//! The orchestrator side of the runner conversation: dispatch a job to a runner, get its
//! outcome, cancel it, with the runner's deadline turned into a timeout outcome.
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

use taskwire_proto::runner::v1::execution_outcome::{Outcome, Timeout};
use taskwire_proto::runner::v1::{
    CancelRequest, CancelResponse, ExecutionOutcome, ExecutionRequest,
};
use taskwire_proto::wkt;
use taskwire_rpc::{CallError, CallOptions};

use crate::TcpConnection;

/// Why a job could not be dispatched or its outcome not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The call failed: the runner is unreachable, refused, or broke the protocol.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The runner answered for another job or request: the outcome is refused.
    #[error(
        "outcome for job {got_job:?} / request {got_request:?} does not match job {expected_job:?} / request {expected_request:?}"
    )]
    OutcomeMismatch {
        /// The job dispatched.
        expected_job: String,
        /// The request dispatched.
        expected_request: String,
        /// The job the outcome named.
        got_job: String,
        /// The request the outcome named.
        got_request: String,
    },
}

/// Dispatches jobs to one runner connection.
#[derive(Clone, Debug)]
pub struct Orchestrator {
    connection: TcpConnection,
}

impl Orchestrator {
    /// An orchestrator using `connection`.
    pub fn new(connection: TcpConnection) -> Orchestrator {
        Orchestrator { connection }
    }

    /// Runs `job` on the runner. If the runner has not answered within `deadline`, the
    /// call is cancelled (the runner is told) and the outcome is `timeout`. An outcome
    /// naming another job or request is an error.
    pub async fn execute(
        &self,
        mut job: ExecutionRequest,
        deadline: Duration,
    ) -> Result<ExecutionOutcome, RunnerError> {
        let context = job.context.get_or_insert_with(Default::default);
        if context.deadline.is_none() {
            context.deadline = Some(wkt::Timestamp::from(
                std::time::SystemTime::now() + deadline,
            ));
        }
        let (job_id, request_id) = (job.job_id.clone(), job.request_id.clone());
        let outcome = match self
            .connection
            .call_with(job, CallOptions::new().timeout(deadline))
            .await
        {
            Ok(outcome) => outcome,
            Err(CallError::DeadlineExceeded(_)) => {
                return Ok(ExecutionOutcome {
                    job_id,
                    request_id,
                    outcome: Some(Outcome::Timeout(Timeout {
                        message: format!("the runner did not answer within {deadline:?}"),
                        elapsed: Some(wkt::Duration::from(deadline)),
                    })),
                });
            }
            Err(CallError::Status(status))
                if status.code() == taskwire_rpc::StatusCode::DeadlineExceeded =>
            {
                return Ok(ExecutionOutcome {
                    job_id,
                    request_id,
                    outcome: Some(Outcome::Timeout(Timeout {
                        message: status.message().to_owned(),
                        elapsed: Some(wkt::Duration::from(deadline)),
                    })),
                });
            }
            Err(error) => return Err(error.into()),
        };
        if outcome.job_id != job_id || outcome.request_id != request_id {
            return Err(RunnerError::OutcomeMismatch {
                expected_job: job_id,
                expected_request: request_id,
                got_job: outcome.job_id,
                got_request: outcome.request_id,
            });
        }
        Ok(outcome)
    }

    /// Asks the runner to cancel a job in flight: cooperatively, or by killing its
    /// handler when `hard_kill`.
    pub async fn cancel(
        &self,
        job_id: &str,
        request_id: &str,
        hard_kill: bool,
    ) -> Result<CancelResponse, RunnerError> {
        let request = CancelRequest {
            job_id: job_id.to_owned(),
            request_id: request_id.to_owned(),
            hard_kill,
            reason: "cancelled by the orchestrator".into(),
        };
        Ok(self.connection.call(request).await?)
    }
}
