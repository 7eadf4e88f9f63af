//! Restate end to end: the real restate-server invoking a handler through its ingress,
//! with taskwire's endpoint against the Rust `restate-sdk` crate (0.13, the peer a Rust
//! user of Restate picks) serving the same two handlers on the same machine in one run:
//! `noop` (input, output) and `step` (one durable `run` step). Both endpoints are
//! registered over HTTP/2, so both run bidirectionally.
//!
//! ```text
//! cargo bench -p taskwire-benches --bench restate -- [--duration SECONDS] [--runs N] [--concurrency C]
//! ```
//!
//! Each measurement drives one handler of one endpoint through the ingress with C
//! workers, each on its own kept-alive HTTP/1.1 connection, for the duration; the other
//! endpoint idles. Peers alternate within each run; the table gives medians over the
//! runs. Needs `cargo xtask seed-systems`. Run by `cargo test --benches`, it does a short
//! smoke pass instead and asserts no timing.
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use taskwire_seed_systems::restate::{Install, Restate};

/// The same handlers on Restate's Rust SDK.
mod sdk {
    use restate_sdk::prelude::*;

    pub(crate) struct SdkBench;

    #[service]
    impl SdkBench {
        #[handler]
        async fn noop(&self, _ctx: Context<'_>) -> Result<(), HandlerError> {
            Ok(())
        }

        #[handler]
        async fn step(&self, ctx: Context<'_>) -> Result<u32, HandlerError> {
            let n: u32 = ctx.run(|| async { Ok(1) }).name("step").await?;
            Ok(n)
        }
    }
}

fn taskwire_endpoint() -> taskwire_restate::Endpoint {
    use taskwire_restate::{Context, HandlerResult, Json, Service};
    taskwire_restate::Endpoint::builder()
        .bind(
            Service::new("TaskwireBench")
                .handler("noop", |_ctx: Context, ()| async { HandlerResult::Ok(()) })
                .handler("step", |ctx: Context, ()| async move {
                    let Json(n): Json<u32> = ctx.run("step", || async { Ok(Json(1_u32)) }).await?;
                    HandlerResult::Ok(Json(n))
                }),
        )
        .build()
        .expect("a valid endpoint")
}

/// Invocations per second and the p50 latency of `path` at `concurrency` for `duration`.
async fn load(
    ingress: SocketAddr,
    path: &str,
    concurrency: usize,
    duration: Duration,
) -> (f64, Duration) {
    let deadline = Instant::now() + duration;
    let workers = (0..concurrency).map(|_| {
        let path = path.to_owned();
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(ingress)
                .await
                .expect("the ingress accepts");
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("an HTTP/1.1 connection");
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let request = http::Request::post(path.as_str())
                    .header("host", ingress.to_string())
                    .body(Empty::<Bytes>::new())
                    .expect("a request");
                let started = Instant::now();
                let response = sender.send_request(request).await.expect("an answer");
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("a body")
                    .to_bytes();
                assert!(
                    status.is_success(),
                    "{path}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                latencies.push(started.elapsed());
            }
            latencies
        })
    });
    let started = Instant::now();
    let mut latencies = Vec::new();
    for worker in workers.collect::<Vec<_>>() {
        latencies.extend(worker.await.expect("a worker"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    (latencies.len() as f64 / elapsed.as_secs_f64(), p50)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn argument<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
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
    let duration = Duration::from_secs_f64(argument(&args, "--duration").unwrap_or(if smoke {
        0.3
    } else {
        5.0
    }));
    let runs: usize = argument(&args, "--runs").unwrap_or(if smoke { 1 } else { 3 });
    let concurrency: usize = argument(&args, "--concurrency").unwrap_or(16);

    let install = match Install::find() {
        Ok(install) => install,
        Err(missing) => {
            missing.report("the restate bench");
            return;
        }
    };
    let dir = taskwire_seed_systems::install_dir()
        .join("runs")
        .join(format!("restate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a run directory");
    let restate = Restate::start(&install, &dir)
        .await
        .expect("restate-server starts");

    let config = taskwire_restate::ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let ours = taskwire_restate::EndpointServer::bind(taskwire_endpoint(), config)
        .await
        .expect("the endpoint binds")
        .serve();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let sdk_addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        use restate_sdk::prelude::{Endpoint, HttpServer};
        HttpServer::new(Endpoint::builder().bind(sdk::SdkBench).build())
            .serve(listener)
            .await;
    });
    restate
        .register(&format!("http://{}", ours.local_addr()), false)
        .await
        .expect("taskwire's endpoint registers");
    restate
        .register(&format!("http://{sdk_addr}"), false)
        .await
        .expect("the SDK's endpoint registers");

    // (peer, handler) -> (rates, p50s in ms)
    let cases = [
        ("taskwire", "noop", "/TaskwireBench/noop"),
        ("restate-sdk", "noop", "/SdkBench/noop"),
        ("taskwire", "step", "/TaskwireBench/step"),
        ("restate-sdk", "step", "/SdkBench/step"),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for (_, _, path) in cases {
        // Warm-up: the first invocations open the server's connections to the endpoint.
        load(restate.ingress, path, 2, Duration::from_millis(200)).await;
    }
    for run in 0..runs {
        for pair in [0, 2] {
            let order = if run % 2 == 0 {
                [pair, pair + 1]
            } else {
                [pair + 1, pair]
            };
            for i in order {
                let (peer, handler, path) = cases[i];
                let (rate, _) = load(restate.ingress, path, concurrency, duration).await;
                let (_, p50) = load(restate.ingress, path, 1, duration / 2).await;
                eprintln!(
                    "run {run}: {peer} {handler}: {rate:.0} invocations/s at {concurrency}, p50 {:.2} ms alone",
                    p50.as_secs_f64() * 1e3
                );
                rates[i].push(rate);
                p50s[i].push(p50.as_secs_f64() * 1e3);
            }
        }
    }
    ours.shutdown().await;
    if smoke {
        println!("restate bench: smoke pass done (no figures)");
        return;
    }
    println!(
        "\nrestate-server 1.7.12 ingress → endpoint over HTTP/2, {concurrency} callers, {:.0} s each, median of {runs} runs",
        duration.as_secs_f64()
    );
    println!(
        "| handler | endpoint | invocations/s | ratio to restate-sdk | p50 alone (ms) | ratio to restate-sdk |\n|---|---|---|---|---|---|"
    );
    for pair in [0, 2] {
        let (sdk_rate, sdk_p50) = (median(&mut rates[pair + 1]), median(&mut p50s[pair + 1]));
        for i in [pair, pair + 1] {
            let (rate, p50) = (median(&mut rates[i]), median(&mut p50s[i]));
            println!(
                "| {} | {} | {rate:.0} | {:.2} | {p50:.2} | {:.2} |",
                cases[i].1,
                cases[i].0,
                rate / sdk_rate,
                p50 / sdk_p50
            );
        }
    }
}
