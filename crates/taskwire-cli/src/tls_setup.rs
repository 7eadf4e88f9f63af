//! The TLS side of `serve` and `call`: certificates from files, or generated in memory
//! for development.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::ResolvesClientCert;

use taskwire_proto::registry::AnyMessage;
use taskwire_quic::{ClientConfig, Connection, QuicClient, ResponseStream};
use taskwire_rpc::{CallError, CallOptions};
use taskwire_tcp::{TcpClient, TcpClientConfig, TcpConnection, TcpResponseStream};
use taskwire_tls::pki_types::CertificateRevocationListDer;
use taskwire_tls::{
    CaBundle, CaParams, CertificateAuthority, ClientAuth, ClientConfigBuilder, ClientVerifier,
    Credentials, ReloadableCertResolver, ServerCertParams, ServerConfigBuilder,
};

use crate::error::CliError;

/// A server address with its transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerAddr {
    /// taskwire over QUIC: `HOST:PORT` or `quic://HOST:PORT`.
    Quic(String),
    /// taskwire over TCP with TLS: `tcp://HOST:PORT`.
    Tcp(String),
}

impl std::str::FromStr for ServerAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<ServerAddr, String> {
        let (make, host_port): (fn(String) -> ServerAddr, &str) =
            if let Some(rest) = text.strip_prefix("tcp://") {
                (ServerAddr::Tcp, rest)
            } else if let Some(rest) = text.strip_prefix("quic://") {
                (ServerAddr::Quic, rest)
            } else if text.contains("://") {
                return Err(format!("{text:?}: the transport is quic:// or tcp://"));
            } else {
                (ServerAddr::Quic, text)
            };
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(make(host_port.to_owned()))
            }
            _ => Err(format!(
                "{text:?} is not HOST:PORT (with quic:// or tcp:// for the transport)"
            )),
        }
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Quic(addr) => write!(f, "quic://{addr}"),
            ServerAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

impl ServerAddr {
    /// The socket address, resolving a host name.
    pub(crate) async fn resolve(&self) -> Result<SocketAddr, CliError> {
        let (ServerAddr::Quic(host_port) | ServerAddr::Tcp(host_port)) = self;
        tokio::net::lookup_host(host_port.as_str())
            .await
            .map_err(|e| CliError::msg(format!("--addr {self}: {e}")))?
            .next()
            .ok_or_else(|| CliError::msg(format!("--addr {self}: no address")))
    }
}

/// How `call` and `bench` reach a server.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ClientArgs {
    /// The server: HOST:PORT or quic://HOST:PORT for QUIC, tcp://HOST:PORT for TCP with
    /// TLS (`taskwire serve --tcp`).
    #[arg(long, default_value = "127.0.0.1:7700", value_name = "ADDR|URL")]
    pub(crate) addr: ServerAddr,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub(crate) server_name: String,
    /// CA certificate (PEM) to verify the server with.
    #[arg(long, conflicts_with = "pin")]
    pub(crate) ca: Option<PathBuf>,
    /// Trust exactly the server key with this SHA-256 SPKI fingerprint (hex), as
    /// `taskwire serve` prints in development mode.
    #[arg(long)]
    pub(crate) pin: Option<String>,
    /// Client certificate (PEM), for servers with mutual TLS.
    #[arg(long, requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// The tenant to claim in the Hello. Proves nothing: servers with mutual TLS take the
    /// tenant from --cert.
    #[arg(long, default_value = "")]
    pub(crate) tenant: String,
}

impl ClientArgs {
    /// Connects and negotiates, over the transport `--addr` names. With --cert, a server
    /// that never asks for the certificate is refused: it does not authenticate clients, so
    /// the identity the user meant to prove would silently not count.
    pub(crate) async fn connect(&self) -> Result<Client, CliError> {
        let addr = self.addr.resolve().await?;
        let failed = |e: CallError| CliError::msg(format!("connecting to {}: {e}", self.addr));
        let (tls, asked) = self.tls_noticing_requests()?;
        let client = match &self.addr {
            ServerAddr::Quic(_) => {
                let client = self.quic_client(addr, tls)?;
                let connection = client.connect().await.map_err(failed)?;
                Client::Quic {
                    client: Arc::new(client),
                    connection,
                }
            }
            ServerAddr::Tcp(_) => {
                let mut config = TcpClientConfig::new(addr, self.server_name.clone(), tls);
                config.session.name = "taskwire-cli".into();
                config.session.tenant = self.tenant.clone();
                let connection = TcpClient::new(config).connect().await.map_err(failed)?;
                Client::Tcp(connection)
            }
        };
        if let Some(asked) = asked
            && !asked.load(Ordering::Relaxed)
        {
            client.close().await;
            return Err(CliError::msg(format!(
                "--cert was given, but {} did not ask for a client certificate: it does not \
                 authenticate clients (a `taskwire serve` without --ca believes the tenant \
                 claimed in the Hello); leave out --cert to talk to it anyway",
                self.addr
            )));
        }
        Ok(client)
    }

    /// The client's TLS configuration: a CA, a pin or the system's roots, and a client
    /// certificate if given.
    pub(crate) fn tls(&self) -> Result<Arc<rustls::ClientConfig>, CliError> {
        Ok(self.tls_noticing_requests()?.0)
    }

    /// [`tls`](Self::tls), and with --cert a flag set once a server asks for the
    /// certificate.
    fn tls_noticing_requests(
        &self,
    ) -> Result<(Arc<rustls::ClientConfig>, Option<Arc<AtomicBool>>), CliError> {
        let mut builder = match (&self.ca, &self.pin) {
            (Some(ca), _) => ClientConfigBuilder::new(
                CaBundle::from_pem_file(ca)
                    .map_err(|e| CliError::msg(format!("--ca {}: {e}", ca.display())))?,
            ),
            (None, Some(pin)) => ClientConfigBuilder::pinned([parse_pin(pin)?]),
            (None, None) => {
                return Err(CliError::msg(
                    "say how to trust the server: --ca CA.pem, or --pin FINGERPRINT from `taskwire serve`",
                ));
            }
        };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let credentials = Credentials::from_pem_files(cert, key)
                .map_err(|e| CliError::msg(format!("--cert {}: {e}", cert.display())))?;
            builder = builder.client_credentials(credentials);
        }
        let mut tls = builder
            .alpn_protocols([taskwire_quic::ALPN])
            .tls13_only(true)
            .build()
            .map_err(|e| CliError::msg(format!("client TLS: {e}")))?;
        let asked = if self.cert.is_some() {
            let asked = Arc::new(AtomicBool::new(false));
            tls.client_auth_cert_resolver = Arc::new(NoticesRequests {
                inner: Arc::clone(&tls.client_auth_cert_resolver),
                asked: Arc::clone(&asked),
            });
            Some(asked)
        } else {
            None
        };
        Ok((Arc::new(tls), asked))
    }

    fn quic_client(
        &self,
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<QuicClient, CliError> {
        let mut config = ClientConfig::new(addr, self.server_name.clone(), tls);
        config.session.name = "taskwire-cli".into();
        config.session.tenant = self.tenant.clone();
        QuicClient::new(config).map_err(|e| CliError::msg(format!("QUIC client: {e}")))
    }
}

/// A client certificate resolver that records whether a server asked for the certificate.
#[derive(Debug)]
struct NoticesRequests {
    inner: Arc<dyn ResolvesClientCert>,
    asked: Arc<AtomicBool>,
}

impl ResolvesClientCert for NoticesRequests {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.inner.resolve(root_hint_subjects, sigschemes)
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// A negotiated connection over either transport.
#[derive(Clone, Debug)]
pub(crate) enum Client {
    /// QUIC.
    Quic {
        /// The endpoint, closed with the connection.
        client: Arc<QuicClient>,
        /// The connection.
        connection: Connection,
    },
    /// TCP with TLS.
    Tcp(TcpConnection),
}

/// The items of a server-streaming call, over either transport.
pub(crate) enum Items {
    Quic(ResponseStream<AnyMessage>),
    Tcp(TcpResponseStream<AnyMessage>),
}

impl Items {
    pub(crate) async fn next(&mut self) -> Result<Option<AnyMessage>, CallError> {
        match self {
            Items::Quic(items) => items.message().await,
            Items::Tcp(items) => items.message().await,
        }
    }
}

impl Client {
    /// A unary call.
    pub(crate) async fn call(
        &self,
        request: AnyMessage,
        options: CallOptions,
    ) -> Result<AnyMessage, CallError> {
        match self {
            Client::Quic { connection, .. } => connection.call_message(request, options).await,
            Client::Tcp(connection) => connection.call_message(request, options).await,
        }
    }

    /// A one-way call.
    pub(crate) async fn send(&self, request: AnyMessage) -> Result<(), CallError> {
        match self {
            Client::Quic { connection, .. } => connection.send_message(request).await,
            Client::Tcp(connection) => connection.send_message(request).await,
        }
    }

    /// A server-streaming call.
    pub(crate) async fn server_stream(
        &self,
        request: AnyMessage,
        options: CallOptions,
    ) -> Result<Items, CallError> {
        Ok(match self {
            Client::Quic { connection, .. } => {
                Items::Quic(connection.server_stream_messages(request, options).await?)
            }
            Client::Tcp(connection) => {
                Items::Tcp(connection.server_stream_messages(request, options).await?)
            }
        })
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {
        if let Client::Quic { client, .. } = self {
            client.close().await;
        }
    }

    /// The transport's name, for reports.
    pub(crate) fn transport(&self) -> &'static str {
        match self {
            Client::Quic { .. } => "taskwire-quic",
            Client::Tcp(_) => "taskwire-tcp",
        }
    }
}

fn parse_pin(pin: &str) -> Result<[u8; 32], CliError> {
    let bytes =
        hex::decode(pin.trim()).map_err(|e| CliError::msg(format!("--pin {pin:?}: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        CliError::msg(format!(
            "--pin is {} bytes; a SHA-256 fingerprint is 32",
            b.len()
        ))
    })
}

/// What a server's TLS setup came to.
pub(crate) struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// True when client certificates are required (a CA was given).
    pub(crate) mutual: bool,
    /// Lines to print about generated certificates, in development mode.
    pub(crate) notes: Vec<String>,
    /// SHA-256 of the server key's SPKI, for `call --pin`.
    pub(crate) pin: [u8; 32],
    /// With certificates from files: the resolver that reloads them.
    pub(crate) reload: Option<Arc<ReloadableCertResolver>>,
    /// With --ca: the verifier that reloads the CA bundle and revocation lists.
    pub(crate) client_verifier: Option<Arc<ClientVerifier>>,
}

/// The client CA bundle and revocation lists, read again on each reload.
pub(crate) fn load_client_trust(
    ca: &Path,
    crls: &[PathBuf],
) -> Result<(CaBundle, Vec<CertificateRevocationListDer<'static>>), CliError> {
    let bundle = CaBundle::from_pem_file(ca)
        .map_err(|e| CliError::msg(format!("--ca {}: {e}", ca.display())))?;
    let mut lists = Vec::new();
    for crl in crls {
        lists.extend(
            taskwire_tls::pem::load_revocation_lists(crl)
                .map_err(|e| CliError::msg(format!("--crl {}: {e}", crl.display())))?,
        );
    }
    Ok((bundle, lists))
}

/// Says at WARN level when the server certificate is expired or not yet valid: clients
/// will refuse every handshake, which otherwise shows only on their side.
fn warn_if_out_of_date(credentials: &Credentials) {
    let Ok(info) = taskwire_tls::inspect(credentials.end_entity()) else {
        return;
    };
    let now = std::time::SystemTime::now();
    if now > info.not_after {
        tracing::warn!(subject = %info.subject, "the server certificate has expired: clients will refuse it");
    } else if now < info.not_before {
        tracing::warn!(subject = %info.subject, "the server certificate is not valid yet: clients will refuse it");
    }
}

/// Certificates for `serve`: from files, or generated in memory when `cert` is absent.
pub(crate) fn server_tls(
    cert: Option<&(PathBuf, PathBuf)>,
    client_ca: Option<&PathBuf>,
    crls: &[PathBuf],
) -> Result<ServerTls, CliError> {
    let mut notes = Vec::new();
    let credentials = match cert {
        Some((cert, key)) => Credentials::from_pem_files(cert, key)
            .map_err(|e| CliError::msg(format!("--cert {}: {e}", cert.display())))?,
        None => {
            let ca = CertificateAuthority::generate(&CaParams::new("taskwire development CA"))
                .map_err(|e| CliError::msg(format!("generating a development CA: {e}")))?;
            let issued = ca
                .issue_server(&ServerCertParams::new(["localhost"]).ip_addresses([
                    "127.0.0.1".parse().expect("a literal address"),
                    "::1".parse().expect("a literal address"),
                ]))
                .map_err(|e| CliError::msg(format!("generating a server certificate: {e}")))?;
            // The CA signs the server certificate and is then dropped: the server sends only
            // its leaf, so clients trust the key pin printed below, not a CA.
            notes.push("development mode: a server certificate generated in memory for localhost, 127.0.0.1 and ::1".into());
            notes.push(
                "  trust it by its key pin: the SHA-256 of its SubjectPublicKeyInfo (DER), in hex"
                    .into(),
            );
            issued
                .credentials()
                .map_err(|e| CliError::msg(format!("server credentials: {e}")))?
        }
    };
    let pin = credentials.spki_sha256();
    if cert.is_some() {
        warn_if_out_of_date(&credentials);
    }
    let client_verifier = match client_ca {
        Some(ca) => {
            let (bundle, lists) = load_client_trust(ca, crls)?;
            Some(
                ClientVerifier::new(
                    bundle,
                    lists,
                    true,
                    taskwire_tls::provider::default_provider(),
                )
                .map_err(|e| CliError::msg(format!("--ca/--crl: {e}")))?,
            )
        }
        None => None,
    };
    let client_auth = match &client_verifier {
        Some(verifier) => ClientAuth::Verifier(Arc::clone(verifier)),
        None => ClientAuth::Disabled,
    };
    let mutual = client_ca.is_some();
    // Certificates from files can be swapped while serving (see `serve` and SIGHUP).
    let reload = match cert {
        Some(_) => Some(Arc::new(
            ReloadableCertResolver::new(&credentials)
                .map_err(|e| CliError::msg(format!("server key: {e}")))?,
        )),
        None => None,
    };
    let builder = match &reload {
        Some(resolver) => ServerConfigBuilder::with_cert_resolver(resolver.clone()),
        None => ServerConfigBuilder::new(credentials),
    };
    let config = builder
        .client_auth(client_auth)
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .map_err(|e| CliError::msg(format!("server TLS: {e}")))?;
    Ok(ServerTls {
        config: Arc::new(config),
        mutual,
        notes,
        pin,
        reload,
        client_verifier,
    })
}
