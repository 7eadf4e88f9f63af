//! Client certificate verification for servers: webpki's checks plus the rules it leaves
//! out, revocation lists, and a CA bundle that can be replaced while the server runs.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

use crate::credentials::CaBundle;
use crate::error::TlsError;
use crate::provider::default_provider;
use crate::util::parse_certificate;
use x509_parser::certificate::X509Certificate;

/// The longest path followed from a leaf to a self-signed root; longer chains are refused.
const MAX_PATH: usize = 8;

/// A rule this verifier adds to webpki's that a client certificate chain broke; found in a
/// [`rustls::Error::InvalidCertificate`] as `CertificateError::Other`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainRuleViolation {
    /// A CA on the path has more CA certificates below it than its `pathLenConstraint`
    /// allows.
    #[error("CA {ca:?} allows {path_len} CA certificate(s) below it, the path has {below}")]
    PathLenExceeded {
        /// The CA's subject.
        ca: String,
        /// Its pathLenConstraint.
        path_len: u32,
        /// How many CA certificates are below it on the path.
        below: usize,
    },
    /// The client certificate has no extended key usage extension, or one without
    /// `clientAuth`.
    #[error("certificate {subject:?} is not for client authentication: {reason}")]
    NotForClientAuth {
        /// The certificate's subject.
        subject: String,
        /// What its extended key usage says.
        reason: &'static str,
    },
    /// The path from the leaf to a self-signed root is longer than 8 certificates.
    #[error("the certificate path is longer than {MAX_PATH} certificates")]
    PathTooLong,
}

/// Verifies client certificates for a server, and can be given a new CA bundle and new
/// revocation lists without a restart.
///
/// webpki verifies the chain, the validity dates, the signatures and, for every certificate
/// below the trust anchor, the basic constraints. Two rules that `openssl verify` applies
/// are added here:
///
/// * **Path length of every CA on the path, trust anchors included.** webpki keeps only a
///   trust anchor's name and key, so a `pathlen:0` root would accept leaves issued through an
///   intermediate. Here the path is followed by name from the leaf up through the client's
///   intermediates and the bundle (a bundle certificate that is not self-signed is also a
///   step, as OpenSSL builds the chain to a self-signed root), and each CA's
///   `pathLenConstraint` is checked against the CA certificates below it.
/// * **A client certificate says it is one.** Its extended key usage must be present and
///   list `clientAuth` (or `anyExtendedKeyUsage`); a certificate without the extension is
///   refused, although RFC 5280 would allow it for any purpose, because taskwire's
///   identities are issued for one purpose and a server certificate must not log in.
///
/// Revocation lists are checked for every certificate of the chain whose issuer has a list;
/// a certificate whose issuer published none is not refused for it.
///
/// Give it to [`ServerConfigBuilder::client_auth`](crate::ServerConfigBuilder::client_auth)
/// as [`ClientAuth::Verifier`](crate::ClientAuth::Verifier), keep a clone of the `Arc`, and
/// call [`reload`](Self::reload) when the files change: the next handshake, and the next
/// session resumption, is checked against the new bundle and lists.
///
/// ```
/// use taskwire_tls::{CaParams, CertificateAuthority, ClientVerifier};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("tenants CA"))?;
/// let verifier = ClientVerifier::required(ca.ca_bundle()?)?;
/// let next = CertificateAuthority::generate(&CaParams::new("next CA"))?;
/// verifier.reload(next.ca_bundle()?, Vec::new())?;
/// assert_eq!(verifier.generation(), 1);
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub struct ClientVerifier {
    current: RwLock<Arc<Trust>>,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

/// One CA bundle and its revocation lists, as loaded together.
struct Trust {
    webpki: Arc<dyn ClientCertVerifier>,
    bundle: Vec<CaCertificate>,
    crl_count: usize,
    generation: u64,
}

/// What path building needs from a certificate.
struct CaCertificate {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_text: String,
    path_len: Option<u32>,
}

impl CaCertificate {
    fn parse(der: &[u8]) -> Option<CaCertificate> {
        let cert = parse_certificate(der).ok()?;
        let path_len = cert
            .basic_constraints()
            .ok()
            .flatten()
            .and_then(|bc| bc.value.path_len_constraint);
        Some(CaCertificate {
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            subject_text: cert.subject().to_string(),
            path_len,
        })
    }

    fn self_signed(&self) -> bool {
        self.subject == self.issuer
    }
}

impl ClientVerifier {
    /// Every client must present a certificate that verifies against `bundle`; a client
    /// without one fails the handshake with a `certificate_required` alert.
    pub fn required(bundle: CaBundle) -> Result<Arc<ClientVerifier>, TlsError> {
        Self::new(bundle, Vec::new(), true, default_provider())
    }

    /// A client may present no certificate; one it presents must verify against `bundle`.
    pub fn optional(bundle: CaBundle) -> Result<Arc<ClientVerifier>, TlsError> {
        Self::new(bundle, Vec::new(), false, default_provider())
    }

    /// The general constructor: `crls` are checked as the module docs say, `mandatory`
    /// says whether a client must present a certificate, and `provider` verifies the
    /// signatures.
    pub fn new(
        bundle: CaBundle,
        crls: Vec<CertificateRevocationListDer<'static>>,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<ClientVerifier>, TlsError> {
        let trust = Self::trust(&bundle, crls, mandatory, &provider, 0)?;
        Ok(Arc::new(ClientVerifier {
            current: RwLock::new(Arc::new(trust)),
            mandatory,
            provider,
        }))
    }

    fn trust(
        bundle: &CaBundle,
        crls: Vec<CertificateRevocationListDer<'static>>,
        mandatory: bool,
        provider: &Arc<CryptoProvider>,
        generation: u64,
    ) -> Result<Trust, TlsError> {
        let crl_count = crls.len();
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(bundle.root_store(), Arc::clone(provider));
        if crl_count > 0 {
            builder = builder.with_crls(crls).allow_unknown_revocation_status();
        }
        if !mandatory {
            builder = builder.allow_unauthenticated();
        }
        let webpki = builder.build()?;
        let bundle = bundle
            .certificates()
            .iter()
            .filter_map(|der| CaCertificate::parse(der))
            .collect();
        Ok(Trust {
            webpki,
            bundle,
            crl_count,
            generation,
        })
    }

    /// Replaces the CA bundle and the revocation lists together. On an error the old ones
    /// stay in force. Connections already established are not affected; the next handshake
    /// and the next resumption are checked against the new ones.
    pub fn reload(
        &self,
        bundle: CaBundle,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<(), TlsError> {
        let generation = self.current().generation + 1;
        let trust = Self::trust(&bundle, crls, self.mandatory, &self.provider, generation)?;
        *self.current.write().expect("verifier lock") = Arc::new(trust);
        Ok(())
    }

    /// How many times [`reload`](Self::reload) has succeeded.
    pub fn generation(&self) -> u64 {
        self.current().generation
    }

    /// How many revocation lists are in force.
    pub fn revocation_list_count(&self) -> usize {
        self.current().crl_count
    }

    /// Whether a client must present a certificate.
    pub fn is_mandatory(&self) -> bool {
        self.mandatory
    }

    fn current(&self) -> Arc<Trust> {
        Arc::clone(&self.current.read().expect("verifier lock"))
    }

    /// Verifies a chain as a handshake would, at `now`: what a resumed session is checked
    /// with, so that a certificate expired, revoked or no longer trusted since the full
    /// handshake does not resume.
    pub fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        let trust = self.current();
        trust
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        // Parsed once for both rules; webpki has already parsed and verified it.
        let leaf = parse_certificate(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        check_client_usage(&leaf)?;
        check_path_lengths(&trust.bundle, leaf.issuer().as_raw(), intermediates)
    }
}

fn violation(violation: ChainRuleViolation) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(violation))))
}

fn check_client_usage(cert: &X509Certificate<'_>) -> Result<(), Error> {
    let subject = || cert.subject().to_string();
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth || eku.value.any => Ok(()),
        Ok(Some(_)) => Err(violation(ChainRuleViolation::NotForClientAuth {
            subject: subject(),
            reason: "its extended key usage does not list clientAuth",
        })),
        Ok(None) => Err(violation(ChainRuleViolation::NotForClientAuth {
            subject: subject(),
            reason: "it has no extended key usage extension",
        })),
        Err(_) => Err(Error::InvalidCertificate(CertificateError::BadEncoding)),
    }
}

/// Follows the path by name from the leaf's issuer up to a self-signed bundle certificate
/// (or the last bundle certificate found) and checks each CA's path length. webpki has
/// already found a valid path, so this only adds the constraints it does not read.
fn check_path_lengths(
    bundle: &[CaCertificate],
    leaf_issuer: &[u8],
    intermediates: &[CertificateDer<'_>],
) -> Result<(), Error> {
    let presented: Vec<CaCertificate> = intermediates
        .iter()
        .filter_map(|der| CaCertificate::parse(der))
        .collect();
    // The CA certificates above the leaf, nearest first.
    let mut path: Vec<&CaCertificate> = Vec::new();
    let mut issuer = leaf_issuer;
    loop {
        if path.len() > MAX_PATH {
            return Err(violation(ChainRuleViolation::PathTooLong));
        }
        // A bundle certificate ends the path if it is self-signed; one that is not is a
        // step towards the root the bundle also holds.
        if let Some(ca) = bundle.iter().find(|ca| ca.subject == issuer) {
            path.push(ca);
            if ca.self_signed() {
                break;
            }
            match bundle
                .iter()
                .find(|above| above.subject == ca.issuer && !std::ptr::eq(*above, ca))
            {
                Some(_) => {
                    issuer = ca.issuer.as_slice();
                    continue;
                }
                None => break,
            }
        }
        match presented.iter().find(|ca| ca.subject == issuer) {
            Some(ca) if !ca.self_signed() => {
                path.push(ca);
                issuer = ca.issuer.as_slice();
            }
            _ => break,
        }
    }
    for (index, ca) in path.iter().enumerate() {
        if let Some(path_len) = ca.path_len
            && usize::try_from(path_len).is_ok_and(|allowed| index > allowed)
        {
            return Err(violation(ChainRuleViolation::PathLenExceeded {
                ca: ca.subject_text.clone(),
                path_len,
                below: index,
            }));
        }
    }
    Ok(())
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: the bundle can change under a running server, and a client with one
    /// certificate sends it whatever the hints say.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.verify_chain(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    // Signatures are webpki's business, as for any verifier it builds.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current()
            .webpki
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current()
            .webpki
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().webpki.supported_verify_schemes()
    }
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trust = self.current();
        f.debug_struct("ClientVerifier")
            .field("mandatory", &self.mandatory)
            .field("bundle_certificates", &trust.bundle.len())
            .field("revocation_lists", &trust.crl_count)
            .field("generation", &trust.generation)
            .finish_non_exhaustive()
    }
}
