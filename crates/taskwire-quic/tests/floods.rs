//! Handshake floods: QUIC Initials that are never continued must not lock real clients out.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Pki, client, pki, start, within};
use taskwire_quic::Limits;
use taskwire_rpc::Router;
use tokio::net::UdpSocket;

/// A UDP forwarder that passes packets to `server` and drops every answer, so the
/// handshakes started through it never go past the client's first flight.
async fn black_hole(server: SocketAddr) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = front.recv_from(&mut buf).await {
            let _ = back.send(&buf[..n]).await;
        }
    });
    addr
}

/// Starts `attempts` QUIC handshakes through a black hole: their Initials reach the server
/// from 127.0.0.1, and nothing ever comes back.
async fn flood(pki: &Pki, server: SocketAddr, attempts: usize) -> quinn::Endpoint {
    let hole = black_hole(server).await;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&pki.client)).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    for attempt in 0..attempts {
        let connecting = endpoint.connect(hole, "localhost").unwrap();
        tokio::spawn(async move {
            let _ = connecting.await;
        });
        // In bursts of 20, so that loopback's socket buffers drop none of them.
        if attempt % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Time for every Initial to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    endpoint
}

fn limits(retry_threshold: usize) -> Limits {
    let mut limits = Limits::default();
    limits
        .max_connections_per_ip(50)
        .retry_threshold(retry_threshold);
    limits
}

#[tokio::test]
async fn initials_that_are_never_continued_do_not_hold_connection_slots() {
    let pki = pki();
    let server = start(
        &pki,
        limits(Limits::default_retry_threshold()),
        Router::new(),
    );
    let _flood = flood(&pki, server.local_addr(), 200).await;
    let retries = server.stats().retries_sent.load(Ordering::Relaxed);
    assert!(
        retries >= 150,
        "past the threshold, unvalidated Initials get a Retry: {retries} sent, {} refused",
        server.stats().connections_refused.load(Ordering::Relaxed)
    );
    // A real client from the same address is served at once: the Retry costs it one
    // round trip, and it takes one of the slots the flood could not.
    let client = client(&pki, server.local_addr());
    within(5, async {
        let connection = client.connect().await.expect("a real client connects");
        connection.ping().await.expect("and is served");
    })
    .await;
    client.close().await;
}

#[tokio::test]
async fn without_retry_the_same_flood_takes_every_slot_of_its_address() {
    // The attack the Retry threshold defends against, shown with it turned off.
    let pki = pki();
    let server = start(&pki, limits(usize::MAX), Router::new());
    let _flood = flood(&pki, server.local_addr(), 200).await;
    assert_eq!(server.stats().retries_sent.load(Ordering::Relaxed), 0);
    let client = client(&pki, server.local_addr());
    let refused = within(15, client.connect()).await;
    assert!(
        refused.is_err(),
        "the flood holds all 50 slots of 127.0.0.1"
    );
    client.close().await;
}
