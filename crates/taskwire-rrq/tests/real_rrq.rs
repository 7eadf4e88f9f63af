//! The RRQ dialect against the real RRQ 0.11.1: its Rust orchestrator on a real Redis,
//! its Python runner, its client. Each job's final state is read from Redis through RRQ's
//! own client (`seed-systems/python/rrq_driver.py`).
//!
//! Three ways of putting taskwire in the path:
//! * RRQ's orchestrator drives a taskwire runner ([`RrqRunner`] serving a `Router`);
//! * taskwire's `Orchestrator` drives RRQ's `rrq-runner` ([`RrqClient`]);
//! * RRQ's orchestrator reaches RRQ's Python runner through both bridges, over QUIC with
//!   mutual TLS and a seeded relay that drops 5% of the datagrams.
//!
//! `cargo xtask seed-systems` installs what these need; without it they are skipped
//! loudly, and with `TASKWIRE_REQUIRE_SEED_SYSTEMS=1` (CI) a skip is a failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value as Json, json};
use taskwire_proto::runner::v1::execution_outcome::Outcome;
use taskwire_proto::runner::v1::execution_request::ExecutionContext;
use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
use taskwire_proto::wkt;
use taskwire_rpc::runner::Orchestrator;
use taskwire_rpc::{CallError, Router};
use taskwire_rrq::{ClientConfig, RrqClient, RrqRunner, RunnerConfig, RunnerHandle};
use taskwire_seed_systems::process::Service;
use taskwire_seed_systems::require;
use taskwire_seed_systems::rrq::{self, BridgePair, Config, Driver, Install, JobState, Redis};

/// One test at a time: each starts several processes, and two cores are shared.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

fn nested_params() -> Json {
    json!({"n": 7, "to": "user@example.com", "nested": {"list": [1, 2.5, null, true, {"k": "v"}], "unicode": "héllo ✓"}})
}

/// A directory for one test's logs, kept after the run.
fn run_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = taskwire_seed_systems::install_dir()
        .join("runs")
        .join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Redis, RRQ's orchestrator pointed at a runner port, and a driver.
struct Rig {
    install: Install,
    dir: PathBuf,
    redis: Redis,
    config: PathBuf,
    orchestrator: Service,
    driver: Driver,
    restarts: u32,
}

impl Rig {
    async fn start(install: &Install, dir: PathBuf, runner_port: u16) -> Rig {
        let redis = Redis::start(install, &dir).unwrap();
        let config = Config::new(redis.port, runner_port).write(&dir).unwrap();
        let orchestrator =
            rrq::start_orchestrator(install, &config, &dir.join("orchestrator-0.log")).unwrap();
        let driver = Driver::start(install, &config, &redis.url()).await.unwrap();
        Rig {
            install: install.clone(),
            dir,
            redis,
            config,
            orchestrator,
            driver,
            restarts: 0,
        }
    }

    /// Stops the orchestrator as a deployment's restart would (SIGTERM), and starts another.
    fn restart_orchestrator(&mut self) {
        self.orchestrator.terminate(Duration::from_secs(15));
        self.restarts += 1;
        let log = self.dir.join(format!("orchestrator-{}.log", self.restarts));
        self.orchestrator = rrq::start_orchestrator(&self.install, &self.config, &log).unwrap();
    }

    async fn enqueue(&mut self, function: &str, params: Json, options: Json) -> String {
        self.driver
            .enqueue(function, params, options)
            .await
            .unwrap()
    }

    async fn wait(&mut self, ids: &[String]) -> HashMap<String, JobState> {
        let states = self.driver.wait(ids, WAIT).await.unwrap();
        states.into_iter().map(|s| (s.job_id.clone(), s)).collect()
    }

    fn why(&self) -> String {
        format!("orchestrator log:\n{}", self.orchestrator.log_tail(30))
    }

    /// How often `id` ran, by the runner's own count.
    async fn executions(&mut self, counter: &Counter, id: &str) -> u32 {
        match counter {
            Counter::Rust(log) => log.executions(id),
            Counter::Python => {
                self.driver
                    .counts(&[id.to_owned()])
                    .await
                    .unwrap()
                    .executions[id]
            }
        }
    }

    /// How often a handler of `id` was stopped before it finished.
    async fn cancelled(&mut self, counter: &Counter, id: &str) -> u32 {
        match counter {
            Counter::Rust(log) => log.cancelled(id),
            Counter::Python => {
                self.driver
                    .counts(&[id.to_owned()])
                    .await
                    .unwrap()
                    .cancelled[id]
            }
        }
    }

    /// Enqueues a `slow` job and returns once its handler runs.
    async fn running_job(&mut self, counter: &Counter, seconds: f64) -> String {
        let id = self
            .enqueue(
                "slow",
                json!({"seconds": seconds}),
                json!({"job_timeout_seconds": 10}),
            )
            .await;
        let started = Instant::now();
        while self.executions(counter, &id).await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the job never started\n{}",
                self.why()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        id
    }
}

/// Where a runner counts its executions and cancellations.
enum Counter {
    /// The Rust job functions' log ([`rrq::jobs_router`]).
    Rust(Arc<rrq::JobLog>),
    /// The Python job functions' counts in Redis.
    Python,
}

/// The ordinary jobs, enqueued together.
struct Batch {
    echo: String,
    flaky: String,
    boom: String,
    missing: String,
    timeout: String,
}

impl Batch {
    async fn enqueue(rig: &mut Rig) -> Batch {
        Batch {
            echo: rig.enqueue("echo", nested_params(), json!({})).await,
            flaky: rig
                .enqueue("flaky", json!({"retry_after": 0.2}), json!({}))
                .await,
            boom: rig.enqueue("boom", json!({}), json!({})).await,
            missing: rig.enqueue("no_such_handler", json!({}), json!({})).await,
            timeout: rig
                .enqueue(
                    "slow",
                    json!({"seconds": 30}),
                    json!({"job_timeout_seconds": 1}),
                )
                .await,
        }
    }

    fn ids(&self) -> Vec<String> {
        vec![
            self.echo.clone(),
            self.flaky.clone(),
            self.boom.clone(),
            self.missing.clone(),
            self.timeout.clone(),
        ]
    }

    /// The final states RRQ gives these jobs with its own Python runner.
    fn check(&self, states: &HashMap<String, JobState>, why: &str) {
        let echo = &states[&self.echo];
        assert_eq!(
            echo.status.as_deref(),
            Some("COMPLETED"),
            "echo: {echo:?}\n{why}"
        );
        assert_eq!(
            echo.result,
            json!({"echo": nested_params(), "attempt": 1}),
            "nested params came back changed"
        );
        assert_eq!(echo.current_retries, 0);

        let flaky = &states[&self.flaky];
        assert_eq!(
            flaky.status.as_deref(),
            Some("COMPLETED"),
            "flaky: {flaky:?}\n{why}"
        );
        assert_eq!(flaky.result, json!({"ok": true, "attempt": 2}));
        assert_eq!(
            (flaky.current_retries, flaky.last_error.as_deref()),
            (1, Some("not yet"))
        );

        let boom = &states[&self.boom];
        assert_eq!(
            boom.status.as_deref(),
            Some("FAILED"),
            "boom: {boom:?}\n{why}"
        );
        assert_eq!(
            (boom.current_retries, boom.last_error.as_deref()),
            (2, Some("kaboom")),
            "an error is retried up to max_retries"
        );
        assert!(boom.in_dlq);

        let missing = &states[&self.missing];
        assert_eq!(
            missing.status.as_deref(),
            Some("FAILED"),
            "missing: {missing:?}\n{why}"
        );
        assert_eq!(
            missing.last_error.as_deref(),
            Some("No handler registered for function 'no_such_handler'")
        );
        assert_eq!(
            missing.current_retries, 1,
            "handler_not_found is not retried"
        );
        assert!(missing.in_dlq);

        let timeout = &states[&self.timeout];
        assert_eq!(
            timeout.status.as_deref(),
            Some("FAILED"),
            "timeout: {timeout:?}\n{why}"
        );
        let message = timeout.last_error.as_deref().unwrap_or_default();
        assert!(
            message == "Job execution timed out." || message.starts_with("Job timed out after"),
            "a timeout, from the runner or the orchestrator: {message:?}"
        );
        assert_eq!(timeout.current_retries, 1, "a timeout is not retried");
        assert!(timeout.in_dlq);
    }
}

/// 64 `slow` jobs at once, later ones shorter: they run together on one connection and
/// their answers come back out of order.
async fn sixty_four_at_once(rig: &mut Rig) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..64_u32 {
        let seconds = f64::from(64 - i) * 0.015;
        ids.push(
            rig.enqueue(
                "slow",
                json!({"seconds": seconds}),
                json!({"job_timeout_seconds": 10}),
            )
            .await,
        );
    }
    let started = Instant::now();
    let states = rig.wait(&ids).await;
    let why = rig.why();
    let mut order: Vec<(String, usize)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let state = &states[id];
        assert_eq!(
            state.status.as_deref(),
            Some("COMPLETED"),
            "job {i}: {state:?}\n{why}"
        );
        assert_eq!(state.current_retries, 0);
        order.push((state.completion_time.clone().unwrap_or_default(), i));
    }
    order.sort();
    assert!(
        order.first().unwrap().1 > order.last().unwrap().1,
        "the shortest, enqueued last, finished before the longest: {order:?}"
    );
    // Run one at a time they would take 31 s.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the 64 jobs ran concurrently"
    );
    ids
}

fn runner_config(port: u16) -> RunnerConfig {
    RunnerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn serve_on(port: u16, router: Router) -> RunnerHandle {
    // The port was just freed; binding it again may need a moment.
    for _ in 0..50 {
        if let Ok(runner) = RrqRunner::bind(runner_config(port)).await {
            return runner.serve(router);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not listen on 127.0.0.1:{port} again");
}

/// The scenarios every topology with RRQ's orchestrator runs: the ordinary jobs, 64 at
/// once, the runner killed mid-job, the orchestrator restarted mid-job.
/// `restart_runner` kills the runner at once, as a crash would, and starts it again.
async fn orchestrator_scenarios(
    rig: &mut Rig,
    counter: &Counter,
    mut restart_runner: impl AsyncFnMut(),
) {
    let batch = Batch::enqueue(rig).await;
    let states = rig.wait(&batch.ids()).await;
    batch.check(&states, &rig.why());
    assert_eq!(rig.executions(counter, &batch.flaky).await, 2);
    assert_eq!(rig.executions(counter, &batch.boom).await, 2);
    assert_eq!(
        rig.executions(counter, &batch.timeout).await,
        1,
        "the job that timed out ran"
    );
    assert_eq!(
        rig.cancelled(counter, &batch.timeout).await,
        1,
        "the handler of the job that timed out was stopped"
    );

    for id in sixty_four_at_once(rig).await {
        assert_eq!(rig.executions(counter, &id).await, 1, "job {id} ran once");
    }

    // The runner killed mid-job: RRQ records a transport error and retries the job.
    let job = rig.running_job(counter, 1.0).await;
    restart_runner().await;
    let state = rig.driver.wait_one(&job, WAIT).await.unwrap();
    assert_eq!(
        state.status.as_deref(),
        Some("COMPLETED"),
        "{state:?}\n{}",
        rig.why()
    );
    assert_eq!(
        (state.current_retries, state.result["attempt"].as_u64()),
        (1, Some(2))
    );
    assert_eq!(rig.executions(counter, &job).await, 2);

    // The orchestrator restarted mid-job: it cancels the running attempt and re-queues the
    // job without counting an attempt; the next orchestrator runs it again.
    let job = rig.running_job(counter, 3.0).await;
    rig.restart_orchestrator();
    let state = rig.driver.wait_one(&job, WAIT).await.unwrap();
    assert_eq!(
        state.status.as_deref(),
        Some("COMPLETED"),
        "{state:?}\n{}",
        rig.why()
    );
    assert_eq!(
        (state.current_retries, state.result["attempt"].as_u64()),
        (0, Some(1))
    );
    assert_eq!(rig.executions(counter, &job).await, 2);
    assert_eq!(
        rig.cancelled(counter, &job).await,
        1,
        "the running attempt was cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrqs_orchestrator_drives_a_taskwire_runner() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let (router, log) = rrq::jobs_router();
    let runner = RrqRunner::bind(runner_config(0)).await.unwrap();
    let port = runner.local_addr().port();
    let mut runner = Some(runner.serve(router.clone()));
    let mut rig = Rig::start(&install, run_dir("rrq-drives-taskwire"), port).await;

    orchestrator_scenarios(&mut rig, &Counter::Rust(log), async || {
        runner.take().unwrap().abort().await;
        runner = Some(serve_on(port, router.clone()).await);
    })
    .await;
    let runner = runner.unwrap();
    // With in-flight cancel hints on, RRQ sends its cancels on connections of their own.
    assert!(
        runner
            .stats()
            .cancels
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1,
        "RRQ's cancels reached the runner"
    );
    runner.shutdown().await;
}

fn job(id: &str, attempt: u32, function: &str, params: Json) -> ExecutionRequest {
    ExecutionRequest {
        request_id: format!("{id}-attempt-{attempt}"),
        job_id: id.to_owned(),
        function_name: function.to_owned(),
        params: Some(serde_json::from_value(params).unwrap()),
        context: Some(ExecutionContext {
            attempt,
            enqueue_time: Some(wkt::Timestamp::from(SystemTime::now())),
            queue_name: "rrq:queue:default".into(),
            ..Default::default()
        }),
    }
}

/// A success's result as RRQ's JSON (integral numbers as integers).
fn result_json(outcome: &ExecutionOutcome) -> Json {
    match &outcome.outcome {
        Some(Outcome::Success(success)) => success
            .result
            .clone()
            .map_or(Json::Null, taskwire_rrq::mapping::from_value),
        other => panic!("expected success, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskwires_orchestrator_drives_rrqs_python_runner() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let dir = run_dir("taskwire-drives-rrq-runner");
    // Redis only counts the Python handlers' executions here; no RRQ orchestrator runs.
    let redis = Redis::start(&install, &dir).unwrap();
    let port = taskwire_seed_systems::free_port();
    let mut python =
        rrq::start_python_runner(&install, port, &redis.url(), &dir.join("runner-0.log")).unwrap();
    let config = Config::new(redis.port, port).write(&dir).unwrap();
    let mut counts = Driver::start(&install, &config, &redis.url())
        .await
        .unwrap();
    let runner_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let orchestrator = Arc::new(Orchestrator::new(RrqClient::new(ClientConfig::new(
        runner_addr,
    ))));
    let deadline = Duration::from_secs(10);

    let echo = orchestrator
        .execute(job("echo", 1, "echo", nested_params()), deadline)
        .await
        .unwrap();
    assert_eq!(
        (echo.job_id.as_str(), echo.request_id.as_str()),
        ("echo", "echo-attempt-1")
    );
    assert_eq!(
        result_json(&echo),
        json!({"echo": nested_params(), "attempt": 1})
    );

    let retry = orchestrator
        .execute(
            job("flaky", 1, "flaky", json!({"retry_after": 0.25})),
            deadline,
        )
        .await
        .unwrap();
    match retry.outcome {
        Some(Outcome::RetryAfter(retry)) => {
            assert_eq!(retry.message, "not yet");
            assert_eq!(
                retry.delay,
                Some(wkt::Duration {
                    seconds: 0,
                    nanos: 250_000_000
                })
            );
        }
        other => panic!("flaky, attempt 1: {other:?}"),
    }
    let retried = orchestrator
        .execute(job("flaky", 2, "flaky", json!({})), deadline)
        .await
        .unwrap();
    assert_eq!(result_json(&retried), json!({"ok": true, "attempt": 2}));

    match orchestrator
        .execute(
            job("boom", 1, "boom", json!({"message": "kaboom"})),
            deadline,
        )
        .await
        .unwrap()
        .outcome
    {
        Some(Outcome::Failure(failure)) => assert_eq!(
            (failure.message.as_str(), failure.r#type.as_str()),
            ("kaboom", "")
        ),
        other => panic!("boom: {other:?}"),
    }
    match orchestrator
        .execute(job("missing", 1, "no_such_handler", json!({})), deadline)
        .await
        .unwrap()
        .outcome
    {
        Some(Outcome::HandlerNotFound(missing)) => {
            assert_eq!(missing.function_name, "no_such_handler");
        }
        other => panic!("missing: {other:?}"),
    }

    // A timeout: the runner stops the handler at the job's deadline, and taskwire's
    // orchestrator sends RRQ's cancel if its own deadline passes first.
    let timeout = orchestrator
        .execute(
            job("timeout", 1, "slow", json!({"seconds": 30})),
            Duration::from_millis(800),
        )
        .await
        .unwrap();
    assert!(
        matches!(timeout.outcome, Some(Outcome::Timeout(_))),
        "{timeout:?}"
    );

    // 64 at once on one connection, answered as they finish.
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..64_u32 {
        let orchestrator = Arc::clone(&orchestrator);
        let seconds = f64::from(64 - i) * 0.015;
        calls.push(tokio::spawn(async move {
            let outcome = orchestrator
                .execute(
                    job(&format!("many-{i}"), 1, "slow", json!({"seconds": seconds})),
                    deadline,
                )
                .await
                .unwrap();
            (Instant::now(), i, outcome)
        }));
    }
    let mut finished = Vec::new();
    for call in calls {
        let (at, i, outcome) = call.await.unwrap();
        assert!(
            matches!(outcome.outcome, Some(Outcome::Success(_))),
            "job {i}: {outcome:?}"
        );
        finished.push((at, i));
    }
    finished.sort();
    assert!(
        finished.first().unwrap().1 > finished.last().unwrap().1,
        "answers came back out of order"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 64 jobs ran concurrently"
    );

    // A cancel of a running job, on a connection of its own, as RRQ sends it.
    let running = tokio::spawn({
        let orchestrator = Arc::clone(&orchestrator);
        async move {
            orchestrator
                .execute(
                    job("cancel-me", 1, "slow", json!({"seconds": 30})),
                    deadline,
                )
                .await
        }
    });
    wait_until(async || {
        counts
            .counts(&["cancel-me".into()])
            .await
            .unwrap()
            .executions["cancel-me"]
            == 1
    })
    .await;
    let cancel = orchestrator.cancel("cancel-me", "", false).await.unwrap();
    assert!(cancel.found);
    match running.await.unwrap().unwrap().outcome {
        Some(Outcome::Cancelled(cancelled)) => assert_eq!(cancelled.reason, "Job cancelled"),
        other => panic!("cancel-me: {other:?}"),
    }
    assert_eq!(
        counts
            .counts(&["cancel-me".into()])
            .await
            .unwrap()
            .cancelled["cancel-me"],
        1
    );

    // The runner killed mid-job: the call fails as unavailable; the job's next attempt
    // runs on the restarted runner.
    let running = tokio::spawn({
        let orchestrator = Arc::clone(&orchestrator);
        async move {
            orchestrator
                .execute(job("killed", 1, "slow", json!({"seconds": 5})), deadline)
                .await
        }
    });
    wait_until(async || counts.counts(&["killed".into()]).await.unwrap().executions["killed"] == 1)
        .await;
    python.kill();
    let lost = running.await.unwrap().unwrap_err();
    assert!(
        matches!(
            lost,
            taskwire_rpc::runner::RunnerError::Call(CallError::Unavailable(_))
        ),
        "{lost:?}"
    );
    python =
        rrq::start_python_runner(&install, port, &redis.url(), &dir.join("runner-1.log")).unwrap();
    let second = orchestrator
        .execute(job("killed", 2, "slow", json!({"seconds": 0.1})), deadline)
        .await
        .unwrap();
    assert_eq!(result_json(&second)["attempt"], json!(2));

    // The orchestrator restarted mid-job: its connections close, the runner cancels the
    // job, and a new orchestrator runs it again.
    let gone = tokio::spawn({
        let orchestrator = Orchestrator::new(RrqClient::new(ClientConfig::new(runner_addr)));
        async move {
            orchestrator
                .execute(
                    job("restarted", 1, "slow", json!({"seconds": 30})),
                    deadline,
                )
                .await
        }
    });
    wait_until(async || {
        counts
            .counts(&["restarted".into()])
            .await
            .unwrap()
            .executions["restarted"]
            == 1
    })
    .await;
    gone.abort();
    let _ = gone.await;
    // The runner cancels the job its lost connection carried before the rerun arrives, so
    // that the rerun is not refused as a duplicate of a job still running.
    wait_until(async || {
        counts
            .counts(&["restarted".into()])
            .await
            .unwrap()
            .cancelled["restarted"]
            == 1
    })
    .await;
    let fresh = Orchestrator::new(RrqClient::new(ClientConfig::new(runner_addr)));
    let rerun = fresh
        .execute(
            job("restarted", 1, "slow", json!({"seconds": 0.1})),
            deadline,
        )
        .await
        .unwrap();
    assert!(
        matches!(rerun.outcome, Some(Outcome::Success(_))),
        "{rerun:?}"
    );
    drop(python);
}

/// Sends RRQ's cancel for every attempt of `job_id` to the runner at `addr`, on a
/// connection of its own that closes after the frame, as RRQ's orchestrator does.
async fn send_rrq_cancel(addr: SocketAddr, job_id: &str) {
    use taskwire_codec::tokio_util::codec::Encoder as _;
    use tokio::io::AsyncWriteExt as _;
    let cancel = taskwire_rrq::Cancel {
        protocol_version: "2".into(),
        job_id: job_id.to_owned(),
        request_id: None,
        hard_kill: false,
    };
    let mut wire = bytes::BytesMut::new();
    taskwire_rrq::RrqCodec::new()
        .encode(&taskwire_rrq::Message::Cancel(cancel), &mut wire)
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&wire).await.unwrap();
    stream.shutdown().await.unwrap();
}

/// Polls `done` every 10 ms for up to 10 s.
async fn wait_until(mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the condition never held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrqs_orchestrator_reaches_rrqs_python_runner_through_both_bridges_at_5_percent_loss() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let dir = run_dir("rrq-through-bridges");
    let python_port = taskwire_seed_systems::free_port();
    let bridges = BridgePair::start(python_port, 0.05).await.unwrap();
    let mut rig = Rig::start(&install, dir.clone(), bridges.local.local_addr().port()).await;
    let redis_url = rig.redis.url();
    let mut python = Some(
        rrq::start_python_runner(&install, python_port, &redis_url, &dir.join("runner-0.log"))
            .unwrap(),
    );
    let mut restarts = 0;

    orchestrator_scenarios(&mut rig, &Counter::Python, async || {
        python.take().unwrap().kill();
        restarts += 1;
        let log = dir.join(format!("runner-{restarts}.log"));
        python = Some(rrq::start_python_runner(&install, python_port, &redis_url, &log).unwrap());
    })
    .await;
    // An RRQ cancel, sent as RRQ sends it (a connection of its own), crosses both bridges
    // and stops the running job at the Python runner; its attempt ends `cancelled`, an
    // error RRQ retries.
    let job = rig.running_job(&Counter::Python, 5.0).await;
    send_rrq_cancel(bridges.local.local_addr(), &job).await;
    let state = rig.driver.wait_one(&job, WAIT).await.unwrap();
    assert_eq!(
        state.status.as_deref(),
        Some("COMPLETED"),
        "{state:?}\n{}",
        rig.why()
    );
    assert_eq!(
        (state.current_retries, state.last_error.as_deref()),
        (1, Some("Job cancelled"))
    );
    assert_eq!(
        rig.cancelled(&Counter::Python, &job).await,
        1,
        "the cancel reached the running handler"
    );
    assert_eq!(rig.executions(&Counter::Python, &job).await, 2);

    // The connection between the bridges lost mid-job: the attempt ends with an error RRQ
    // retries on a new connection, and the job runs once per attempt, never more.
    let job = rig.running_job(&Counter::Python, 2.0).await;
    bridges.client.connection().await.unwrap().close();
    let state = rig.driver.wait_one(&job, WAIT).await.unwrap();
    assert_eq!(
        state.status.as_deref(),
        Some("COMPLETED"),
        "{state:?}\n{}",
        rig.why()
    );
    assert_eq!(
        (state.current_retries, state.result["attempt"].as_u64()),
        (1, Some(2)),
        "{state:?}"
    );
    assert_eq!(
        rig.executions(&Counter::Python, &job).await,
        2,
        "one run per RRQ attempt"
    );
    assert_eq!(
        rig.cancelled(&Counter::Python, &job).await,
        1,
        "the lost attempt was stopped at the runner"
    );

    let stats = bridges.relay.as_ref().expect("a 5% relay").stats();
    assert!(
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the relay dropped datagrams"
    );
    bridges.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_cross_both_bridges_at_5_percent_loss_each_run_once() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let dir = run_dir("rrq-thousand-through-bridges");
    let python_port = taskwire_seed_systems::free_port();
    let bridges = BridgePair::start(python_port, 0.05).await.unwrap();
    let mut rig = Rig::start(&install, dir.clone(), bridges.local.local_addr().port()).await;
    let _python = rrq::start_python_runner(
        &install,
        python_port,
        &rig.redis.url(),
        &dir.join("runner.log"),
    )
    .unwrap();

    let mut ids = Vec::with_capacity(1000);
    for i in 0..1000 {
        ids.push(
            rig.enqueue("echo", json!({"i": i}), json!({"job_timeout_seconds": 20}))
                .await,
        );
    }
    let states = rig
        .driver
        .wait(&ids, Duration::from_secs(120))
        .await
        .unwrap();
    let counts = rig.driver.counts(&ids).await.unwrap();
    let why = rig.why();
    for (i, state) in states.iter().enumerate() {
        assert_eq!(
            state.status.as_deref(),
            Some("COMPLETED"),
            "job {i} was lost: {state:?}\n{why}"
        );
        assert_eq!(state.result, json!({"echo": {"i": i}, "attempt": 1}));
        assert_eq!(state.current_retries, 0, "job {i} needed a retry");
        assert_eq!(
            counts.executions[&state.job_id], 1,
            "job {i} ran more than once"
        );
    }
    let dropped = bridges
        .relay
        .as_ref()
        .expect("a 5% relay")
        .stats()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped > 0, "the relay dropped datagrams");
    bridges.shutdown().await;
}
