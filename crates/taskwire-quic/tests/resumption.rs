//! TLS session resumption over QUIC re-checks the client certificate: a certificate that
//! expires between the full handshake and a resumption does not get the session back.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{localhost, within};
use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
use taskwire_rpc::Router;
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder, Validity,
};

#[tokio::test]
async fn a_client_certificate_that_expired_since_the_full_handshake_does_not_resume() {
    let ca = CertificateAuthority::generate(&CaParams::new("ca")).unwrap();
    let server_cert = ca
        .issue_server(&ServerCertParams::new(["localhost"]))
        .unwrap();
    let server_tls = ServerConfigBuilder::new(server_cert.credentials().unwrap())
        .client_auth(ClientAuth::Required(ca.ca_bundle().unwrap()))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .unwrap();
    let config = ServerConfig::new(localhost(), Arc::new(server_tls));
    let server = QuicServer::new(config).unwrap().serve(Router::new());

    let now = SystemTime::now();
    let me = ca
        .issue_client(&ClientCertParams::new("acme", "w1").validity(Validity {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(3),
        }))
        .unwrap();
    // One rustls client config for every connection: its session cache resumes.
    let tls = Arc::new(
        ClientConfigBuilder::new(ca.ca_bundle().unwrap())
            .client_credentials(me.credentials().unwrap())
            .alpn_protocols([taskwire_quic::ALPN])
            .tls13_only(true)
            .build()
            .unwrap(),
    );
    let connect = || async {
        let client = QuicClient::new(ClientConfig::new(
            server.local_addr(),
            "localhost",
            Arc::clone(&tls),
        ))
        .unwrap();
        let result = within(10, async {
            let connection = client.connect().await?;
            connection.ping().await?;
            // Time for the session tickets sent after the handshake to arrive.
            tokio::time::sleep(Duration::from_millis(100)).await;
            connection.close();
            Ok::<_, taskwire_rpc::CallError>(())
        })
        .await;
        client.close().await;
        result
    };
    connect().await.expect("a valid certificate connects");
    connect().await.expect("and reconnects, resuming");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = connect().await;
    assert!(
        refused.is_err(),
        "an expired certificate must not resume its session"
    );
    server.shutdown().await;
}
