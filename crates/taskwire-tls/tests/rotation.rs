//! Certificate rotation on a running server, and what a reload refuses.

mod common;

use std::sync::Arc;

use common::*;
use taskwire_tls::CertificateAuthority;
use taskwire_tls::rustls::ClientConfig;
use taskwire_tls::{
    ClientConfigBuilder, LoadErrorKind, Origin, ReloadableCertResolver, ServerConfigBuilder,
    TlsError, spki_sha256,
};

fn fresh_client(ca: &CertificateAuthority) -> ClientConfig {
    // A new config per connection: no session to resume, so every connection is a full
    // handshake that sees the certificate the server has now.
    ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn running_server_picks_up_a_new_certificate_from_disk() {
    let dir = TempDir::new("rotation");
    let (cert_path, key_path) = (dir.path("server.pem"), dir.path("server.key"));
    let ca = new_ca("ca");
    let first = server_cert(&ca, &["localhost"]);
    first.write_pem_files(&cert_path, &key_path, false).unwrap();

    let resolver = Arc::new(ReloadableCertResolver::from_pem_files(&cert_path, &key_path).unwrap());
    let config = ServerConfigBuilder::with_cert_resolver(resolver.clone())
        .build()
        .unwrap();
    let echo = Echo::start(config).await;

    // A connection opened before the reload...
    let mut before = connect(fresh_client(&ca), "localhost", echo.addr)
        .await
        .unwrap();
    ping(&mut before).await.unwrap();
    let before_cert = before.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(spki_sha256(&before_cert).unwrap(), first.spki_sha256());

    // ...the certificate is renewed on disk and reloaded...
    let second = server_cert(&ca, &["localhost"]);
    assert_ne!(second.spki_sha256(), first.spki_sha256());
    second.write_pem_files(&cert_path, &key_path, true).unwrap();
    resolver.reload_from_files(&cert_path, &key_path).unwrap();
    assert_eq!(resolver.spki_sha256(), second.spki_sha256());

    // ...the old connection still works, with the certificate it was opened with...
    ping(&mut before).await.unwrap();
    let still = &before.get_ref().1.peer_certificates().unwrap()[0];
    assert_eq!(spki_sha256(still).unwrap(), first.spki_sha256());

    // ...and a new connection sees the new certificate.
    let after = exchange(fresh_client(&ca), "localhost", echo.addr)
        .await
        .unwrap();
    assert_eq!(spki_sha256(&after).unwrap(), second.spki_sha256());
    ping(&mut before).await.unwrap();
}

#[tokio::test]
async fn reload_refuses_a_mismatched_pair_and_keeps_serving_the_old_one() {
    let dir = TempDir::new("reload-mismatch");
    let ca = new_ca("ca");
    let current = server_cert(&ca, &["localhost"]);
    let resolver = Arc::new(ReloadableCertResolver::new(&current.credentials().unwrap()).unwrap());
    let echo = Echo::start(
        ServerConfigBuilder::with_cert_resolver(resolver.clone())
            .build()
            .unwrap(),
    )
    .await;

    // The renewed certificate with a key that is not its own (say the key file was not
    // updated yet).
    let renewed = server_cert(&ca, &["localhost"]);
    let stray = server_cert(&ca, &["localhost"]);
    let (cert_path, key_path) = (dir.path("renewed.pem"), dir.path("stray.key"));
    renewed
        .write_pem_files(&cert_path, dir.path("renewed.key"), false)
        .unwrap();
    stray
        .write_pem_files(dir.path("stray.pem"), &key_path, false)
        .unwrap();

    match resolver.reload_from_files(&cert_path, &key_path) {
        Err(TlsError::KeyMismatch { cert, key }) => {
            assert_eq!(cert, Origin::File(cert_path.clone()));
            assert_eq!(key, Origin::File(key_path.clone()));
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    let in_memory =
        resolver.reload_from_pem(renewed.cert_pem().as_bytes(), stray.key_pem().as_bytes());
    assert!(
        matches!(in_memory, Err(TlsError::KeyMismatch { .. })),
        "{in_memory:?}"
    );

    assert_eq!(resolver.spki_sha256(), current.spki_sha256());
    let seen = exchange(fresh_client(&ca), "localhost", echo.addr)
        .await
        .unwrap();
    assert_eq!(spki_sha256(&seen).unwrap(), current.spki_sha256());
}

#[tokio::test]
async fn reload_refuses_half_written_and_unparsable_files_and_keeps_the_old_pair() {
    let dir = TempDir::new("reload-broken");
    let ca = new_ca("ca");
    let current = server_cert(&ca, &["localhost"]);
    let resolver = Arc::new(ReloadableCertResolver::new(&current.credentials().unwrap()).unwrap());
    let echo = Echo::start(
        ServerConfigBuilder::with_cert_resolver(resolver.clone())
            .build()
            .unwrap(),
    )
    .await;

    let renewed = server_cert(&ca, &["localhost"]);
    let key_path = dir.path("server.key");
    std::fs::write(&key_path, renewed.key_pem()).unwrap();

    // Half-written: the certificate file stops in the middle of its base64.
    let cert_pem = renewed.cert_pem();
    let half = dir.path("half.pem");
    std::fs::write(&half, &cert_pem[..cert_pem.len() / 2]).unwrap();
    match resolver.reload_from_files(&half, &key_path) {
        Err(TlsError::Load {
            origin: Origin::File(path),
            kind: LoadErrorKind::Pem(_),
        }) => assert_eq!(path, half),
        other => panic!("expected a PEM error naming {half:?}, got {other:?}"),
    }

    // Empty: written but not yet filled.
    let empty = dir.path("empty.pem");
    std::fs::write(&empty, "").unwrap();
    match resolver.reload_from_files(&empty, &key_path) {
        Err(TlsError::Load {
            origin: Origin::File(path),
            kind: LoadErrorKind::NoCertificates,
        }) => assert_eq!(path, empty),
        other => panic!("expected NoCertificates naming {empty:?}, got {other:?}"),
    }

    // Well-formed PEM around bytes that are not a certificate.
    let garbage = dir.path("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    match resolver.reload_from_files(&garbage, &key_path) {
        Err(TlsError::Load {
            origin: Origin::File(path),
            kind: LoadErrorKind::InvalidCertificate { index: 0, .. },
        }) => assert_eq!(path, garbage),
        other => panic!("expected InvalidCertificate naming {garbage:?}, got {other:?}"),
    }

    // A missing key file.
    let missing = dir.path("missing.key");
    let cert_path = dir.path("server.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    match resolver.reload_from_files(&cert_path, &missing) {
        Err(TlsError::Load {
            origin: Origin::File(path),
            kind: LoadErrorKind::Io(e),
        }) => {
            assert_eq!(path, missing);
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected NotFound naming {missing:?}, got {other:?}"),
    }

    assert_eq!(resolver.spki_sha256(), current.spki_sha256());
    let seen = exchange(fresh_client(&ca), "localhost", echo.addr)
        .await
        .unwrap();
    assert_eq!(spki_sha256(&seen).unwrap(), current.spki_sha256());

    // Once the files are complete, the reload goes through.
    resolver.reload_from_files(&cert_path, &key_path).unwrap();
    let seen = exchange(fresh_client(&ca), "localhost", echo.addr)
        .await
        .unwrap();
    assert_eq!(spki_sha256(&seen).unwrap(), renewed.spki_sha256());
}
