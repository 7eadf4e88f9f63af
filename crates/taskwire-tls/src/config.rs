//! Builders for rustls server and client configs.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::sign::SingleCertAndKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

use crate::credentials::{CaBundle, Credentials};
use crate::danger::NoServerVerification;
use crate::error::TlsError;
use crate::pin::SpkiPinVerifier;
use crate::provider::{default_provider, for_config};
use crate::resumption::{
    DEFAULT_RESUMPTION_LIFETIME, DEFAULT_RESUMPTION_SESSIONS, VerifyingSessionStore,
};
use crate::verifier::ClientVerifier;

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&TLS13];
static TLS13_AND_TLS12: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

fn protocol_versions(tls13_only: bool) -> &'static [&'static SupportedProtocolVersion] {
    if tls13_only {
        TLS13_ONLY
    } else {
        TLS13_AND_TLS12
    }
}

/// Whether and how a server asks clients for certificates (mTLS).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Clients are not asked for a certificate. The default.
    #[default]
    Disabled,
    /// Clients are asked for a certificate; one that is presented must verify against the
    /// bundle, but a client may present none (check `peer_certificates()` after the
    /// handshake).
    Optional(CaBundle),
    /// Every client must present a certificate that verifies against the bundle (chain,
    /// validity period, and clientAuth extended key usage); a client without one gets a
    /// `certificate_required` alert.
    Required(CaBundle),
    /// A [`ClientVerifier`] the caller keeps, to [`reload`](ClientVerifier::reload) its CA
    /// bundle and revocation lists while the server runs.
    Verifier(Arc<ClientVerifier>),
}

impl ClientAuth {
    /// The verifier for this choice, if clients are asked for certificates.
    fn verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Arc<ClientVerifier>>, TlsError> {
        Ok(match self {
            ClientAuth::Disabled => None,
            ClientAuth::Optional(bundle) => Some(ClientVerifier::new(
                bundle.clone(),
                Vec::new(),
                false,
                Arc::clone(provider),
            )?),
            ClientAuth::Required(bundle) => Some(ClientVerifier::new(
                bundle.clone(),
                Vec::new(),
                true,
                Arc::clone(provider),
            )?),
            ClientAuth::Verifier(verifier) => Some(Arc::clone(verifier)),
        })
    }
}

enum ServerCertificate {
    Single(Credentials),
    Resolver(Arc<dyn ResolvesServerCert>),
}

/// Builds a [`rustls::ServerConfig`].
///
/// Defaults: no client authentication ([`ClientAuth::Disabled`]), no ALPN protocols, TLS
/// 1.3 and 1.2, the [`default_provider`](crate::provider::default_provider). Whatever the
/// provider, its AES-GCM cipher suites are moved to the front of its suite order,
/// AES-128-GCM first.
///
/// With client authentication, certificates are checked by a [`ClientVerifier`] and
/// sessions are resumed through a [`VerifyingSessionStore`], which verifies the client's
/// chain again at each resumption: a certificate that expired or was revoked after its full
/// handshake does not resume.
///
/// ```
/// use taskwire_tls::{CaParams, CertificateAuthority, ClientAuth, ServerCertParams, ServerConfigBuilder};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let server = ca.issue_server(&ServerCertParams::new(["localhost", "127.0.0.1"]))?;
///
/// let config = ServerConfigBuilder::new(server.credentials()?)
///     .client_auth(ClientAuth::Required(ca.ca_bundle()?))
///     .alpn_protocols(["taskwire/1"])
///     .tls13_only(true)
///     .build()?;
/// assert_eq!(config.alpn_protocols, [b"taskwire/1".to_vec()]);
/// // Hand it to tokio-rustls: `TlsAcceptor::from(Arc::new(config))`.
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub struct ServerConfigBuilder {
    certificate: ServerCertificate,
    client_auth: ClientAuth,
    alpn_protocols: Vec<Vec<u8>>,
    tls13_only: bool,
    crypto_provider: Arc<CryptoProvider>,
    resumption_lifetime: Duration,
}

impl ServerConfigBuilder {
    /// A server presenting `credentials` to every client.
    pub fn new(credentials: Credentials) -> Self {
        Self::with_certificate(ServerCertificate::Single(credentials))
    }

    /// A server whose certificate `resolver` chooses per handshake, for example a
    /// [`ReloadableCertResolver`](crate::ReloadableCertResolver) for rotation without a
    /// restart.
    pub fn with_cert_resolver(resolver: Arc<dyn ResolvesServerCert>) -> Self {
        Self::with_certificate(ServerCertificate::Resolver(resolver))
    }

    fn with_certificate(certificate: ServerCertificate) -> Self {
        ServerConfigBuilder {
            certificate,
            client_auth: ClientAuth::Disabled,
            alpn_protocols: Vec::new(),
            tls13_only: false,
            crypto_provider: default_provider(),
            resumption_lifetime: DEFAULT_RESUMPTION_LIFETIME,
        }
    }

    /// How long after its full handshake a session of an authenticated client can be
    /// resumed; the chain is verified again at each resumption whatever this says. Default:
    /// [`DEFAULT_RESUMPTION_LIFETIME`] (one hour). `Duration::ZERO` turns resumption off
    /// for such servers. Memory: up to [`DEFAULT_RESUMPTION_SESSIONS`] sessions of 1–2 KiB.
    /// Without client authentication rustls's own cache is used.
    #[must_use]
    pub fn resumption_lifetime(mut self, resumption_lifetime: Duration) -> Self {
        self.resumption_lifetime = resumption_lifetime;
        self
    }

    /// Whether clients must, may or need not present a certificate. Default:
    /// [`ClientAuth::Disabled`].
    #[must_use]
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// The ALPN protocols offered, most preferred first. Default: none (ALPN not used). A
    /// client that offers ALPN but none of these is refused with a
    /// `no_application_protocol` alert.
    #[must_use]
    pub fn alpn_protocols<I, P>(mut self, alpn_protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn_protocols = alpn_protocols
            .into_iter()
            .map(|p| p.as_ref().to_vec())
            .collect();
        self
    }

    /// Whether to speak TLS 1.3 only, as QUIC requires. Default: `false` (TLS 1.3 and 1.2).
    #[must_use]
    pub fn tls13_only(mut self, tls13_only: bool) -> Self {
        self.tls13_only = tls13_only;
        self
    }

    /// The crypto provider. Default: [`default_provider`](crate::provider::default_provider)
    /// (*ring* with the default features).
    #[must_use]
    pub fn crypto_provider(mut self, crypto_provider: Arc<CryptoProvider>) -> Self {
        self.crypto_provider = crypto_provider;
        self
    }

    /// The config. Fails if the key cannot be loaded by the provider, the CA bundle cannot
    /// make a client verifier, or rustls refuses the provider and versions.
    pub fn build(&self) -> Result<ServerConfig, TlsError> {
        let provider = for_config(&self.crypto_provider, self.tls13_only);
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(protocol_versions(self.tls13_only))
            .map_err(TlsError::Config)?;
        let verifier = self.client_auth.verifier(&provider)?;
        let builder = match &verifier {
            None => builder.with_no_client_auth(),
            Some(verifier) => builder.with_client_cert_verifier(Arc::clone(verifier) as _),
        };
        let resolver: Arc<dyn ResolvesServerCert> = match &self.certificate {
            ServerCertificate::Single(credentials) => Arc::new(SingleCertAndKey::from(
                credentials.certified_key(&provider)?,
            )),
            ServerCertificate::Resolver(resolver) => Arc::clone(resolver),
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = self.alpn_protocols.clone();
        if let Some(verifier) = verifier {
            if self.resumption_lifetime.is_zero() {
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            } else {
                config.session_storage = Arc::new(VerifyingSessionStore::new(
                    verifier,
                    self.resumption_lifetime,
                    DEFAULT_RESUMPTION_SESSIONS,
                ));
            }
        }
        Ok(config)
    }
}

impl std::fmt::Debug for ServerConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let certificate: &dyn std::fmt::Debug = match &self.certificate {
            ServerCertificate::Single(credentials) => credentials,
            ServerCertificate::Resolver(resolver) => resolver,
        };
        f.debug_struct("ServerConfigBuilder")
            .field("certificate", certificate)
            .field("client_auth", &self.client_auth)
            .field("alpn_protocols", &self.alpn_protocols)
            .field("tls13_only", &self.tls13_only)
            .field("resumption_lifetime", &self.resumption_lifetime)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
enum ServerVerification {
    Roots(CaBundle),
    Pinned(Vec<[u8; 32]>),
    Skip,
}

/// Builds a [`rustls::ClientConfig`].
///
/// The server is verified against a CA bundle ([`new`](Self::new)) or trusted by its key
/// fingerprint ([`pinned`](Self::pinned)); turning verification off takes the explicitly
/// named [`dangerous()`](Self::dangerous)`.`[`skip_server_verification()`](DangerousClientConfigBuilder::skip_server_verification).
///
/// Defaults: no client certificate, no ALPN protocols, TLS 1.3 and 1.2, the
/// [`default_provider`](crate::provider::default_provider). Whatever the provider, its
/// AES-GCM cipher suites are moved to the front of its suite order, AES-128-GCM first.
///
/// ```
/// use taskwire_tls::{CaParams, CertificateAuthority, ClientCertParams, ClientConfigBuilder};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let me = ca.issue_client(&ClientCertParams::new("acme", "worker-7"))?;
///
/// let config = ClientConfigBuilder::new(ca.ca_bundle()?)
///     .client_credentials(me.credentials()?)
///     .alpn_protocols(["taskwire/1"])
///     .build()?;
/// assert!(config.client_auth_cert_resolver.has_certs());
/// // Connect with tokio-rustls: `TlsConnector::from(Arc::new(config))`.
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfigBuilder {
    server_verification: ServerVerification,
    client_credentials: Option<Credentials>,
    alpn_protocols: Vec<Vec<u8>>,
    tls13_only: bool,
    crypto_provider: Arc<CryptoProvider>,
}

impl ClientConfigBuilder {
    /// A client verifying servers against `server_roots`: chain, validity period,
    /// serverAuth extended key usage, and the server name (a DNS name or IP address SAN;
    /// the common name is ignored).
    pub fn new(server_roots: CaBundle) -> Self {
        Self::with_verification(ServerVerification::Roots(server_roots))
    }

    /// A client trusting servers whose end-entity certificate's SubjectPublicKeyInfo has one
    /// of these SHA-256 fingerprints (see [`SpkiPinVerifier`] for what is still checked).
    ///
    /// ```
    /// use taskwire_tls::{CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams};
    ///
    /// let dev_ca = CertificateAuthority::generate(&CaParams::new("dev"))?;
    /// let server = dev_ca.issue_server(&ServerCertParams::new(["localhost"]))?;
    /// let config = ClientConfigBuilder::pinned([server.spki_sha256()]).build()?;
    /// # drop(config);
    /// # Ok::<(), taskwire_tls::TlsError>(())
    /// ```
    pub fn pinned(spki_sha256: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Self::with_verification(ServerVerification::Pinned(
            spki_sha256.into_iter().collect(),
        ))
    }

    /// The way to configs that do not verify the server. See [`crate::danger`].
    pub fn dangerous() -> DangerousClientConfigBuilder {
        DangerousClientConfigBuilder(())
    }

    fn with_verification(server_verification: ServerVerification) -> Self {
        ClientConfigBuilder {
            server_verification,
            client_credentials: None,
            alpn_protocols: Vec::new(),
            tls13_only: false,
            crypto_provider: default_provider(),
        }
    }

    /// The certificate and key presented to servers that ask for one (mTLS). Default: none.
    #[must_use]
    pub fn client_credentials(mut self, client_credentials: Credentials) -> Self {
        self.client_credentials = Some(client_credentials);
        self
    }

    /// The ALPN protocols offered, most preferred first. Default: none (ALPN not used).
    #[must_use]
    pub fn alpn_protocols<I, P>(mut self, alpn_protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn_protocols = alpn_protocols
            .into_iter()
            .map(|p| p.as_ref().to_vec())
            .collect();
        self
    }

    /// Whether to speak TLS 1.3 only, as QUIC requires. Default: `false` (TLS 1.3 and 1.2).
    #[must_use]
    pub fn tls13_only(mut self, tls13_only: bool) -> Self {
        self.tls13_only = tls13_only;
        self
    }

    /// The crypto provider. Default: [`default_provider`](crate::provider::default_provider)
    /// (*ring* with the default features).
    #[must_use]
    pub fn crypto_provider(mut self, crypto_provider: Arc<CryptoProvider>) -> Self {
        self.crypto_provider = crypto_provider;
        self
    }

    /// The config. Fails if the client key cannot be loaded by the provider or rustls
    /// refuses the provider and versions.
    pub fn build(&self) -> Result<ClientConfig, TlsError> {
        let provider = for_config(&self.crypto_provider, self.tls13_only);
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(protocol_versions(self.tls13_only))
            .map_err(TlsError::Config)?;
        let builder = match &self.server_verification {
            ServerVerification::Roots(bundle) => {
                builder.with_root_certificates(bundle.root_store())
            }
            ServerVerification::Pinned(pins) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SpkiPinVerifier::new(
                    pins.iter().copied(),
                    &provider,
                ))),
            ServerVerification::Skip => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerVerification::new(&provider))),
        };
        let mut config = match &self.client_credentials {
            Some(credentials) => builder.with_client_cert_resolver(Arc::new(
                SingleCertAndKey::from(credentials.certified_key(&provider)?),
            )),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn_protocols.clone();
        if matches!(self.server_verification, ServerVerification::Skip) {
            // Every connection a full handshake, so the verifier warns on every one.
            config.resumption = Resumption::disabled();
        }
        Ok(config)
    }
}

/// The explicitly named way to client configs that do not verify the server; from
/// [`ClientConfigBuilder::dangerous`].
#[derive(Debug)]
pub struct DangerousClientConfigBuilder(());

impl DangerousClientConfigBuilder {
    /// A client that accepts any server certificate (see [`NoServerVerification`]): for
    /// tests and throwaway development setups only. Every handshake logs a `tracing`
    /// warning.
    ///
    /// ```
    /// let config = taskwire_tls::ClientConfigBuilder::dangerous()
    ///     .skip_server_verification()
    ///     .build()?;
    /// # drop(config);
    /// # Ok::<(), taskwire_tls::TlsError>(())
    /// ```
    pub fn skip_server_verification(self) -> ClientConfigBuilder {
        ClientConfigBuilder::with_verification(ServerVerification::Skip)
    }
}
