//! Load generation for taskwire servers: closed-loop callers at a fixed concurrency,
//! calls per second and latency percentiles (HdrHistogram), CPU per call, and the median
//! of several runs. What `taskwire bench` runs against any server, and what
//! `taskwire-benches` measures taskwire and its peers with.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use taskwire_load::{Scenario, drive, load_table, summarize};
//!
//! let scenario = Scenario {
//!     concurrency: 4,
//!     connections: 1,
//!     request_bytes: 0,
//!     response_bytes: 0,
//!     duration: Duration::from_millis(50),
//! };
//! // Each worker makes one call at a time; here a call is a short sleep.
//! let report = drive(scenario, "sleep", |_worker| async {
//!     tokio::time::sleep(Duration::from_millis(1)).await;
//!     Ok(())
//! })
//! .await;
//! assert!(report.calls > 0 && report.errors == 0);
//! println!("{}", load_table(&[summarize(&[report])]));
//! # }
//! ```
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// One load scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Calls in flight at once, spread over the connections.
    pub concurrency: usize,
    /// Connections the calls share.
    pub connections: usize,
    /// Request body size in bytes.
    pub request_bytes: usize,
    /// Response body size in bytes.
    pub response_bytes: usize,
    /// How long to measure, after a short warm-up.
    pub duration: Duration,
}

/// What a scenario measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The transport measured.
    pub transport: &'static str,
    /// Calls in flight.
    pub concurrency: usize,
    /// Connections used.
    pub connections: usize,
    /// Calls completed in the measured window.
    pub calls: u64,
    /// Calls per second.
    pub calls_per_second: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency in microseconds.
    pub p999_us: f64,
    /// Failed calls (expected 0).
    pub errors: u64,
    /// CPU time the client's threads spent per call, in microseconds.
    pub client_cpu_us: f64,
    /// CPU time the server's threads spent per call, in microseconds.
    pub server_cpu_us: f64,
}

/// CPU time (user + system) spent so far by this process's threads whose name starts
/// with `prefix` (the runtimes name theirs `server` and `client`), from `/proc`. Zero
/// where `/proc` is not available.
pub fn thread_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    // Clock ticks per second: 100 on every Linux configuration in practice.
    const TICKS: u64 = 100;
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3; utime and stime are
        // fields 14 and 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    Duration::from_millis(ticks * 1000 / TICKS)
}

/// Runs closed-loop workers, each making one call at a time, for the scenario's duration.
pub async fn drive<F, Fut>(scenario: Scenario, transport: &'static str, call: F) -> Report
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..scenario.concurrency.max(1) {
        let (call, stop, measuring, errors) = (
            Arc::clone(&call),
            Arc::clone(&stop),
            Arc::clone(&measuring),
            Arc::clone(&errors),
        );
        workers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = call(worker).await;
                if measuring.load(Ordering::Relaxed) {
                    match result {
                        Ok(()) => {
                            let micros =
                                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                            let _ = histogram.record(micros.max(1));
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            histogram
        }));
    }
    tokio::time::sleep(Duration::from_millis(300).min(scenario.duration / 4)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (client_cpu, server_cpu) = (thread_cpu("client"), thread_cpu("server"));
    tokio::time::sleep(scenario.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let (client_cpu, server_cpu) = (
        thread_cpu("client").saturating_sub(client_cpu),
        thread_cpu("server").saturating_sub(server_cpu),
    );
    stop.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for worker in workers {
        if let Ok(h) = worker.await {
            histogram.add(h).expect("same bounds");
        }
    }
    let calls = histogram.len();
    let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (calls.max(1) as f64);
    Report {
        transport,
        concurrency: scenario.concurrency,
        connections: scenario.connections,
        calls,
        calls_per_second: calls as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.5) as f64,
        p99_us: histogram.value_at_quantile(0.99) as f64,
        p999_us: histogram.value_at_quantile(0.999) as f64,
        errors: errors.load(Ordering::Relaxed),
        client_cpu_us: per_call(client_cpu),
        server_cpu_us: per_call(server_cpu),
    }
}

/// The median of each figure over several runs of one scenario, with its range.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// The transport.
    pub transport: &'static str,
    /// Calls in flight.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Runs summarized.
    pub runs: usize,
    /// Calls per second: median, min, max.
    pub calls_per_second: [f64; 3],
    /// p50 latency in µs: median, min, max.
    pub p50_us: [f64; 3],
    /// p99 latency in µs: median, min, max.
    pub p99_us: [f64; 3],
    /// p99.9 latency in µs: median, min, max.
    pub p999_us: [f64; 3],
    /// Failed calls over all runs.
    pub errors: u64,
    /// Client CPU per call in µs: median, min, max.
    pub client_cpu_us: [f64; 3],
    /// Server CPU per call in µs: median, min, max.
    pub server_cpu_us: [f64; 3],
}

fn median_min_max(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    [median, values[0], values[values.len() - 1]]
}

/// Summarizes runs of one scenario (at least one).
pub fn summarize(reports: &[Report]) -> Summary {
    let first = &reports[0];
    Summary {
        transport: first.transport,
        concurrency: first.concurrency,
        connections: first.connections,
        runs: reports.len(),
        calls_per_second: median_min_max(reports.iter().map(|r| r.calls_per_second).collect()),
        p50_us: median_min_max(reports.iter().map(|r| r.p50_us).collect()),
        p99_us: median_min_max(reports.iter().map(|r| r.p99_us).collect()),
        p999_us: median_min_max(reports.iter().map(|r| r.p999_us).collect()),
        errors: reports.iter().map(|r| r.errors).sum(),
        client_cpu_us: median_min_max(reports.iter().map(|r| r.client_cpu_us).collect()),
        server_cpu_us: median_min_max(reports.iter().map(|r| r.server_cpu_us).collect()),
    }
}

/// A Markdown table of load summaries.
pub fn load_table(rows: &[Summary]) -> String {
    let mut out = String::from(
        "| transport | concurrency | connections | calls/s (min–max) | p50 µs | p99 µs | p99.9 µs | CPU µs/call client + server | errors |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.0} | {:.0} | {:.1} + {:.1} | {} |\n",
            r.transport,
            r.concurrency,
            r.connections,
            r.calls_per_second[0],
            r.calls_per_second[1],
            r.calls_per_second[2],
            r.p50_us[0],
            r.p99_us[0],
            r.p999_us[0],
            r.client_cpu_us[0],
            r.server_cpu_us[0],
            r.errors
        ));
    }
    out
}
