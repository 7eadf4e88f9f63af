//! RRQ end to end: the real orchestrator on a real Redis, draining no-op jobs at
//! `max_in_flight` 64, with taskwire's RRQ runner ([`taskwire_rrq::RrqRunner`] serving a
//! `Router`) against RRQ's own Python runner on the same job; and one job's time at the
//! runner through the bridge pair (QUIC with mutual TLS) against direct.
//!
//! ```text
//! cargo bench -p taskwire-benches --bench rrq -- [--jobs N] [--runs R] [--latency-jobs M]
//! ```
//!
//! Throughput: N jobs are enqueued while no orchestrator runs, then one starts and drains
//! them; jobs/s is N over the time from the first job's start to the last one's
//! completion, as RRQ stamps them in Redis. Latency: M jobs one after another, each job's
//! completion minus start time, which is the orchestrator's wait for its runner. Peers
//! alternate within each run; the tables give medians over the runs. Needs
//! `cargo xtask seed-systems`. Run by `cargo test --benches`, it does a short smoke pass
//! instead and asserts no timing.
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use taskwire_proto::wkt::Timestamp;
use taskwire_rrq::{RrqRunner, RunnerConfig};
use taskwire_seed_systems::process::Service;
use taskwire_seed_systems::rrq::{self, BridgePair, Config, Driver, Install, JobState, Redis};

/// Seconds since the epoch of RRQ's hash timestamps.
fn seconds(text: &Option<String>) -> f64 {
    let timestamp: Timestamp = text
        .as_deref()
        .expect("a timestamp")
        .parse()
        .expect("RFC 3339");
    timestamp.seconds as f64 + f64::from(timestamp.nanos) / 1e9
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The runner a measurement drives.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    /// RRQ's `rrq-runner` with `seed-systems/python/rrq_app`.
    Python,
    /// taskwire's `RrqRunner` with the same functions from Rust.
    Taskwire,
    /// RRQ's `rrq-runner` behind the bridge pair.
    PythonBridged,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Python => "rrq-runner (Python)",
            Peer::Taskwire => "taskwire RrqRunner",
            Peer::PythonBridged => "rrq-runner via bridge pair",
        }
    }
}

/// One peer's runner, running, and the port the orchestrator dials.
struct Running {
    port: u16,
    _python: Option<Service>,
    taskwire: Option<taskwire_rrq::RunnerHandle>,
    bridges: Option<BridgePair>,
}

impl Running {
    async fn start(peer: Peer, install: &Install, redis: &Redis, dir: &Path) -> Running {
        let python = |dir: &Path| {
            let port = taskwire_seed_systems::free_port();
            let log = dir.join(format!("runner-{port}.log"));
            (
                port,
                rrq::start_python_runner(install, port, &redis.url(), &log)
                    .expect("rrq-runner starts"),
            )
        };
        match peer {
            Peer::Python => {
                let (port, service) = python(dir);
                Running {
                    port,
                    _python: Some(service),
                    taskwire: None,
                    bridges: None,
                }
            }
            Peer::Taskwire => {
                let (router, _log) = rrq::jobs_router();
                let runner =
                    RrqRunner::bind(RunnerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))
                        .await
                        .expect("the runner binds")
                        .serve(router);
                Running {
                    port: runner.local_addr().port(),
                    _python: None,
                    taskwire: Some(runner),
                    bridges: None,
                }
            }
            Peer::PythonBridged => {
                let (port, service) = python(dir);
                let bridges = BridgePair::start(port, 0.0)
                    .await
                    .expect("the bridges start");
                Running {
                    port: bridges.local.local_addr().port(),
                    _python: Some(service),
                    taskwire: None,
                    bridges: Some(bridges),
                }
            }
        }
    }

    async fn stop(self) {
        if let Some(runner) = self.taskwire {
            runner.shutdown().await;
        }
        if let Some(bridges) = self.bridges {
            bridges.shutdown().await;
        }
    }
}

fn config(dir: &Path, redis: &Redis, port: u16) -> PathBuf {
    let mut config = Config::new(redis.port, port);
    config.job_timeout_seconds = 60;
    config.write(dir).expect("rrq.toml")
}

/// Jobs per second draining `jobs` pre-enqueued no-op jobs.
async fn throughput(peer: Peer, install: &Install, redis: &Redis, dir: &Path, jobs: usize) -> f64 {
    let runner = Running::start(peer, install, redis, dir).await;
    let config = config(dir, redis, runner.port);
    let mut driver = Driver::start(install, &config, &redis.url())
        .await
        .expect("the driver starts");
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        ids.push(
            driver
                .enqueue("noop", json!({}), json!({}))
                .await
                .expect("enqueued"),
        );
    }
    let log = dir.join(format!(
        "orchestrator-{}.log",
        taskwire_seed_systems::free_port()
    ));
    let mut orchestrator =
        rrq::start_orchestrator(install, &config, &log).expect("the orchestrator starts");
    let states = driver
        .wait(&ids, Duration::from_secs(300))
        .await
        .expect("the jobs end");
    orchestrator.terminate(Duration::from_secs(15));
    runner.stop().await;
    assert!(
        states
            .iter()
            .all(|s| s.status.as_deref() == Some("COMPLETED")),
        "every no-op job completes"
    );
    let first = states
        .iter()
        .map(|s| seconds(&s.start_time))
        .fold(f64::INFINITY, f64::min);
    let last = states
        .iter()
        .map(|s| seconds(&s.completion_time))
        .fold(0.0, f64::max);
    jobs as f64 / (last - first)
}

/// The median of each job's completion minus start time, one job at a time, in ms.
async fn latency(peer: Peer, install: &Install, redis: &Redis, dir: &Path, jobs: usize) -> f64 {
    let runner = Running::start(peer, install, redis, dir).await;
    let config = config(dir, redis, runner.port);
    let mut driver = Driver::start(install, &config, &redis.url())
        .await
        .expect("the driver starts");
    let log = dir.join(format!(
        "orchestrator-{}.log",
        taskwire_seed_systems::free_port()
    ));
    let mut orchestrator =
        rrq::start_orchestrator(install, &config, &log).expect("the orchestrator starts");
    let mut samples = Vec::with_capacity(jobs);
    // The first job pays for the connections; it is not counted.
    for i in 0..=jobs {
        let id = driver
            .enqueue("noop", json!({}), json!({}))
            .await
            .expect("enqueued");
        let state: JobState = driver
            .wait_one(&id, Duration::from_secs(60))
            .await
            .expect("the job ends");
        assert_eq!(state.status.as_deref(), Some("COMPLETED"));
        if i > 0 {
            samples.push((seconds(&state.completion_time) - seconds(&state.start_time)) * 1e3);
        }
    }
    orchestrator.terminate(Duration::from_secs(15));
    runner.stop().await;
    median(&mut samples)
}

fn argument(args: &[String], name: &str) -> Option<usize> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke pass.
    let smoke = !args.iter().any(|a| a == "--bench");
    let jobs = argument(&args, "--jobs").unwrap_or(if smoke { 40 } else { 2000 });
    let runs = argument(&args, "--runs").unwrap_or(if smoke { 1 } else { 3 });
    let latency_jobs = argument(&args, "--latency-jobs").unwrap_or(if smoke { 5 } else { 200 });

    let install = match Install::find() {
        Ok(install) => install,
        Err(missing) => {
            missing.report("the rrq bench");
            return;
        }
    };
    let dir = taskwire_seed_systems::install_dir()
        .join("runs")
        .join(format!("rrq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a run directory");
    let redis = Redis::start(&install, &dir).expect("redis starts");

    let mut drained: Vec<(Peer, Vec<f64>)> =
        vec![(Peer::Python, Vec::new()), (Peer::Taskwire, Vec::new())];
    let mut waited: Vec<(Peer, Vec<f64>)> = vec![
        (Peer::Python, Vec::new()),
        (Peer::Taskwire, Vec::new()),
        (Peer::PythonBridged, Vec::new()),
    ];
    for run in 0..runs {
        // Alternate which peer goes first, so neither always runs on a warmer machine.
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for &i in &order {
            let peer = drained[i].0;
            let rate = throughput(peer, &install, &redis, &dir, jobs).await;
            eprintln!(
                "run {run}: {} drained {jobs} no-op jobs at {rate:.0} jobs/s",
                peer.name()
            );
            drained[i].1.push(rate);
        }
        for i in 0..waited.len() {
            let peer = waited[(i + run) % waited.len()].0;
            let ms = latency(peer, &install, &redis, &dir, latency_jobs).await;
            eprintln!("run {run}: {} median {ms:.2} ms at the runner", peer.name());
            waited
                .iter_mut()
                .find(|(p, _)| *p == peer)
                .expect("a peer")
                .1
                .push(ms);
        }
    }
    if smoke {
        println!("rrq bench: smoke pass done (no figures)");
        return;
    }
    let mut rates: Vec<(Peer, f64)> = drained.iter_mut().map(|(p, v)| (*p, median(v))).collect();
    let python_rate = rates[0].1;
    println!(
        "\nRRQ orchestrator + Redis, {jobs} no-op jobs, max_in_flight 64, median of {runs} runs"
    );
    println!("| runner | jobs/s | ratio to rrq-runner |\n|---|---|---|");
    for (peer, rate) in &mut rates {
        println!(
            "| {} | {:.0} | {:.2} |",
            peer.name(),
            rate,
            *rate / python_rate
        );
    }
    let waits: Vec<(Peer, f64)> = waited.iter_mut().map(|(p, v)| (*p, median(v))).collect();
    let direct = waits[0].1;
    println!(
        "\nOne no-op job at a time, {latency_jobs} jobs: the orchestrator's wait for its runner (completion − start), median of {runs} runs"
    );
    println!("| path | ms | added to direct |\n|---|---|---|");
    for (peer, ms) in &waits {
        println!("| {} | {:.2} | {:+.2} ms |", peer.name(), ms, ms - direct);
    }
}
