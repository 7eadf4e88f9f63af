//! Real TLS handshakes over 127.0.0.1 with certificates made by this crate: what is accepted
//! and, above all, what is rejected and with which error.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use taskwire_tls::pki_types::ServerName;
use taskwire_tls::rustls::server::ResolvesServerCert;
use taskwire_tls::rustls::sign::{CertifiedKey, SingleCertAndKey};
use taskwire_tls::rustls::{
    self, AlertDescription, CertificateError, ExtendedKeyPurpose, PeerIncompatible, ProtocolVersion,
};
use taskwire_tls::{
    Authorizer, CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    KeyAlgorithm, LoadErrorKind, PinMismatch, ServerCertParams, ServerConfigBuilder, TlsError,
    Validity,
};

fn server_config(cert: &taskwire_tls::IssuedCert) -> rustls::ServerConfig {
    ServerConfigBuilder::new(cert.credentials().expect("credentials"))
        .build()
        .expect("server config")
}

fn mtls_server_config(
    cert: &taskwire_tls::IssuedCert,
    ca: &CertificateAuthority,
) -> rustls::ServerConfig {
    ServerConfigBuilder::new(cert.credentials().expect("credentials"))
        .client_auth(ClientAuth::Required(ca.ca_bundle().expect("bundle")))
        .build()
        .expect("server config")
}

fn client_config(ca: &CertificateAuthority) -> rustls::ClientConfig {
    ClientConfigBuilder::new(ca.ca_bundle().expect("bundle"))
        .build()
        .expect("client config")
}

fn mtls_client_config(
    ca: &CertificateAuthority,
    cert: &taskwire_tls::IssuedCert,
) -> rustls::ClientConfig {
    ClientConfigBuilder::new(ca.ca_bundle().expect("bundle"))
        .client_credentials(cert.credentials().expect("credentials"))
        .build()
        .expect("client config")
}

/// Runs one handshake and ping against a one-shot server, returning both sides' results.
async fn attempt(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    server_name: &str,
) -> (std::io::Result<()>, std::io::Result<Served>) {
    let one_shot = OneShot::start(server).await;
    let client_result = match connect(client, server_name, one_shot.addr).await {
        Ok(mut stream) => ping(&mut stream).await,
        Err(e) => Err(e),
    };
    (client_result, one_shot.outcome().await)
}

fn expect_invalid_certificate(error: &rustls::Error, what: &str) -> CertificateError {
    match error {
        rustls::Error::InvalidCertificate(e) => e.clone(),
        other => panic!("{what}: expected InvalidCertificate, got {other:?}"),
    }
}

#[tokio::test]
async fn mtls_handshake_succeeds_and_server_reads_peer_identity() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);
    let client = client_cert(&ca, "acme", "worker-7");

    let (client_result, served) = attempt(
        mtls_server_config(&server, &ca),
        mtls_client_config(&ca, &client),
        "localhost",
    )
    .await;
    client_result.expect("client side");
    let served = served.expect("server side");

    let peer = served.peer.expect("the client presented a certificate");
    assert_eq!(peer.tenant.as_deref(), Some("acme"));
    assert_eq!(peer.id.as_deref(), Some("worker-7"));
    assert_eq!(peer.san_uris, ["taskwire://acme/worker-7"]);
    assert_eq!(peer.subject, "CN=acme/worker-7");
    assert_eq!(peer.spki_sha256, client.spki_sha256());
    assert!(peer.dns_names.is_empty() && peer.ip_addresses.is_empty());

    let mut allowed = Authorizer::new();
    allowed.allow_instance("acme", "worker-7");
    assert_eq!(allowed.check(&peer), Ok(()));
}

#[tokio::test]
async fn identity_not_on_the_allowlist_is_denied_after_a_real_handshake() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);
    let client = client_cert(&ca, "globex", "worker-2");

    let (client_result, served) = attempt(
        mtls_server_config(&server, &ca),
        mtls_client_config(&ca, &client),
        "localhost",
    )
    .await;
    client_result.expect("client side");
    let peer = served.expect("server side").peer.expect("peer identity");

    let mut allowed = Authorizer::new();
    allowed
        .allow_tenant("acme")
        .allow_instance("globex", "worker-1")
        .allow_spki_sha256([7; 32]);
    let denied = allowed
        .check(&peer)
        .expect_err("globex/worker-2 is not allowed");
    assert_eq!(denied.tenant.as_deref(), Some("globex"));
    assert_eq!(denied.id.as_deref(), Some("worker-2"));
    assert_eq!(denied.spki_sha256, client.spki_sha256());
    let message = denied.to_string();
    assert!(
        message.contains("tenant \"globex\" id \"worker-2\""),
        "{message}"
    );
    assert!(message.contains(&peer.spki_sha256_hex()), "{message}");

    // The same peer is allowed by its tenant, its (tenant, id) or its key.
    for allow in [
        Authorizer::new().allow_tenant("globex").clone(),
        Authorizer::new()
            .allow_instance("globex", "worker-2")
            .clone(),
        Authorizer::new()
            .allow_spki_sha256(client.spki_sha256())
            .clone(),
    ] {
        assert_eq!(allow.check(&peer), Ok(()));
    }
    // Allowing a tenant of the same name as the id does not allow the peer.
    assert!(
        Authorizer::new()
            .allow_tenant("worker-2")
            .check(&peer)
            .is_err()
    );
    assert!(Authorizer::new().check(&peer).is_err());
}

#[tokio::test]
async fn server_certificate_from_unknown_ca_is_rejected() {
    let ca = new_ca("real CA");
    let other_ca = new_ca("other CA");
    let server = server_cert(&other_ca, &["localhost"]);

    let (client_result, served) =
        attempt(server_config(&server), client_config(&ca), "localhost").await;
    let error = expect_tls_error(client_result, "client");
    assert_eq!(
        error,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert_eq!(
        expect_tls_error(served, "server"),
        rustls::Error::AlertReceived(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn wrong_dns_name_is_rejected() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);

    let (client_result, _) =
        attempt(server_config(&server), client_config(&ca), "engine.example").await;
    let error = expect_tls_error(client_result, "client");
    match expect_invalid_certificate(&error, "wrong name") {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            assert_eq!(expected, ServerName::try_from("engine.example").unwrap());
            assert_eq!(presented, ["DnsName(\"localhost\")"]);
        }
        other => panic!("expected NotValidForNameContext, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_by_ip_needs_an_ip_san() {
    let ca = new_ca("ca");

    // A DNS-only certificate does not cover 127.0.0.1...
    let dns_only = server_cert(&ca, &["localhost"]);
    let (client_result, _) =
        attempt(server_config(&dns_only), client_config(&ca), "127.0.0.1").await;
    let error = expect_tls_error(client_result, "DNS-only certificate");
    match expect_invalid_certificate(&error, "DNS-only certificate") {
        CertificateError::NotValidForNameContext { expected, .. } => {
            assert_eq!(expected, ServerName::try_from("127.0.0.1").unwrap());
        }
        other => panic!("expected NotValidForNameContext, got {other:?}"),
    }

    // ...a certificate with that IP SAN does.
    let with_ip = server_cert(&ca, &["localhost", "127.0.0.1"]);
    let (client_result, served) =
        attempt(server_config(&with_ip), client_config(&ca), "127.0.0.1").await;
    client_result.expect("IP SAN certificate accepted");
    served.expect("server side");
}

/// rcgen's issuer for a CA made by this crate, to build certificates this crate's API
/// would refuse to make.
fn rcgen_issuer(ca: &CertificateAuthority) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let key = rcgen::KeyPair::from_pem(&ca.key_pem()).expect("CA key");
    rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem(), key).expect("CA issuer")
}

fn rcgen_leaf_params(common_name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

fn rcgen_server_config(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    chain_tail: &[&[u8]],
) -> rustls::ServerConfig {
    let mut chain = vec![cert.der().clone()];
    chain.extend(chain_tail.iter().map(|der| der.to_vec().into()));
    let credentials =
        taskwire_tls::Credentials::from_der(chain, key.serialize_der().try_into().unwrap())
            .expect("credentials");
    ServerConfigBuilder::new(credentials)
        .build()
        .expect("server config")
}

#[tokio::test]
async fn common_name_only_certificate_is_rejected() {
    let ca = new_ca("ca");
    let issuer = rcgen_issuer(&ca);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen_leaf_params("localhost")
        .signed_by(&key, &issuer)
        .unwrap();
    assert!(
        taskwire_tls::inspect(cert.der())
            .unwrap()
            .dns_names
            .is_empty()
    );

    let (client_result, _) = attempt(
        rcgen_server_config(&cert, &key, &[]),
        client_config(&ca),
        "localhost",
    )
    .await;
    let error = expect_tls_error(client_result, "CN-only certificate");
    match expect_invalid_certificate(&error, "CN-only certificate") {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            assert_eq!(expected, ServerName::try_from("localhost").unwrap());
            assert!(presented.is_empty(), "{presented:?}");
        }
        other => panic!("expected NotValidForNameContext, got {other:?}"),
    }
}

#[tokio::test]
async fn leaf_signed_by_a_non_ca_is_rejected() {
    let ca = new_ca("ca");
    // A genuine server leaf of the CA, whose key an attacker holds...
    let genuine = server_cert(&ca, &["genuine.example"]);
    let genuine_key = rcgen::KeyPair::from_pem(&genuine.key_pem()).unwrap();
    // ...signs a certificate for another name with rcgen directly (rcgen does not check
    // that an issuer is a CA) and presents the genuine leaf as the intermediate.
    let forger = rcgen::Issuer::from_ca_cert_der(genuine.certificate(), genuine_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen_leaf_params("localhost");
    params.subject_alt_names = vec![rcgen::SanType::DnsName("localhost".try_into().unwrap())];
    let forged = params.signed_by(&key, &forger).unwrap();

    let config = rcgen_server_config(&forged, &key, &[genuine.certificate()]);
    let (client_result, served) = attempt(config, client_config(&ca), "localhost").await;
    let error = expect_tls_error(client_result, "leaf signed by a non-CA");
    // webpki finds the path and refuses it because the "intermediate" is an end entity.
    match expect_invalid_certificate(&error, "leaf signed by a non-CA") {
        CertificateError::Other(other) => assert_eq!(format!("{:?}", other.0), "EndEntityUsedAsCa"),
        other => panic!("expected EndEntityUsedAsCa, got {other:?}"),
    }
    assert_eq!(
        expect_tls_error(served, "server"),
        rustls::Error::AlertReceived(AlertDescription::CertificateUnknown)
    );

    // This crate refuses the genuine leaf as an issuer in the first place.
    let refused =
        CertificateAuthority::from_pem(genuine.cert_pem().as_bytes(), genuine.key_pem().as_bytes())
            .expect_err("a leaf is not a CA");
    match refused {
        TlsError::Load {
            kind: LoadErrorKind::NotCa { subject, reason },
            ..
        } => {
            assert_eq!(subject, "CN=genuine.example");
            assert_eq!(reason, "its basic constraints say CA:FALSE");
        }
        other => panic!("expected NotCa, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_server_certificates_are_rejected() {
    let ca = new_ca("ca");
    let expired = ca
        .issue_server(
            &ServerCertParams::new(["localhost"])
                .validity(Validity::new(date(2020, 1, 1), date(2020, 12, 31))),
        )
        .unwrap();
    let (client_result, _) =
        attempt(server_config(&expired), client_config(&ca), "localhost").await;
    let error = expect_tls_error(client_result, "expired server certificate");
    match expect_invalid_certificate(&error, "expired") {
        CertificateError::ExpiredContext { not_after, .. } => {
            assert_eq!(not_after.as_secs(), 1_609_372_800); // 2020-12-31T00:00:00Z
        }
        other => panic!("expected ExpiredContext, got {other:?}"),
    }

    let future = ca
        .issue_server(
            &ServerCertParams::new(["localhost"])
                .validity(Validity::new(date(2100, 1, 1), date(2101, 1, 1))),
        )
        .unwrap();
    let (client_result, _) = attempt(server_config(&future), client_config(&ca), "localhost").await;
    let error = expect_tls_error(client_result, "not-yet-valid server certificate");
    match expect_invalid_certificate(&error, "not yet valid") {
        CertificateError::NotValidYetContext { not_before, .. } => {
            assert_eq!(not_before.as_secs(), 4_102_444_800); // 2100-01-01T00:00:00Z
        }
        other => panic!("expected NotValidYetContext, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_client_certificates_are_rejected() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);

    let expired = ca
        .issue_client(
            &ClientCertParams::new("acme", "old")
                .validity(Validity::new(date(2019, 3, 1), date(2019, 6, 1))),
        )
        .unwrap();
    let (client_result, served) = attempt(
        mtls_server_config(&server, &ca),
        mtls_client_config(&ca, &expired),
        "localhost",
    )
    .await;
    match expect_invalid_certificate(&expect_tls_error(served, "server"), "expired client") {
        CertificateError::ExpiredContext { not_after, .. } => {
            assert_eq!(not_after.as_secs(), 1_559_347_200);
        }
        other => panic!("expected ExpiredContext, got {other:?}"),
    }
    assert_eq!(
        expect_tls_error(client_result, "client"),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired)
    );

    let future = ca
        .issue_client(
            &ClientCertParams::new("acme", "new")
                .validity(Validity::new(date(2100, 1, 1), date(2101, 1, 1))),
        )
        .unwrap();
    let (client_result, served) = attempt(
        mtls_server_config(&server, &ca),
        mtls_client_config(&ca, &future),
        "localhost",
    )
    .await;
    match expect_invalid_certificate(&expect_tls_error(served, "server"), "not-yet-valid client") {
        CertificateError::NotValidYetContext { not_before, .. } => {
            assert_eq!(not_before.as_secs(), 4_102_444_800);
        }
        other => panic!("expected NotValidYetContext, got {other:?}"),
    }
    assert_eq!(
        expect_tls_error(client_result, "client"),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired)
    );
}

#[tokio::test]
async fn client_auth_certificate_cannot_serve() {
    let ca = new_ca("ca");
    // A clientAuth-only certificate used as a server certificate.
    let client_only = client_cert(&ca, "acme", "localhost");
    let (client_result, _) =
        attempt(server_config(&client_only), client_config(&ca), "localhost").await;
    let error = expect_tls_error(client_result, "clientAuth certificate as server");
    match expect_invalid_certificate(&error, "swapped EKU") {
        CertificateError::InvalidPurposeContext {
            required,
            presented,
        } => {
            assert_eq!(required, ExtendedKeyPurpose::ServerAuth);
            assert_eq!(presented, [ExtendedKeyPurpose::ClientAuth]);
        }
        other => panic!("expected InvalidPurposeContext, got {other:?}"),
    }
}

#[tokio::test]
async fn server_auth_certificate_cannot_authenticate_a_client() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);
    // A serverAuth-only certificate used as a client certificate.
    let server_only = server_cert(&ca, &["worker.example"]);
    let (client_result, served) = attempt(
        mtls_server_config(&server, &ca),
        mtls_client_config(&ca, &server_only),
        "localhost",
    )
    .await;
    match expect_invalid_certificate(&expect_tls_error(served, "server"), "swapped EKU") {
        CertificateError::InvalidPurposeContext {
            required,
            presented,
        } => {
            assert_eq!(required, ExtendedKeyPurpose::ClientAuth);
            assert_eq!(presented, [ExtendedKeyPurpose::ServerAuth]);
        }
        other => panic!("expected InvalidPurposeContext, got {other:?}"),
    }
    assert_eq!(
        expect_tls_error(client_result, "client"),
        rustls::Error::AlertReceived(AlertDescription::UnsupportedCertificate)
    );
}

#[tokio::test]
async fn missing_client_certificate_gets_a_definite_alert() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);
    let one_shot = OneShot::start(mtls_server_config(&server, &ca)).await;

    // In TLS 1.3 the client finishes its side of the handshake before the server has
    // judged it; the refusal arrives as an alert on the first read. `connect` and `ping`
    // are bounded by a timeout: the error must arrive, not a hang.
    let result = match connect(client_config(&ca), "localhost", one_shot.addr).await {
        Ok(mut stream) => ping(&mut stream).await,
        Err(e) => Err(e),
    };
    assert_eq!(
        expect_tls_error(result, "client without certificate"),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
    );
    assert_eq!(
        expect_tls_error(one_shot.outcome().await, "server"),
        rustls::Error::NoCertificatesPresented
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_rejected() {
    let ca = new_ca("ca");
    let other_ca = new_ca("other CA");
    let server = server_cert(&ca, &["localhost"]);
    let stranger = client_cert(&other_ca, "acme", "worker-7");

    let (client_result, served) = attempt(
        mtls_server_config(&server, &ca),
        mtls_client_config(&ca, &stranger),
        "localhost",
    )
    .await;
    assert_eq!(
        expect_tls_error(served, "server"),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert_eq!(
        expect_tls_error(client_result, "client"),
        rustls::Error::AlertReceived(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn optional_client_auth_accepts_anonymous_clients_but_verifies_presented_certificates() {
    let ca = new_ca("ca");
    let other_ca = new_ca("other CA");
    let server = server_cert(&ca, &["localhost"]);
    let optional = || {
        ServerConfigBuilder::new(server.credentials().unwrap())
            .client_auth(ClientAuth::Optional(ca.ca_bundle().unwrap()))
            .build()
            .unwrap()
    };

    let (client_result, served) = attempt(optional(), client_config(&ca), "localhost").await;
    client_result.expect("anonymous client accepted");
    assert!(served.expect("server side").peer.is_none());

    let member = client_cert(&ca, "acme", "worker-1");
    let (client_result, served) =
        attempt(optional(), mtls_client_config(&ca, &member), "localhost").await;
    client_result.expect("client with a certificate accepted");
    assert_eq!(
        served.unwrap().peer.unwrap().id.as_deref(),
        Some("worker-1")
    );

    let stranger = client_cert(&other_ca, "acme", "worker-2");
    let (_, served) = attempt(optional(), mtls_client_config(&ca, &stranger), "localhost").await;
    assert_eq!(
        expect_tls_error(served, "server"),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn ed25519_certificates_work_for_mtls() {
    let ca = CertificateAuthority::generate(
        &CaParams::new("ed CA").key_algorithm(KeyAlgorithm::Ed25519),
    )
    .unwrap();
    let server = ca
        .issue_server(&ServerCertParams::new(["localhost"]).key_algorithm(KeyAlgorithm::Ed25519))
        .unwrap();
    let client = ca
        .issue_client(
            &ClientCertParams::new("acme", "ed-worker").key_algorithm(KeyAlgorithm::Ed25519),
        )
        .unwrap();
    let (client_result, served) = attempt(
        mtls_server_config(&server, &ca),
        mtls_client_config(&ca, &client),
        "localhost",
    )
    .await;
    client_result.expect("client side");
    assert_eq!(
        served.unwrap().peer.unwrap().id.as_deref(),
        Some("ed-worker")
    );
}

#[cfg(all(feature = "ring", feature = "aws-lc-rs"))]
#[tokio::test]
async fn ring_and_aws_lc_rs_providers_interoperate() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);
    let client = client_cert(&ca, "acme", "worker-7");
    let server_config = ServerConfigBuilder::new(server.credentials().unwrap())
        .client_auth(ClientAuth::Required(ca.ca_bundle().unwrap()))
        .crypto_provider(taskwire_tls::provider::aws_lc_rs())
        .build()
        .unwrap();
    let client_config = ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .client_credentials(client.credentials().unwrap())
        .crypto_provider(taskwire_tls::provider::ring())
        .build()
        .unwrap();
    let (client_result, served) = attempt(server_config, client_config, "localhost").await;
    client_result.expect("client side");
    assert_eq!(
        served.unwrap().peer.unwrap().tenant.as_deref(),
        Some("acme")
    );
}

#[tokio::test]
async fn tls13_only_and_alpn_are_applied() {
    let ca = new_ca("ca");
    let server = server_cert(&ca, &["localhost"]);
    let server_config = || {
        ServerConfigBuilder::new(server.credentials().unwrap())
            .alpn_protocols(["taskwire/1"])
            .tls13_only(true)
            .build()
            .unwrap()
    };
    let client = ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .alpn_protocols(["taskwire/2", "taskwire/1"])
        .tls13_only(true)
        .build()
        .unwrap();
    let (client_result, served) = attempt(server_config(), client, "localhost").await;
    client_result.expect("client side");
    let served = served.unwrap();
    assert_eq!(served.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(served.alpn.as_deref(), Some(&b"taskwire/1"[..]));

    // A TLS 1.2-only client (made with rustls directly) cannot talk to a tls13_only server.
    let tls12_client =
        rustls::ClientConfig::builder_with_provider(taskwire_tls::provider::default_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(ca.ca_bundle().unwrap().root_store())
            .with_no_client_auth();
    let (client_result, served) = attempt(server_config(), tls12_client, "localhost").await;
    assert_eq!(
        expect_tls_error(served, "server"),
        rustls::Error::PeerIncompatible(PeerIncompatible::Tls12NotOfferedOrEnabled)
    );
    assert_eq!(
        expect_tls_error(client_result, "client"),
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
    );

    // A client offering only other ALPN protocols is refused.
    let wrong_alpn = ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .alpn_protocols(["h2"])
        .build()
        .unwrap();
    let (_, served) = attempt(server_config(), wrong_alpn, "localhost").await;
    assert_eq!(
        expect_tls_error(served, "server"),
        rustls::Error::NoApplicationProtocol
    );
}

#[tokio::test]
async fn pinned_fingerprint_that_matches_connects_and_one_that_does_not_is_rejected() {
    // A self-signed development server, made with rcgen directly: no CA anywhere.
    let self_signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pin = taskwire_tls::spki_sha256(self_signed.cert.der()).unwrap();
    let config = || rcgen_server_config(&self_signed.cert, &self_signed.signing_key, &[]);

    let (client_result, served) = attempt(
        config(),
        ClientConfigBuilder::pinned([pin]).build().unwrap(),
        "localhost",
    )
    .await;
    client_result.expect("pinned server accepted");
    served.expect("server side");

    let other = [0xab; 32];
    let (client_result, served) = attempt(
        config(),
        ClientConfigBuilder::pinned([other]).build().unwrap(),
        "localhost",
    )
    .await;
    let error = expect_tls_error(client_result, "wrong pin");
    match expect_invalid_certificate(&error, "wrong pin") {
        CertificateError::Other(other) => {
            let mismatch = other
                .0
                .downcast_ref::<PinMismatch>()
                .expect("a PinMismatch");
            assert_eq!(mismatch.presented, pin);
        }
        other => panic!("expected a PinMismatch, got {other:?}"),
    }
    assert_eq!(
        expect_tls_error(served, "server"),
        rustls::Error::AlertReceived(AlertDescription::CertificateUnknown)
    );
}

#[tokio::test]
async fn pinning_still_checks_dates_and_handshake_signatures() {
    let ca = new_ca("dev");
    let expired = ca
        .issue_server(
            &ServerCertParams::new(["localhost"])
                .validity(Validity::new(date(2020, 1, 1), date(2020, 2, 1))),
        )
        .unwrap();
    let (client_result, _) = attempt(
        server_config(&expired),
        ClientConfigBuilder::pinned([expired.spki_sha256()])
            .build()
            .unwrap(),
        "localhost",
    )
    .await;
    let error = expect_tls_error(client_result, "pinned but expired");
    assert!(
        matches!(
            expect_invalid_certificate(&error, "pinned but expired"),
            CertificateError::ExpiredContext { .. }
        ),
        "{error:?}"
    );

    // A server presenting the pinned certificate without its key (it signs the handshake
    // with another key) is refused: the pin is not a password.
    let pinned = server_cert(&ca, &["localhost"]);
    let impostor = server_cert(&ca, &["localhost"]);
    let provider = taskwire_tls::provider::default_provider();
    let impostor_key = provider
        .key_provider
        .load_private_key(impostor.private_key())
        .unwrap();
    let resolver: Arc<dyn ResolvesServerCert> = Arc::new(SingleCertAndKey::from(
        CertifiedKey::new(vec![pinned.certificate().clone()], impostor_key),
    ));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    let (client_result, _) = attempt(
        config,
        ClientConfigBuilder::pinned([pinned.spki_sha256()])
            .build()
            .unwrap(),
        "localhost",
    )
    .await;
    assert_eq!(
        expect_tls_error(client_result, "impostor"),
        rustls::Error::InvalidCertificate(CertificateError::BadSignature)
    );
}

/// A tracing subscriber counting WARN events.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN
            && event.metadata().target().starts_with("taskwire_tls")
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn skipping_server_verification_connects_and_warns_on_every_handshake() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(WarnCounter(Arc::clone(&warnings)));

    let unknown_ca = new_ca("unknown");
    let server = server_cert(&unknown_ca, &["localhost"]);
    let echo = Echo::start(server_config(&server)).await;
    // One config for both connections: resumption would skip verification (and its
    // warning) on the second one, so the dangerous config disables it.
    let config = ClientConfigBuilder::dangerous()
        .skip_server_verification()
        .build()
        .unwrap();

    for expected in 1..=2 {
        let cert = exchange(config.clone(), "not-even-the-right-name", echo.addr)
            .await
            .expect("unverified connection");
        assert_eq!(
            taskwire_tls::spki_sha256(&cert).unwrap(),
            server.spki_sha256()
        );
        assert_eq!(warnings.load(Ordering::SeqCst), expected);
    }
}
