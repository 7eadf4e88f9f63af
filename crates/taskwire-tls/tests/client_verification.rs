//! Client certificates checked as `openssl verify` would (path lengths of trust anchors, a
//! written rule for EKU), CA bundles and revocation lists replaced without a restart, and
//! session resumption that re-checks the client's chain. Real handshakes over 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Echo, client_cert, connect, new_ca, ping, server_cert};
use taskwire_tls::pki_types::CertificateDer;
use taskwire_tls::rustls::{self, CertificateError, HandshakeKind};
use taskwire_tls::{
    CaBundle, CaParams, CertificateAuthority, ChainRuleViolation, ClientAuth, ClientCertParams,
    ClientConfigBuilder, ClientVerifier, Credentials, IssuedCert, ServerConfigBuilder, Validity,
};

fn server(ca: &CertificateAuthority, auth: ClientAuth) -> ServerConfigBuilder {
    ServerConfigBuilder::new(server_cert(ca, &["localhost"]).credentials().unwrap())
        .client_auth(auth)
        .tls13_only(true)
}

fn client(server_ca: &CertificateAuthority, me: Credentials) -> rustls::ClientConfig {
    ClientConfigBuilder::new(server_ca.ca_bundle().unwrap())
        .client_credentials(me)
        .build()
        .unwrap()
}

/// Connects and pings; the server's verdict on the client certificate arrives with the
/// first read in TLS 1.3. Returns how the handshake went, or the client's error.
async fn attempt(
    config: &Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> Result<HandshakeKind, std::io::Error> {
    let mut stream = connect((**config).clone(), "localhost", addr).await?;
    ping(&mut stream).await?;
    // A second ping lets the client read the session tickets sent after the handshake.
    ping(&mut stream).await?;
    Ok(stream.get_ref().1.handshake_kind().expect("handshake done"))
}

/// The same client config across connections, so its session cache resumes.
fn shared(config: rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    Arc::new(config)
}

fn rcgen_issuer(ca: &CertificateAuthority) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let key = rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap();
    rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem(), key).unwrap()
}

fn named(common_name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
}

/// An intermediate CA under `root`, and a client leaf for acme/w1 under the intermediate.
fn through_an_intermediate(root: &CertificateAuthority) -> (CertificateDer<'static>, Credentials) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = named("intermediate");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let intermediate = params.signed_by(&key, &rcgen_issuer(root)).unwrap();
    let issuer = rcgen::Issuer::new(params, key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = named("acme/w1");
    leaf.subject_alt_names = vec![rcgen::SanType::URI(
        "taskwire://acme/w1".try_into().unwrap(),
    )];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let credentials = Credentials::from_pem(
        format!("{}{}", leaf.pem(), intermediate.pem()).as_bytes(),
        leaf_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    (intermediate.der().clone(), credentials)
}

fn rule_broken(verifier: &ClientVerifier, credentials: &Credentials) -> ChainRuleViolation {
    let chain = credentials.certificate_chain();
    match verifier.verify_chain(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now()) {
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => other
            .0
            .downcast_ref::<ChainRuleViolation>()
            .cloned()
            .unwrap_or_else(|| panic!("another webpki error: {other:?}")),
        other => panic!("expected a chain rule violation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pathlen_0_root_refuses_leaves_issued_through_an_intermediate() {
    // CaParams's default CA says pathlen:0: it signs leaves only.
    let root = new_ca("root");
    let (intermediate, leaf) = through_an_intermediate(&root);
    let verifier = ClientVerifier::required(root.ca_bundle().unwrap()).unwrap();
    let echo = Echo::start(
        server(&root, ClientAuth::Verifier(Arc::clone(&verifier)))
            .build()
            .unwrap(),
    )
    .await;
    let config = shared(client(&root, leaf.clone()));
    assert!(
        attempt(&config, echo.addr).await.is_err(),
        "the handshake must fail"
    );
    assert_eq!(
        rule_broken(&verifier, &leaf),
        ChainRuleViolation::PathLenExceeded {
            ca: "CN=root".into(),
            path_len: 0,
            below: 1
        }
    );
    // The same with the intermediate in the server's bundle too: OpenSSL follows the path
    // to the self-signed root, and so does the verifier.
    let both = CaBundle::from_der(vec![root.certificate().clone(), intermediate]).unwrap();
    let verifier = ClientVerifier::required(both).unwrap();
    assert!(matches!(
        rule_broken(&verifier, &leaf),
        ChainRuleViolation::PathLenExceeded { path_len: 0, .. }
    ));

    // A root that allows one intermediate accepts the same shape of chain.
    let open_root =
        CertificateAuthority::generate(&CaParams::new("open root").path_len(Some(1))).unwrap();
    let (_, leaf) = through_an_intermediate(&open_root);
    let echo = Echo::start(
        server(
            &open_root,
            ClientAuth::Required(open_root.ca_bundle().unwrap()),
        )
        .build()
        .unwrap(),
    )
    .await;
    let config = shared(client(&open_root, leaf));
    assert_eq!(
        attempt(&config, echo.addr).await.unwrap(),
        HandshakeKind::Full
    );
}

#[tokio::test]
async fn a_client_certificate_must_carry_client_auth_in_its_extended_key_usage() {
    let ca = new_ca("ca");
    let verifier = ClientVerifier::required(ca.ca_bundle().unwrap()).unwrap();
    let echo = Echo::start(
        server(&ca, ClientAuth::Verifier(Arc::clone(&verifier)))
            .build()
            .unwrap(),
    )
    .await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = named("no eku");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "taskwire://acme/w1".try_into().unwrap(),
    )];
    let no_eku = params.signed_by(&key, &rcgen_issuer(&ca)).unwrap();
    let credentials =
        Credentials::from_pem(no_eku.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let config = shared(client(&ca, credentials.clone()));
    assert!(attempt(&config, echo.addr).await.is_err());
    assert_eq!(
        rule_broken(&verifier, &credentials),
        ChainRuleViolation::NotForClientAuth {
            subject: "CN=no eku".into(),
            reason: "it has no extended key usage extension",
        }
    );
    // A certificate this crate issues for a client passes.
    let good = shared(client(
        &ca,
        client_cert(&ca, "acme", "w1").credentials().unwrap(),
    ));
    attempt(&good, echo.addr).await.unwrap();
}

#[tokio::test]
async fn reloading_the_bundle_and_a_revocation_list_applies_to_the_next_handshake() {
    let ca = new_ca("ca");
    let verifier = ClientVerifier::required(ca.ca_bundle().unwrap()).unwrap();
    let echo = Echo::start(
        server(&ca, ClientAuth::Verifier(Arc::clone(&verifier)))
            .resumption_lifetime(Duration::ZERO)
            .build()
            .unwrap(),
    )
    .await;
    let revoked = client_cert(&ca, "acme", "lost-laptop");
    let kept = client_cert(&ca, "acme", "w1");
    let revoked_client = shared(client(&ca, revoked.credentials().unwrap()));
    let kept_client = shared(client(&ca, kept.credentials().unwrap()));
    attempt(&revoked_client, echo.addr).await.unwrap();

    let crl = ca.revoke(None, &[revoked.certificate().clone()]).unwrap();
    verifier.reload(ca.ca_bundle().unwrap(), vec![crl]).unwrap();
    assert_eq!(verifier.generation(), 1);
    assert_eq!(verifier.revocation_list_count(), 1);
    let refused = attempt(&revoked_client, echo.addr).await.unwrap_err();
    assert!(
        refused.to_string().contains("CertificateRevoked")
            || refused.to_string().contains("certificate revoked")
            || refused.to_string().contains("Revoked"),
        "{refused}"
    );
    attempt(&kept_client, echo.addr).await.unwrap();

    // A bundle without the CA: its clients are refused from the next handshake on.
    let other = new_ca("other");
    verifier
        .reload(other.ca_bundle().unwrap(), Vec::new())
        .unwrap();
    assert!(attempt(&kept_client, echo.addr).await.is_err());
    // A reload that fails keeps the bundle in force.
    let not_a_crl = rustls::pki_types::CertificateRevocationListDer::from(vec![0x30, 0x00]);
    assert!(
        verifier
            .reload(ca.ca_bundle().unwrap(), vec![not_a_crl])
            .is_err()
    );
    assert_eq!(verifier.generation(), 2);
    assert!(attempt(&kept_client, echo.addr).await.is_err());
}

fn short_lived(ca: &CertificateAuthority, lifetime: Duration) -> IssuedCert {
    let now = SystemTime::now();
    ca.issue_client(&ClientCertParams::new("acme", "w1").validity(Validity {
        not_before: now - Duration::from_secs(60),
        not_after: now + lifetime,
    }))
    .unwrap()
}

#[tokio::test]
async fn a_fresh_client_certificate_resumes_and_an_expired_one_does_not() {
    let ca = new_ca("ca");
    let echo = Echo::start(
        server(&ca, ClientAuth::Required(ca.ca_bundle().unwrap()))
            .build()
            .unwrap(),
    )
    .await;
    let me = short_lived(&ca, Duration::from_secs(3));
    let config = shared(client(&ca, me.credentials().unwrap()));
    assert_eq!(
        attempt(&config, echo.addr).await.unwrap(),
        HandshakeKind::Full
    );
    // Within the certificate's life the session resumes: the store read its chain.
    assert_eq!(
        attempt(&config, echo.addr).await.unwrap(),
        HandshakeKind::Resumed
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Expired now: the resumption is declined, and the full handshake refuses it.
    let refused = attempt(&config, echo.addr).await.unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("expired")
            || refused.to_string().contains("CertificateExpired")
            || refused.to_string().contains("certificate_expired")
            || refused.to_string().contains("Expired"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_revoked_client_certificate_does_not_resume() {
    let ca = new_ca("ca");
    let verifier = ClientVerifier::required(ca.ca_bundle().unwrap()).unwrap();
    let echo = Echo::start(
        server(&ca, ClientAuth::Verifier(Arc::clone(&verifier)))
            .build()
            .unwrap(),
    )
    .await;
    let me = client_cert(&ca, "acme", "w1");
    let config = shared(client(&ca, me.credentials().unwrap()));
    attempt(&config, echo.addr).await.unwrap();
    let crl = ca.revoke(None, &[me.certificate().clone()]).unwrap();
    verifier.reload(ca.ca_bundle().unwrap(), vec![crl]).unwrap();
    assert!(attempt(&config, echo.addr).await.is_err());
}

#[tokio::test]
async fn sessions_end_after_the_resumption_lifetime() {
    let ca = new_ca("ca");
    let echo = Echo::start(
        server(&ca, ClientAuth::Required(ca.ca_bundle().unwrap()))
            .resumption_lifetime(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await;
    let config = shared(client(
        &ca,
        client_cert(&ca, "acme", "w1").credentials().unwrap(),
    ));
    assert_eq!(
        attempt(&config, echo.addr).await.unwrap(),
        HandshakeKind::Full
    );
    assert_eq!(
        attempt(&config, echo.addr).await.unwrap(),
        HandshakeKind::Resumed
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        attempt(&config, echo.addr).await.unwrap(),
        HandshakeKind::Full
    );
}
