//! The RPC load generator: unary calls at a fixed concurrency over real connections on
//! 127.0.0.1, reporting calls per second and latency percentiles (HdrHistogram).
//!
//! The server runs in the same process on its own tokio runtime and threads, and the
//! client on another, so they compete for the machine's cores as two processes would;
//! every transport measured is set up the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use taskwire_proto::instance::v1::{CheckpointRequest, CheckpointResponse, CheckpointSummary};
use taskwire_quic::{ClientConfig, Limits, QuicClient, QuicServer, ServerConfig};
use taskwire_rpc::Router;
use taskwire_tcp::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams, ServerConfigBuilder,
};

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
}

/// The `CheckpointRequest` of `bytes` bytes used as the request.
pub fn request(bytes: usize) -> CheckpointRequest {
    let mut request = CheckpointRequest {
        instance_id: "load".into(),
        checkpoint_id: "cp".into(),
        sequence: 1,
        state: Default::default(),
    };
    let overhead = prost::Message::encoded_len(&request) + 3;
    request.state = vec![0x5a; bytes.saturating_sub(overhead)].into();
    request
}

/// TLS configurations for a server on 127.0.0.1 and its client, with ECDSA P-256 and
/// the default (ring, AES-GCM first) provider, the same for every transport.
pub fn tls() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ca = CertificateAuthority::generate(&CaParams::new("load CA")).expect("CA");
    let leaf = ca
        .issue_server(
            &ServerCertParams::new(["localhost"]).ip_addresses(["127.0.0.1".parse().expect("ip")]),
        )
        .expect("server certificate");
    let server = ServerConfigBuilder::new(leaf.credentials().expect("credentials"))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .expect("server TLS");
    let client = ClientConfigBuilder::new(ca.ca_bundle().expect("bundle"))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .expect("client TLS");
    (Arc::new(server), Arc::new(client))
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `scenario` against taskwire over QUIC.
pub fn quic(scenario: Scenario) -> Report {
    let (server_tls, client_tls) = tls();
    let server_runtime = runtime("server", 1);
    let response_bytes = scenario.response_bytes;
    let server = server_runtime.block_on(async {
        let mut router = Router::new();
        router.unary(move |_ctx, request: CheckpointRequest| async move {
            let padding = "x".repeat(response_bytes.saturating_sub(16));
            Ok(CheckpointResponse {
                duplicate: false,
                checkpoint: Some(CheckpointSummary {
                    instance_id: padding,
                    sequence: request.sequence,
                    ..Default::default()
                }),
                pending_signals: 0,
            })
        });
        let mut limits = Limits::default();
        limits.max_concurrent_calls(1024);
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), server_tls);
        config.limits = limits;
        QuicServer::new(config).expect("server").serve(router)
    });
    let addr = server.local_addr();
    let client_runtime = runtime("client", 1);
    let report = client_runtime.block_on(async move {
        let mut connections = Vec::new();
        for _ in 0..scenario.connections.max(1) {
            let mut config = ClientConfig::new(addr, "localhost", Arc::clone(&client_tls));
            config.limits.max_concurrent_calls(1024);
            let client = QuicClient::new(config).expect("client");
            connections.push((client.connect().await.expect("connect"), client));
        }
        let request = request(scenario.request_bytes);
        drive(scenario, "taskwire-quic", move |i| {
            let connection = connections[i % connections.len()].0.clone();
            let request = request.clone();
            async move {
                connection
                    .call(request)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await
    });
    server_runtime.block_on(server.shutdown());
    report
}

/// Runs `scenario` against taskwire over TCP with TLS and binary frames.
pub fn tcp(scenario: Scenario) -> Report {
    let (server_tls, client_tls) = tls();
    let server_runtime = runtime("server", 1);
    let response_bytes = scenario.response_bytes;
    let server = server_runtime.block_on(async {
        let mut router = Router::new();
        router.unary(move |_ctx, request: CheckpointRequest| async move {
            let padding = "x".repeat(response_bytes.saturating_sub(16));
            Ok(CheckpointResponse {
                duplicate: false,
                checkpoint: Some(CheckpointSummary {
                    instance_id: padding,
                    sequence: request.sequence,
                    ..Default::default()
                }),
                pending_signals: 0,
            })
        });
        let mut config = TcpServerConfig::new("127.0.0.1:0".parse().expect("addr"), server_tls);
        config.limits.max_concurrent_calls(1024);
        TcpServer::bind(config).await.expect("server").serve(router)
    });
    let addr = server.local_addr();
    let client_runtime = runtime("client", 1);
    let report = client_runtime.block_on(async move {
        let mut connections = Vec::new();
        for _ in 0..scenario.connections.max(1) {
            let config = TcpClientConfig::new(addr, "localhost", Arc::clone(&client_tls));
            connections.push(TcpClient::new(config).connect().await.expect("connect"));
        }
        let request = request(scenario.request_bytes);
        drive(scenario, "taskwire-tcp", move |i| {
            let connection = connections[i % connections.len()].clone();
            let request = request.clone();
            async move {
                connection
                    .call(request)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await
    });
    server_runtime.block_on(server.shutdown());
    report
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
    tokio::time::sleep(scenario.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for worker in workers {
        if let Ok(h) = worker.await {
            histogram.add(h).expect("same bounds");
        }
    }
    let calls = histogram.len();
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
    }
}
