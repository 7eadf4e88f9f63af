//! Helpers shared by the integration tests: temporary directories, a TLS server on
//! 127.0.0.1 and a client, all bounded by timeouts.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use taskwire_tls::pki_types::{CertificateDer, ServerName};
use taskwire_tls::rustls::{self, ClientConfig, ServerConfig};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientCertParams, IssuedCert, PeerIdentity, ServerCertParams,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// Every network step of a test finishes within this, or the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A directory under cargo's per-target temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("taskwire-tls-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir(path)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Midnight UTC at the start of the given day.
pub fn date(year: i32, month: u8, day: u8) -> SystemTime {
    let month = time::Month::try_from(month).expect("month");
    let date = time::Date::from_calendar_date(year, month, day).expect("date");
    let secs = date.midnight().assume_utc().unix_timestamp();
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).expect("after 1970"))
}

pub fn new_ca(name: &str) -> CertificateAuthority {
    CertificateAuthority::generate(&CaParams::new(name)).expect("generate CA")
}

pub fn server_cert(ca: &CertificateAuthority, names: &[&str]) -> IssuedCert {
    ca.issue_server(&ServerCertParams::new(names.iter().copied()))
        .expect("issue server certificate")
}

pub fn client_cert(ca: &CertificateAuthority, tenant: &str, id: &str) -> IssuedCert {
    ca.issue_client(&ClientCertParams::new(tenant, id))
        .expect("issue client certificate")
}

/// The rustls error inside an I/O error from tokio-rustls, if any.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Panics unless `result` failed with a rustls error, which it returns.
pub fn expect_tls_error<T>(result: io::Result<T>, what: &str) -> rustls::Error {
    match result {
        Ok(_) => panic!("{what}: expected a TLS error, got success"),
        Err(e) => match tls_error(&e) {
            Some(tls) => tls.clone(),
            None => panic!("{what}: expected a TLS error, got I/O error {e:?}"),
        },
    }
}

async fn with_timeout<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {TIMEOUT:?}"),
    }
}

/// What the one-shot server saw.
#[derive(Debug)]
pub struct Served {
    /// The client's identity, when it presented a certificate.
    pub peer: Option<PeerIdentity>,
    /// The negotiated protocol version and ALPN protocol.
    pub version: Option<rustls::ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
}

/// A server accepting one connection: handshake, then answer one "ping" with "pong".
pub struct OneShot {
    pub addr: SocketAddr,
    handle: JoinHandle<io::Result<Served>>,
}

impl OneShot {
    pub async fn start(config: ServerConfig) -> OneShot {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let handle = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let (_, conn) = tls.get_ref();
            let served = Served {
                peer: PeerIdentity::from_connection(conn)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                version: conn.protocol_version(),
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            };
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(b"pong").await?;
            tls.flush().await?;
            tls.shutdown().await?;
            Ok(served)
        });
        OneShot { addr, handle }
    }

    /// What the server task ended with.
    pub async fn outcome(self) -> io::Result<Served> {
        with_timeout("server", self.handle)
            .await
            .expect("server task panicked")
    }
}

/// Connects and completes the client side of the handshake.
pub async fn connect(
    config: ClientConfig,
    server_name: &str,
    addr: SocketAddr,
) -> io::Result<client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let connector = TlsConnector::from(Arc::new(config));
    with_timeout("client handshake", async {
        let tcp = TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    })
    .await
}

/// Sends "ping" and expects "pong"; errors (for example an alert the server sent after the
/// client finished its side of the handshake) come back as they are.
pub async fn ping<S>(stream: &mut S) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    with_timeout("ping", async {
        stream.write_all(b"ping").await?;
        stream.flush().await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok(())
    })
    .await
}

/// Connects, pings, and returns the server's end-entity certificate.
pub async fn exchange(
    config: ClientConfig,
    server_name: &str,
    addr: SocketAddr,
) -> io::Result<CertificateDer<'static>> {
    let mut stream = connect(config, server_name, addr).await?;
    ping(&mut stream).await?;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server certificate")
        .clone();
    Ok(cert)
}

/// A server accepting connections until dropped; each answers every "ping" with "pong"
/// until the client closes.
pub struct Echo {
    pub addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl Echo {
    pub async fn start(config: ServerConfig) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let handle = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    echo(&mut tls).await;
                });
            }
        });
        Echo { addr, handle }
    }
}

async fn echo(tls: &mut server::TlsStream<TcpStream>) {
    let mut buf = [0u8; 4];
    while tls.read_exact(&mut buf).await.is_ok() {
        if tls.write_all(b"pong").await.is_err() || tls.flush().await.is_err() {
            return;
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
