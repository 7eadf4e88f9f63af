//! Redis and RRQ 0.11.1 as the tests run them: a Redis server, RRQ's Rust orchestrator
//! (`rrq worker run` in external runner mode), RRQ's Python runner with the job functions
//! of `python/rrq_app/runner.py`, and a [`Driver`] that enqueues jobs and reads their
//! final state through RRQ's own Python client.
//!
//! [`jobs_router`] serves the same job functions from Rust, for a taskwire runner in the
//! orchestrator's place of RRQ's Python runner.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value as Json, json};
use taskwire_proto::runner::v1::execution_outcome::{
    Cancelled, Failure, Outcome, RetryAfter, Success,
};
use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
use taskwire_proto::wkt::{Struct, Value, value::Kind};
use taskwire_rpc::Router;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::process::Service;
use crate::{Missing, free_port, install_dir, on_path, wait_for_listener, workspace_root};

/// RRQ's installed programs.
#[derive(Clone, Debug)]
pub struct Install {
    /// The virtualenv's Python, with RRQ's client and redis-py.
    pub python: PathBuf,
    /// RRQ's command (`rrq worker run`).
    pub rrq: PathBuf,
    /// RRQ's Python runner.
    pub rrq_runner: PathBuf,
    /// Redis.
    pub redis_server: PathBuf,
}

impl Install {
    /// Finds what `cargo xtask seed-systems` installed.
    pub fn find() -> Result<Install, Missing> {
        let venv = install_dir().join("rrq/venv/bin");
        let install = Install {
            python: venv.join("python"),
            rrq: venv.join("rrq"),
            rrq_runner: venv.join("rrq-runner"),
            redis_server: on_path("redis-server")
                .ok_or_else(|| Missing("redis-server is not on the PATH".into()))?,
        };
        for program in [&install.python, &install.rrq, &install.rrq_runner] {
            if !program.is_file() {
                return Err(Missing(format!(
                    "RRQ 0.11.1 is not installed ({} is missing)",
                    program.display()
                )));
            }
        }
        Ok(install)
    }
}

/// The folder of the Python helpers (`rrq_app`, `rrq_driver.py`).
pub fn python_dir() -> PathBuf {
    workspace_root().join("seed-systems/python")
}

/// A Redis server on a loopback port, without persistence.
#[derive(Debug)]
pub struct Redis {
    /// Its port.
    pub port: u16,
    service: Service,
}

impl Redis {
    /// Starts one, logging into `dir`.
    pub fn start(install: &Install, dir: &Path) -> Result<Redis, String> {
        let port = free_port();
        let mut command = Command::new(&install.redis_server);
        command.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let service = Service::spawn(
            "redis-server",
            command,
            &dir.join(format!("redis-{port}.log")),
        )?;
        wait_for_listener(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        )?;
        Ok(Redis { port, service })
    }

    /// Its URL, database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The process, to stop it.
    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }
}

/// What an `rrq.toml` for a test says. The defaults shorten RRQ's timers so that retries,
/// shutdowns and recoveries take a fraction of a second.
#[derive(Clone, Debug)]
pub struct Config {
    /// Redis's port.
    pub redis_port: u16,
    /// The runner's port on 127.0.0.1.
    pub runner_port: u16,
    /// `default_max_retries`: attempts in all (RRQ counts executions). Default 2.
    pub max_retries: u32,
    /// `default_job_timeout_seconds`. Default 4.
    pub job_timeout_seconds: u32,
    /// `max_in_flight` of the runner. Default 64, RRQ's most.
    pub max_in_flight: u32,
    /// `base_retry_delay_seconds`. Default 0.2.
    pub base_retry_delay_seconds: f64,
    /// `worker_shutdown_grace_period_seconds`. Default 0.5.
    pub shutdown_grace_seconds: f64,
}

impl Config {
    /// A config for Redis on `redis_port` and a runner on `runner_port`.
    pub fn new(redis_port: u16, runner_port: u16) -> Config {
        Config {
            redis_port,
            runner_port,
            max_retries: 2,
            job_timeout_seconds: 4,
            max_in_flight: 64,
            base_retry_delay_seconds: 0.2,
            shutdown_grace_seconds: 0.5,
        }
    }

    /// Writes it as `dir/rrq.toml`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, String> {
        let path = dir.join("rrq.toml");
        let text = format!(
            r#"[rrq]
redis_dsn = "redis://127.0.0.1:{redis}/0"
default_runner_name = "python"
runner_management_mode = "external"
default_max_retries = {retries}
default_job_timeout_seconds = {timeout}
default_poll_delay_seconds = 0.01
base_retry_delay_seconds = {base_delay}
runner_enable_inflight_cancel_hints = true
worker_shutdown_grace_period_seconds = {grace}
default_lock_timeout_extension_seconds = 1
worker_health_check_interval_seconds = 1
worker_health_check_ttl_buffer_seconds = 1

[rrq.runners.python]
type = "socket"
tcp_port = {runner}
max_in_flight = {in_flight}
"#,
            redis = self.redis_port,
            retries = self.max_retries,
            timeout = self.job_timeout_seconds,
            base_delay = self.base_retry_delay_seconds,
            grace = self.shutdown_grace_seconds,
            runner = self.runner_port,
            in_flight = self.max_in_flight,
        );
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// RRQ's orchestrator (`rrq worker run --runner-mode external`).
pub fn start_orchestrator(install: &Install, config: &Path, log: &Path) -> Result<Service, String> {
    let mut command = Command::new(&install.rrq);
    command
        .args(["worker", "run", "--runner-mode", "external", "--config"])
        .arg(config)
        .env("RUST_LOG", "info");
    Service::spawn("rrq worker", command, log)
}

/// RRQ's Python runner with the test job functions, on `port`; it counts executions in
/// the Redis at `redis_url`.
pub fn start_python_runner(
    install: &Install,
    port: u16,
    redis_url: &str,
    log: &Path,
) -> Result<Service, String> {
    let mut command = Command::new(&install.rrq_runner);
    command
        .args([
            "--settings",
            "rrq_app.runner.settings",
            "--tcp-socket",
            &format!("127.0.0.1:{port}"),
        ])
        .env("PYTHONPATH", python_dir())
        .env("TASKWIRE_RRQ_COUNTS_REDIS", redis_url);
    let service = Service::spawn("rrq-runner", command, log)?;
    wait_for_listener(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    )
    .map_err(|e| format!("{e}; rrq-runner's log:\n{}", service.log_tail(20)))?;
    Ok(service)
}

/// A job's final state as RRQ's client and its Redis hash tell it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct JobState {
    /// The job.
    pub job_id: String,
    /// `COMPLETED` or `FAILED`; `None` if the job did not end in time.
    pub status: Option<String>,
    /// The stored result.
    pub result: Json,
    /// The last error message RRQ stored.
    pub last_error: Option<String>,
    /// Failed attempts RRQ counted.
    pub current_retries: u32,
    /// When the orchestrator handed the job's last attempt to its runner (RFC 3339).
    pub start_time: Option<String>,
    /// When the job ended (RFC 3339), if it did.
    pub completion_time: Option<String>,
    /// Whether the job is in the dead-letter queue.
    pub in_dlq: bool,
}

/// How often jobs really ran and were cancelled, by job id, as the Python runner's
/// handlers counted them in Redis.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Counts {
    /// Executions started.
    pub executions: HashMap<String, u32>,
    /// Cancellations a handler saw.
    pub cancelled: HashMap<String, u32>,
}

/// Enqueues jobs and reads their outcome through RRQ's Python client
/// (`python/rrq_driver.py`).
#[derive(Debug)]
pub struct Driver {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    /// Starts the driver for the deployment `config` describes.
    pub async fn start(
        install: &Install,
        config: &Path,
        redis_url: &str,
    ) -> Result<Driver, String> {
        let mut child = tokio::process::Command::new(&install.python)
            .arg(python_dir().join("rrq_driver.py"))
            .arg(config)
            .arg(redis_url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting rrq_driver.py: {e}"))?;
        let stdin = child.stdin.take().ok_or("the driver has no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("the driver has no stdout")?);
        Ok(Driver {
            _child: child,
            stdin,
            stdout,
        })
    }

    async fn ask(&mut self, command: Json) -> Result<Json, String> {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("writing to the driver: {e}"))?;
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .await
            .map_err(|e| format!("reading the driver: {e}"))?;
        if answer.is_empty() {
            return Err("the driver exited".into());
        }
        let answer: Json = serde_json::from_str(&answer)
            .map_err(|e| format!("the driver said {answer:?}: {e}"))?;
        match answer.get("error") {
            Some(error) => Err(format!("the driver failed: {error}")),
            None => Ok(answer),
        }
    }

    /// Enqueues `function` with `params` and RRQ enqueue `options` (`job_id`,
    /// `max_retries`, `job_timeout_seconds`, ...); returns the job id.
    pub async fn enqueue(
        &mut self,
        function: &str,
        params: Json,
        options: Json,
    ) -> Result<String, String> {
        let answer = self
            .ask(json!({"op": "enqueue", "function": function, "params": params, "options": options}))
            .await?;
        answer["job_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no job id in {answer}"))
    }

    /// Waits up to `timeout` for every job to end, and reads their states.
    pub async fn wait(
        &mut self,
        job_ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<JobState>, String> {
        let answer = self
            .ask(json!({"op": "wait", "job_ids": job_ids, "timeout": timeout.as_secs_f64()}))
            .await?;
        serde_json::from_value(answer["jobs"].clone())
            .map_err(|e| format!("the driver's states: {e}"))
    }

    /// Waits for one job.
    pub async fn wait_one(&mut self, job_id: &str, timeout: Duration) -> Result<JobState, String> {
        let mut states = self.wait(&[job_id.to_owned()], timeout).await?;
        states.pop().ok_or_else(|| "no state".into())
    }

    /// The Python runner's execution and cancellation counts of `job_ids`.
    pub async fn counts(&mut self, job_ids: &[String]) -> Result<Counts, String> {
        let answer = self
            .ask(json!({"op": "counts", "job_ids": job_ids}))
            .await?;
        serde_json::from_value(answer).map_err(|e| format!("the driver's counts: {e}"))
    }
}

/// What the Rust job functions saw, by job id.
#[derive(Debug, Default)]
pub struct JobLog {
    executions: Mutex<BTreeMap<String, u32>>,
    cancelled: Mutex<BTreeMap<String, u32>>,
}

impl JobLog {
    /// How many times a job's handler started.
    pub fn executions(&self, job_id: &str) -> u32 {
        self.executions
            .lock()
            .expect("log lock")
            .get(job_id)
            .copied()
            .unwrap_or(0)
    }

    /// How many times a job's handler saw a cancellation.
    pub fn cancelled(&self, job_id: &str) -> u32 {
        self.cancelled
            .lock()
            .expect("log lock")
            .get(job_id)
            .copied()
            .unwrap_or(0)
    }

    fn count(map: &Mutex<BTreeMap<String, u32>>, job_id: &str) {
        *map.lock()
            .expect("log lock")
            .entry(job_id.to_owned())
            .or_default() += 1;
    }
}

/// Counts a cancellation when a `slow` job ends without finishing its sleep.
struct Stopped {
    log: Arc<JobLog>,
    job_id: String,
    finished: bool,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.finished {
            JobLog::count(&self.log.cancelled, &self.job_id);
        }
    }
}

fn number(params: &Struct, name: &str) -> Option<f64> {
    match params.fields.get(name)?.kind {
        Some(Kind::NumberValue(n)) => Some(n),
        _ => None,
    }
}

fn json_value(value: Json) -> Value {
    serde_json::from_value(value).expect("JSON is a google.protobuf.Value")
}

/// The job functions of `python/rrq_app/runner.py` as a taskwire runner's router: `echo`,
/// `noop`, `flaky` (a retry, then success), `boom` (fails), `slow` (sleeps `seconds`,
/// ending `cancelled` if its call is cancelled first). Any other name is
/// `handler_not_found`.
pub fn jobs_router() -> (Router, Arc<JobLog>) {
    let log = Arc::new(JobLog::default());
    let mut router = Router::new();
    let seen = Arc::clone(&log);
    router.unary(move |ctx, request: ExecutionRequest| {
        let log = Arc::clone(&seen);
        async move {
            let attempt = request.context.as_ref().map_or(0, |c| c.attempt);
            let params = request.params.clone().unwrap_or_default();
            // `noop`, the benchmark's job, does nothing, not even count.
            let known = ["echo", "flaky", "boom", "slow"].contains(&request.function_name.as_str());
            if known {
                JobLog::count(&log.executions, &request.job_id);
            }
            let success = |result: Json| {
                Outcome::Success(Success { result: (!result.is_null()).then(|| json_value(result)) })
            };
            let outcome = match request.function_name.as_str() {
                "echo" => success(json!({"echo": params, "attempt": attempt})),
                "noop" => success(Json::Null),
                "flaky" if attempt < 2 => Outcome::RetryAfter(RetryAfter {
                    message: "not yet".into(),
                    delay: Some(Duration::from_secs_f64(number(&params, "retry_after").unwrap_or(0.2)).into()),
                }),
                "flaky" => success(json!({"ok": true, "attempt": attempt})),
                "boom" => Outcome::Failure(Failure {
                    message: match params.fields.get("message").and_then(|v| v.kind.clone()) {
                        Some(Kind::StringValue(message)) => message,
                        _ => "kaboom".into(),
                    },
                    ..Default::default()
                }),
                "slow" => {
                    let seconds = number(&params, "seconds").unwrap_or(1.0);
                    // Counts a stop however it comes: the call's cancellation, or the
                    // runner dropping the handler (a deadline, a hard cancel, a lost
                    // connection).
                    let mut stopped = Stopped { log: Arc::clone(&log), job_id: request.job_id.clone(), finished: false };
                    let outcome = tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {
                            success(json!({"slept": seconds, "attempt": attempt}))
                        }
                        () = ctx.cancel.cancelled() => {
                            Outcome::Cancelled(Cancelled { reason: "Job cancelled".into(), hard_killed: false })
                        }
                    };
                    stopped.finished = matches!(outcome, Outcome::Success(_));
                    outcome
                }
                other => Outcome::HandlerNotFound(taskwire_proto::runner::v1::execution_outcome::HandlerNotFound {
                    function_name: other.to_owned(),
                }),
            };
            Ok(ExecutionOutcome {
                job_id: request.job_id,
                request_id: request.request_id,
                outcome: Some(outcome),
            })
        }
    });
    (router, log)
}

/// A CA, a server certificate for the remote bridge and a client certificate for the
/// local one: mutual TLS, as a deployment runs it.
fn bridge_tls() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    use taskwire_tls::{
        CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
        ServerCertParams, ServerConfigBuilder,
    };
    let ca = CertificateAuthority::generate(&CaParams::new("rrq bridge test CA")).expect("a CA");
    let server = ca
        .issue_server(
            &ServerCertParams::new(["localhost"])
                .ip_addresses(["127.0.0.1".parse().expect("an address")]),
        )
        .expect("a server certificate");
    let client = ca
        .issue_client(&ClientCertParams::new("jobs", "rrq-bridge"))
        .expect("a client certificate");
    let server = ServerConfigBuilder::new(server.credentials().expect("credentials"))
        .client_auth(ClientAuth::Required(ca.ca_bundle().expect("a bundle")))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .expect("server TLS");
    let client = ClientConfigBuilder::new(ca.ca_bundle().expect("a bundle"))
        .client_credentials(client.credentials().expect("credentials"))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .expect("client TLS");
    (Arc::new(server), Arc::new(client))
}

/// The two bridges of `taskwire bridge rrq`, in process: RRQ's orchestrator → `local` (an
/// RRQ runner on loopback) → QUIC with mutual TLS (through a seeded relay dropping `loss`
/// of the datagrams, when `loss` is above 0) → `remote` (a taskwire runner endpoint) →
/// the RRQ runner on `runner_port`.
#[derive(Debug)]
pub struct BridgePair {
    /// The orchestrator's side, where `rrq.toml` points.
    pub local: taskwire_rrq::RunnerHandle,
    /// The runners' side.
    pub remote: taskwire_quic::ServerHandle,
    /// The lossy relay between them, if any.
    pub relay: Option<taskwire_quic::relay::Relay>,
    /// The local bridge's QUIC client, to break its connection.
    pub client: Arc<taskwire_quic::QuicClient>,
}

impl BridgePair {
    /// Starts both bridges and connects them, as `taskwire bridge rrq` connects at start:
    /// a handshake whose first datagrams are dropped takes a second or more, longer than
    /// a short job's whole timeout.
    pub async fn start(runner_port: u16, loss: f64) -> Result<BridgePair, String> {
        use taskwire_quic::relay::{Relay, RelayConfig};
        use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
        use taskwire_rpc::runner::relay_router;
        use taskwire_rrq::{ClientConfig as RrqClientConfig, RrqClient, RrqRunner, RunnerConfig};

        let (server_tls, client_tls) = bridge_tls();
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let to_runner = RrqClient::new(RrqClientConfig::new(loopback(runner_port)));
        let remote = QuicServer::new(ServerConfig::new(loopback(0), server_tls))
            .map_err(|e| format!("the remote bridge: {e}"))?
            .serve(relay_router(Arc::new(to_runner)));
        let relay = if loss > 0.0 {
            let config = RelayConfig {
                seed: 7,
                loss,
                ..RelayConfig::default()
            };
            Some(
                Relay::start(remote.local_addr(), config)
                    .await
                    .map_err(|e| format!("the relay: {e}"))?,
            )
        } else {
            None
        };
        let via = relay
            .as_ref()
            .map_or(remote.local_addr(), Relay::local_addr);
        let to_remote = QuicClient::new(ClientConfig::new(via, "localhost", client_tls))
            .map_err(|e| format!("the local bridge's client: {e}"))?;
        to_remote
            .connection()
            .await
            .map_err(|e| format!("connecting the bridges: {e}"))?;
        let client = Arc::new(to_remote);
        let local = RrqRunner::bind(RunnerConfig::new(loopback(0)))
            .await
            .map_err(|e| format!("the local bridge: {e}"))?
            .serve(relay_router(Arc::clone(&client)));
        Ok(BridgePair {
            local,
            remote,
            relay,
            client,
        })
    }

    /// Stops both, after the jobs in flight.
    pub async fn shutdown(self) {
        self.local.shutdown().await;
        self.remote.shutdown().await;
    }
}
