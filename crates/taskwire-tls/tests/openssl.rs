//! Interoperability: OpenSSL accepts what this crate issues and reads the intended SANs and
//! extended key usages. Skipped, loudly, where `openssl` is not on PATH.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientCertParams, KeyAlgorithm, ServerCertParams,
};

// The skip notice must be loud: a silently skipped interoperability check looks like a pass.
#[allow(clippy::print_stderr)]
fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: openssl not on PATH; the OpenSSL interoperability checks did not run");
    }
    found
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn text(path: &Path) -> String {
    let out = openssl(&["x509", "-text", "-noout", "-in", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn verify(ca: &Path, leaf: &Path, purpose: &str) {
    let out = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        purpose,
        leaf.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with(": OK"),
        "openssl verify {leaf:?} ({purpose}) failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SPKI SHA-256 as OpenSSL computes it: public key out of the certificate, to DER, hashed.
fn openssl_spki_sha256(cert: &Path) -> [u8; 32] {
    let pubkey = openssl(&["x509", "-pubkey", "-noout", "-in", cert.to_str().unwrap()]);
    assert!(pubkey.status.success());
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl pkey");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&pubkey.stdout)
            .unwrap();
    }
    let der = child.wait_with_output().unwrap();
    assert!(der.status.success());
    use sha2::Digest;
    sha2::Sha256::digest(&der.stdout).into()
}

#[test]
fn openssl_verifies_issued_leaves_and_reads_their_sans_and_ekus() {
    if !openssl_available() {
        return;
    }
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let dir = TempDir::new("openssl");
        let ca =
            CertificateAuthority::generate(&CaParams::new("interop CA").key_algorithm(algorithm))
                .unwrap();
        let server = ca
            .issue_server(
                &ServerCertParams::new(["localhost", "engine.internal", "127.0.0.1"])
                    .key_algorithm(algorithm),
            )
            .unwrap();
        let client = ca
            .issue_client(&ClientCertParams::new("acme", "worker-7").key_algorithm(algorithm))
            .unwrap();
        let (ca_pem, server_pem, client_pem) = (
            dir.path("ca.pem"),
            dir.path("server.pem"),
            dir.path("client.pem"),
        );
        ca.write_pem_files(&ca_pem, dir.path("ca.key"), false)
            .unwrap();
        server
            .write_pem_files(&server_pem, dir.path("server.key"), false)
            .unwrap();
        client
            .write_pem_files(&client_pem, dir.path("client.key"), false)
            .unwrap();

        verify(&ca_pem, &server_pem, "sslserver");
        verify(&ca_pem, &client_pem, "sslclient");

        let ca_text = text(&ca_pem);
        assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
        assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");

        let server_text = text(&server_pem);
        assert!(
            server_text.contains("DNS:localhost, DNS:engine.internal, IP Address:127.0.0.1"),
            "{server_text}"
        );
        assert!(
            server_text.contains("TLS Web Server Authentication"),
            "{server_text}"
        );
        assert!(
            !server_text.contains("TLS Web Client Authentication"),
            "{server_text}"
        );
        assert!(server_text.contains("CA:FALSE"), "{server_text}");

        let client_text = text(&client_pem);
        assert!(
            client_text.contains("URI:taskwire://acme/worker-7"),
            "{client_text}"
        );
        assert!(
            client_text.contains("TLS Web Client Authentication"),
            "{client_text}"
        );
        assert!(
            !client_text.contains("TLS Web Server Authentication"),
            "{client_text}"
        );

        // The leaves are not usable for the other purpose.
        let wrong = openssl(&[
            "verify",
            "-CAfile",
            ca_pem.to_str().unwrap(),
            "-purpose",
            "sslclient",
            server_pem.to_str().unwrap(),
        ]);
        assert!(
            !wrong.status.success(),
            "a server certificate passed as a client one"
        );

        // Our fingerprint is the one OpenSSL computes.
        assert_eq!(openssl_spki_sha256(&server_pem), server.spki_sha256());

        // A CA reloaded from those files issues leaves OpenSSL chains to the same file.
        let reloaded = CertificateAuthority::from_pem_files(&ca_pem, dir.path("ca.key")).unwrap();
        let again = reloaded
            .issue_server(&ServerCertParams::new(["localhost"]))
            .unwrap();
        let again_pem = dir.path("again.pem");
        again
            .write_pem_files(&again_pem, dir.path("again.key"), false)
            .unwrap();
        verify(&ca_pem, &again_pem, "sslserver");

        // OpenSSL reads the private keys we wrote.
        let key_check = openssl(&[
            "pkey",
            "-in",
            dir.path("server.key").to_str().unwrap(),
            "-noout",
        ]);
        assert!(
            key_check.status.success(),
            "{}",
            String::from_utf8_lossy(&key_check.stderr)
        );
    }
}

#[test]
fn certificates_and_keys_made_by_openssl_load() {
    if !openssl_available() {
        return;
    }
    let dir = TempDir::new("openssl-made");
    let (cert, key) = (dir.path("openssl.pem"), dir.path("openssl.key"));
    // A SEC1 ("EC PRIVATE KEY") P-256 key, and a self-signed CA certificate for it.
    let out = openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=openssl CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        cert.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let info = taskwire_tls::inspect_file(&cert).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.subject, "CN=openssl CA");
    assert_eq!(info.spki_sha256, openssl_spki_sha256(&cert));
    let credentials = taskwire_tls::Credentials::from_pem_files(&cert, &key).unwrap();
    assert_eq!(credentials.spki_sha256(), info.spki_sha256);
    let bundle = taskwire_tls::CaBundle::from_pem_file(&cert).unwrap();
    assert_eq!(bundle.certificates().len(), 1);
}
