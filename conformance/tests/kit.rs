//! The conformance kit against the reference server, over real TCP+TLS and QUIC sockets
//! on 127.0.0.1: every script passes in every framing its transport carries.

use std::collections::BTreeSet;
use std::sync::Arc;

use taskwire_conformance::kit::{self, Target, Transport};
use taskwire_quic::{QuicServer, ServerConfig};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_tcp::{TcpServer, TcpServerConfig};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams, ServerConfigBuilder,
};

#[test]
fn the_built_in_list_names_every_script_file_and_each_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut on_disk = BTreeSet::new();
    let mut folders = vec![dir.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let name = path.strip_prefix(&dir).unwrap().with_extension("");
                on_disk.insert(name.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let listed: BTreeSet<String> = kit::SCRIPTS
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    let missing: Vec<_> = on_disk.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&on_disk).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "conformance/src/kit/scripts.list is out of date: add {missing:?}, remove {stale:?}"
    );
    assert_eq!(kit::scripts().len(), on_disk.len());
}

#[test]
fn every_requirement_a_script_names_is_in_the_spec_and_lists_the_script() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    for script in kit::scripts() {
        for id in &script.requirements {
            let row = spec
                .lines()
                .find(|line| line.starts_with(&format!("| `{id}` |")))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: requirement {id} is not in docs/protocol.md §18",
                        script.name
                    )
                });
            assert!(
                row.contains(&format!("`{}`", script.name)),
                "docs/protocol.md §18: the row of {id} does not list the script {}",
                script.name
            );
        }
    }
}

/// A reference server on TCP and QUIC with one certificate, as `taskwire serve` runs it
/// in development mode (tenants from the Hello), and a target for each transport.
async fn reference_server() -> (Vec<(Transport, Target)>, impl FnOnce()) {
    let ca = CertificateAuthority::generate(&CaParams::new("conformance CA")).unwrap();
    let cert = ca
        .issue_server(&ServerCertParams::new(["localhost"]))
        .unwrap();
    let server_tls = Arc::new(
        ServerConfigBuilder::new(cert.credentials().unwrap())
            .alpn_protocols([taskwire_quic::ALPN])
            .tls13_only(true)
            .build()
            .unwrap(),
    );
    let client_tls = Arc::new(
        ClientConfigBuilder::new(ca.ca_bundle().unwrap())
            .build()
            .unwrap(),
    );
    let reference =
        ReferenceServer::new(ReferenceConfig::default().tenants(TenantSource::ClaimedInHello));
    let quic = QuicServer::new(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&server_tls),
    ))
    .unwrap()
    .serve(reference.router());
    let tcp = TcpServer::bind(TcpServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        server_tls,
    ))
    .await
    .unwrap()
    .serve(reference.router());
    let targets = vec![
        (
            Transport::Tcp,
            Target::new(tcp.local_addr(), "localhost", Some(Arc::clone(&client_tls))),
        ),
        (
            Transport::Quic,
            Target::new(quic.local_addr(), "localhost", Some(client_tls)),
        ),
    ];
    (targets, move || {
        quic.abort();
        drop(tcp);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_passes_against_the_reference_server_over_tcp_and_quic() {
    let (targets, stop) = reference_server().await;
    let scripts = kit::scripts();
    let mut failures = Vec::new();
    let mut passed = 0;
    for (transport, target) in &targets {
        for check in kit::run(target, *transport, &scripts).await {
            match &check.failure {
                None => passed += 1,
                Some(why) => failures.push(format!(
                    "{} over {} ({:?}): {why}",
                    check.script,
                    check.transport.as_str(),
                    check.framing
                )),
            }
        }
    }
    stop();
    assert!(
        failures.is_empty(),
        "{} passed, {} failed:\n{}",
        passed,
        failures.len(),
        failures.join("\n")
    );
    assert!(
        passed >= scripts.len(),
        "{passed} checks ran for {} scripts",
        scripts.len()
    );
}
