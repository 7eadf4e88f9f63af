//! The RPC comparison: taskwire over QUIC and over TCP+TLS, tonic gRPC over TLS, and raw
//! quinn (one stream per call, no framing: the floor), measured in one run on the same
//! machine, with the same certificate, crypto provider, payloads and runtime shape. At
//! concurrency 1 the machine's own round trip runs too, the same payloads over plain UDP
//! and TCP sockets (`udp-floor`, `tcp-floor`): what every peer pays before its own work.
//!
//! ```text
//! cargo bench -p taskwire-benches --bench rpc -- [--duration SECONDS] [--runs N] [--json]
//!     [--only unary|bulk|fresh|idle] [--peers PEER,...] [--shapes CxN,...]
//!     [--idle-connections N]
//! ```
//!
//! Each peer's server and client run in this process on separate single-threaded tokio
//! runtimes (threads named `server` and `client`), so they compete for the two cores as
//! two processes would, and CPU per call is read per side from `/proc`. The idle
//! connections scenario is the exception: there each server runs alone in a child
//! process, so that its resident memory can be read. Run by
//! `cargo test --benches`, it does a short smoke pass instead and asserts no timing.
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use taskwire_benches::load::{self, BULK_CHUNK, Certs, Report, Scenario, runtime};
use taskwire_benches::{Summary, load_table, summarize};
use taskwire_proto::environment::v1::image_upload::Part;
use taskwire_proto::environment::v1::{ImageInfo, ImageUpload, RegisterImageResponse};
use taskwire_proto::instance::v1::{CheckpointRequest, CheckpointResponse, CheckpointSummary};
use taskwire_quic::Limits;
use taskwire_tcp::TcpLimits;

/// A unary echo of the load request, and a client-streaming upload, as a gRPC service
/// written the way tonic's code generator writes one.
mod grpc {
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use tonic::codegen::{BoxFuture, Service, StdError, http};
    use tonic::server::{ClientStreamingService, Grpc, NamedService, UnaryService};
    use tonic::{Request, Response, Status, Streaming};
    use tonic_prost::ProstCodec;

    use super::*;

    pub(crate) const UNARY: &str = "/bench.Echo/Unary";
    pub(crate) const UPLOAD: &str = "/bench.Echo/Upload";

    #[derive(Clone, Debug)]
    pub(crate) struct Echo {
        pub(crate) response_bytes: usize,
    }

    impl NamedService for Echo {
        const NAME: &'static str = "bench.Echo";
    }

    struct UnarySvc(usize);
    impl UnaryService<CheckpointRequest> for UnarySvc {
        type Response = CheckpointResponse;
        type Future = BoxFuture<Response<CheckpointResponse>, Status>;
        fn call(&mut self, request: Request<CheckpointRequest>) -> Self::Future {
            let padding = "x".repeat(self.0.saturating_sub(16));
            Box::pin(async move {
                Ok(Response::new(CheckpointResponse {
                    duplicate: false,
                    checkpoint: Some(CheckpointSummary {
                        instance_id: padding,
                        sequence: request.into_inner().sequence,
                        ..Default::default()
                    }),
                    pending_signals: 0,
                }))
            })
        }
    }

    struct UploadSvc;
    impl ClientStreamingService<ImageUpload> for UploadSvc {
        type Response = RegisterImageResponse;
        type Future = BoxFuture<Response<RegisterImageResponse>, Status>;
        fn call(&mut self, request: Request<Streaming<ImageUpload>>) -> Self::Future {
            Box::pin(async move {
                let mut stream = request.into_inner();
                let mut received = 0u64;
                while let Some(upload) = stream.message().await? {
                    if let Some(Part::Chunk(chunk)) = upload.part {
                        received += chunk.len() as u64;
                    }
                }
                Ok(Response::new(RegisterImageResponse {
                    image: Some(ImageInfo {
                        size_bytes: received,
                        ..Default::default()
                    }),
                    already_registered: false,
                }))
            })
        }
    }

    impl<B> Service<http::Request<B>> for Echo
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            let response_bytes = self.response_bytes;
            match request.uri().path() {
                UNARY => Box::pin(async move {
                    let mut grpc =
                        Grpc::new(ProstCodec::<CheckpointResponse, CheckpointRequest>::default());
                    Ok(grpc.unary(UnarySvc(response_bytes), request).await)
                }),
                UPLOAD => Box::pin(async move {
                    let mut grpc =
                        Grpc::new(ProstCodec::<RegisterImageResponse, ImageUpload>::default());
                    Ok(grpc.client_streaming(UploadSvc, request).await)
                }),
                _ => {
                    Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) })
                }
            }
        }
    }
}

mod tonic_peer {
    use tonic::transport::{
        Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig,
    };

    use super::*;

    pub(crate) struct Running {
        pub(crate) runtime: tokio::runtime::Runtime,
        pub(crate) addr: std::net::SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
    }

    pub(crate) fn serve(certs: &Certs, response_bytes: usize) -> Running {
        let runtime = runtime("server", 1);
        let identity = Identity::from_pem(&certs.server_cert_pem, &certs.server_key_pem);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let server = Server::builder()
                .tls_config(ServerTlsConfig::new().identity(identity))
                .expect("tonic TLS")
                .add_service(grpc::Echo { response_bytes })
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                });
            tokio::spawn(server);
            addr
        });
        Running {
            runtime,
            addr,
            stop,
        }
    }

    impl Running {
        pub(crate) fn stop(self) {
            let _ = self.stop.send(());
            drop(self.runtime);
        }
    }

    pub(crate) async fn channel(certs: &Certs, addr: std::net::SocketAddr) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&certs.ca_pem))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{addr}"))
            .expect("uri")
            .tls_config(tls)
            .expect("tonic TLS")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("tonic connect")
    }

    pub(crate) async fn unary(channel: Channel, request: CheckpointRequest) -> Result<(), String> {
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.map_err(|e| e.to_string())?;
        client
            .unary::<_, CheckpointResponse, _>(
                tonic::Request::new(request),
                grpc::UNARY.parse().expect("path"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn load(scenario: Scenario) -> Report {
        let certs = load::certs();
        let server = serve(&certs, scenario.response_bytes);
        let addr = server.addr;
        let report = runtime("client", 1).block_on(async move {
            let mut channels = Vec::new();
            for _ in 0..scenario.connections {
                channels.push(channel(&certs, addr).await);
            }
            let request = load::request(scenario.request_bytes);
            load::drive(scenario, "tonic", move |i| {
                unary(channels[i % channels.len()].clone(), request.clone())
            })
            .await
        });
        server.stop();
        report
    }

    pub(crate) fn bulk(bytes: usize) -> f64 {
        let certs = load::certs();
        let server = serve(&certs, 0);
        let addr = server.addr;
        let rate = runtime("client", 1).block_on(async move {
            let channel = channel(&certs, addr).await;
            let mut client = tonic::client::Grpc::new(channel);
            client.ready().await.expect("ready");
            let chunk = Bytes::from(vec![0x5a; BULK_CHUNK]);
            let started = Instant::now();
            let items = (0..bytes / BULK_CHUNK).map(move |_| ImageUpload {
                part: Some(Part::Chunk(chunk.clone())),
            });
            let answer = client
                .client_streaming::<_, ImageUpload, RegisterImageResponse, _>(
                    tonic::Request::new(tokio_stream::iter(items)),
                    grpc::UPLOAD.parse().expect("path"),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .expect("upload");
            assert_eq!(
                answer.into_inner().image.map(|i| i.size_bytes),
                Some(bytes as u64)
            );
            bytes as f64 / started.elapsed().as_secs_f64() / 1e6
        });
        server.stop();
        rate
    }

    /// Makes TCP+TLS connections with one rustls configuration, so that its session
    /// cache resumes: what a tonic user gets by handing tonic their own connector
    /// (tonic's own TLS builds a configuration, and so a session cache, per channel).
    #[derive(Clone)]
    struct ResumingConnector {
        addr: std::net::SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    }

    type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    impl tower_service::Service<http::Uri> for ResumingConnector {
        type Response = hyper_util::rt::TokioIo<TlsStream>;
        type Error = std::io::Error;
        type Future =
            std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Uri) -> Self::Future {
            let (addr, tls) = (self.addr, Arc::clone(&self.tls));
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await?;
                Ok(hyper_util::rt::TokioIo::new(stream))
            })
        }
    }

    /// Times of `n` connections with their first call, each resuming the TLS session of
    /// an earlier one.
    pub(crate) fn resumed(n: usize) -> Vec<Duration> {
        let certs = load::certs();
        let server = serve(&certs, 1024);
        let connector = ResumingConnector {
            addr: server.addr,
            tls: Arc::new(
                taskwire_tls::ClientConfigBuilder::new(
                    taskwire_tls::CaBundle::from_pem(certs.ca_pem.as_bytes()).expect("CA"),
                )
                .alpn_protocols(["h2"])
                .build()
                .expect("client TLS"),
            ),
        };
        let uri = format!("http://{}", server.addr);
        let connect = || async {
            Channel::from_shared(uri.clone())
                .expect("uri")
                .connect_with_connector(connector.clone())
                .await
                .expect("tonic connect")
        };
        let times = runtime("client", 1).block_on(async {
            // The first connection's full handshake, for the session to resume.
            unary(connect().await, load::request(256))
                .await
                .expect("first call");
            first_calls(n, connect).await
        });
        server.stop();
        times
    }

    pub(crate) fn fresh(n: usize) -> Vec<Duration> {
        let certs = load::certs();
        let server = serve(&certs, 1024);
        let addr = server.addr;
        let times = runtime("client", 1).block_on(first_calls(n, || channel(&certs, addr)));
        server.stop();
        times
    }

    /// Times of `n` channels from `connect`, each with its first call.
    async fn first_calls<F, Fut>(n: usize, connect: F) -> Vec<Duration>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Channel>,
    {
        let mut times = Vec::new();
        for _ in 0..n {
            let started = Instant::now();
            let channel = connect().await;
            unary(channel, load::request(256))
                .await
                .expect("first call");
            times.push(started.elapsed());
        }
        times
    }
}

/// Raw quinn: one bidirectional stream per call, the request bytes then FIN, the response
/// bytes then FIN; no framing, no handshake message, no call header.
mod quinn_peer {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

    use super::*;

    pub(crate) struct Running {
        pub(crate) runtime: tokio::runtime::Runtime,
        pub(crate) endpoint: quinn::Endpoint,
    }

    /// A raw quinn server with taskwire's QUIC transport parameters for `limits`, so that
    /// the two differ only in what taskwire adds.
    pub(crate) fn serve(certs: &Certs, response_bytes: usize, limits: &Limits) -> Running {
        let runtime = runtime("server", 1);
        let endpoint = runtime.block_on(async {
            // Early data allowed, as quinn's own `ServerConfig::with_single_cert` does.
            let mut tls = (*certs.server).clone();
            tls.max_early_data_size = u32::MAX;
            let crypto = QuicServerConfig::try_from(Arc::new(tls)).expect("QUIC TLS");
            let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            config.transport_config(limits.transport_config());
            let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr"))
                .expect("bind");
            let accepting = endpoint.clone();
            tokio::spawn(async move {
                while let Some(incoming) = accepting.accept().await {
                    tokio::spawn(async move {
                        let Ok(connection) = incoming.await else {
                            return;
                        };
                        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                            tokio::spawn(async move {
                                // Counted as it arrives, not buffered: the answer
                                // needs only the length.
                                let mut received = 0u64;
                                loop {
                                    match recv.read_chunk(usize::MAX, true).await {
                                        Ok(Some(chunk)) => received += chunk.bytes.len() as u64,
                                        Ok(None) => break,
                                        Err(_) => return,
                                    }
                                }
                                let answer = if response_bytes == 0 {
                                    received.to_be_bytes().to_vec()
                                } else {
                                    vec![0x78; response_bytes]
                                };
                                // quinn keeps the buffer instead of copying it, as
                                // taskwire's writes do.
                                let _ = send.write_chunk(Bytes::from(answer)).await;
                                let _ = send.finish();
                                let _ = send.stopped().await;
                            });
                        }
                    });
                }
            });
            endpoint
        });
        Running { runtime, endpoint }
    }

    /// A client endpoint with the benchmark's TLS and transport settings.
    pub(crate) fn client_endpoint(certs: &Certs) -> quinn::Endpoint {
        client_endpoint_with(Arc::clone(&certs.client))
    }

    fn client_endpoint_with(tls: Arc<rustls::ClientConfig>) -> quinn::Endpoint {
        let crypto = QuicClientConfig::try_from(tls).expect("QUIC TLS");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(load::quic_load_limits().client_transport_config());
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
        endpoint.set_default_client_config(config);
        endpoint
    }

    pub(crate) async fn connect(
        certs: &Certs,
        addr: std::net::SocketAddr,
    ) -> (quinn::Endpoint, quinn::Connection) {
        let endpoint = client_endpoint(certs);
        let connection = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        (endpoint, connection)
    }

    pub(crate) async fn unary(connection: quinn::Connection, request: Bytes) -> Result<(), String> {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_chunk(request).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(1 << 20)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn load(scenario: Scenario) -> Report {
        let certs = load::certs();
        let server = serve(&certs, scenario.response_bytes, &load::quic_load_limits());
        let addr = server.endpoint.local_addr().expect("addr");
        let report = runtime("client", 1).block_on(async move {
            let mut connections = Vec::new();
            for _ in 0..scenario.connections {
                connections.push(connect(&certs, addr).await);
            }
            let request = Bytes::from(vec![0x5a; scenario.request_bytes]);
            load::drive(scenario, "quinn-raw", move |i| {
                unary(
                    connections[i % connections.len()].1.clone(),
                    request.clone(),
                )
            })
            .await
        });
        server.endpoint.close(0u32.into(), b"done");
        drop(server.runtime);
        report
    }

    pub(crate) fn bulk(bytes: usize) -> f64 {
        let certs = load::certs();
        let server = serve(&certs, 0, &load::quic_load_limits());
        let addr = server.endpoint.local_addr().expect("addr");
        let rate = runtime("client", 1).block_on(async move {
            let (_endpoint, connection) = connect(&certs, addr).await;
            let chunk = Bytes::from(vec![0x5a; BULK_CHUNK]);
            let started = Instant::now();
            let (mut send, mut recv) = connection.open_bi().await.expect("stream");
            for _ in 0..bytes / BULK_CHUNK {
                send.write_chunk(chunk.clone()).await.expect("write");
            }
            send.finish().expect("finish");
            let answer = recv.read_to_end(64).await.expect("answer");
            assert_eq!(answer, (bytes as u64).to_be_bytes());
            bytes as f64 / started.elapsed().as_secs_f64() / 1e6
        });
        server.endpoint.close(0u32.into(), b"done");
        drop(server.runtime);
        rate
    }

    pub(crate) fn fresh(n: usize) -> Vec<Duration> {
        connection_times(|certs, addr| async move {
            // One client endpoint, as for taskwire: a fresh connection, not a fresh socket.
            let endpoint = client_endpoint_with(load::without_resumption(&certs.client));
            let mut times = Vec::new();
            for _ in 0..n {
                let started = Instant::now();
                let connection = endpoint
                    .connect(addr, "localhost")
                    .expect("connect")
                    .await
                    .expect("handshake");
                unary(connection.clone(), Bytes::from(vec![0x5a; 256]))
                    .await
                    .expect("first call");
                times.push(started.elapsed());
                connection.close(0u32.into(), b"done");
            }
            endpoint.wait_idle().await;
            times
        })
    }

    /// Times of `n` resumed connections with their first call sent as early data (0-RTT):
    /// the floor under taskwire's resumed connections.
    pub(crate) fn resumed(n: usize) -> Vec<Duration> {
        connection_times(|certs, addr| async move {
            let mut tls = (*certs.client).clone();
            tls.enable_early_data = true;
            let endpoint = client_endpoint_with(Arc::new(tls));
            let request = || Bytes::from(vec![0x5a; 256]);
            let first = endpoint
                .connect(addr, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            unary(first.clone(), request()).await.expect("first call");
            unary(first.clone(), request())
                .await
                .expect("the ticket's round trip");
            first.close(0u32.into(), b"done");
            let mut times = Vec::new();
            for _ in 0..n {
                let started = Instant::now();
                let (connection, accepted) = endpoint
                    .connect(addr, "localhost")
                    .expect("connect")
                    .into_0rtt()
                    .unwrap_or_else(|_| panic!("no ticket to resume with"));
                unary(connection.clone(), request())
                    .await
                    .expect("first call");
                times.push(started.elapsed());
                assert!(accepted.await, "early data rejected");
                unary(connection.clone(), request())
                    .await
                    .expect("the ticket's round trip");
                connection.close(0u32.into(), b"done");
            }
            endpoint.wait_idle().await;
            times
        })
    }

    /// Runs `connect` on a client runtime against a raw quinn server answering 1 KiB,
    /// then stops the server.
    fn connection_times<F, Fut>(connect: F) -> Vec<Duration>
    where
        F: FnOnce(Certs, std::net::SocketAddr) -> Fut,
        Fut: Future<Output = Vec<Duration>>,
    {
        let certs = load::certs();
        let server = serve(&certs, 1024, &load::quic_load_limits());
        let addr = server.endpoint.local_addr().expect("addr");
        let times = runtime("client", 1).block_on(connect(certs, addr));
        server.endpoint.close(0u32.into(), b"done");
        drop(server.runtime);
        times
    }
}

/// The machine's own round trip, under every peer's: the same payloads between the same
/// two runtimes over a plain UDP socket pair or a plain TCP connection, with no QUIC, TLS,
/// HTTP/2 or framing. At concurrency 1 every call, a peer's or these, sends one message
/// each way and wakes a sleeping thread on each side; what a peer adds above these is its
/// own work. Measured at concurrency 1 only: one datagram answers one datagram.
mod floor {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;

    /// How long the client waits for an answer before counting the call as failed, so that
    /// a datagram lost on loopback cannot stall the run.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

    /// Each request datagram answered with a `response_bytes` datagram.
    pub(crate) fn udp(scenario: Scenario) -> Report {
        let server_runtime = runtime("server", 1);
        let server =
            server_runtime.block_on(async { UdpSocket::bind("127.0.0.1:0").await.expect("bind") });
        let addr = server.local_addr().expect("addr");
        let response = vec![0x78; scenario.response_bytes];
        server_runtime.spawn(async move {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok((_, from)) = server.recv_from(&mut buffer).await {
                let _ = server.send_to(&response, from).await;
            }
        });
        let report = runtime("client", 1).block_on(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            socket.connect(addr).await.expect("connect");
            let socket = Arc::new(socket);
            let request = Bytes::from(vec![0x5a; scenario.request_bytes]);
            load::drive(scenario, "udp-floor", move |_| {
                let (socket, request) = (Arc::clone(&socket), request.clone());
                async move {
                    socket.send(&request).await.map_err(|e| e.to_string())?;
                    // One byte more than the answer, so that a longer one shows.
                    let mut answer = vec![0; scenario.response_bytes + 1];
                    let len = tokio::time::timeout(ANSWER_TIMEOUT, socket.recv(&mut answer))
                        .await
                        .map_err(|_| "no answer".to_owned())?
                        .map_err(|e| e.to_string())?;
                    if len == scenario.response_bytes {
                        Ok(())
                    } else {
                        Err(format!("an answer of {len} bytes"))
                    }
                }
            })
            .await
        });
        drop(server_runtime);
        report
    }

    /// Each `request_bytes` request answered with `response_bytes`, on one connection with
    /// Nagle's algorithm off, as every TCP peer's.
    pub(crate) fn tcp(scenario: Scenario) -> Report {
        let server_runtime = runtime("server", 1);
        let listener = server_runtime
            .block_on(async { TcpListener::bind("127.0.0.1:0").await.expect("bind") });
        let addr = listener.local_addr().expect("addr");
        let (request_bytes, response_bytes) = (scenario.request_bytes, scenario.response_bytes);
        server_runtime.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let mut request = vec![0; request_bytes];
                    let response = vec![0x78; response_bytes];
                    while stream.read_exact(&mut request).await.is_ok() {
                        if stream.write_all(&response).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let report = runtime("client", 1).block_on(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            // One call at a time: the lock is never contended, it only lends the stream.
            let stream = Arc::new(tokio::sync::Mutex::new(stream));
            let request = Bytes::from(vec![0x5a; request_bytes]);
            load::drive(scenario, "tcp-floor", move |_| {
                let (stream, request) = (Arc::clone(&stream), request.clone());
                async move {
                    let mut stream = stream.lock().await;
                    stream
                        .write_all(&request)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut answer = vec![0; response_bytes];
                    stream
                        .read_exact(&mut answer)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            })
            .await
        });
        drop(server_runtime);
        report
    }
}

/// 1,000 idle connections: each peer's server runs alone in a child process (this bench
/// binary with `--idle-server PEER`), so its resident memory is its own. Every connection
/// makes one unary call, then stays open and idle.
mod idle {
    use std::any::Any;
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::SocketAddr;
    use std::process::{Command, Stdio};

    use super::*;

    /// Resident memory of a process, in bytes, from `/proc` (0 where it is not available).
    fn rss(pid: u32) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// The child's side: reads the certificates as one JSON line `[ca, cert, key]` of PEM
    /// on stdin, serves `peer`'s unary echo, prints `LISTENING ADDR`, and serves until
    /// stdin closes. Every server keeps its defaults, as a server holding many idle
    /// connections would; raw quinn gets taskwire's default transport parameters.
    /// A server's default limits, but every connection from the one loopback address.
    fn idle_limits() -> Limits {
        let mut limits = Limits::default();
        limits
            .max_connections_per_ip(usize::MAX)
            .max_connections(usize::MAX);
        limits
    }

    pub(crate) fn serve(peer: &str) {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("certificates");
        let [ca, cert, key]: [String; 3] =
            serde_json::from_str(&line).expect("certificates as [ca, cert, key]");
        let certs = Certs::from_pem(ca, cert, key);
        // Each arm keeps its server (and the runtime it runs on) alive until stdin closes.
        let (addr, _server): (SocketAddr, Box<dyn Any>) = match peer {
            "taskwire-quic" => {
                let runtime = runtime("server", 1);
                let server = runtime.block_on(async {
                    load::quic_server(
                        Arc::clone(&certs.server),
                        load::unary_router(1024),
                        idle_limits(),
                    )
                });
                (server.local_addr(), Box::new((server, runtime)))
            }
            "taskwire-tcp" => {
                let runtime = runtime("server", 1);
                // The defaults, but every connection from the one loopback address.
                let mut limits = TcpLimits::default();
                limits
                    .max_connections_per_ip(usize::MAX)
                    .max_connections(usize::MAX);
                let server = runtime.block_on(load::tcp_server(
                    Arc::clone(&certs.server),
                    load::unary_router(1024),
                    limits,
                ));
                (server.local_addr(), Box::new((server, runtime)))
            }
            "tonic" => {
                let server = tonic_peer::serve(&certs, 1024);
                (server.addr, Box::new(server))
            }
            _ => {
                let server = quinn_peer::serve(&certs, 1024, &idle_limits());
                (
                    server.endpoint.local_addr().expect("addr"),
                    Box::new(server),
                )
            }
        };
        println!("LISTENING {addr}");
        // Serves until the parent closes stdin.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    }

    /// `n` connections to `peer`'s server at `addr`, each after one unary call, kept open
    /// until the value is dropped.
    async fn open(peer: &str, certs: &Certs, addr: SocketAddr, n: usize) -> Box<dyn Any + Send> {
        match peer {
            "taskwire-quic" => {
                let client = load::quic_client(addr, Arc::clone(&certs.client));
                let mut connections = Vec::with_capacity(n);
                for _ in 0..n {
                    let connection = client.connect().await.expect("connect");
                    connection.call(load::request(256)).await.expect("call");
                    connections.push(connection);
                }
                Box::new((connections, client))
            }
            "taskwire-tcp" => {
                let mut connections = Vec::with_capacity(n);
                for _ in 0..n {
                    let connection = load::tcp_connect(addr, Arc::clone(&certs.client)).await;
                    connection.call(load::request(256)).await.expect("call");
                    connections.push(connection);
                }
                Box::new(connections)
            }
            "tonic" => {
                let mut channels = Vec::with_capacity(n);
                for _ in 0..n {
                    let channel = tonic_peer::channel(certs, addr).await;
                    tonic_peer::unary(channel.clone(), load::request(256))
                        .await
                        .expect("call");
                    channels.push(channel);
                }
                Box::new(channels)
            }
            _ => {
                let endpoint = quinn_peer::client_endpoint(certs);
                let mut connections = Vec::with_capacity(n);
                for _ in 0..n {
                    let connection = endpoint
                        .connect(addr, "localhost")
                        .expect("connect")
                        .await
                        .expect("handshake");
                    quinn_peer::unary(connection.clone(), Bytes::from(vec![0x5a; 256]))
                        .await
                        .expect("call");
                    connections.push(connection);
                }
                Box::new((connections, endpoint))
            }
        }
    }

    /// The growth of `peer`'s server's resident memory per idle connection, in KiB, over
    /// `n` connections. One connection comes and goes first, so that what a server sets
    /// up once, on its first connection, is not counted per connection.
    pub(crate) fn kib_per_connection(peer: &str, n: usize) -> f64 {
        let certs = load::certs();
        let mut child = Command::new(std::env::current_exe().expect("the bench binary"))
            .args(["--idle-server", peer])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server process starts");
        let mut stdin = child.stdin.take().expect("stdin");
        let pems = [&certs.ca_pem, &certs.server_cert_pem, &certs.server_key_pem];
        writeln!(stdin, "{}", serde_json::to_string(&pems).expect("JSON")).expect("certificates");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("LISTENING ADDR");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("expected LISTENING ADDR, got {line:?}"));
        let pid = child.id();
        let peer = peer.to_owned();
        let kib = runtime("client", 1).block_on(async move {
            drop(open(&peer, &certs, addr, 1).await);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = rss(pid);
            let connections = open(&peer, &certs, addr, n).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = rss(pid);
            drop(connections);
            after.saturating_sub(before) as f64 / 1024.0 / n as f64
        });
        drop(stdin);
        let _ = child.wait();
        kib
    }
}

const PEERS: [&str; 4] = ["taskwire-quic", "taskwire-tcp", "tonic", "quinn-raw"];

/// The machine's round trips under the peers' (see [`floor`]), measured at concurrency 1
/// on one connection only.
const FLOORS: [&str; 2] = ["udp-floor", "tcp-floor"];

fn unary(peer: &str, scenario: Scenario) -> Report {
    match peer {
        "taskwire-quic" => load::quic(scenario),
        "taskwire-tcp" => load::tcp(scenario),
        "tonic" => tonic_peer::load(scenario),
        "udp-floor" => floor::udp(scenario),
        "tcp-floor" => floor::tcp(scenario),
        _ => quinn_peer::load(scenario),
    }
}

/// taskwire over QUIC with datagrams as large as loopback carries, as a deployment on
/// loopback or jumbo frames would set (`Limits::max_udp_payload_size`, at its most: 6,500
/// bytes): bulk only.
const QUIC_LARGE_DATAGRAMS: &str = "taskwire-quic-6500";

fn bulk(peer: &str, bytes: usize) -> f64 {
    match peer {
        "taskwire-quic" => load::quic_bulk(bytes),
        QUIC_LARGE_DATAGRAMS => {
            let mut limits = load::quic_load_limits();
            limits.max_udp_payload_size(6_500);
            load::quic_bulk_with(bytes, limits)
        }
        "taskwire-tcp" => load::tcp_bulk(bytes),
        "tonic" => tonic_peer::bulk(bytes),
        _ => quinn_peer::bulk(bytes),
    }
}

fn fresh(peer: &str, n: usize) -> Vec<Duration> {
    match peer {
        "taskwire-quic" => load::quic_fresh(n),
        "taskwire-tcp" => load::tcp_fresh(n),
        "tonic" => tonic_peer::fresh(n),
        _ => quinn_peer::fresh(n),
    }
}

/// A connection that resumes a TLS session, and its first call: over QUIC with that call
/// as early data (0-RTT), over TCP after the shortened handshake.
fn resumed(peer: &str, n: usize) -> Vec<Duration> {
    match peer {
        "taskwire-quic" => load::quic_resumed(n),
        "taskwire-tcp" => load::tcp_resumed(n),
        "tonic" => tonic_peer::resumed(n),
        _ => quinn_peer::resumed(n),
    }
}

fn median(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    [
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    ]
}

#[derive(serde::Serialize)]
struct Output {
    unary: Vec<Summary>,
    bulk_mb_per_s: Vec<(String, [f64; 3])>,
    fresh_connection_ms: Vec<(String, [f64; 3])>,
    resumed_connection_ms: Vec<(String, [f64; 3])>,
    idle_kib_per_connection: Vec<(String, [f64; 3])>,
    ratios: Vec<(String, f64, String)>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, peer] = args.as_slice()
        && flag == "--idle-server"
    {
        idle::serve(peer);
        return;
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke pass.
    let smoke = !args.iter().any(|a| a == "--bench");
    let seconds: f64 = value("--duration")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 0.2 } else { 3.0 });
    let runs: usize = value("--runs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 1 } else { 3 });
    let bulk_sizes: [usize; 2] = if smoke {
        [1 << 20, 4 << 20]
    } else {
        [1 << 20, 64 << 20]
    };
    let fresh_count = if smoke { 3 } else { 30 };
    // `--idle-connections N`: how many idle connections each server holds.
    let idle_count: usize = value("--idle-connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 20 } else { 1_000 });
    let json = args.iter().any(|a| a == "--json");
    // `--only unary|bulk|fresh|idle` runs one family of scenarios.
    let only = value("--only");
    let family = |name: &str| only.as_deref().is_none_or(|o| o == name);

    // `--peers a,b` measures only those peers, and `--shapes CxN,...` only those unary
    // shapes (C calls in flight over N connections): for profiling one of them.
    let chosen = |candidates: &[&'static str]| -> Vec<&'static str> {
        match value("--peers") {
            Some(list) => candidates
                .iter()
                .copied()
                .filter(|peer| list.split(',').any(|p| p == *peer))
                .collect(),
            None => candidates.to_vec(),
        }
    };
    let (peers, floors) = (chosen(&PEERS), chosen(&FLOORS));
    let chosen_shapes: Option<Vec<(usize, usize)>> = value("--shapes").map(|list| {
        list.split(',')
            .filter_map(|shape| {
                let (c, n) = shape.split_once('x')?;
                Some((c.parse().ok()?, n.parse().ok()?))
            })
            .collect()
    });
    let shapes: &[(usize, usize)] = if !family("unary") {
        &[]
    } else if let Some(chosen) = &chosen_shapes {
        chosen
    } else if smoke {
        &[(1, 1), (64, 1)]
    } else {
        &[(1, 1), (64, 1), (256, 1), (64, 8)]
    };
    let mut unary_rows = Vec::new();
    for &(concurrency, connections) in shapes {
        let scenario = Scenario {
            concurrency,
            connections,
            request_bytes: 256,
            response_bytes: 1024,
            duration: Duration::from_secs_f64(seconds),
        };
        let mut measured = peers.clone();
        if (concurrency, connections) == (1, 1) {
            measured.extend(&floors);
        }
        let mut reports: Vec<Vec<Report>> = vec![Vec::new(); measured.len()];
        // Peers alternate run by run, so drift on a shared machine hits all alike.
        for _ in 0..runs {
            for (i, peer) in measured.iter().enumerate() {
                reports[i].push(unary(peer, scenario));
            }
        }
        for peer_reports in &reports {
            unary_rows.push(summarize(peer_reports));
        }
    }
    // Like the unary scenarios, peers alternate run by run, so that drift on a shared
    // machine hits all alike; each figure is then the median of its peer's runs.
    let mut bulk_peers = peers.clone();
    if peers.contains(&"taskwire-quic") {
        bulk_peers.push(QUIC_LARGE_DATAGRAMS);
    }
    // Per peer, then per size of `bulk_sizes`.
    let mut bulk_rates: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; bulk_peers.len()];
    let mut fresh_times: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    let mut resumed_times: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    let mut idle_kib: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for run in 1..=runs {
        if family("bulk") {
            for (i, &peer) in bulk_peers.iter().enumerate() {
                eprintln!("measuring {peer} bulk, run {run} of {runs}");
                for (size, &bytes) in bulk_sizes.iter().enumerate() {
                    bulk_rates[i][size].push(bulk(peer, bytes));
                }
            }
        }
        for (i, &peer) in peers.iter().enumerate() {
            eprintln!("measuring {peer}, run {run} of {runs}");
            if family("fresh") {
                fresh_times[i].extend(
                    fresh(peer, fresh_count)
                        .into_iter()
                        .map(|t| t.as_secs_f64() * 1e3),
                );
                resumed_times[i].extend(
                    resumed(peer, fresh_count)
                        .into_iter()
                        .map(|t| t.as_secs_f64() * 1e3),
                );
            }
            if family("idle") {
                idle_kib[i].push(idle::kib_per_connection(peer, idle_count));
            }
        }
    }
    let medians = |values: Vec<Vec<f64>>| -> Vec<(String, [f64; 3])> {
        peers
            .iter()
            .zip(values)
            .filter(|(_, v)| !v.is_empty())
            .map(|(peer, v)| ((*peer).to_owned(), median(v)))
            .collect()
    };
    // Rows named "PEER N MiB".
    let bulk_rows: Vec<(String, [f64; 3])> = bulk_peers
        .iter()
        .zip(bulk_rates)
        .flat_map(|(peer, by_size)| {
            bulk_sizes
                .iter()
                .zip(by_size)
                .filter(|(_, v)| !v.is_empty())
                .map(move |(bytes, v)| (format!("{peer} {} MiB", bytes >> 20), median(v)))
        })
        .collect();
    let large = format!("{} MiB", bulk_sizes[1] >> 20);
    let bulk_of = |peer: &str| -> f64 {
        bulk_rows
            .iter()
            .find(|(p, _)| *p == format!("{peer} {large}"))
            .map_or(f64::NAN, |(_, v)| v[0])
    };
    let fresh_rows = medians(fresh_times);
    let resumed_rows = medians(resumed_times);
    let idle_rows = medians(idle_kib);

    let row = |peer: &str, c: usize, n: usize| {
        unary_rows
            .iter()
            .find(|r| r.transport == peer && r.concurrency == c && r.connections == n)
    };
    let of = |rows: &Vec<(String, [f64; 3])>, peer: &str| {
        rows.iter()
            .find(|(p, _)| p == peer)
            .map_or(f64::NAN, |(_, v)| v[0])
    };
    let mut ratios = Vec::new();
    // A ratio of a family that did not run (`--only`) is NaN and left out.
    let mut ratio = |name: &str, value: f64, goal: &str| {
        if value.is_finite() {
            ratios.push((name.to_owned(), value, goal.to_owned()));
        }
    };
    if let (Some(ours), Some(tonic), Some(raw)) = (
        row("taskwire-quic", 64, 1),
        row("tonic", 64, 1),
        row("quinn-raw", 64, 1),
    ) {
        ratio(
            "calls/s at c64, one connection: taskwire-quic ÷ tonic",
            ours.calls_per_second[0] / tonic.calls_per_second[0],
            "≥ 2.0",
        );
        ratio(
            "calls/s at c64: taskwire-quic ÷ quinn-raw",
            ours.calls_per_second[0] / raw.calls_per_second[0],
            "≥ 0.85",
        );
    }
    if let Some(tonic) = row("tonic", 1, 1) {
        let p50 = |peer: &str| row(peer, 1, 1).map_or(f64::NAN, |r| r.p50_us[0]);
        ratio(
            "p50 at c1: taskwire-quic ÷ tonic",
            p50("taskwire-quic") / tonic.p50_us[0],
            "≤ 0.7",
        );
        // The floor under taskwire-quic's latency: quinn with no framing at all.
        ratio(
            "p50 at c1: quinn-raw ÷ tonic (the QUIC floor)",
            p50("quinn-raw") / tonic.p50_us[0],
            "—",
        );
        // The same transport as tonic's: TCP and TLS 1.3.
        ratio(
            "p50 at c1: taskwire-tcp ÷ tonic (both over TCP+TLS)",
            p50("taskwire-tcp") / tonic.p50_us[0],
            "≤ 0.7",
        );
        // What every peer pays before its own work: a message each way between two
        // sleeping threads. Above it, each peer's share is its own work.
        ratio(
            "p50 at c1: udp-floor ÷ tonic (the machine's round trip, no QUIC or TLS)",
            p50("udp-floor") / tonic.p50_us[0],
            "—",
        );
        let above = |peer: &str, floor: &str| p50(peer) - p50(floor);
        ratio(
            "p50 at c1 above the round trip: (taskwire-quic − udp-floor) ÷ (tonic − tcp-floor)",
            above("taskwire-quic", "udp-floor") / above("tonic", "tcp-floor"),
            "—",
        );
        ratio(
            "p50 at c1 above the round trip: (quinn-raw − udp-floor) ÷ (tonic − tcp-floor)",
            above("quinn-raw", "udp-floor") / above("tonic", "tcp-floor"),
            "—",
        );
    }
    ratio(
        &format!("bulk {large}: taskwire-quic ÷ tonic"),
        bulk_of("taskwire-quic") / bulk_of("tonic"),
        "≥ 1.0",
    );
    ratio(
        &format!("bulk {large}: taskwire-quic ÷ quinn-raw (quinn's defaults)"),
        bulk_of("taskwire-quic") / bulk_of("quinn-raw"),
        "≥ 1.5",
    );
    ratio(
        &format!("bulk {large}: {QUIC_LARGE_DATAGRAMS} ÷ tonic (loopback datagrams)"),
        bulk_of(QUIC_LARGE_DATAGRAMS) / bulk_of("tonic"),
        "≥ 1.0",
    );
    ratio(
        &format!("bulk {large}: taskwire-tcp ÷ tonic"),
        bulk_of("taskwire-tcp") / bulk_of("tonic"),
        "—",
    );
    ratio(
        "fresh connection + first call: taskwire-quic ÷ tonic",
        of(&fresh_rows, "taskwire-quic") / of(&fresh_rows, "tonic"),
        "≤ 1.0",
    );
    ratio(
        "resumed connection (0-RTT) + first call: taskwire-quic ÷ tonic fresh",
        of(&resumed_rows, "taskwire-quic") / of(&fresh_rows, "tonic"),
        "≤ 0.6",
    );
    ratio(
        "resumed connection + first call: taskwire-quic (0-RTT) ÷ tonic resumed",
        of(&resumed_rows, "taskwire-quic") / of(&resumed_rows, "tonic"),
        "—",
    );
    ratio(
        "idle connection, server KiB: taskwire-quic (absolute)",
        of(&idle_rows, "taskwire-quic"),
        "≤ 64",
    );
    ratio(
        "idle connection, server memory: taskwire-quic ÷ tonic",
        of(&idle_rows, "taskwire-quic") / of(&idle_rows, "tonic"),
        "≤ 1.0",
    );
    ratio(
        "idle connection, server memory: taskwire-quic ÷ quinn-raw",
        of(&idle_rows, "taskwire-quic") / of(&idle_rows, "quinn-raw"),
        "—",
    );

    if json {
        let output = Output {
            unary: unary_rows,
            bulk_mb_per_s: bulk_rows,
            fresh_connection_ms: fresh_rows,
            resumed_connection_ms: resumed_rows,
            idle_kib_per_connection: idle_rows,
            ratios,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&output).expect("serializable")
        );
        return;
    }
    println!(
        "unary calls, 256 B requests and 1 KiB responses, {runs} run(s) of {seconds} s (medians):\n"
    );
    println!("{}", load_table(&unary_rows));
    println!("bulk upload on one stream, 64 KiB chunks (MB/s, median and min–max):\n");
    println!("| peer | MB/s |\n|---|---|");
    for (peer, v) in &bulk_rows {
        println!("| {peer} | {:.0} ({:.0}–{:.0}) |", v[0], v[1], v[2]);
    }
    println!(
        "\nfresh connection plus its first call (ms, median and min–max of {} each):\n",
        runs * fresh_count
    );
    println!("| peer | ms |\n|---|---|");
    for (peer, v) in &fresh_rows {
        println!("| {peer} | {:.2} ({:.2}–{:.2}) |", v[0], v[1], v[2]);
    }
    println!(
        "\nresumed connection (QUIC: 0-RTT) plus its first call (ms, median and min–max of {} each):\n",
        runs * fresh_count
    );
    println!("| peer | ms |\n|---|---|");
    for (peer, v) in &resumed_rows {
        println!("| {peer} | {:.2} ({:.2}–{:.2}) |", v[0], v[1], v[2]);
    }
    println!(
        "\nserver memory per idle connection, {idle_count} connections after one call each (KiB, median and min–max of {runs}):\n"
    );
    println!("| peer | KiB |\n|---|---|");
    for (peer, v) in &idle_rows {
        println!("| {peer} | {:.1} ({:.1}–{:.1}) |", v[0], v[1], v[2]);
    }
    println!("\nratios (same run):\n\n| ratio | measured | goal |\n|---|---|---|");
    for (name, value, goal) in &ratios {
        println!("| {name} | {value:.2} | {goal} |");
    }
}
