//! Certificates, configurations and a test router shared by the QUIC tests.
#![allow(dead_code, unreachable_pub, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use taskwire_quic::{ClientConfig, Limits, QuicClient, QuicServer, ServerConfig, ServerHandle};
use taskwire_rpc::Router;
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder,
};

/// A CA with a server certificate for localhost/127.0.0.1 and a client certificate for
/// tenant `acme`.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

pub fn pki() -> Pki {
    pki_for("acme", "worker-1")
}

pub fn pki_for(tenant: &str, id: &str) -> Pki {
    let ca = CertificateAuthority::generate(&CaParams::new("taskwire test CA")).unwrap();
    let server_cert = ca
        .issue_server(
            &ServerCertParams::new(["localhost"]).ip_addresses(["127.0.0.1".parse().unwrap()]),
        )
        .unwrap();
    let client_cert = ca.issue_client(&ClientCertParams::new(tenant, id)).unwrap();
    let server = ServerConfigBuilder::new(server_cert.credentials().unwrap())
        .client_auth(ClientAuth::Optional(ca.ca_bundle().unwrap()))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .unwrap();
    let client = ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .client_credentials(client_cert.credentials().unwrap())
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .unwrap();
    Pki {
        ca,
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn start(pki: &Pki, limits: Limits, router: Router) -> ServerHandle {
    let mut config = ServerConfig::new(localhost(), Arc::clone(&pki.server));
    config.limits = limits;
    QuicServer::new(config).unwrap().serve(router)
}

pub fn client(pki: &Pki, addr: SocketAddr) -> QuicClient {
    QuicClient::new(ClientConfig::new(
        addr,
        "localhost",
        Arc::clone(&pki.client),
    ))
    .unwrap()
}

pub fn client_with(pki: &Pki, addr: SocketAddr, limits: Limits) -> QuicClient {
    let mut config = ClientConfig::new(addr, "localhost", Arc::clone(&pki.client));
    config.limits = limits;
    QuicClient::new(config).unwrap()
}

/// Bounds a test step so a bug shows as a failure, not a hang.
pub async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .expect("test step timed out")
}

/// A bare quinn connection with the client's TLS, for peers that misbehave on purpose.
pub async fn raw_connect(pki: &Pki, addr: SocketAddr) -> quinn::Connection {
    raw_connect_with(pki, addr, quinn::TransportConfig::default()).await
}

/// [`raw_connect`] with the client's own transport settings.
pub async fn raw_connect_with(
    pki: &Pki,
    addr: SocketAddr,
    transport: quinn::TransportConfig,
) -> quinn::Connection {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&pki.client)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    within(10, endpoint.connect(addr, "localhost").unwrap())
        .await
        .unwrap()
}

/// The application close code a connection ended with, waiting for it.
pub async fn close_code(connection: &quinn::Connection) -> u64 {
    match within(30, connection.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("the connection ended without an application close: {other}"),
    }
}

/// The binary frame of `message`.
pub fn frame_bytes<M: taskwire_proto::WireMessage>(message: M) -> Vec<u8> {
    use taskwire_codec::tokio_util::codec::Encoder as _;
    let mut out = bytes::BytesMut::new();
    taskwire_codec::Builder::new()
        .first_frame_done(true)
        .new_binary_codec()
        .encode(taskwire_codec::Frame::new(message), &mut out)
        .unwrap();
    out.to_vec()
}

/// A bare quinn server endpoint with the test PKI, for tests that play the server by hand.
pub fn raw_server(pki: &Pki, transport: quinn::TransportConfig) -> quinn::Endpoint {
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(Arc::clone(&pki.server)).unwrap();
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    quinn::Endpoint::server(config, localhost()).unwrap()
}

/// Reads one binary frame off a raw stream: its header, then its body.
pub async fn read_raw_frame(recv: &mut quinn::RecvStream) -> (u16, Vec<u8>) {
    let mut head = [0u8; taskwire_codec::HEADER_LEN];
    recv.read_exact(&mut head).await.unwrap();
    let header = taskwire_codec::FrameHeader::parse(&head).unwrap();
    let mut body = vec![0; header.body_len as usize];
    recv.read_exact(&mut body).await.unwrap();
    (header.type_id, body)
}

/// Opens a raw connection's control stream and writes the default Hello on it, without
/// waiting for the answer.
pub async fn send_hello(connection: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = connection.open_bi().await.unwrap();
    let hello = taskwire_rpc::session::ClientSession::default()
        .hello(taskwire_proto::session::v1::Codec::Protobuf);
    send.write_all(&frame_bytes(hello)).await.unwrap();
    (send, recv)
}
