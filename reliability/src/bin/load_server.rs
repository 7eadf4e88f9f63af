//! `load-server DIR`: the reference server over QUIC with mutual TLS, in its own process,
//! so the load test can measure the server's memory alone.
//!
//! Writes `ca.pem`, `client.pem` and `client.key.pem` (tenant `acme`) into `DIR`, prints
//! `LISTENING ADDR`, and serves until its standard input closes.
#![allow(clippy::print_stdout)]

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use taskwire_quic::{Limits, QuicServer, ServerConfig};
use taskwire_reference::{ReferenceConfig, ReferenceServer};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ServerCertParams,
    ServerConfigBuilder,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: load-server DIR")?);
    let ca = CertificateAuthority::generate(&CaParams::new("load CA"))?;
    let server = ca
        .issue_server(&ServerCertParams::new(["localhost"]).ip_addresses(["127.0.0.1".parse()?]))?;
    let client = ca.issue_client(&ClientCertParams::new("acme", "load"))?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    client.write_pem_files(dir.join("client.pem"), dir.join("client.key.pem"), true)?;
    let tls = ServerConfigBuilder::new(server.credentials()?)
        .client_auth(ClientAuth::Required(ca.ca_bundle()?))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let reference = ReferenceServer::new(ReferenceConfig::default());
        let mut config = ServerConfig::new("127.0.0.1:0".parse()?, Arc::new(tls));
        config.limits = Limits::default();
        let handle = QuicServer::new(config)?.serve(reference.router());
        println!("LISTENING {}", handle.local_addr());
        // Serve until the test closes our stdin (or dies).
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        handle.abort();
        Ok(())
    })
}
