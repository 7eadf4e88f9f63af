//! PEM files on disk: modes, no clobbering, load errors that name the file; key/cert
//! pairing at load; inspection.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use taskwire_tls::pki_types::{ServerName, UnixTime};
use taskwire_tls::rustls::client::WebPkiServerVerifier;
use taskwire_tls::rustls::client::danger::ServerCertVerifier;
use taskwire_tls::{
    CaBundle, CaParams, CertificateAuthority, ClientCertParams, Credentials, IssueErrorKind,
    KeyAlgorithm, LoadErrorKind, Origin, ServerCertParams, TlsError, Validity, WriteErrorKind,
    inspect, inspect_file, pem,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn private_key_files_are_written_with_mode_0600() {
    let dir = TempDir::new("modes");
    let ca = new_ca("ca");
    ca.write_pem_files(dir.path("ca.pem"), dir.path("ca.key"), false)
        .unwrap();
    let leaf = server_cert(&ca, &["localhost"]);
    leaf.write_pem_files(dir.path("leaf.pem"), dir.path("leaf.key"), false)
        .unwrap();

    assert_eq!(mode(&dir.path("ca.key")), 0o600);
    assert_eq!(mode(&dir.path("leaf.key")), 0o600);
    // Certificates are public: 0644 minus the umask, never more.
    assert_eq!(mode(&dir.path("leaf.pem")) & !0o644, 0);
    assert_eq!(mode(&dir.path("leaf.pem")) & 0o600, 0o600);

    // Replacing a key keeps it private, even over a file that was readable by all.
    let loose = dir.path("loose.key");
    std::fs::write(&loose, "old").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    pem::write_private_key(&loose, &leaf.key_pem(), true).unwrap();
    assert_eq!(mode(&loose), 0o600);
    assert_eq!(std::fs::read_to_string(&loose).unwrap(), leaf.key_pem());
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
}

#[test]
fn existing_files_are_not_overwritten_unless_asked() {
    let dir = TempDir::new("overwrite");
    let ca = new_ca("ca");
    let (cert_path, key_path) = (dir.path("server.pem"), dir.path("server.key"));
    let first = server_cert(&ca, &["localhost"]);
    first.write_pem_files(&cert_path, &key_path, false).unwrap();

    let second = server_cert(&ca, &["localhost"]);
    match second.write_pem_files(&cert_path, &key_path, false) {
        Err(TlsError::Write {
            path,
            kind: WriteErrorKind::AlreadyExists,
        }) => assert_eq!(path, cert_path),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(&cert_path).unwrap(),
        first.cert_pem()
    );
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), first.key_pem());

    // Only the key exists: nothing is written, not even the certificate.
    let lone_cert = dir.path("lone.pem");
    match second.write_pem_files(&lone_cert, &key_path, false) {
        Err(TlsError::Write {
            path,
            kind: WriteErrorKind::AlreadyExists,
        }) => assert_eq!(path, key_path),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(!lone_cert.exists());

    // Single files too.
    let err = pem::write_certificate(&cert_path, &second.cert_pem(), false).unwrap_err();
    assert!(err.to_string().contains("server.pem"), "{err}");
    assert!(err.to_string().contains("file exists"), "{err}");

    // With overwrite, both are replaced.
    second.write_pem_files(&cert_path, &key_path, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&cert_path).unwrap(),
        second.cert_pem()
    );
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        second.key_pem()
    );
    assert_eq!(mode(&key_path), 0o600);
    let loaded = Credentials::from_pem_files(&cert_path, &key_path).unwrap();
    assert_eq!(loaded.spki_sha256(), second.spki_sha256());
}

fn expect_load_error(result: Result<impl std::fmt::Debug, TlsError>, path: &Path) -> LoadErrorKind {
    match result {
        Err(e @ TlsError::Load { .. }) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message:?} does not name {path:?}"
            );
            match e {
                TlsError::Load {
                    origin: Origin::File(p),
                    kind,
                } => {
                    assert_eq!(p, path);
                    kind
                }
                other => panic!("expected a file origin, got {other:?}"),
            }
        }
        other => panic!("expected a load error for {path:?}, got {other:?}"),
    }
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = TempDir::new("load-errors");
    let ca = new_ca("ca");
    let leaf = server_cert(&ca, &["localhost"]);
    let (cert_path, key_path) = (dir.path("leaf.pem"), dir.path("leaf.key"));
    leaf.write_pem_files(&cert_path, &key_path, false).unwrap();

    let missing = dir.path("missing.pem");
    let kind = expect_load_error(pem::load_certificates(&missing), &missing);
    assert!(matches!(kind, LoadErrorKind::Io(ref e) if e.kind() == std::io::ErrorKind::NotFound));

    // A key file where a certificate is expected, and the reverse.
    let kind = expect_load_error(pem::load_certificates(&key_path), &key_path);
    assert!(matches!(kind, LoadErrorKind::NoCertificates), "{kind:?}");
    let kind = expect_load_error(pem::load_private_key(&cert_path), &cert_path);
    assert!(matches!(kind, LoadErrorKind::NoPrivateKey), "{kind:?}");

    // Two keys in one file.
    let two_keys = dir.path("two.key");
    std::fs::write(&two_keys, leaf.key_pem() + &ca.key_pem()).unwrap();
    let kind = expect_load_error(pem::load_private_key(&two_keys), &two_keys);
    assert!(
        matches!(kind, LoadErrorKind::MultiplePrivateKeys { count: 2 }),
        "{kind:?}"
    );

    // A half-written certificate file.
    let half = dir.path("half.pem");
    let pem_text = leaf.cert_pem();
    std::fs::write(&half, &pem_text[..pem_text.len() - 20]).unwrap();
    let kind = expect_load_error(pem::load_certificates(&half), &half);
    assert!(matches!(kind, LoadErrorKind::Pem(_)), "{kind:?}");
    let kind = expect_load_error(CaBundle::from_pem_file(&half), &half);
    assert!(matches!(kind, LoadErrorKind::Pem(_)), "{kind:?}");

    // A key that is not a key.
    let bogus_key = dir.path("bogus.key");
    std::fs::write(
        &bogus_key,
        "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let kind = expect_load_error(
        Credentials::from_pem_files(&cert_path, &bogus_key),
        &bogus_key,
    );
    assert!(
        matches!(kind, LoadErrorKind::InvalidPrivateKey { .. }),
        "{kind:?}"
    );

    // A leaf loaded as a CA.
    let kind = expect_load_error(
        CertificateAuthority::from_pem_files(&cert_path, &key_path),
        &cert_path,
    );
    assert!(
        matches!(kind, LoadErrorKind::NotCa { ref subject, .. } if subject == "CN=localhost"),
        "{kind:?}"
    );

    // inspect names the file too.
    let kind = expect_load_error(inspect_file(&key_path), &key_path);
    assert!(matches!(kind, LoadErrorKind::NoCertificates), "{kind:?}");
}

#[test]
fn mismatched_certificate_and_key_are_refused_at_load() {
    let dir = TempDir::new("mismatch");
    let ca = new_ca("ca");
    let a = server_cert(&ca, &["localhost"]);
    let b = server_cert(&ca, &["localhost"]);
    a.write_pem_files(dir.path("a.pem"), dir.path("a.key"), false)
        .unwrap();
    b.write_pem_files(dir.path("b.pem"), dir.path("b.key"), false)
        .unwrap();

    let err = Credentials::from_pem_files(dir.path("a.pem"), dir.path("b.key")).unwrap_err();
    match &err {
        TlsError::KeyMismatch { cert, key } => {
            assert_eq!(cert, &Origin::File(dir.path("a.pem")));
            assert_eq!(key, &Origin::File(dir.path("b.key")));
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("b.key") && message.contains("a.pem"),
        "{message}"
    );

    assert!(matches!(
        Credentials::from_pem(a.cert_pem().as_bytes(), b.key_pem().as_bytes()),
        Err(TlsError::KeyMismatch { .. })
    ));
    assert!(matches!(
        taskwire_tls::ReloadableCertResolver::from_pem_files(dir.path("a.pem"), dir.path("b.key")),
        Err(TlsError::KeyMismatch { .. })
    ));

    // A CA with the wrong key is refused as well.
    let other_ca = new_ca("other");
    let err =
        CertificateAuthority::from_pem(ca.cert_pem().as_bytes(), other_ca.key_pem().as_bytes())
            .unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn a_self_signed_certificate_without_basic_constraints_is_not_an_issuer() {
    let plain = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let err = CertificateAuthority::from_pem(
        plain.cert.pem().as_bytes(),
        plain.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap_err();
    match err {
        TlsError::Load {
            origin: Origin::Memory(_),
            kind: LoadErrorKind::NotCa { reason, .. },
        } => assert_eq!(reason, "it has no basic constraints extension"),
        other => panic!("expected NotCa, got {other:?}"),
    }
}

#[test]
fn a_ca_loaded_from_files_issues_certificates_that_chain_to_it() {
    let dir = TempDir::new("ca-files");
    let ca = CertificateAuthority::generate(&CaParams::new("files CA").organization("Acme Corp"))
        .unwrap();
    ca.write_pem_files(dir.path("ca.pem"), dir.path("ca.key"), false)
        .unwrap();
    let loaded =
        CertificateAuthority::from_pem_files(dir.path("ca.pem"), dir.path("ca.key")).unwrap();
    assert_eq!(loaded.certificate(), ca.certificate());
    assert_eq!(loaded.subject(), "CN=files CA, O=Acme Corp");

    let leaf = loaded
        .issue_server(&ServerCertParams::new(["localhost"]))
        .unwrap();
    let info = inspect(leaf.certificate()).unwrap();
    assert_eq!(info.issuer, ca.subject());
    // The chain verifies with webpki: a client trusting the original CA accepts it.
    let verifier = WebPkiServerVerifier::builder_with_provider(
        ca.ca_bundle().unwrap().root_store(),
        taskwire_tls::provider::default_provider(),
    )
    .build()
    .unwrap();
    verifier
        .verify_server_cert(
            leaf.certificate(),
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        )
        .expect("leaf of the reloaded CA verifies");
}

#[test]
fn issuing_refuses_bad_parameters() {
    let ca = new_ca("ca");
    let cases: Vec<(Result<_, TlsError>, &str)> = vec![
        (
            ca.issue_server(&ServerCertParams::new(Vec::<String>::new())),
            "no SANs",
        ),
        (
            ca.issue_server(&ServerCertParams::new(["bad name!"])),
            "bad DNS name",
        ),
        (
            ca.issue_client(&ClientCertParams::new("acme/x", "w")),
            "tenant with /",
        ),
        (
            ca.issue_client(&ClientCertParams::new("acme", "")),
            "empty id",
        ),
        (
            ca.issue_server(
                &ServerCertParams::new(["localhost"])
                    .validity(Validity::new(date(2030, 1, 1), date(2029, 1, 1))),
            ),
            "backwards validity",
        ),
    ];
    let kinds: Vec<_> = cases
        .into_iter()
        .map(|(result, what)| match result {
            Err(TlsError::Issue(kind)) => kind,
            other => panic!("{what}: expected an issue error, got {other:?}"),
        })
        .collect();
    assert!(matches!(kinds[0], IssueErrorKind::NoSubjectAltNames));
    assert!(matches!(kinds[1], IssueErrorKind::InvalidDnsName { ref name } if name == "bad name!"));
    assert!(matches!(
        kinds[2],
        IssueErrorKind::InvalidIdentity {
            field: "tenant",
            ..
        }
    ));
    assert!(matches!(
        kinds[3],
        IssueErrorKind::InvalidIdentity { field: "id", .. }
    ));
    assert!(matches!(kinds[4], IssueErrorKind::InvalidValidity { .. }));
}

#[test]
fn inspect_reports_what_was_issued() {
    let ca = CertificateAuthority::generate(
        &CaParams::new("inspect CA").validity(Validity::new(date(2024, 1, 1), date(2034, 1, 1))),
    )
    .unwrap();
    let ca_info = inspect(ca.cert_pem().as_bytes()).unwrap();
    assert!(ca_info.is_ca);
    assert_eq!(ca_info.path_len, Some(0));
    assert_eq!(ca_info.key_usages, ["keyCertSign", "cRLSign"]);
    assert!(ca_info.extended_key_usages.is_empty());
    assert_eq!(ca_info.subject, ca_info.issuer);
    assert_eq!(ca_info.not_before, date(2024, 1, 1));
    assert_eq!(ca_info.not_after, date(2034, 1, 1));
    assert_eq!(ca_info.public_key_algorithm, "ECDSA P-256");

    let leaf = ca
        .issue_server(
            &ServerCertParams::new(["engine.internal", "*.workers.internal", "10.1.2.3", "::1"])
                .key_algorithm(KeyAlgorithm::Ed25519)
                .validity(Validity::new(date(2025, 3, 1), date(2025, 5, 30))),
        )
        .unwrap();
    let info = inspect(leaf.cert_pem().as_bytes()).unwrap();
    assert_eq!(info.subject, "CN=engine.internal");
    assert_eq!(info.issuer, "CN=inspect CA");
    assert_eq!(info.dns_names, ["engine.internal", "*.workers.internal"]);
    assert_eq!(
        info.ip_addresses,
        [
            "10.1.2.3".parse::<IpAddr>().unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        ]
    );
    assert!(info.uris.is_empty());
    assert_eq!(info.extended_key_usages, ["serverAuth"]);
    assert_eq!(info.key_usages, ["digitalSignature"]);
    assert!(!info.is_ca);
    assert_eq!(info.public_key_algorithm, "Ed25519");
    assert_eq!(info.serial.len(), 16 * 3 - 1);
    assert!(info.is_valid_at(date(2025, 4, 1)));
    assert!(!info.is_valid_at(date(2025, 6, 1)));

    let summary = info.to_string();
    for line in [
        "Subject:            CN=engine.internal",
        "Issuer:             CN=inspect CA",
        "Not before:         2025-03-01 00:00:00 UTC",
        "Not after:          2025-05-30 00:00:00 UTC",
        "Public key:         Ed25519",
        "CA:                 no",
        "Extended key usage: serverAuth",
        "DNS names:          engine.internal, *.workers.internal",
        "IP addresses:       10.1.2.3, ::1",
        "URIs:               -",
    ] {
        assert!(
            summary.lines().any(|l| l == line),
            "missing {line:?} in\n{summary}"
        );
    }
    assert!(summary.contains(&format!("SPKI SHA-256:       {}", info.spki_sha256_hex())));
    assert!(
        inspect(ca.cert_pem().as_bytes())
            .unwrap()
            .to_string()
            .contains("CA:                 yes (path length 0)")
    );

    // Every certificate of a bundle, and garbage refused without panicking.
    let bundle = leaf.cert_pem() + &ca.cert_pem();
    let all = taskwire_tls::inspect_all(bundle.as_bytes()).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[1].is_ca);
    for garbage in [
        &b""[..],
        b"\x30\x82\xff\xff",
        b"-----BEGIN CERTIFICATE-----\n",
    ] {
        assert!(inspect(garbage).is_err());
    }
}

#[test]
fn damaged_certificates_are_errors_never_panics() {
    let ca = new_ca("ca");
    let client = ca
        .issue_client(&ClientCertParams::new("acme", "worker-7"))
        .unwrap();
    let der: &[u8] = client.certificate();
    let check = |bytes: &[u8]| {
        let cert = taskwire_tls::pki_types::CertificateDer::from(bytes);
        // Either outcome is fine; what matters is that none of them panics.
        let _ = inspect(bytes);
        let _ = taskwire_tls::PeerIdentity::from_certificate(&cert);
        let _ = taskwire_tls::spki_sha256(&cert);
    };
    for len in 0..der.len() {
        check(&der[..len]);
    }
    for i in 0..der.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut damaged = der.to_vec();
            damaged[i] ^= flip;
            check(&damaged);
        }
    }
    // Truncation always fails, and says which certificate.
    let err = inspect(&der[..der.len() - 1]).unwrap_err();
    assert!(matches!(
        err,
        TlsError::Load {
            kind: LoadErrorKind::InvalidCertificate { index: 0, .. },
            ..
        }
    ));
}
