//! Dispatching jobs to runners that speak RRQ's protocol, such as RRQ's own `rrq-runner`:
//! an [`RrqClient`] is a [`RunnerChannel`], so taskwire's
//! [`Orchestrator`](taskwire_rpc::runner::Orchestrator) drives it exactly as it drives a
//! taskwire runner.
//!
//! It behaves as RRQ's orchestrator does on the wire:
//!
//! * requests share a connection (up to [`ClientConfig::max_in_flight_per_connection`],
//!   then another connection opens), and answers are matched by `request_id` in any order;
//! * a runner that does not accept is dialled again after 100, 200, 400, 800 and 1,600 ms,
//!   then every 2 s, until [`ClientConfig::connect_timeout`] (or the job's deadline)
//!   passes, so a runner restarting between attempts costs no attempt;
//! * when a job's deadline passes without an answer, or the caller drops the call, the
//!   runner gets a cancel on a connection of its own that closes once the frame is
//!   written, and later jobs go on a new connection: the runner may still count the
//!   abandoned job against the old one. The old connection closes once its other jobs
//!   are answered;
//! * an answer for a request no longer waited for is dropped; an answer without a
//!   `request_id`, or one naming another job, breaks the connection, and every job on it
//!   fails [`CallError::Unavailable`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt as _;
use taskwire_codec::Builder;
use taskwire_codec::tokio_util::codec::{Encoder as _, FramedRead};
use taskwire_proto::runner::v1::cancel_response::CancelState;
use taskwire_proto::runner::v1::{
    CancelRequest, CancelResponse, ExecutionOutcome, ExecutionRequest,
};
use taskwire_rpc::CallError;
use taskwire_rpc::runner::RunnerChannel;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

use crate::codec::RrqCodec;
use crate::mapping::{execution_outcome, rrq_cancel, rrq_request};
use crate::message::{Cancel, Message, PROTOCOL_VERSION, Response};
use crate::runner::DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION;

/// How long connecting to a runner may take, dials again included: 15 s, as RRQ's
/// `runner_connect_timeout_ms`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The pauses between dials of a runner that does not accept, as RRQ's orchestrator
/// makes them; the last repeats.
const REDIAL_DELAYS_MS: [u64; 6] = [100, 200, 400, 800, 1600, 2000];

/// Where an [`RrqClient`] finds its runner, and its limits.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The runner's address.
    pub runner_addr: SocketAddr,
    /// Frame limits. Default [`Builder::new`] (16 MiB frames).
    pub codec: Builder,
    /// Jobs in flight on one connection before another opens. Default
    /// [`DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION`] (64, what RRQ's runners accept).
    pub max_in_flight_per_connection: usize,
    /// How long connecting may take, dials again included. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`] (15 s).
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// A client of the runner at `runner_addr`, with the defaults.
    pub fn new(runner_addr: SocketAddr) -> ClientConfig {
        ClientConfig {
            runner_addr,
            codec: Builder::new(),
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// A job waiting for its answer.
struct Waiting {
    job_id: String,
    answer: oneshot::Sender<Result<Response, CallError>>,
}

/// One connection to the runner.
struct Link {
    writer: tokio::sync::Mutex<(OwnedWriteHalf, BytesMut, RrqCodec)>,
    waiting: Mutex<HashMap<String, Waiting>>,
    in_flight: AtomicUsize,
    broken: AtomicBool,
    /// Takes no new jobs: one of its jobs was abandoned (see the module docs).
    retired: AtomicBool,
}

impl Link {
    fn waiting_len(&self) -> usize {
        self.waiting.lock().expect("waiting lock").len()
    }

    fn fail_all(&self, why: &str) {
        self.broken.store(true, Ordering::Release);
        let waiting: Vec<Waiting> = self
            .waiting
            .lock()
            .expect("waiting lock")
            .drain()
            .map(|(_, w)| w)
            .collect();
        for waiting in waiting {
            let _ = waiting
                .answer
                .send(Err(CallError::Unavailable(why.to_owned())));
        }
    }

    /// Hands one answer to its waiter.
    fn deliver(&self, response: Response) -> Result<(), String> {
        let Some(request_id) = response.request_id.clone() else {
            return Err("the runner sent an answer without a request_id".into());
        };
        let waiting = self
            .waiting
            .lock()
            .expect("waiting lock")
            .remove(&request_id);
        let Some(waiting) = waiting else {
            tracing::debug!(%request_id, "dropping an answer nobody waits for");
            return Ok(());
        };
        if response.job_id.as_deref() != Some(waiting.job_id.as_str()) {
            let why = format!(
                "the runner answered request {request_id:?} for job {:?}, not {:?}",
                response.job_id, waiting.job_id
            );
            let _ = waiting.answer.send(Err(CallError::Protocol(why.clone())));
            return Err(why);
        }
        let _ = waiting.answer.send(Ok(response));
        Ok(())
    }
}

/// A client of one RRQ runner.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use taskwire_proto::runner::v1::ExecutionRequest;
/// use taskwire_rpc::runner::Orchestrator;
/// use taskwire_rrq::{ClientConfig, RrqClient};
///
/// // `rrq-runner --settings app.settings --tcp-socket 127.0.0.1:9000` is listening.
/// let orchestrator = Orchestrator::new(RrqClient::new(ClientConfig::new("127.0.0.1:9000".parse()?)));
/// let job = ExecutionRequest { request_id: "r1".into(), job_id: "j1".into(), function_name: "echo".into(), ..Default::default() };
/// let outcome = orchestrator.execute(job, Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RrqClient {
    config: Arc<ClientConfig>,
    links: Arc<tokio::sync::Mutex<Vec<Arc<Link>>>>,
}

impl std::fmt::Debug for RrqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RrqClient")
            .field("runner_addr", &self.config.runner_addr)
            .finish_non_exhaustive()
    }
}

impl RrqClient {
    /// A client of the runner `config` names. Nothing connects until the first job.
    pub fn new(config: ClientConfig) -> RrqClient {
        RrqClient {
            config: Arc::new(config),
            links: Arc::new(tokio::sync::Mutex::new(Vec::new())),
        }
    }

    /// Connects to the runner, dialling again as RRQ does until the connect timeout.
    async fn dial(&self) -> Result<TcpStream, CallError> {
        let addr = self.config.runner_addr;
        let give_up = tokio::time::Instant::now() + self.config.connect_timeout;
        let mut attempts = 0_usize;
        loop {
            let error = match tokio::time::timeout_at(give_up, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            let pause = REDIAL_DELAYS_MS[attempts.min(REDIAL_DELAYS_MS.len() - 1)];
            attempts += 1;
            let pause = Duration::from_millis(pause);
            if tokio::time::Instant::now() + pause >= give_up {
                return Err(CallError::Unavailable(format!(
                    "the runner at {addr} did not accept in {attempts} attempts over {:?}: {error}",
                    self.config.connect_timeout
                )));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// A connection with room for one more job, opened if none has.
    async fn link(&self) -> Result<Arc<Link>, CallError> {
        let mut links = self.links.lock().await;
        links.retain(|link| {
            !link.broken.load(Ordering::Acquire) && !link.retired.load(Ordering::Acquire)
        });
        let limit = self.config.max_in_flight_per_connection.max(1);
        if let Some(link) = links
            .iter()
            .find(|link| link.in_flight.load(Ordering::Acquire) < limit)
        {
            link.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(Arc::clone(link));
        }
        let (read, write) = self.dial().await?.into_split();
        let codec = RrqCodec::from_builder(&self.config.codec);
        let link = Arc::new(Link {
            writer: tokio::sync::Mutex::new((write, BytesMut::new(), codec.clone())),
            waiting: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(1),
            broken: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        });
        let reader = Arc::clone(&link);
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, codec);
            let why = loop {
                match frames.next().await {
                    None => break "the runner closed the connection".to_owned(),
                    Some(Ok(Message::Response(response))) => {
                        if let Err(why) = reader.deliver(response) {
                            break why;
                        }
                    }
                    Some(Ok(other)) => {
                        break format!("the runner sent a {} frame", other.type_name());
                    }
                    Some(Err(error)) => break format!("reading from the runner: {error}"),
                }
            };
            tracing::debug!(%why, "an RRQ runner connection ended");
            reader.fail_all(&why);
        });
        links.push(Arc::clone(&link));
        Ok(link)
    }

    /// Sends a cancel on a connection of its own, as RRQ does, and closes it.
    async fn send_cancel(&self, cancel: Cancel) -> Result<(), CallError> {
        let mut stream = self.dial().await?;
        let mut buffer = BytesMut::new();
        RrqCodec::from_builder(&self.config.codec).encode(&Message::Cancel(cancel), &mut buffer)?;
        stream
            .write_all(&buffer)
            .await
            .map_err(|e| CallError::Unavailable(format!("sending a cancel: {e}")))?;
        let _ = stream.shutdown().await;
        Ok(())
    }

    /// Whether a job of `job_id` (and `request_id`, if not empty) is waiting for its
    /// answer on any connection.
    async fn in_flight(&self, job_id: &str, request_id: &str) -> bool {
        self.links.lock().await.iter().any(|link| {
            link.waiting
                .lock()
                .expect("waiting lock")
                .iter()
                .any(|(id, w)| w.job_id == job_id && (request_id.is_empty() || id == request_id))
        })
    }
}

/// Frees a job's place on its connection, and cancels it at the runner if its answer
/// never came (the deadline passed, or the caller gave up).
struct InFlight {
    client: RrqClient,
    link: Arc<Link>,
    job_id: String,
    request_id: String,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.link.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.answered {
            return;
        }
        self.link
            .waiting
            .lock()
            .expect("waiting lock")
            .remove(&self.request_id);
        if self.link.broken.load(Ordering::Acquire) {
            // The connection's end already stopped the job at the runner.
            return;
        }
        self.link.retired.store(true, Ordering::Release);
        let cancel = Cancel {
            protocol_version: PROTOCOL_VERSION.to_owned(),
            job_id: std::mem::take(&mut self.job_id),
            request_id: Some(std::mem::take(&mut self.request_id)),
            hard_kill: false,
        };
        let client = self.client.clone();
        let link = Arc::clone(&self.link);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = client.send_cancel(cancel).await {
                    tracing::debug!(%error, "an abandoned job's cancel could not be sent");
                }
                // Close the retired connection once its other jobs are answered (or
                // after the connect timeout, whichever is first).
                let drained = async {
                    while link.waiting_len() > 0 && !link.broken.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                let _ = tokio::time::timeout(client.config.connect_timeout, drained).await;
                let _ = link.writer.lock().await.0.shutdown().await;
            });
        }
    }
}

impl RunnerChannel for RrqClient {
    async fn execute(
        &self,
        request: ExecutionRequest,
        timeout: Duration,
    ) -> Result<ExecutionOutcome, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let request = rrq_request(request);
        let link = tokio::time::timeout_at(deadline, self.link())
            .await
            .map_err(|_| CallError::DeadlineExceeded(timeout))??;
        let (answer, answered) = oneshot::channel();
        let mut guard = InFlight {
            client: self.clone(),
            link: Arc::clone(&link),
            job_id: request.job_id.clone(),
            request_id: request.request_id.clone(),
            answered: false,
        };
        {
            let mut waiting = link.waiting.lock().expect("waiting lock");
            if waiting.contains_key(&request.request_id) {
                guard.answered = true;
                return Err(CallError::Protocol(format!(
                    "request {:?} is already in flight on this connection",
                    request.request_id
                )));
            }
            waiting.insert(
                request.request_id.clone(),
                Waiting {
                    job_id: request.job_id.clone(),
                    answer,
                },
            );
        }
        let sent = async {
            let mut writer = link.writer.lock().await;
            let (stream, buffer, codec) = &mut *writer;
            buffer.clear();
            codec.encode(&Message::Request(request), buffer)?;
            stream.write_all(buffer).await.map_err(|e| {
                link.fail_all("writing to the runner failed");
                CallError::Unavailable(format!("sending a job to the runner: {e}"))
            })
        };
        let answer = async {
            sent.await?;
            answered.await.map_err(|_| {
                CallError::Unavailable("the runner connection ended before the answer".into())
            })?
        };
        let response = tokio::time::timeout_at(deadline, answer)
            .await
            .map_err(|_| CallError::DeadlineExceeded(timeout))??;
        guard.answered = true;
        Ok(execution_outcome(response))
    }

    /// Sends RRQ's cancel. RRQ's runners answer nothing: `found` says whether this client
    /// is waiting for an answer of that job, and the state is `REQUESTED` (RRQ's Python
    /// runner treats every cancel alike).
    async fn cancel(&self, request: CancelRequest) -> Result<CancelResponse, CallError> {
        let found = self.in_flight(&request.job_id, &request.request_id).await;
        self.send_cancel(rrq_cancel(request)).await?;
        Ok(CancelResponse {
            found,
            state: if found {
                CancelState::Requested
            } else {
                CancelState::Unspecified
            } as i32,
        })
    }
}
