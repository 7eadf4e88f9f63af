//! A runner that RRQ's orchestrator drives: the runner handlers of a taskwire [`Router`]
//! served over RRQ's own protocol.
//!
//! The orchestrator dials the runner and sends requests; several are in flight on one
//! connection and each answer goes back as soon as its handler ends, matched by
//! `request_id`. The handler for `taskwire.runner.v1.ExecutionRequest` runs each job, the
//! same code that serves taskwire's runner conversation over QUIC or TCP. What RRQ's own
//! runners do, this one does too:
//!
//! * a job whose `context.deadline` has passed on arrival is answered `timeout` ("Job
//!   deadline exceeded") without running; one still running at its deadline is stopped
//!   and answered `timeout` ("Job execution timed out.");
//! * more than [`RunnerConfig::max_in_flight_per_connection`] jobs on one connection: the
//!   extra ones are answered `error` ("Runner busy: too many in-flight requests");
//! * a protocol version other than `"2"` is answered `error` ("Unsupported protocol
//!   version");
//! * a `cancel`, on any connection, reaches the jobs it names, by `request_id` or (when
//!   that is `null`) every attempt of `job_id`. The router's `CancelRequest` handler, if
//!   it has one, is told first; then the job's [`CallContext::cancel`] fires. A soft
//!   cancel lets the handler end as it chooses; `hard_kill` stops it at once and answers
//!   `error`, type `cancelled`;
//! * bad input (a frame that does not decode, a `response` sent to the runner) closes the
//!   connection, and a closed connection stops the jobs it carried: RRQ counts a
//!   transport error and retries them elsewhere.
//!
//! RRQ's protocol has no authentication, so the runner binds loopback addresses only.
//! To reach runners on other machines, bridge to taskwire's QUIC or TCP transport with
//! mutual TLS (`taskwire bridge rrq`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use futures::StreamExt as _;
use taskwire_codec::tokio_util::codec::{Encoder as _, FramedRead};
use taskwire_codec::{Builder, Frame, RawFrame};
use taskwire_proto::WireMessage;
use taskwire_proto::runner::v1::execution_outcome::{Cancelled, Outcome};
use taskwire_proto::runner::v1::{CancelRequest, ExecutionOutcome};
use taskwire_rpc::{
    CallContext, CallError, Dispatch, PeerInfo, Router, Status, StatusCode, TraceContext,
    decode_answer,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::RrqError;
use crate::codec::RrqCodec;
use crate::mapping::{self, CANCELLED, TIMEOUT, cancel_request, execution_request, rrq_response};
use crate::message::{
    Cancel, Message, OutcomeError, PROTOCOL_VERSION, Request, Response, Status as RrqStatus,
};

/// How many jobs RRQ's runners accept on one connection: 64, the most RRQ's orchestrator
/// sends (`max_in_flight`).
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// How many orchestrator connections a runner accepts at once: 1,024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long [`RunnerHandle::shutdown`] waits for jobs in flight: 10 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// RRQ's message for a job whose time ran out, as its own runner sends it.
const JOB_TIMED_OUT: &str = "Job execution timed out.";

/// What an RRQ runner needs.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The address to listen on; a loopback address, as RRQ's own runners insist.
    pub bind_addr: SocketAddr,
    /// Frame limits (the frame length and the decoded-size budget). Default
    /// [`Builder::new`]: 16 MiB frames, RRQ's own cap.
    pub codec: Builder,
    /// Jobs in flight per connection before the runner answers "busy". Default
    /// [`DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION`] (64). Memory: one task and the job's
    /// request per job.
    pub max_in_flight_per_connection: usize,
    /// Connections at once; more are closed on accept. Default [`DEFAULT_MAX_CONNECTIONS`].
    /// Memory: a reader, a writer and an 8 KiB read buffer per connection.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for jobs in flight. Default
    /// [`DEFAULT_DRAIN_TIMEOUT`] (10 s).
    pub drain_timeout: Duration,
    /// The tenant the orchestrator's jobs act for, as [`PeerInfo::claimed_tenant`]: RRQ
    /// has no identities. Default empty.
    pub tenant: String,
}

impl RunnerConfig {
    /// A runner on `bind_addr` with the defaults.
    pub fn new(bind_addr: SocketAddr) -> RunnerConfig {
        RunnerConfig {
            bind_addr,
            codec: Builder::new(),
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            tenant: String::new(),
        }
    }
}

/// Counts a runner keeps.
#[derive(Debug, Default)]
pub struct RunnerStats {
    /// Orchestrator connections accepted.
    pub connections: AtomicU64,
    /// Jobs started.
    pub jobs_started: AtomicU64,
    /// Jobs answered (every outcome).
    pub jobs_answered: AtomicU64,
    /// Jobs answered "busy".
    pub jobs_refused_busy: AtomicU64,
    /// Cancels received.
    pub cancels: AtomicU64,
    /// Connections closed for bad input.
    pub connections_closed_for_cause: AtomicU64,
}

/// A job in flight, found by cancels from any connection.
#[derive(Debug)]
struct Job {
    job_id: String,
    request_id: String,
    /// Fires on any cancel: the handler's `CallContext::cancel`.
    cancel: CancellationToken,
    /// Fires on a hard cancel: the runner stops the handler.
    kill: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    config: RunnerConfig,
    stats: RunnerStats,
    jobs: Mutex<HashMap<u64, Arc<Job>>>,
    next_job: AtomicU64,
    shutdown: CancellationToken,
    /// Fires when the drain is over: connections close and their jobs stop.
    closing: CancellationToken,
    connections: TaskTracker,
}

/// A bound RRQ runner; [`serve`](RrqRunner::serve) runs it.
#[derive(Debug)]
pub struct RrqRunner {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl RrqRunner {
    /// Binds the listener. A non-loopback address is refused: RRQ's protocol carries no
    /// credentials.
    pub async fn bind(config: RunnerConfig) -> Result<RrqRunner, RrqError> {
        if !config.bind_addr.ip().is_loopback() {
            return Err(RrqError::Config(format!(
                "an RRQ runner must listen on a loopback address (RRQ's protocol has no authentication), not {}; bridge remote runners over QUIC or TCP with mutual TLS instead",
                config.bind_addr
            )));
        }
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|e| RrqError::Io(format!("binding {}: {e}", config.bind_addr)))?;
        Ok(RrqRunner {
            listener,
            shared: Arc::new(Shared {
                config,
                stats: RunnerStats::default(),
                jobs: Mutex::new(HashMap::new()),
                next_job: AtomicU64::new(0),
                shutdown: CancellationToken::new(),
                closing: CancellationToken::new(),
                connections: TaskTracker::new(),
            }),
        })
    }

    /// The address the runner listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.bind_addr)
    }

    /// Serves `router`'s runner handlers to RRQ orchestrators until shut down.
    pub fn serve(self, router: Router) -> RunnerHandle {
        let local_addr = self.local_addr();
        let shared = Arc::clone(&self.shared);
        let router = Arc::new(router);
        let accept = tokio::spawn(accept_loop(self.listener, Arc::clone(&shared), router));
        RunnerHandle {
            local_addr,
            shared,
            accept,
        }
    }
}

/// A running RRQ runner.
#[derive(Debug)]
pub struct RunnerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl RunnerHandle {
    /// The address the runner listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The runner's counters.
    pub fn stats(&self) -> &RunnerStats {
        &self.shared.stats
    }

    /// Stops accepting connections and new jobs, lets the jobs in flight finish and
    /// answer (up to [`RunnerConfig::drain_timeout`]), then closes every connection.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.accept.abort();
        let _ = self.accept.await;
        let drained = async {
            while !self.shared.jobs.lock().expect("jobs lock").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let _ = tokio::time::timeout(self.shared.config.drain_timeout, drained).await;
        self.shared.closing.cancel();
        self.shared.connections.close();
        self.shared.connections.wait().await;
    }

    /// Stops at once, as if the process died: connections close and jobs in flight stop
    /// without an answer.
    pub async fn abort(self) {
        self.shared.shutdown.cancel();
        self.shared.closing.cancel();
        self.accept.abort();
        let _ = self.accept.await;
        self.shared.connections.close();
        self.shared.connections.wait().await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, router: Arc<Router>) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // One failed accept (a descriptor limit, a reset) never ends the loop.
                    tracing::warn!(%error, "accepting an orchestrator connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if shared.connections.len() >= shared.config.max_connections {
            tracing::warn!(%peer, limit = shared.config.max_connections, "refusing an orchestrator connection: too many");
            continue;
        }
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            shared: Arc::clone(&shared),
            router: Arc::clone(&router),
            peer: Arc::new(PeerInfo {
                address: Some(peer),
                identity: None,
                name: "rrq-orchestrator".into(),
                version: String::new(),
                claimed_tenant: shared.config.tenant.clone(),
                conversations: None,
            }),
        };
        shared.connections.spawn(connection.run(stream));
    }
}

/// One orchestrator connection.
struct Connection {
    shared: Arc<Shared>,
    router: Arc<Router>,
    peer: Arc<PeerInfo>,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let capacity = self.shared.config.max_in_flight_per_connection.max(1) * 2;
        let (answers, mut outgoing) = mpsc::channel::<Response>(capacity);
        let mut codec = RrqCodec::from_builder(&self.shared.config.codec);
        let writer = async move {
            let mut buffer = BytesMut::new();
            while let Some(first) = outgoing.recv().await {
                // Coalesce what is queued into one write.
                let mut next = Some(first);
                while let Some(response) = next {
                    if let Err(error) = codec.encode(&Message::Response(response), &mut buffer) {
                        tracing::error!(%error, "an answer could not be encoded");
                    }
                    next = outgoing.try_recv().ok();
                }
                if write.write_all(&buffer).await.is_err() {
                    return;
                }
                buffer.clear();
            }
        };
        let mut frames = FramedRead::new(read, RrqCodec::from_builder(&self.shared.config.codec));
        let mut jobs = JoinSet::new();
        let reader = async {
            loop {
                let frame = tokio::select! {
                    () = self.shared.shutdown.cancelled() => break,
                    Some(_) = jobs.join_next(), if !jobs.is_empty() => continue,
                    frame = frames.next() => frame,
                };
                match frame {
                    None => break,
                    Some(Ok(Message::Request(request))) => {
                        self.start(request, &mut jobs, &answers).await;
                    }
                    Some(Ok(Message::Cancel(cancel))) => {
                        self.shared.cancel(&self.router, cancel).await;
                    }
                    Some(Ok(Message::Response(_))) => {
                        self.close_for_cause("the orchestrator sent a response to the runner");
                        break;
                    }
                    Some(Err(error)) => {
                        self.close_for_cause(&error.to_string());
                        break;
                    }
                }
            }
            // Draining: jobs in flight still answer, until the runner closes.
            if self.shared.shutdown.is_cancelled() {
                tokio::select! {
                    () = async { while jobs.join_next().await.is_some() {} } => {}
                    () = self.shared.closing.cancelled() => {}
                }
            }
            drop(answers);
            // Dropping the set stops the jobs still running: the connection that would
            // carry their answers is gone.
            drop(jobs);
        };
        tokio::select! {
            () = async { tokio::join!(reader, writer); } => {}
            () = self.shared.closing.cancelled() => {}
        }
    }

    fn close_for_cause(&self, why: &str) {
        self.shared
            .stats
            .connections_closed_for_cause
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = ?self.peer.address, why, "closing an orchestrator connection for bad input");
    }

    /// Starts one job, or answers at once when it cannot run.
    async fn start(
        &self,
        request: Request,
        jobs: &mut JoinSet<()>,
        answers: &mpsc::Sender<Response>,
    ) {
        let deadline = deadline_of(&request);
        let refusal = if request.protocol_version != PROTOCOL_VERSION {
            Some(Response::failed(
                &request,
                RrqStatus::Error,
                "Unsupported protocol version",
                None,
            ))
        } else if deadline.is_some_and(|at| at <= Instant::now()) {
            Some(Response::failed(
                &request,
                RrqStatus::Timeout,
                "Job deadline exceeded",
                Some(TIMEOUT),
            ))
        } else if jobs.len() >= self.shared.config.max_in_flight_per_connection {
            self.shared
                .stats
                .jobs_refused_busy
                .fetch_add(1, Ordering::Relaxed);
            Some(Response::failed(
                &request,
                RrqStatus::Error,
                "Runner busy: too many in-flight requests",
                None,
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let _ = answers.send(refusal).await;
            return;
        }
        self.shared
            .stats
            .jobs_started
            .fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            job_id: request.job_id.clone(),
            request_id: request.request_id.clone(),
            cancel: CancellationToken::new(),
            kill: CancellationToken::new(),
        });
        let key = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        self.shared
            .jobs
            .lock()
            .expect("jobs lock")
            .insert(key, Arc::clone(&job));
        let registered = Registered {
            shared: Arc::clone(&self.shared),
            key,
        };
        let run = run_job(
            Arc::clone(&self.router),
            Arc::clone(&self.peer),
            job,
            request,
            deadline,
        );
        let answers = answers.clone();
        let shared = Arc::clone(&self.shared);
        jobs.spawn(async move {
            let response = run.await;
            drop(registered);
            if answers.send(response).await.is_ok() {
                shared.stats.jobs_answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Removes a job from the runner's table however its task ends (aborted included).
struct Registered {
    shared: Arc<Shared>,
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared
            .jobs
            .lock()
            .expect("jobs lock")
            .remove(&self.key);
    }
}

impl Shared {
    /// Delivers a cancel to the jobs it names.
    async fn cancel(&self, router: &Router, cancel: Cancel) {
        self.stats.cancels.fetch_add(1, Ordering::Relaxed);
        if cancel.protocol_version != PROTOCOL_VERSION {
            tracing::debug!(version = %cancel.protocol_version, "ignoring a cancel of another protocol version");
            return;
        }
        let targets: Vec<Arc<Job>> = self
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .filter(|job| {
                job.job_id == cancel.job_id
                    && cancel
                        .request_id
                        .as_ref()
                        .is_none_or(|id| *id == job.request_id)
            })
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        let hard_kill = cancel.hard_kill;
        if router.handles(CancelRequest::TYPE_ID) {
            let request = cancel_request(cancel);
            let context = CallContext::new(Arc::new(PeerInfo {
                name: "rrq-orchestrator".into(),
                claimed_tenant: self.config.tenant.clone(),
                ..PeerInfo::default()
            }));
            if let Dispatch::Unary(answer) =
                router.dispatch(context, RawFrame::encode(&Frame::new(request)))
                && let Err(status) = answer.await
            {
                tracing::debug!(%status, "the router's cancel handler failed");
            }
        }
        for job in targets {
            job.cancel.cancel();
            if hard_kill {
                job.kill.cancel();
            }
        }
    }
}

/// The job's `context.deadline` on this machine's monotonic clock.
fn deadline_of(request: &Request) -> Option<Instant> {
    request.context.deadline.map(|at| {
        let now = Instant::now();
        match SystemTime::try_from(at) {
            Ok(at) => now + at.duration_since(SystemTime::now()).unwrap_or_default(),
            Err(_) => now,
        }
    })
}

/// Runs one job through the router and says how it ended.
async fn run_job(
    router: Arc<Router>,
    peer: Arc<PeerInfo>,
    job: Arc<Job>,
    request: Request,
    deadline: Option<Instant>,
) -> Response {
    let mut context = CallContext::new(peer);
    context.deadline = deadline;
    context.cancel = job.cancel.clone();
    if let Some(trace) = &request.context.trace_context {
        context.trace = TraceContext {
            traceparent: trace.get("traceparent").cloned().unwrap_or_default(),
            tracestate: trace.get("tracestate").cloned().unwrap_or_default(),
        };
    }
    let reply_to = Response::to(&request, RrqStatus::Error);
    let first = RawFrame::encode(&Frame::new(execution_request(request)));
    let answer = match router.dispatch(context, first) {
        Dispatch::Unary(answer) => answer,
        Dispatch::Rejected(status) => return status_response(reply_to, &status),
        _ => {
            return status_response(
                reply_to,
                &Status::unimplemented(
                    "the router serves ExecutionRequest as a streaming call; RRQ jobs need a unary handler",
                ),
            );
        }
    };
    let expired = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        answer = answer => match answer.map_err(CallError::Status).and_then(decode_answer::<ExecutionOutcome>) {
            Ok(outcome) => outcome_response(reply_to, outcome),
            Err(error) => status_response(reply_to, &error.to_status()),
        },
        () = expired => {
            job.cancel.cancel();
            error_response(reply_to, RrqStatus::Timeout, JOB_TIMED_OUT.into(), Some(TIMEOUT))
        }
        () = job.kill.cancelled() => outcome_response(reply_to, ExecutionOutcome {
            outcome: Some(Outcome::Cancelled(Cancelled { reason: "Job cancelled".into(), hard_killed: true })),
            ..Default::default()
        }),
    }
}

/// The handler's outcome as RRQ's answer; empty ids are the request's, as RRQ's Python
/// runner fills them in.
fn outcome_response(reply_to: Response, outcome: ExecutionOutcome) -> Response {
    let mut response = rrq_response(outcome);
    if response.job_id.as_deref().is_none_or(str::is_empty) {
        response.job_id = reply_to.job_id;
    }
    if response.request_id.as_deref().is_none_or(str::is_empty) {
        response.request_id = reply_to.request_id;
    }
    response
}

fn error_response(
    reply_to: Response,
    status: RrqStatus,
    message: String,
    r#type: Option<&str>,
) -> Response {
    Response {
        status,
        error: Some(OutcomeError {
            message,
            r#type: r#type.map(str::to_owned),
            code: None,
            details: None,
        }),
        ..reply_to
    }
}

/// A failed call as RRQ's answer: a deadline is `timeout`, a cancellation `cancelled`, a
/// status asking for a retry after a delay `retry`, and anything else an `error` whose
/// code is the status code's name.
///
/// A deadline gets RRQ's own words for a job whose time ran out, whichever noticed it
/// first: the runner's timer, or a handler whose own call hit the same deadline (a bridge
/// forwarding the job, under loss, can see its call's deadline pass just before the
/// runner's timer fires).
fn status_response(reply_to: Response, status: &Status) -> Response {
    match status.code() {
        StatusCode::DeadlineExceeded => error_response(
            reply_to,
            RrqStatus::Timeout,
            JOB_TIMED_OUT.into(),
            Some(TIMEOUT),
        ),
        StatusCode::Cancelled => error_response(
            reply_to,
            RrqStatus::Error,
            status.message().to_owned(),
            Some(CANCELLED),
        ),
        _ if status.retry_after().is_some() => Response {
            retry_after_seconds: status.retry_after().map(|d| d.as_secs_f64()),
            ..error_response(
                reply_to,
                RrqStatus::Retry,
                status.message().to_owned(),
                None,
            )
        },
        code => Response {
            error: Some(OutcomeError {
                message: status.message().to_owned(),
                r#type: None,
                code: Some(code.as_str_name().to_owned()),
                details: status.details().cloned().map(mapping::from_struct),
            }),
            ..reply_to
        },
    }
}
