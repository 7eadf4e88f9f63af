//! Turning server verification off, for tests and throwaway development setups only.
//!
//! The only way in is the explicitly named
//! [`ClientConfigBuilder::dangerous()`](crate::ClientConfigBuilder::dangerous)`.`[`skip_server_verification()`](crate::DangerousClientConfigBuilder::skip_server_verification).
//! There is no Cargo feature for it. Prefer
//! [`ClientConfigBuilder::pinned`](crate::ClientConfigBuilder::pinned), which trusts a
//! self-signed server by its key without turning verification off.

use std::fmt;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::util::{hex, parse_certificate, sha256};

/// A [`ServerCertVerifier`] that accepts any server certificate: any issuer, any name, any
/// dates. A man in the middle can read and change everything.
///
/// It still checks that the handshake is signed by the key of the certificate presented,
/// and it logs a `tracing` warning, naming the server and its key fingerprint, on every
/// handshake it is used in (the configs built with it disable session resumption, so every
/// connection is a full handshake).
#[derive(Clone)]
pub struct NoServerVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl NoServerVerification {
    /// The verifier, checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        NoServerVerification {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl fmt::Debug for NoServerVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoServerVerification")
    }
}

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let fingerprint = parse_certificate(end_entity)
            .map(|cert| hex(&sha256(cert.public_key().raw)))
            .unwrap_or_else(|_| "<unparsable certificate>".to_owned());
        tracing::warn!(
            server_name = %server_name.to_str(),
            spki_sha256 = %fingerprint,
            "TLS server certificate NOT verified (skip_server_verification): this connection is open to a man in the middle"
        );
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
