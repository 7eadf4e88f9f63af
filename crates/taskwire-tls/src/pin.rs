//! Trusting a server by the SHA-256 of its public key, and the fingerprint helpers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Origin, TlsError};
use crate::util::{hex, parse_certificate, parse_certificate_from, sha256};

/// The SHA-256 of a certificate's SubjectPublicKeyInfo: what [`SpkiPinVerifier`] and
/// [`Authorizer::allow_spki_sha256`](crate::Authorizer::allow_spki_sha256) compare.
///
/// It names the key rather than the certificate, so it survives re-issuing a certificate
/// for the same key. Same value as
/// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], TlsError> {
    let parsed = parse_certificate_from(cert, &Origin::Memory("certificate DER"), 0)?;
    Ok(sha256(parsed.public_key().raw))
}

/// A fingerprint as 64 lower-case hex digits.
pub fn fingerprint_to_hex(fingerprint: &[u8; 32]) -> String {
    hex(fingerprint)
}

/// Parses 64 hex digits (either case, optionally with `:` between bytes, as `openssl`
/// prints them) into a fingerprint.
///
/// ```
/// let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
/// let fp = taskwire_tls::fingerprint_from_hex(hex)?;
/// assert_eq!(taskwire_tls::fingerprint_to_hex(&fp), hex);
/// assert!(taskwire_tls::fingerprint_from_hex("9F:86:D0").is_err());
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub fn fingerprint_from_hex(text: &str) -> Result<[u8; 32], TlsError> {
    let invalid = || TlsError::InvalidFingerprint {
        input: text.to_owned(),
    };
    let trimmed = text.trim();
    let digits: Vec<u8> = if trimmed.contains(':') {
        let groups: Vec<&str> = trimmed.split(':').collect();
        if groups.iter().any(|g| g.len() != 2) {
            return Err(invalid());
        }
        groups.concat().into_bytes()
    } else {
        trimmed.as_bytes().to_vec()
    };
    if digits.len() != 64 {
        return Err(invalid());
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(invalid());
        };
        *byte = (hi << 4) | lo;
    }
    Ok(out)
}

/// A server certificate whose public key is not pinned: the error a pinning client reports,
/// inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server public key (SPKI SHA-256 {}) is not one of the pinned keys", hex(.presented))]
pub struct PinMismatch {
    /// The SPKI SHA-256 of the certificate the server presented.
    pub presented: [u8; 32],
}

/// A [`ServerCertVerifier`] that trusts a server by the SHA-256 of its end-entity
/// certificate's SubjectPublicKeyInfo: for a self-signed development server, or any server
/// whose key is known in advance.
///
/// It replaces the CA chain and the name check with the pin, and still checks everything
/// else: the certificate must parse, its key must be pinned, the current time must be inside
/// its validity period, and the handshake signatures must verify against its key (so the
/// server proves it holds the pinned key). An empty pin list trusts no server.
#[derive(Clone)]
pub struct SpkiPinVerifier {
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpkiPinVerifier {
    /// A verifier accepting the keys in `pins`, verifying signatures with `provider`'s
    /// algorithms.
    pub fn new(pins: impl IntoIterator<Item = [u8; 32]>, provider: &CryptoProvider) -> Self {
        SpkiPinVerifier {
            pins: pins.into_iter().collect(),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The pinned fingerprints.
    pub fn pins(&self) -> &[[u8; 32]] {
        &self.pins
    }
}

impl fmt::Debug for SpkiPinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpkiPinVerifier")
            .field(
                "pins",
                &self.pins.iter().map(|pin| hex(pin)).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Checks `now` against the certificate's validity period, with rustls's error variants.
pub(crate) fn check_validity(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    now: UnixTime,
) -> Result<(), Error> {
    let to_unix = |secs: i64| {
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
    };
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if now_secs < not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: to_unix(not_before),
        }
        .into());
    }
    if now_secs > not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: to_unix(not_after),
        }
        .into());
    }
    Ok(())
}

impl ServerCertVerifier for SpkiPinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = parse_certificate(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let presented = sha256(cert.public_key().raw);
        if !self.pins.contains(&presented) {
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch { presented })),
            )));
        }
        check_validity(&cert, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
