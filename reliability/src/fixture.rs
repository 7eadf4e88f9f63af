//! A reference server over real QUIC on 127.0.0.1 with mutual TLS, and clients for it:
//! what the fault, load and memory tests start from.

use std::net::SocketAddr;
use std::sync::Arc;

use taskwire_quic::{ClientConfig, Limits, QuicClient, QuicServer, ServerConfig, ServerHandle};
use taskwire_reference::{ReferenceConfig, ReferenceServer};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder,
};

/// Certificates for a server on 127.0.0.1 and clients of tenant `acme`.
#[derive(Debug)]
pub struct Pki {
    /// The server's TLS configuration: client certificates required.
    pub server: Arc<rustls::ServerConfig>,
    /// A client's TLS configuration, with a certificate for `taskwire://acme/worker-1`.
    pub client: Arc<rustls::ClientConfig>,
}

impl Pki {
    /// Fresh certificates. Panics if generation fails (it does not, short of a bug).
    pub fn generate() -> Pki {
        let ca = CertificateAuthority::generate(&CaParams::new("reliability CA")).expect("CA");
        let server = ca
            .issue_server(
                &ServerCertParams::new(["localhost"])
                    .ip_addresses(["127.0.0.1".parse().expect("a literal address")]),
            )
            .expect("server certificate");
        let client = ca
            .issue_client(&ClientCertParams::new("acme", "worker-1"))
            .expect("client certificate");
        let bundle = ca.ca_bundle().expect("CA bundle");
        let server = ServerConfigBuilder::new(server.credentials().expect("credentials"))
            .client_auth(ClientAuth::Required(bundle.clone()))
            .alpn_protocols([taskwire_quic::ALPN])
            .tls13_only(true)
            .build()
            .expect("server TLS");
        let client = ClientConfigBuilder::new(bundle)
            .client_credentials(client.credentials().expect("credentials"))
            .alpn_protocols([taskwire_quic::ALPN])
            .tls13_only(true)
            .build()
            .expect("client TLS");
        Pki {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    /// A reference server with `limits`, serving on an ephemeral port.
    pub fn serve(&self, reference: &ReferenceServer, limits: Limits) -> ServerHandle {
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("a literal address"),
            Arc::clone(&self.server),
        );
        config.limits = limits;
        QuicServer::new(config)
            .expect("a QUIC server")
            .serve(reference.router())
    }

    /// A client of `addr` with `limits`.
    pub fn client(&self, addr: SocketAddr, limits: Limits) -> QuicClient {
        let mut config = ClientConfig::new(addr, "localhost", Arc::clone(&self.client));
        config.limits = limits;
        QuicClient::new(config).expect("a QUIC client")
    }
}

/// A reference server with the default configuration.
pub fn reference() -> ReferenceServer {
    ReferenceServer::new(ReferenceConfig::default())
}
