//! The rustls crypto providers this crate can use, chosen by Cargo feature.
//!
//! * `ring` (default feature): `ring()`, and the [`default_provider()`] when enabled.
//! * `aws-lc-rs`: `aws_lc_rs()`; the [`default_provider()`] when `ring` is off.
//!
//! Each function exists only with its feature.
//!
//! Every config builder of this crate starts from [`default_provider()`] and takes another
//! through its `crypto_provider` setter. Builders never install a process-wide default
//! provider and never read one.

use std::sync::{Arc, OnceLock};

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!(
    "taskwire-tls needs a crypto provider: enable the `ring` or the `aws-lc-rs` feature"
);

/// The provider this build uses by default: *ring* when the `ring` feature is on,
/// otherwise aws-lc-rs. The same `Arc` on every call.
///
/// ```
/// let provider = taskwire_tls::provider::default_provider();
/// assert!(!provider.cipher_suites.is_empty());
/// ```
pub fn default_provider() -> Arc<CryptoProvider> {
    static DEFAULT: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            #[cfg(feature = "ring")]
            let provider = rustls::crypto::ring::default_provider();
            #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            Arc::new(provider)
        })
        .clone()
}

/// rustls's *ring* provider (feature `ring`).
#[cfg(feature = "ring")]
pub fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls's aws-lc-rs provider (feature `aws-lc-rs`).
#[cfg(feature = "aws-lc-rs")]
pub fn aws_lc_rs() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Whether `suite` is an AES-GCM suite.
pub(crate) fn is_aes_gcm(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    )
}

/// Whether `suite` is an AES-128-GCM suite with SHA-256.
fn is_aes_128_gcm(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

/// The provider a config is built with: `base` with its AES-GCM suites moved to the
/// front, AES-128-GCM before AES-256-GCM (keeping the provider's order otherwise), and,
/// for `tls13_only`, its TLS 1.2 suites removed.
///
/// AES-128 first because it is the cheaper of the two at the same standing (it is the
/// suite QUIC protects its first packets with, and TLS 1.3's mandatory one): its SHA-256
/// key schedule runs on the SHA extensions of current x86 and ARM cores where SHA-384 is
/// software, which made up most of the hashing in a resumed QUIC handshake, and AES-128
/// encrypts bulk data faster than AES-256.
pub(crate) fn for_config(base: &CryptoProvider, tls13_only: bool) -> Arc<CryptoProvider> {
    let mut provider = base.clone();
    if tls13_only {
        provider.cipher_suites.retain(|s| s.tls13().is_some());
    }
    // A stable sort: AES-128-GCM, then AES-256-GCM, then the rest, each group in the
    // provider's order.
    provider.cipher_suites.sort_by_key(|s| {
        let suite = s.suite();
        (!is_aes_128_gcm(suite), !is_aes_gcm(suite))
    });
    Arc::new(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_first_and_tls13_filter() {
        let base = default_provider();
        let all = for_config(&base, false);
        assert_eq!(all.cipher_suites.len(), base.cipher_suites.len());
        let first_other = all
            .cipher_suites
            .iter()
            .position(|s| !is_aes_gcm(s.suite()))
            .unwrap_or(all.cipher_suites.len());
        assert!(first_other > 0);
        assert_eq!(
            all.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            "AES-128-GCM leads"
        );
        assert!(
            all.cipher_suites[first_other..]
                .iter()
                .all(|s| !is_aes_gcm(s.suite())),
            "{:?}",
            all.cipher_suites
        );

        let tls13 = for_config(&base, true);
        assert!(!tls13.cipher_suites.is_empty());
        assert!(tls13.cipher_suites.iter().all(|s| s.tls13().is_some()));
        assert!(is_aes_gcm(tls13.cipher_suites[0].suite()));

        // A provider listing ChaCha20 first gets AES-GCM moved ahead of it.
        let mut reversed = (*base).clone();
        reversed.cipher_suites.reverse();
        assert!(!is_aes_gcm(reversed.cipher_suites[0].suite()));
        let reordered = for_config(&reversed, false);
        assert!(is_aes_gcm(reordered.cipher_suites[0].suite()));
        assert_eq!(reordered.cipher_suites.len(), reversed.cipher_suites.len());
    }
}
