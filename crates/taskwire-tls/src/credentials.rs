//! Certificate/key pairs and CA bundles, checked when they are loaded.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{LoadErrorKind, Origin, TlsError};
use crate::pem::{certificates_from_pem, private_key_from_pem, read_file};
use crate::provider::default_provider;
use crate::util::{parse_certificate_from, sha256};

/// A certificate chain (end-entity first) and its private key, checked to belong together:
/// what a server presents, or a client presents for mTLS.
///
/// Every constructor parses each certificate as X.509, loads the key with the
/// [`default_provider`](crate::provider::default_provider) and refuses the pair with
/// [`TlsError::KeyMismatch`] unless the key's public key equals the end-entity
/// certificate's SubjectPublicKeyInfo. Config builders load the key again with their own
/// provider and check the pair again.
///
/// ```
/// use taskwire_tls::{CaParams, CertificateAuthority, Credentials, ServerCertParams};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let leaf = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
/// let credentials = Credentials::from_pem(leaf.cert_pem().as_bytes(), leaf.key_pem().as_bytes())?;
/// assert_eq!(credentials.spki_sha256(), leaf.spki_sha256());
///
/// // A key from another certificate is refused.
/// let other = ca.issue_server(&ServerCertParams::new(["localhost"]))?;
/// let mismatch = Credentials::from_pem(leaf.cert_pem().as_bytes(), other.key_pem().as_bytes());
/// assert!(matches!(mismatch, Err(taskwire_tls::TlsError::KeyMismatch { .. })));
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    spki_sha256: [u8; 32],
    cert_origin: Origin,
    key_origin: Origin,
}

impl Credentials {
    /// A pair from PEM text: every `CERTIFICATE` of `cert_pem` (end-entity first) and the one
    /// private key of `key_pem`.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let cert_origin = Origin::Memory("certificate PEM");
        let key_origin = Origin::Memory("private key PEM");
        let chain = certificates_from_pem(cert_pem, &cert_origin)?;
        let key = private_key_from_pem(key_pem, &key_origin)?;
        Self::checked(chain, key, cert_origin, key_origin)
    }

    /// A pair from PEM files; errors name the file at fault.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (cert_origin, cert_pem) = read_file(cert_path.as_ref())?;
        let (key_origin, key_pem) = read_file(key_path.as_ref())?;
        let chain = certificates_from_pem(&cert_pem, &cert_origin)?;
        let key = private_key_from_pem(&key_pem, &key_origin)?;
        Self::checked(chain, key, cert_origin, key_origin)
    }

    /// A pair from DER: `chain` end-entity first.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        Self::checked(
            chain,
            key,
            Origin::Memory("certificate DER"),
            Origin::Memory("private key DER"),
        )
    }

    fn checked(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_origin: Origin,
        key_origin: Origin,
    ) -> Result<Self, TlsError> {
        let certified =
            certified_key(&chain, &key, &cert_origin, &key_origin, &default_provider())?;
        let spki_sha256 = end_entity_spki_sha256(&certified, &cert_origin)?;
        Ok(Credentials {
            chain,
            key,
            spki_sha256,
            cert_origin,
            key_origin,
        })
    }

    /// The certificate chain, end-entity first.
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The end-entity certificate.
    pub fn end_entity(&self) -> &CertificateDer<'static> {
        // Never empty: every constructor refuses an empty chain.
        &self.chain[0]
    }

    /// The private key.
    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The SHA-256 of the end-entity certificate's SubjectPublicKeyInfo: what a pinning
    /// client pins (see [`ClientConfigBuilder::pinned`](crate::ClientConfigBuilder::pinned)).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// The pair as rustls's [`CertifiedKey`], with the key loaded by `provider`.
    pub fn certified_key(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        certified_key(
            &self.chain,
            &self.key,
            &self.cert_origin,
            &self.key_origin,
            provider,
        )
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            spki_sha256: self.spki_sha256,
            cert_origin: self.cert_origin.clone(),
            key_origin: self.key_origin.clone(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("certificates", &self.chain.len())
            .field("spki_sha256", &crate::util::hex(&self.spki_sha256))
            .field("cert_origin", &self.cert_origin)
            .field("key_origin", &self.key_origin)
            .finish_non_exhaustive()
    }
}

/// Loads `key` with `provider` and pairs it with `chain`, refusing a key whose public key is
/// not the end-entity certificate's.
pub(crate) fn certified_key(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_origin: &Origin,
    key_origin: &Origin,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let Some(end_entity) = chain.first() else {
        return Err(TlsError::load(cert_origin, LoadErrorKind::NoCertificates));
    };
    for (index, cert) in chain.iter().enumerate() {
        parse_certificate_from(cert, cert_origin, index)?;
    }
    let cert = parse_certificate_from(end_entity, cert_origin, 0)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            TlsError::load(
                key_origin,
                LoadErrorKind::InvalidPrivateKey {
                    reason: e.to_string(),
                },
            )
        })?;
    let Some(key_spki) = signing_key.public_key() else {
        return Err(TlsError::load(
            key_origin,
            LoadErrorKind::KeyCheckUnavailable,
        ));
    };
    if key_spki.as_ref() != cert.public_key().raw {
        return Err(TlsError::KeyMismatch {
            cert: cert_origin.clone(),
            key: key_origin.clone(),
        });
    }
    Ok(CertifiedKey::new(chain.to_vec(), signing_key))
}

/// The SPKI SHA-256 of a certified key's end-entity certificate.
pub(crate) fn end_entity_spki_sha256(
    certified: &CertifiedKey,
    origin: &Origin,
) -> Result<[u8; 32], TlsError> {
    let Some(end_entity) = certified.cert.first() else {
        return Err(TlsError::load(origin, LoadErrorKind::NoCertificates));
    };
    let cert = parse_certificate_from(end_entity, origin, 0)?;
    Ok(sha256(cert.public_key().raw))
}

/// Trusted CA certificates: what a client verifies servers against and an mTLS server
/// verifies clients against.
///
/// Each certificate is checked to be usable as a trust anchor when the bundle is made.
///
/// ```
/// use taskwire_tls::{CaBundle, CaParams, CertificateAuthority};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let bundle = CaBundle::from_pem(ca.cert_pem().as_bytes())?;
/// assert_eq!(bundle.certificates().len(), 1);
///
/// let err = CaBundle::from_pem(b"not PEM").unwrap_err();
/// assert_eq!(err.to_string(), "in-memory CA bundle PEM: no CERTIFICATE found");
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CaBundle {
    certs: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
}

impl CaBundle {
    /// A bundle of every `CERTIFICATE` in `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let origin = Origin::Memory("CA bundle PEM");
        let certs = certificates_from_pem(pem, &origin)?;
        Self::checked(certs, &origin)
    }

    /// A bundle of every `CERTIFICATE` in the PEM file at `path`; errors name the file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (origin, pem) = read_file(path.as_ref())?;
        let certs = certificates_from_pem(&pem, &origin)?;
        Self::checked(certs, &origin)
    }

    /// A bundle of DER certificates.
    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        Self::checked(certs, &Origin::Memory("CA bundle DER"))
    }

    fn checked(certs: Vec<CertificateDer<'static>>, origin: &Origin) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::load(origin, LoadErrorKind::NoCertificates));
        }
        let mut roots = RootCertStore::empty();
        for (index, cert) in certs.iter().enumerate() {
            parse_certificate_from(cert, origin, index)?;
            roots.add(cert.clone()).map_err(|reason| {
                TlsError::load(origin, LoadErrorKind::InvalidTrustAnchor { index, reason })
            })?;
        }
        Ok(CaBundle {
            certs,
            roots: Arc::new(roots),
        })
    }

    /// The certificates, in the order given.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The bundle as a rustls root store.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.roots)
    }
}
