//! Certificate rotation without restarting a server.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::credentials::{Credentials, certified_key, end_entity_spki_sha256};
use crate::error::{Origin, TlsError};
use crate::pem::{certificates_from_pem, private_key_from_pem, read_file};
use crate::provider::default_provider;
use crate::util::hex;

/// A server certificate that can be replaced while the server runs: a
/// [`ResolvesServerCert`] holding the current `Arc<CertifiedKey>` behind a lock.
///
/// Each new handshake takes the pair current when it starts; established connections are
/// unaffected by a reload. A reload is all-or-nothing: a certificate or key that does not
/// load (an unreadable or half-written file, malformed PEM, a certificate that does not
/// parse, a key the provider rejects) or a key that does not belong to the certificate is
/// refused with an error and the current pair is kept.
///
/// Sessions resumed from a ticket or cache entry made before a reload are not new
/// handshakes: they continue with the certificate of the session they resume.
///
/// ```
/// use std::sync::Arc;
/// use taskwire_tls::{CaParams, CertificateAuthority, ReloadableCertResolver, ServerCertParams, ServerConfigBuilder};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let first = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
/// let resolver = Arc::new(ReloadableCertResolver::new(&first.credentials()?)?);
/// let config = ServerConfigBuilder::with_cert_resolver(resolver.clone()).build()?;
///
/// // Later, for example on SIGHUP: `resolver.reload_from_files("server.pem", "server.key")?`.
/// let second = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
/// resolver.reload_from_pem(second.cert_pem().as_bytes(), second.key_pem().as_bytes())?;
/// assert_eq!(resolver.spki_sha256(), second.spki_sha256());
///
/// // A key that is not the certificate's is refused; the second pair stays.
/// let err = resolver.reload_from_pem(first.cert_pem().as_bytes(), second.key_pem().as_bytes());
/// assert!(matches!(err, Err(taskwire_tls::TlsError::KeyMismatch { .. })));
/// assert_eq!(resolver.spki_sha256(), second.spki_sha256());
/// # drop(config);
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub struct ReloadableCertResolver {
    current: RwLock<Current>,
    provider: Arc<CryptoProvider>,
}

struct Current {
    key: Arc<CertifiedKey>,
    spki_sha256: [u8; 32],
}

impl ReloadableCertResolver {
    /// A resolver serving `credentials`, loading keys with the
    /// [`default_provider`](crate::provider::default_provider).
    pub fn new(credentials: &Credentials) -> Result<Self, TlsError> {
        Self::with_provider(credentials, default_provider())
    }

    /// A resolver serving `credentials`, loading keys (now and on reload) with `provider`.
    pub fn with_provider(
        credentials: &Credentials,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let key = credentials.certified_key(&provider)?;
        let current = Current {
            key: Arc::new(key),
            spki_sha256: credentials.spki_sha256(),
        };
        Ok(ReloadableCertResolver {
            current: RwLock::new(current),
            provider,
        })
    }

    /// A resolver serving the PEM certificate chain and key in these files.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Self::new(&Credentials::from_pem_files(cert_path, key_path)?)
    }

    /// Replaces the pair with the PEM certificate chain and key in these files. On error the
    /// current pair is kept; the error names the file at fault.
    pub fn reload_from_files(
        &self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<(), TlsError> {
        let (cert_origin, cert_pem) = read_file(cert_path.as_ref())?;
        let (key_origin, key_pem) = read_file(key_path.as_ref())?;
        self.reload_pem(&cert_pem, &key_pem, &cert_origin, &key_origin)
    }

    /// Replaces the pair with this PEM certificate chain and key. On error the current pair
    /// is kept.
    pub fn reload_from_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        self.reload_pem(
            cert_pem,
            key_pem,
            &Origin::Memory("certificate PEM"),
            &Origin::Memory("private key PEM"),
        )
    }

    /// Replaces the pair with `credentials`. On error the current pair is kept.
    pub fn reload(&self, credentials: &Credentials) -> Result<(), TlsError> {
        let key = credentials.certified_key(&self.provider)?;
        self.install(key, credentials.spki_sha256());
        Ok(())
    }

    fn reload_pem(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_origin: &Origin,
        key_origin: &Origin,
    ) -> Result<(), TlsError> {
        let chain = certificates_from_pem(cert_pem, cert_origin)?;
        let key = private_key_from_pem(key_pem, key_origin)?;
        let certified = certified_key(&chain, &key, cert_origin, key_origin, &self.provider)?;
        let spki_sha256 = end_entity_spki_sha256(&certified, cert_origin)?;
        self.install(certified, spki_sha256);
        Ok(())
    }

    fn install(&self, key: CertifiedKey, spki_sha256: [u8; 32]) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = Current {
            key: Arc::new(key),
            spki_sha256,
        };
        tracing::info!(spki_sha256 = %hex(&spki_sha256), "TLS server certificate reloaded");
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .key,
        )
    }

    /// The SPKI SHA-256 of the current end-entity certificate.
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .spki_sha256
    }
}

impl ResolvesServerCert for ReloadableCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ReloadableCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCertResolver")
            .field("spki_sha256", &hex(&self.spki_sha256()))
            .finish_non_exhaustive()
    }
}
