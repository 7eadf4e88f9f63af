//! The one error type every fallible function of this crate returns, and its kinds.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where an input came from: named in every load error so that a message says which file
/// (or which in-memory value) was bad.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// A file, by the path it was opened with.
    File(PathBuf),
    /// A value passed in memory; the string says what it was meant to be, for example
    /// `"certificate PEM"`.
    Memory(&'static str),
    /// A certificate a peer presented in a handshake.
    Peer,
}

impl Origin {
    /// The path, when the input was a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Origin::File(path) => Some(path),
            Origin::Memory(_) | Origin::Peer => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Memory(what) => write!(f, "in-memory {what}"),
            Origin::Peer => f.write_str("peer certificate"),
        }
    }
}

/// Why something could not be loaded, issued, written or configured.
///
/// Every variant that concerns an input names it (see [`Origin`]); the `kind` fields say
/// what was wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate, key or bundle could not be read or is unusable.
    #[error("{origin}: {kind}")]
    Load {
        /// The file or value that was being loaded.
        origin: Origin,
        /// What was wrong with it.
        kind: LoadErrorKind,
    },
    /// A private key does not belong to the certificate it was paired with: the key's
    /// public key differs from the certificate's SubjectPublicKeyInfo.
    #[error("private key {key} does not match the public key of certificate {cert}")]
    KeyMismatch {
        /// Where the certificate came from.
        cert: Origin,
        /// Where the private key came from.
        key: Origin,
    },
    /// A file could not be written.
    #[error("cannot write {}: {kind}", path.display())]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// What went wrong.
        kind: WriteErrorKind,
    },
    /// A certificate could not be issued.
    #[error("cannot issue certificate: {0}")]
    Issue(#[from] IssueErrorKind),
    /// rustls refused the configuration (for example `tls13_only` with a crypto provider
    /// that has no TLS 1.3 cipher suites).
    #[error("invalid TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The client certificate verifier could not be built from the CA bundle.
    #[error("invalid client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// An SPKI fingerprint given as text is not 32 bytes of hex.
    #[error(
        "invalid SPKI SHA-256 fingerprint {input:?}: expected 64 hex digits, optionally separated by ':'"
    )]
    InvalidFingerprint {
        /// The text that was given.
        input: String,
    },
}

impl TlsError {
    pub(crate) fn load(origin: &Origin, kind: LoadErrorKind) -> Self {
        TlsError::Load {
            origin: origin.clone(),
            kind,
        }
    }

    /// The origin of the input this error is about, when it concerns one input.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            TlsError::Load { origin, .. } => Some(origin),
            _ => None,
        }
    }
}

/// What was wrong with an input in a [`TlsError::Load`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    /// The PEM text is malformed, for example a section without its `END` line (a
    /// half-written file) or bad base64.
    #[error("malformed PEM: {0}")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// The input holds no `CERTIFICATE` section.
    #[error("no CERTIFICATE found")]
    NoCertificates,
    /// The input holds no `X509 CRL` section.
    #[error("no X509 CRL found")]
    NoRevocationLists,
    /// The input holds no `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` section.
    #[error("no private key found")]
    NoPrivateKey,
    /// The input holds more than one private key, so which one is meant is ambiguous.
    #[error("{count} private keys found; expected exactly one")]
    MultiplePrivateKeys {
        /// How many keys were found.
        count: usize,
    },
    /// A certificate is not valid DER X.509.
    #[error("certificate #{index} is not a valid X.509 certificate: {reason}")]
    InvalidCertificate {
        /// The 0-based position of the certificate in the input.
        index: usize,
        /// What the parser reported.
        reason: String,
    },
    /// The private key cannot be used: malformed, or an algorithm the crypto provider does
    /// not support.
    #[error("unusable private key: {reason}")]
    InvalidPrivateKey {
        /// What the key loader reported.
        reason: String,
    },
    /// The certificate was loaded as an issuer but its basic constraints do not make it a
    /// CA, or its key usage does not allow signing certificates.
    #[error("certificate {subject:?} cannot issue certificates: {reason}")]
    NotCa {
        /// The certificate's subject.
        subject: String,
        /// Why it is not a usable CA.
        reason: &'static str,
    },
    /// A certificate of a CA bundle cannot be used as a trust anchor.
    #[error("certificate #{index} is not a usable trust anchor: {reason}")]
    InvalidTrustAnchor {
        /// The 0-based position of the certificate in the bundle.
        index: usize,
        /// What rustls reported.
        reason: rustls::Error,
    },
    /// The crypto provider could not give the private key's public key, so it cannot be
    /// checked against the certificate; such a pair is refused.
    #[error(
        "the crypto provider cannot tell this private key's public key, so it cannot be checked against the certificate"
    )]
    KeyCheckUnavailable,
}

/// What went wrong in a [`TlsError::Write`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteErrorKind {
    /// The file exists and overwriting was not asked for.
    #[error("file exists (set overwrite to replace it)")]
    AlreadyExists,
    /// Creating, writing or renaming the file failed.
    #[error("{0}")]
    Io(#[source] io::Error),
}

/// Why a certificate could not be issued, in a [`TlsError::Issue`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueErrorKind {
    /// A server certificate needs at least one DNS name or IP address.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoSubjectAltNames,
    /// A DNS name is not a valid host name.
    #[error("{name:?} is not a valid DNS name")]
    InvalidDnsName {
        /// The name that was given.
        name: String,
    },
    /// A tenant or instance id cannot be put in a `taskwire://TENANT/ID` URI.
    #[error(
        "{field} {value:?} is not valid: expected 1 to {max} characters of A-Z a-z 0-9 . _ ~ - (a tenant in lowercase), not beginning or ending with '.' nor containing '..'",
        max = crate::identity::MAX_IDENTITY_COMPONENT_LEN
    )]
    InvalidIdentity {
        /// `"tenant"` or `"id"`.
        field: &'static str,
        /// The value that was given.
        value: String,
    },
    /// The validity period is empty or not representable in a certificate.
    #[error("invalid validity period: {reason}")]
    InvalidValidity {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The random serial number could not be generated.
    #[error("no random bytes for the serial number: {0:?}")]
    Random(rustls::crypto::GetRandomFailed),
    /// rcgen failed to generate the key or the certificate.
    #[error("{0}")]
    Rcgen(#[source] rcgen::Error),
    /// A certificate or revocation list given to
    /// [`CertificateAuthority::revoke`](crate::CertificateAuthority::revoke) was issued by
    /// another CA.
    #[error("{what} was not signed by this CA ({ca:?}); its issuer is named {issuer:?}")]
    NotIssuedHere {
        /// What it was: `"certificate #N"` or `"the previous revocation list"`.
        what: String,
        /// Its issuer.
        issuer: String,
        /// This CA's subject.
        ca: String,
    },
    /// The previous revocation list given to
    /// [`CertificateAuthority::revoke`](crate::CertificateAuthority::revoke) does not parse.
    #[error("the previous revocation list is not a valid X.509 CRL: {reason}")]
    InvalidRevocationList {
        /// What the parser reported.
        reason: String,
    },
}
