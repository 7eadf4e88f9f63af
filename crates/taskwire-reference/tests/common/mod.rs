//! A reference server over real QUIC on 127.0.0.1, and clients for two tenants.
#![allow(dead_code, unreachable_pub, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use taskwire_quic::{ClientConfig, Connection, QuicClient, QuicServer, ServerConfig, ServerHandle};
use taskwire_reference::{ReferenceConfig, ReferenceServer};
use taskwire_rpc::{CallError, Status, StatusCode};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder,
};

/// A running reference server and connections for tenants `acme` and `globex`, plus one
/// without a client certificate.
pub struct Fixture {
    pub reference: ReferenceServer,
    pub server: ServerHandle,
    pub acme: Connection,
    pub globex: Connection,
    pub anonymous: Connection,
}

pub async fn fixture() -> Fixture {
    fixture_with(ReferenceConfig::default()).await
}

pub async fn fixture_with(config: ReferenceConfig) -> Fixture {
    let ca = CertificateAuthority::generate(&CaParams::new("reference test CA")).unwrap();
    let server_cert = ca
        .issue_server(
            &ServerCertParams::new(["localhost"]).ip_addresses(["127.0.0.1".parse().unwrap()]),
        )
        .unwrap();
    let tls = ServerConfigBuilder::new(server_cert.credentials().unwrap())
        .client_auth(ClientAuth::Optional(ca.ca_bundle().unwrap()))
        .alpn_protocols([taskwire_quic::ALPN])
        .build()
        .unwrap();
    let reference = ReferenceServer::new(config);
    let server = QuicServer::new(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(tls),
    ))
    .unwrap()
    .serve(reference.router());
    let connect = |tenant: Option<&str>| {
        let mut builder =
            ClientConfigBuilder::new(ca.ca_bundle().unwrap()).alpn_protocols([taskwire_quic::ALPN]);
        if let Some(tenant) = tenant {
            let cert = ca
                .issue_client(&ClientCertParams::new(tenant, "worker-1"))
                .unwrap();
            builder = builder.client_credentials(cert.credentials().unwrap());
        }
        let client = QuicClient::new(ClientConfig::new(
            server.local_addr(),
            "localhost",
            Arc::new(builder.build().unwrap()),
        ))
        .unwrap();
        async move { within(10, client.connect()).await.unwrap() }
    };
    let acme = connect(Some("acme")).await;
    let globex = connect(Some("globex")).await;
    let anonymous = connect(None).await;
    Fixture {
        reference,
        server,
        acme,
        globex,
        anonymous,
    }
}

/// Bounds a test step so a bug shows as a failure, not a hang.
pub async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .expect("test step timed out")
}

/// The status a failed call carried; panics on success or a transport error.
pub fn status<T: std::fmt::Debug>(result: Result<T, CallError>) -> Status {
    match result {
        Err(CallError::Status(status)) => status,
        other => panic!("expected a status, got {other:?}"),
    }
}

/// Asserts the call failed with `code`.
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, CallError>, code: StatusCode) -> Status {
    let status = status(result);
    assert_eq!(status.code(), code, "{status}");
    status
}
