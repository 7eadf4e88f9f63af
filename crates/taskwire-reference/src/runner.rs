//! The runner conversation, with the server as the runner: a handful of built-in job
//! functions an orchestrator can dispatch to exercise every outcome.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskwire_proto::runner::v1::cancel_response::CancelState;
use taskwire_proto::runner::v1::execution_outcome::{
    Cancelled, Failure, HandlerNotFound, Outcome, RetryAfter, Success, Timeout,
};
use taskwire_proto::runner::v1::{
    CancelRequest, CancelResponse, ExecutionOutcome, ExecutionRequest,
};
use taskwire_proto::wkt::{Struct, Value, value::Kind};
use taskwire_rpc::{CallContext, Router, Status, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::store::{Shared, required};
use crate::unary;

/// The job functions the reference runner knows, by `function_name`:
///
/// * `echo`: succeeds with its params as the result.
/// * `add`: succeeds with the sum of the numbers `a` and `b` (missing ones count 0).
/// * `fail`: fails with `params.message`.
/// * `rate_limited`: asks to be retried after `params.delay_seconds` (default 30).
/// * `sleep`: sleeps `params.seconds` (default 1, at most 3600), ending `cancelled` if
///   cancelled first and `timeout` if the deadline passes first.
///
/// Any other name ends `handler_not_found`.
pub const FUNCTIONS: [&str; 5] = ["echo", "add", "fail", "rate_limited", "sleep"];

/// A job executing now: how to cancel it, and why it was.
#[derive(Debug, Default)]
pub(crate) struct Job {
    token: CancellationToken,
    cancel: Mutex<Option<(String, bool)>>,
}

pub(crate) fn routes(router: &mut Router, shared: &Arc<Shared>) {
    unary(router, shared, cancel);
    let s = Arc::clone(shared);
    router.unary(move |ctx, request: ExecutionRequest| execute(Arc::clone(&s), ctx, request));
}

/// Removes a finished job from the tenant's running set, however the call ends.
struct Running<'a> {
    shared: &'a Shared,
    tenant: &'a str,
    job_id: &'a str,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.shared
            .with_tenant(self.tenant, |t| t.jobs.remove(self.job_id));
    }
}

async fn execute(
    shared: Arc<Shared>,
    ctx: CallContext,
    request: ExecutionRequest,
) -> Result<ExecutionOutcome, Status> {
    let tenant = shared.tenant_of(&ctx)?;
    if request.job_id.is_empty() {
        return Err(required("job_id"));
    }
    let job = Arc::new(Job {
        token: ctx.cancel.child_token(),
        cancel: Mutex::new(None),
    });
    shared.with_tenant(&tenant, |t| {
        if t.jobs.contains_key(&request.job_id) {
            return Err(Status::new(
                StatusCode::AlreadyExists,
                format!("job {:?} is already executing", request.job_id),
            ));
        }
        t.jobs.insert(request.job_id.clone(), Arc::clone(&job));
        Ok(())
    })?;
    let _running = Running {
        shared: &shared,
        tenant: &tenant,
        job_id: &request.job_id,
    };
    // The job's own deadline, or the call's, whichever is sooner.
    let deadline = request
        .context
        .as_ref()
        .and_then(|c| c.deadline)
        .and_then(|at| std::time::SystemTime::try_from(at).ok())
        .map(|at| {
            Instant::now()
                + at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
        })
        .into_iter()
        .chain(ctx.deadline)
        .min();
    let params = request.params.unwrap_or_default();
    let outcome = match request.function_name.as_str() {
        "echo" => success(Kind::StructValue(params)),
        "add" => add(&params),
        "fail" => Outcome::Failure(Failure {
            message: string_param(&params, "message")
                .unwrap_or("the handler failed")
                .to_owned(),
            r#type: "RuntimeError".into(),
            code: "handler.failed".into(),
            details: None,
        }),
        "rate_limited" => Outcome::RetryAfter(RetryAfter {
            message: "rate limited by the downstream service".into(),
            delay: Some(
                Duration::from_secs_f64(
                    number_param(&params, "delay_seconds")
                        .unwrap_or(30.0)
                        .clamp(0.0, 86_400.0),
                )
                .into(),
            ),
        }),
        "sleep" => sleep(&job, &params, deadline).await,
        other => Outcome::HandlerNotFound(HandlerNotFound {
            function_name: other.to_owned(),
        }),
    };
    Ok(ExecutionOutcome {
        job_id: request.job_id.clone(),
        request_id: request.request_id,
        outcome: Some(outcome),
    })
}

fn success(kind: Kind) -> Outcome {
    Outcome::Success(Success {
        result: Some(Value { kind: Some(kind) }),
    })
}

fn number_param(params: &Struct, name: &str) -> Option<f64> {
    match params.fields.get(name)?.kind {
        Some(Kind::NumberValue(n)) => Some(n),
        _ => None,
    }
}

fn string_param<'a>(params: &'a Struct, name: &str) -> Option<&'a str> {
    match &params.fields.get(name)?.kind {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn add(params: &Struct) -> Outcome {
    let mut sum = 0.0;
    for name in ["a", "b"] {
        match params.fields.get(name).map(|v| &v.kind) {
            None => {}
            Some(Some(Kind::NumberValue(n))) => sum += n,
            Some(_) => {
                return Outcome::Failure(Failure {
                    message: format!("params.{name} is not a number"),
                    r#type: "TypeError".into(),
                    code: "params.invalid".into(),
                    details: None,
                });
            }
        }
    }
    success(Kind::NumberValue(sum))
}

async fn sleep(job: &Job, params: &Struct, deadline: Option<Instant>) -> Outcome {
    let seconds = number_param(params, "seconds")
        .unwrap_or(1.0)
        .clamp(0.0, 3_600.0);
    let started = Instant::now();
    let wake = started + Duration::from_secs_f64(seconds);
    let timeout_at = deadline.unwrap_or(wake).min(wake);
    tokio::select! {
        () = job.token.cancelled() => {
            let (reason, hard_killed) = job
                .cancel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| ("the call was cancelled".into(), false));
            Outcome::Cancelled(Cancelled { reason, hard_killed })
        }
        () = tokio::time::sleep_until(timeout_at.into()) => {
            if timeout_at < wake {
                Outcome::Timeout(Timeout {
                    message: format!("the deadline passed before {seconds}s of sleep"),
                    elapsed: Some(started.elapsed().into()),
                })
            } else {
                let result = Struct {
                    fields: [("slept".to_owned(), Value { kind: Some(Kind::NumberValue(seconds)) })].into(),
                };
                success(Kind::StructValue(result))
            }
        }
    }
}

fn cancel(shared: &Shared, tenant: &str, request: CancelRequest) -> Result<CancelResponse, Status> {
    if request.job_id.is_empty() {
        return Err(required("job_id"));
    }
    let job = shared.with_tenant(tenant, |t| t.jobs.get(&request.job_id).cloned());
    let Some(job) = job else {
        return Ok(CancelResponse {
            found: false,
            state: CancelState::Unspecified as i32,
        });
    };
    let reason = if request.reason.is_empty() {
        "cancelled by the orchestrator".to_owned()
    } else {
        request.reason
    };
    *job.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some((reason, request.hard_kill));
    job.token.cancel();
    Ok(CancelResponse {
        found: true,
        state: if request.hard_kill {
            CancelState::Killed
        } else {
            CancelState::Requested
        } as i32,
    })
}
