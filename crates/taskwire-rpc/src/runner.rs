//! The orchestrator side of the runner conversation, whatever carries it: dispatch a job
//! to a runner, get its outcome, cancel it, with the runner's deadline turned into a
//! timeout outcome.
//!
//! [`Orchestrator`] works over any [`RunnerChannel`]: a taskwire TCP connection, a QUIC
//! client, or a runner that speaks another system's protocol (the RRQ dialect in
//! `taskwire-rrq`). The outcomes, the timeout rule and the mismatch check are the same
//! for all of them.
//!
//! ```no_run
//! # async fn run(channel: impl taskwire_rpc::runner::RunnerChannel) -> Result<(), taskwire_rpc::runner::RunnerError> {
//! use std::time::Duration;
//! use taskwire_proto::runner::v1::ExecutionRequest;
//! use taskwire_rpc::runner::Orchestrator;
//!
//! let orchestrator = Orchestrator::new(channel);
//! let job = ExecutionRequest { request_id: "r1".into(), job_id: "j1".into(), function_name: "send_email".into(), ..Default::default() };
//! let outcome = orchestrator.execute(job, Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::{Duration, SystemTime};

use taskwire_proto::runner::v1::execution_outcome::{Outcome, Timeout};
use taskwire_proto::runner::v1::{
    CancelRequest, CancelResponse, ExecutionOutcome, ExecutionRequest,
};
use taskwire_proto::wkt;

use crate::{CallError, StatusCode};

/// A way to reach one runner: the two calls of `taskwire.runner.v1.RunnerService`.
///
/// Implemented by the transports' connections and clients, and by dialect clients that
/// translate to another system's runner protocol.
pub trait RunnerChannel: Send + Sync {
    /// Sends one `Execute` call. The callee learns `timeout` as the call's deadline; when
    /// it passes without an answer the call fails with [`CallError::DeadlineExceeded`] and
    /// the runner is told to stop, as the channel's protocol allows.
    fn execute(
        &self,
        request: ExecutionRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecutionOutcome, CallError>> + Send;

    /// Sends one `Cancel` call.
    fn cancel(
        &self,
        request: CancelRequest,
    ) -> impl Future<Output = Result<CancelResponse, CallError>> + Send;
}

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

/// Dispatches jobs to one runner.
#[derive(Clone, Debug)]
pub struct Orchestrator<C> {
    channel: C,
}

impl<C: RunnerChannel> Orchestrator<C> {
    /// An orchestrator using `channel`.
    pub fn new(channel: C) -> Orchestrator<C> {
        Orchestrator { channel }
    }

    /// The channel this orchestrator dispatches on.
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// Runs `job` on the runner. The job's `context.deadline` is set to now plus
    /// `deadline` unless the job already has one. If the runner has not answered within
    /// `deadline`, the runner is told to stop and the outcome is `timeout`. An outcome
    /// naming another job or request is an error.
    pub async fn execute(
        &self,
        mut job: ExecutionRequest,
        deadline: Duration,
    ) -> Result<ExecutionOutcome, RunnerError> {
        let context = job.context.get_or_insert_with(Default::default);
        if context.deadline.is_none() {
            context.deadline = Some(wkt::Timestamp::from(SystemTime::now() + deadline));
        }
        let (job_id, request_id) = (job.job_id.clone(), job.request_id.clone());
        let timed_out = |message: String| ExecutionOutcome {
            job_id: job_id.clone(),
            request_id: request_id.clone(),
            outcome: Some(Outcome::Timeout(Timeout {
                message,
                elapsed: Some(wkt::Duration::from(deadline)),
            })),
        };
        let outcome = match self.channel.execute(job, deadline).await {
            Ok(outcome) => outcome,
            Err(CallError::DeadlineExceeded(_)) => {
                return Ok(timed_out(format!(
                    "the runner did not answer within {deadline:?}"
                )));
            }
            Err(CallError::Status(status)) if status.code() == StatusCode::DeadlineExceeded => {
                return Ok(timed_out(status.message().to_owned()));
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
    /// handler when `hard_kill`. An empty `request_id` means whichever attempt of the job
    /// is in flight.
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
        Ok(self.channel.cancel(request).await?)
    }
}

/// How long a relayed `Execute` call may take when neither the caller's call header nor
/// the job's `context.deadline` says: one hour.
pub const DEFAULT_RELAY_TIMEOUT: Duration = Duration::from_secs(3600);

/// A router whose runner rpcs (`Execute`, `Cancel`) are answered by relaying them to
/// `channel`: the building block of a bridge between two ways of reaching runners.
///
/// An `Execute` call gets the earlier of the caller's deadline and the job's own
/// `context.deadline` (or [`DEFAULT_RELAY_TIMEOUT`]); a call the relay could not finish
/// is answered with the failure's status, never sent twice. Dropping the relayed call
/// (the caller went away) drops the call on `channel`, which tells its runner to stop.
///
/// ```
/// use std::sync::Arc;
/// use taskwire_proto::WireMessage;
/// use taskwire_proto::runner::v1::{CancelRequest, ExecutionRequest};
/// # use taskwire_proto::runner::v1::{CancelResponse, ExecutionOutcome};
/// # struct Runner;
/// # impl taskwire_rpc::runner::RunnerChannel for Runner {
/// #     async fn execute(&self, r: ExecutionRequest, _: std::time::Duration) -> Result<ExecutionOutcome, taskwire_rpc::CallError> { Ok(ExecutionOutcome { job_id: r.job_id, request_id: r.request_id, ..Default::default() }) }
/// #     async fn cancel(&self, _: CancelRequest) -> Result<CancelResponse, taskwire_rpc::CallError> { Ok(CancelResponse::default()) }
/// # }
/// # let channel = Runner;
/// let router = taskwire_rpc::runner::relay_router(Arc::new(channel));
/// assert!(router.handles(ExecutionRequest::TYPE_ID) && router.handles(CancelRequest::TYPE_ID));
/// ```
pub fn relay_router<C: RunnerChannel + 'static>(channel: std::sync::Arc<C>) -> crate::Router {
    let mut router = crate::Router::new();
    let executes = std::sync::Arc::clone(&channel);
    router.unary(move |ctx: crate::CallContext, request: ExecutionRequest| {
        let channel = std::sync::Arc::clone(&executes);
        async move {
            let job_deadline = request
                .context
                .as_ref()
                .and_then(|c| c.deadline)
                .and_then(|at| SystemTime::try_from(at).ok())
                .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
            let timeout = ctx
                .remaining()
                .into_iter()
                .chain(job_deadline)
                .min()
                .unwrap_or(DEFAULT_RELAY_TIMEOUT);
            channel
                .execute(request, timeout)
                .await
                .map_err(|error| error.to_status())
        }
    });
    router.unary(move |_ctx, request: CancelRequest| {
        let channel = std::sync::Arc::clone(&channel);
        async move {
            channel
                .cancel(request)
                .await
                .map_err(|error| error.to_status())
        }
    });
    router
}
