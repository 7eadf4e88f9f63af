//! TLS for taskwire connections: every connection authenticated, in production and in
//! development, with rustls and rcgen and no OpenSSL.
//!
//! # The pieces
//!
//! * **Issuing** ([`CertificateAuthority`]): a CA ([`CaParams`]), server certificates with
//!   DNS and IP SANs and the serverAuth EKU ([`ServerCertParams`]), and client certificates
//!   with the clientAuth EKU naming their peer by the URI SAN `taskwire://TENANT/ID`
//!   ([`ClientCertParams`]). A `CertificateAuthority` can only be generated as a CA or loaded
//!   from a certificate whose basic constraints say CA, so a leaf is never signed by a
//!   non-CA.
//! * **PEM files** ([`pem`], and `write_pem_files` on issued certificates): private keys
//!   written with mode `0600`, nothing overwritten unless asked, load errors that name the
//!   file ([`TlsError`], [`Origin`]).
//! * **Configs**: [`ServerConfigBuilder`] and [`ClientConfigBuilder`] make
//!   `rustls::ServerConfig`/`ClientConfig` with server authentication against a
//!   [`CaBundle`], optional or required client certificates ([`ClientAuth`]), ALPN, a
//!   `tls13_only` switch for QUIC, and the chosen [`provider`].
//! * **Peer identity** ([`PeerIdentity`]) read from the peer's certificate after the
//!   handshake, and an allowlist ([`Authorizer`]) by tenant, by (tenant, id) or by key
//!   fingerprint.
//! * **Pinning** ([`ClientConfigBuilder::pinned`], [`SpkiPinVerifier`]): trust a
//!   self-signed development server by the SHA-256 of its public key without turning
//!   verification off.
//! * **No verification** only through the explicitly named
//!   `ClientConfigBuilder::dangerous().skip_server_verification()` ([`danger`]), which logs
//!   a warning on every handshake. There is no Cargo feature for it.
//! * **Rotation** ([`ReloadableCertResolver`]): swap a server's certificate from disk while
//!   it runs; a bad or mismatched pair is refused and the old one kept.
//! * **Inspection** ([`inspect`], [`CertificateInfo`]).
//!
//! # Defaults
//!
//! | what | default |
//! |---|---|
//! | CA validity | 10 years ([`DEFAULT_CA_VALIDITY`]) |
//! | leaf validity | 90 days ([`DEFAULT_LEAF_VALIDITY`]) |
//! | `not_before` | backdated 5 minutes for clock skew ([`CLOCK_SKEW_ALLOWANCE`]) |
//! | key algorithm | ECDSA P-256 ([`KeyAlgorithm::EcdsaP256`]); Ed25519 on request |
//! | CA path length | 0: the CA signs leaves only |
//! | serial numbers | 16 random bytes |
//! | key file mode | `0600`; certificates `0644` |
//! | overwrite files | never, unless `overwrite` is set |
//! | client authentication | [`ClientAuth::Disabled`] |
//! | protocol versions | TLS 1.3 and 1.2; TLS 1.3 only with `tls13_only(true)` |
//! | cipher suites | the provider's, AES-128-GCM then AES-256-GCM first |
//! | crypto provider | *ring* (feature `ring`, default); aws-lc-rs with feature `aws-lc-rs` |
//! | ALPN | none |
//!
//! # Example: mTLS between a server and a worker
//!
//! ```
//! use taskwire_tls::{
//!     Authorizer, CaParams, CertificateAuthority, ClientAuth, ClientCertParams,
//!     ClientConfigBuilder, PeerIdentity, ServerCertParams, ServerConfigBuilder,
//! };
//!
//! let ca = CertificateAuthority::generate(&CaParams::new("taskwire CA"))?;
//! let server_cert = ca.issue_server(&ServerCertParams::new(["engine.internal"]))?;
//! let worker_cert = ca.issue_client(&ClientCertParams::new("acme", "worker-7"))?;
//!
//! let server_config = ServerConfigBuilder::new(server_cert.credentials()?)
//!     .client_auth(ClientAuth::Required(ca.ca_bundle()?))
//!     .build()?;
//! let client_config = ClientConfigBuilder::new(ca.ca_bundle()?)
//!     .client_credentials(worker_cert.credentials()?)
//!     .build()?;
//!
//! // After the handshake, the server reads who connected and decides whether to go on:
//! // `PeerIdentity::from_connection(&server_connection)?`.
//! let peer = PeerIdentity::from_certificate(worker_cert.certificate())?;
//! let mut allowed = Authorizer::new();
//! allowed.allow_tenant("acme");
//! assert!(allowed.check(&peer).is_ok());
//! # drop((server_config, client_config));
//! # Ok::<(), taskwire_tls::TlsError>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod credentials;
pub mod danger;
mod error;
mod identity;
mod inspect;
mod issue;
pub mod pem;
mod pin;
pub mod provider;
mod reload;
mod resumption;
mod util;
mod verifier;

pub use config::{
    ClientAuth, ClientConfigBuilder, DangerousClientConfigBuilder, ServerConfigBuilder,
};
pub use credentials::{CaBundle, Credentials};
pub use error::{IssueErrorKind, LoadErrorKind, Origin, TlsError, WriteErrorKind};
pub use identity::{
    AuthorizationError, Authorizer, IDENTITY_URI_SCHEME, MAX_IDENTITY_COMPONENT_LEN, PeerIdentity,
    identity_uri, parse_identity_uri,
};
pub use inspect::{CertificateInfo, inspect, inspect_all, inspect_file};
pub use issue::{
    CLOCK_SKEW_ALLOWANCE, CaParams, CertificateAuthority, ClientCertParams, DEFAULT_CA_VALIDITY,
    DEFAULT_CRL_VALIDITY, DEFAULT_LEAF_VALIDITY, IssuedCert, KeyAlgorithm, ServerCertParams,
    Validity,
};
pub use pin::{
    PinMismatch, SpkiPinVerifier, fingerprint_from_hex, fingerprint_to_hex, spki_sha256,
};
pub use reload::ReloadableCertResolver;
pub use resumption::{
    DEFAULT_RESUMPTION_LIFETIME, DEFAULT_RESUMPTION_SESSIONS, VerifyingSessionStore,
};
pub use verifier::{ChainRuleViolation, ClientVerifier};

/// The rustls version this crate's configs are for.
pub use rustls;
/// The rustls-pki-types version of the certificate and key types in this crate's API.
pub use rustls_pki_types as pki_types;
