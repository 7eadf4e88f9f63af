//! The RPC load generator: unary calls at a fixed concurrency over real connections on
//! 127.0.0.1, reporting calls per second and latency percentiles (HdrHistogram).
//!
//! The server runs in the same process on its own tokio runtime and threads, and the
//! client on another, so they compete for the machine's cores as two processes would;
//! every transport measured is set up the same way. The driver and its report are
//! `taskwire-load`'s, re-exported here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use taskwire_load::{Report, Scenario, drive, thread_cpu};
use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_proto::environment::v1::{ImageInfo, ImageUpload, RegisterImageResponse};
use taskwire_proto::instance::v1::{
    Checkpoint, CheckpointRequest, CheckpointResponse, CheckpointSummary, GetCheckpointRequest,
    GetCheckpointResponse,
};
use taskwire_quic::{
    ClientConfig, EarlyData, Limits, QuicClient, QuicServer, ServerConfig, ServerHandle,
};
use taskwire_rpc::Router;
use taskwire_tcp::{
    TcpClient, TcpClientConfig, TcpConnection, TcpLimits, TcpServer, TcpServerConfig,
    TcpServerHandle,
};
use taskwire_tls::{
    CaBundle, CaParams, CertificateAuthority, ClientConfigBuilder, Credentials, ServerCertParams,
    ServerConfigBuilder,
};

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

/// The replay-safe read the resumed-connection scenarios call, a `GetCheckpointRequest`
/// of about `bytes` bytes: a call only such an rpc may make as early data.
pub fn read_request(bytes: usize) -> GetCheckpointRequest {
    GetCheckpointRequest {
        instance_id: "r".repeat(bytes.saturating_sub(8)),
        checkpoint_id: "cp".into(),
    }
}

/// `config` with TLS session resumption off: every connection makes a full handshake, as
/// a process's first connection does.
pub fn without_resumption(config: &rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    let mut config = config.clone();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A server certificate for 127.0.0.1 (ECDSA P-256, from a fresh CA), as PEM for peers
/// that load their own TLS (tonic) and as rustls configurations (ring provider, AES-GCM
/// first, TLS 1.3) for the others: every peer gets the same certificate type and crypto.
#[derive(Debug)]
pub struct Certs {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server certificate, PEM.
    pub server_cert_pem: String,
    /// The server's private key, PEM.
    pub server_key_pem: String,
    /// The server's rustls configuration, ALPN `taskwire/1`.
    pub server: Arc<rustls::ServerConfig>,
    /// The client's rustls configuration, ALPN `taskwire/1`.
    pub client: Arc<rustls::ClientConfig>,
}

/// Fresh [`Certs`].
pub fn certs() -> Certs {
    let ca = CertificateAuthority::generate(&CaParams::new("load CA")).expect("CA");
    let leaf = ca
        .issue_server(
            &ServerCertParams::new(["localhost"]).ip_addresses(["127.0.0.1".parse().expect("ip")]),
        )
        .expect("server certificate");
    Certs::from_pem(ca.cert_pem(), leaf.cert_pem(), leaf.key_pem())
}

impl Certs {
    /// The [`Certs`] of a CA certificate and a server certificate and key it issued, as
    /// PEM: how a server in another process gets the same certificate as its client.
    pub fn from_pem(ca_pem: String, server_cert_pem: String, server_key_pem: String) -> Certs {
        let credentials =
            Credentials::from_pem(server_cert_pem.as_bytes(), server_key_pem.as_bytes())
                .expect("server credentials");
        let server = ServerConfigBuilder::new(credentials)
            .alpn_protocols([taskwire_quic::ALPN])
            .tls13_only(true)
            .build()
            .expect("server TLS");
        let client =
            ClientConfigBuilder::new(CaBundle::from_pem(ca_pem.as_bytes()).expect("CA bundle"))
                .alpn_protocols([taskwire_quic::ALPN])
                .tls13_only(true)
                .build()
                .expect("client TLS");
        Certs {
            ca_pem,
            server_cert_pem,
            server_key_pem,
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }
}

/// TLS configurations for a server on 127.0.0.1 and its client; see [`Certs`].
pub fn tls() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let certs = certs();
    (certs.server, certs.client)
}

/// A multi-threaded runtime whose threads are named `name`, as every peer's client and
/// server run on.
pub fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The unary handler every scenario calls: a `CheckpointResponse` carrying the request's
/// sequence, padded to about `response_bytes`, as every peer answers.
pub fn unary_router(response_bytes: usize) -> Router {
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
    router.unary(move |_ctx, _: GetCheckpointRequest| async move {
        Ok(GetCheckpointResponse {
            checkpoint: Some(Checkpoint {
                summary: None,
                state: vec![0x5a; response_bytes.saturating_sub(16)].into(),
            }),
        })
    });
    router
}

/// Calls one connection may run at once in the busy scenarios, above their highest
/// concurrency (256). Every peer that has such a limit gets this one; the idle scenario
/// keeps the defaults, because quinn's memory per connection grows with it.
pub const LOAD_MAX_CONCURRENT_CALLS: u32 = 1024;

/// taskwire's QUIC limits in the busy scenarios: the defaults, but
/// [`LOAD_MAX_CONCURRENT_CALLS`].
pub fn quic_load_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_concurrent_calls(LOAD_MAX_CONCURRENT_CALLS);
    limits
}

/// taskwire's QUIC server on 127.0.0.1 with `limits`. Call it inside the server's runtime.
pub fn quic_server(tls: Arc<rustls::ServerConfig>, router: Router, limits: Limits) -> ServerHandle {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), tls);
    config.limits = limits;
    QuicServer::new(config).expect("server").serve(router)
}

/// A taskwire QUIC client of the server at `addr`, with the busy scenarios' limits.
pub fn quic_client(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> QuicClient {
    let mut config = ClientConfig::new(addr, "localhost", tls);
    config.limits = quic_load_limits();
    QuicClient::new(config).expect("client")
}

/// taskwire's TCP+TLS server on 127.0.0.1 with `limits`.
pub async fn tcp_server(
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: TcpLimits,
) -> TcpServerHandle {
    let mut config = TcpServerConfig::new("127.0.0.1:0".parse().expect("addr"), tls);
    config.limits = limits;
    TcpServer::bind(config).await.expect("server").serve(router)
}

/// taskwire's TCP limits in the busy scenarios: the defaults, but
/// [`LOAD_MAX_CONCURRENT_CALLS`].
pub fn tcp_load_limits() -> TcpLimits {
    let mut limits = TcpLimits::default();
    limits.max_concurrent_calls(LOAD_MAX_CONCURRENT_CALLS);
    limits
}

/// A fresh taskwire TCP+TLS connection to the server at `addr`.
pub async fn tcp_connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> TcpConnection {
    TcpClient::new(TcpClientConfig::new(addr, "localhost", tls))
        .connect()
        .await
        .expect("connect")
}

/// Runs `scenario` against taskwire over QUIC.
pub fn quic(scenario: Scenario) -> Report {
    let (server_tls, client_tls) = tls();
    let server_runtime = runtime("server", 1);
    let server = server_runtime.block_on(async {
        quic_server(
            server_tls,
            unary_router(scenario.response_bytes),
            quic_load_limits(),
        )
    });
    let addr = server.local_addr();
    let client_runtime = runtime("client", 1);
    let report = client_runtime.block_on(async move {
        let mut connections = Vec::new();
        for _ in 0..scenario.connections.max(1) {
            let client = quic_client(addr, Arc::clone(&client_tls));
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
    let server = server_runtime.block_on(tcp_server(
        server_tls,
        unary_router(scenario.response_bytes),
        tcp_load_limits(),
    ));
    let addr = server.local_addr();
    let client_runtime = runtime("client", 1);
    let report = client_runtime.block_on(async move {
        let mut connections = Vec::new();
        for _ in 0..scenario.connections.max(1) {
            connections.push(tcp_connect(addr, Arc::clone(&client_tls)).await);
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

/// Bytes per chunk of a bulk upload.
pub const BULK_CHUNK: usize = 64 * 1024;

fn bulk_router() -> Router {
    let mut router = Router::new();
    router.client_streaming(
        |_ctx, mut uploads: taskwire_rpc::RequestStream<ImageUpload>| async move {
            let mut received = 0u64;
            while let Some(upload) = uploads.message().await? {
                if let Some(Part::Chunk(chunk)) = upload.part {
                    received += chunk.len() as u64;
                }
            }
            Ok(RegisterImageResponse {
                image: Some(ImageInfo {
                    size_bytes: received,
                    ..Default::default()
                }),
                already_registered: false,
            })
        },
    );
    router
}

fn bulk_manifest(bytes: usize) -> ImageUpload {
    ImageUpload {
        part: Some(Part::Manifest(ImageManifest {
            name: "bulk".into(),
            size_bytes: bytes as u64,
            ..Default::default()
        })),
    }
}

/// Goodput of one `bytes`-long upload on one stream, in MB/s: taskwire over QUIC, as a
/// client-streaming call of 64 KiB chunks.
pub fn quic_bulk(bytes: usize) -> f64 {
    quic_bulk_with(bytes, quic_load_limits())
}

/// [`quic_bulk`] with `limits` at both ends (for example larger datagrams).
pub fn quic_bulk_with(bytes: usize, limits: Limits) -> f64 {
    let (server_tls, client_tls) = tls();
    let server_runtime = runtime("server", 1);
    let server = server_runtime.block_on(async { quic_server(server_tls, bulk_router(), limits) });
    let addr = server.local_addr();
    let rate = runtime("client", 1).block_on(async move {
        let mut config = ClientConfig::new(addr, "localhost", client_tls);
        config.limits = limits;
        let client = QuicClient::new(config).expect("client");
        let connection = client.connect().await.expect("connect");
        let chunk = Bytes::from(vec![0x5a; BULK_CHUNK]);
        let started = Instant::now();
        let mut upload = connection
            .client_stream(bulk_manifest(bytes), taskwire_rpc::CallOptions::default())
            .await
            .expect("upload");
        for _ in 0..bytes / BULK_CHUNK {
            upload
                .send(ImageUpload {
                    part: Some(Part::Chunk(chunk.clone())),
                })
                .await
                .expect("chunk");
        }
        let answer = upload.finish().await.expect("answer");
        assert_eq!(answer.image.map(|i| i.size_bytes), Some(bytes as u64));
        bytes as f64 / started.elapsed().as_secs_f64() / 1e6
    });
    server_runtime.block_on(server.shutdown());
    rate
}

/// Goodput of one `bytes`-long upload on one stream, in MB/s: taskwire over TCP+TLS.
pub fn tcp_bulk(bytes: usize) -> f64 {
    let (server_tls, client_tls) = tls();
    let server_runtime = runtime("server", 1);
    let server = server_runtime.block_on(tcp_server(server_tls, bulk_router(), tcp_load_limits()));
    let addr = server.local_addr();
    let rate = runtime("client", 1).block_on(async move {
        let connection = tcp_connect(addr, client_tls).await;
        let chunk = Bytes::from(vec![0x5a; BULK_CHUNK]);
        let started = Instant::now();
        let mut upload = connection
            .client_stream(bulk_manifest(bytes), taskwire_rpc::CallOptions::default())
            .await
            .expect("upload");
        for _ in 0..bytes / BULK_CHUNK {
            upload
                .send(ImageUpload {
                    part: Some(Part::Chunk(chunk.clone())),
                })
                .await
                .expect("chunk");
        }
        let answer = upload.finish().await.expect("answer");
        assert_eq!(answer.image.map(|i| i.size_bytes), Some(bytes as u64));
        bytes as f64 / started.elapsed().as_secs_f64() / 1e6
    });
    server_runtime.block_on(server.shutdown());
    rate
}

/// Times of `n` fresh connections, each with its handshake and first call: taskwire over
/// QUIC (a new connection from the client's endpoint, a full TLS 1.3 handshake, the Hello
/// and one unary call). The client's UDP endpoint is made once, as an application makes
/// it once; TCP peers make a socket per connection because TCP has no other way.
pub fn quic_fresh(n: usize) -> Vec<Duration> {
    quic_connections(false, |client| async move {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            // The first call goes out right behind the Hello: the quickest first answer.
            let (connection, _negotiation) = client.connect_pipelined().await.expect("connect");
            connection.call(request(256)).await.expect("first call");
            times.push(started.elapsed());
            connection.close();
        }
        client.close().await;
        times
    })
}

/// Times of `n` resumed connections with their first call: taskwire over QUIC, the
/// session resumed from the previous connection's ticket and the Hello and a replay-safe
/// read sent as early data (0-RTT). Panics unless the server accepted every one's early
/// data, so the figure is what it says.
pub fn quic_resumed(n: usize) -> Vec<Duration> {
    quic_connections(true, |client| async move {
        // A worker's first start: the full handshake that gets the first ticket.
        let first = client.connect().await.expect("connect");
        first.ping().await.expect("ping");
        first.close();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let (connection, negotiation) = client.connect_pipelined().await.expect("connect");
            connection
                .call(read_request(256))
                .await
                .expect("first call");
            times.push(started.elapsed());
            negotiation.await.expect("negotiated");
            assert_eq!(connection.early_data(), EarlyData::Accepted);
            // After the handshake and one more round trip the next ticket is in.
            connection.ping().await.expect("ping");
            connection.close();
        }
        client.close().await;
        times
    })
}

/// Runs `connect` (which times connections and closes the client) on the client runtime,
/// against a QUIC server answering the unary scenarios; the client resumes sessions only
/// if `resume`.
fn quic_connections<F, Fut>(resume: bool, connect: F) -> Vec<Duration>
where
    F: FnOnce(QuicClient) -> Fut,
    Fut: Future<Output = Vec<Duration>>,
{
    let (server_tls, client_tls) = tls();
    let client_tls = if resume {
        client_tls
    } else {
        without_resumption(&client_tls)
    };
    let server_runtime = runtime("server", 1);
    let server = server_runtime
        .block_on(async { quic_server(server_tls, unary_router(1024), quic_load_limits()) });
    let addr = server.local_addr();
    let times = runtime("client", 1).block_on(async move {
        // The client's endpoint binds inside the runtime it runs on.
        connect(quic_client(addr, client_tls)).await
    });
    server_runtime.block_on(server.shutdown());
    times
}

/// Times of `n` fresh connections with their first call: taskwire over TCP+TLS, a full
/// handshake each.
pub fn tcp_fresh(n: usize) -> Vec<Duration> {
    tcp_connections(n, false)
}

/// Times of `n` connections with their first call: taskwire over TCP+TLS, each resuming
/// the TLS session of an earlier one (TCP has no early data: the Hello follows the
/// shortened handshake).
pub fn tcp_resumed(n: usize) -> Vec<Duration> {
    tcp_connections(n, true)
}

fn tcp_connections(n: usize, resume: bool) -> Vec<Duration> {
    let (server_tls, client_tls) = tls();
    let server_runtime = runtime("server", 1);
    let server = server_runtime.block_on(tcp_server(
        server_tls,
        unary_router(1024),
        tcp_load_limits(),
    ));
    let addr = server.local_addr();
    let client_tls = if resume {
        client_tls
    } else {
        without_resumption(&client_tls)
    };
    let times = runtime("client", 1).block_on(async move {
        if resume {
            // The first connection's full handshake, for the session to resume.
            let first = tcp_connect(addr, Arc::clone(&client_tls)).await;
            first.call(request(256)).await.expect("first call");
        }
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let connection = tcp_connect(addr, Arc::clone(&client_tls)).await;
            connection.call(request(256)).await.expect("first call");
            times.push(started.elapsed());
        }
        times
    });
    server_runtime.block_on(server.shutdown());
    times
}
