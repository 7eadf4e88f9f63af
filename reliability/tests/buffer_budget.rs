//! One tenant holding the server's memory through queued request frames, over QUIC and
//! TCP with mutual TLS: its uploads go to a handler that does not read them yet, from as
//! many connections as it likes. The router's buffer budget keeps what is queued for the
//! tenant within its share, refuses the rest with RESOURCE_EXHAUSTED, and another
//! tenant's upload goes through meanwhile.
//!
//! Before the budget, each call queued up to 16 frames whatever their size (16 × 16 MiB
//! at the default frame limit), on every connection and call the tenant opened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_proto::environment::v1::{ImageUpload, RegisterImageResponse};
use taskwire_rpc::{
    CallError, CallOptions, RequestStream, Router, Status, StatusCode, TenantBudget,
};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder,
};
use tokio::sync::watch;

const CHUNK: usize = 64 * 1024;
/// Per upload: 3 MiB, more than the flooding tenant's whole share.
const CHUNKS: usize = 48;
const FLOOD_CALLS: usize = 8;
const SHARE: u64 = 2 * 1024 * 1024;
const TOTAL: u64 = 6 * 1024 * 1024;

enum Transport {
    Quic,
    Tcp,
}

enum Conn {
    Quic(taskwire_quic::Connection),
    Tcp(taskwire_tcp::TcpConnection),
}

fn manifest() -> ImageUpload {
    ImageUpload {
        part: Some(Part::Manifest(ImageManifest {
            name: "image".into(),
            size_bytes: (CHUNKS * CHUNK) as u64,
            ..Default::default()
        })),
    }
}

fn chunk() -> ImageUpload {
    ImageUpload {
        part: Some(Part::Chunk(vec![7u8; CHUNK].into())),
    }
}

impl Conn {
    /// Uploads `CHUNKS` chunks, sending each as soon as the transport takes it.
    async fn upload(&self) -> Result<RegisterImageResponse, CallError> {
        match self {
            Conn::Quic(connection) => {
                let mut stream = connection
                    .client_stream(manifest(), CallOptions::new())
                    .await?;
                for _ in 0..CHUNKS {
                    if stream.send(chunk()).await.is_err() {
                        break; // answered early: finish reads why
                    }
                }
                stream.finish().await
            }
            Conn::Tcp(connection) => {
                let mut stream = connection
                    .client_stream(manifest(), CallOptions::new())
                    .await?;
                for _ in 0..CHUNKS {
                    if stream.send(chunk()).await.is_err() {
                        break;
                    }
                }
                stream.finish().await
            }
        }
    }
}

/// An upload handler that reads the flooding tenant's chunks only once `open` turns true,
/// and everyone else's at once.
fn router(open: watch::Receiver<bool>, budget: Arc<TenantBudget>) -> Router {
    let mut router = Router::new();
    router.buffer_budget(budget);
    router.client_streaming(move |ctx, mut parts: RequestStream<ImageUpload>| {
        let mut open = open.clone();
        async move {
            parts.message().await?;
            if ctx.peer.tenant() == Some("flood") {
                let _ = open.wait_for(|open| *open).await;
            }
            let mut received = 0;
            while let Some(part) = parts.message().await? {
                if let Some(Part::Chunk(chunk)) = part.part {
                    received += chunk.len();
                }
            }
            if received != CHUNKS * CHUNK {
                return Err(Status::invalid_argument(format!("got {received} bytes")));
            }
            Ok(RegisterImageResponse::default())
        }
    });
    router
}

struct Pki {
    ca: CertificateAuthority,
}

impl Pki {
    fn server_tls(&self, alpn: bool) -> Arc<rustls::ServerConfig> {
        let cert = self
            .ca
            .issue_server(
                &ServerCertParams::new(["localhost"]).ip_addresses(["127.0.0.1".parse().unwrap()]),
            )
            .unwrap();
        let mut builder = ServerConfigBuilder::new(cert.credentials().unwrap());
        builder = builder.client_auth(ClientAuth::Required(self.ca.ca_bundle().unwrap()));
        if alpn {
            builder = builder
                .alpn_protocols([taskwire_quic::ALPN])
                .tls13_only(true);
        }
        Arc::new(builder.build().unwrap())
    }

    fn client_tls(&self, tenant: &str, alpn: bool) -> Arc<rustls::ClientConfig> {
        let me = self
            .ca
            .issue_client(&ClientCertParams::new(tenant, "w1"))
            .unwrap();
        let mut builder = ClientConfigBuilder::new(self.ca.ca_bundle().unwrap())
            .client_credentials(me.credentials().unwrap());
        if alpn {
            builder = builder
                .alpn_protocols([taskwire_quic::ALPN])
                .tls13_only(true);
        }
        Arc::new(builder.build().unwrap())
    }

    async fn connect(&self, transport: &Transport, addr: SocketAddr, tenant: &str) -> Conn {
        match transport {
            Transport::Quic => {
                let config = taskwire_quic::ClientConfig::new(
                    addr,
                    "localhost",
                    self.client_tls(tenant, true),
                );
                let client = taskwire_quic::QuicClient::new(config).unwrap();
                Conn::Quic(client.connect().await.unwrap())
            }
            Transport::Tcp => {
                let config = taskwire_tcp::TcpClientConfig::new(
                    addr,
                    "localhost",
                    self.client_tls(tenant, false),
                );
                Conn::Tcp(
                    taskwire_tcp::TcpClient::new(config)
                        .connect()
                        .await
                        .unwrap(),
                )
            }
        }
    }
}

async fn one_tenant_cannot_queue_past_its_share(transport: Transport) {
    let pki = Pki {
        ca: CertificateAuthority::generate(&CaParams::new("buffer budget CA")).unwrap(),
    };
    let budget = TenantBudget::new("buffered", TOTAL, SHARE);
    let (open, opened) = watch::channel(false);
    let router = router(opened, Arc::clone(&budget));
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    enum Server {
        Quic(taskwire_quic::ServerHandle),
        Tcp(taskwire_tcp::TcpServerHandle),
    }
    let (server, addr) = match transport {
        Transport::Quic => {
            let config = taskwire_quic::ServerConfig::new(loopback, pki.server_tls(true));
            let server = taskwire_quic::QuicServer::new(config)
                .unwrap()
                .serve(router);
            let addr = server.local_addr();
            (Server::Quic(server), addr)
        }
        Transport::Tcp => {
            let config = taskwire_tcp::TcpServerConfig::new(loopback, pki.server_tls(false));
            let server = taskwire_tcp::TcpServer::bind(config)
                .await
                .unwrap()
                .serve(router);
            let addr = server.local_addr();
            (Server::Tcp(server), addr)
        }
    };

    // The most the flooding tenant ever had queued, sampled while it floods.
    let most_queued = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (budget, most_queued) = (Arc::clone(&budget), Arc::clone(&most_queued));
        tokio::spawn(async move {
            loop {
                most_queued.fetch_max(budget.held_by("flood"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..FLOOD_CALLS {
        let connection = pki.connect(&transport, addr, "flood").await;
        flood.spawn(async move { connection.upload().await });
    }
    // Until the flood has queued what it can: its share, give or take a chunk.
    tokio::time::timeout(Duration::from_secs(20), async {
        while budget.held_by("flood") + CHUNK as u64 <= SHARE {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the flood queues up to its share");

    // Another tenant is served while the flood holds its share.
    let other = pki.connect(&transport, addr, "other").await;
    let answer = tokio::time::timeout(Duration::from_secs(20), other.upload()).await;
    assert!(
        matches!(answer, Ok(Ok(_))),
        "the other tenant's upload: {answer:?}"
    );

    open.send(true).unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), flood.join_all())
        .await
        .expect("the flood's calls are answered");
    sampler.abort();
    let mut refused = 0;
    for outcome in &outcomes {
        match outcome {
            Ok(_) => {}
            Err(CallError::Status(status)) if status.code() == StatusCode::ResourceExhausted => {
                assert!(status.message().contains("share of"), "{status}");
                refused += 1;
            }
            Err(other) => panic!("a flood call failed otherwise: {other:?}"),
        }
    }
    let most = most_queued.load(Ordering::Relaxed);
    assert!(
        most <= SHARE,
        "queued {most} bytes for one tenant, past its share of {SHARE}"
    );
    assert!(
        refused > 0,
        "{FLOOD_CALLS} uploads of {} bytes each against a share of {SHARE}: none refused",
        CHUNKS * CHUNK
    );
    assert_eq!(budget.held(), 0, "every queued frame was given back");
    match server {
        Server::Quic(server) => {
            server.shutdown().await;
        }
        Server::Tcp(server) => {
            server.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_one_tenant_cannot_queue_past_its_share_and_another_is_served() {
    one_tenant_cannot_queue_past_its_share(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_one_tenant_cannot_queue_past_its_share_and_another_is_served() {
    one_tenant_cannot_queue_past_its_share(Transport::Tcp).await;
}
