//! Shutdown, restarts, dead connections and loss: calls end with an answer or a definite
//! error, never a hang, and no handler runs twice for one call.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, client_with, pki, start, within};
use taskwire_proto::instance::v1::{CheckpointSummary, ListCheckpointsRequest};
use taskwire_proto::session::v1::{Ping, Pong};
use taskwire_quic::relay::{Relay, RelayConfig};
use taskwire_quic::{Limits, QuicServer, ServerConfig};
use taskwire_rpc::{CallError, CallOptions, Router};

fn slow_echo(delay: Duration) -> Router {
    let mut router = Router::new();
    router.unary(move |_ctx, ping: Ping| async move {
        tokio::time::sleep(delay).await;
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: None,
        })
    });
    router
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_calls_in_flight_and_refuses_new_ones() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.drain_timeout(Duration::from_secs(10));
    let server = start(&pki, limits, slow_echo(Duration::from_millis(500)));
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let in_flight: Vec<_> = (0..20u64)
        .map(|nonce| {
            let connection = connection.clone();
            tokio::spawn(async move {
                connection
                    .call(Ping {
                        nonce,
                        sent_at: None,
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = server.local_addr();
    let report = within(20, server.shutdown()).await;
    assert!(
        report.drained,
        "calls in flight did not finish within the drain timeout"
    );
    assert_eq!(report.connections, 1);
    for call in in_flight {
        within(10, call)
            .await
            .unwrap()
            .expect("a call accepted before the GoAway is answered");
    }
    let after = within(10, connection.call(Ping::default())).await;
    assert!(matches!(after, Err(CallError::Unavailable(_))), "{after:?}");
    assert!(after.unwrap_err().is_retryable());
    let mut quick = Limits::default();
    quick.handshake_timeout(Duration::from_secs(1));
    assert!(
        within(10, client_with(&pki, addr, quick).connect())
            .await
            .is_err(),
        "the server still accepts connections"
    );
}

#[tokio::test]
async fn a_call_on_a_dead_connection_fails_fast_with_a_retryable_unavailable() {
    let pki = pki();
    let server = start(&pki, Limits::default(), slow_echo(Duration::ZERO));
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    within(10, connection.call(Ping::default())).await.unwrap();
    server.abort();
    // The server's endpoint closed its connections; the client learns it promptly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let error = within(10, connection.call(Ping::default()))
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Unavailable(_)), "{error:?}");
    assert!(error.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the call waited {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_client_reconnects_by_itself() {
    let pki = pki();
    let server = start(&pki, Limits::default(), slow_echo(Duration::ZERO));
    let addr = server.local_addr();
    // Attempts against a dead port wait for the handshake timeout: keep it short.
    let mut limits = Limits::default();
    limits.handshake_timeout(Duration::from_millis(300));
    let client = client_with(&pki, addr, limits);
    within(
        10,
        client.call(Ping {
            nonce: 1,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
    server.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The old connection is gone: this call fails (retryably), or reconnects and fails
    // because nothing listens yet. Either way it returns.
    let _ = within(30, client.call(Ping::default())).await;
    let mut config = ServerConfig::new(addr, Arc::clone(&pki.server));
    config.limits = Limits::default();
    let restarted = QuicServer::new(config)
        .expect("rebinding the same port")
        .serve(slow_echo(Duration::ZERO));
    let pong = within(
        20,
        client.call(Ping {
            nonce: 2,
            sent_at: None,
        }),
    )
    .await
    .expect("the client reconnected");
    assert_eq!(pong.nonce, 2);
    assert_eq!(
        restarted
            .stats()
            .connections_accepted
            .load(Ordering::Relaxed),
        1
    );
}

/// Calls through the lossy relay: every one answered correctly, no handler run twice.
async fn calls_through_a_lossy_relay(config: RelayConfig, calls: u64, concurrency: usize) {
    let pki = pki();
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let mut router = Router::new();
    let seen = Arc::clone(&runs);
    router.unary(move |_ctx, ping: Ping| {
        let seen = Arc::clone(&seen);
        async move {
            *seen.lock().unwrap().entry(ping.nonce).or_default() += 1;
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let server = start(&pki, Limits::default(), router);
    let relay = Relay::start(server.local_addr(), config).await.unwrap();
    let mut limits = Limits::default();
    limits.idle_timeout(Duration::from_secs(30));
    let client = client_with(&pki, relay.local_addr(), limits);
    let connection = within(30, client.connect()).await.unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (connection, next) = (connection.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let nonce = next.fetch_add(1, Ordering::Relaxed) as u64;
                    if nonce >= calls {
                        return;
                    }
                    let pong = connection
                        .call(Ping {
                            nonce,
                            sent_at: None,
                        })
                        .await
                        .expect("a call failed under loss");
                    assert_eq!(pong.nonce, nonce, "a response came back for the wrong call");
                }
            })
        })
        .collect();
    for worker in workers {
        within(300, worker).await.unwrap();
    }
    let runs = runs.lock().unwrap();
    assert_eq!(
        runs.len() as u64,
        calls,
        "some calls never reached a handler"
    );
    assert!(
        runs.values().all(|&n| n == 1),
        "a handler ran twice for one call"
    );
    assert!(
        relay.stats().dropped.load(Ordering::Relaxed) > 0,
        "the relay dropped nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_complete_at_five_percent_loss_with_reordering() {
    let config = RelayConfig {
        seed: 5,
        loss: 0.05,
        reorder: 0.25,
        ..RelayConfig::default()
    };
    calls_through_a_lossy_relay(config, 10_000, 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_calls_complete_at_one_percent_loss() {
    let config = RelayConfig {
        seed: 1,
        loss: 0.01,
        ..RelayConfig::default()
    };
    calls_through_a_lossy_relay(config, 2_000, 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_calls_complete_at_ten_percent_loss_with_duplication_and_reordering() {
    let config = RelayConfig {
        seed: 10,
        loss: 0.10,
        duplicate: 0.05,
        reorder: 0.25,
        ..RelayConfig::default()
    };
    calls_through_a_lossy_relay(config, 2_000, 32).await;
}

#[tokio::test]
async fn calls_complete_after_a_blackhole_shorter_than_the_idle_timeout() {
    let pki = pki();
    let server = start(&pki, Limits::default(), slow_echo(Duration::ZERO));
    let relay = Relay::start(server.local_addr(), RelayConfig::default())
        .await
        .unwrap();
    let client = client(&pki, relay.local_addr());
    let connection = within(10, client.connect()).await.unwrap();
    within(10, connection.call(Ping::default())).await.unwrap();
    relay.set_blackhole(true);
    let call = tokio::spawn({
        let connection = connection.clone();
        async move {
            connection
                .call(Ping {
                    nonce: 9,
                    sent_at: None,
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.set_blackhole(false);
    let pong = within(20, call)
        .await
        .unwrap()
        .expect("the call completed after the blackhole");
    assert_eq!(pong.nonce, 9);
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_a_ceiling() {
    let policy = taskwire_quic::ReconnectPolicy::default();
    for attempt in 0..20 {
        let ceiling = policy
            .initial_backoff
            .saturating_mul(1 << attempt.min(20))
            .min(policy.max_backoff);
        for _ in 0..50 {
            assert!(policy.backoff(attempt) <= ceiling);
        }
    }
    let spread: std::collections::HashSet<Duration> = (0..50).map(|_| policy.backoff(5)).collect();
    assert!(spread.len() > 10, "no jitter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_calls_in_flight_within_the_idle_timeout_and_the_client_comes_back() {
    let pki = pki();
    let server = start(&pki, Limits::default(), slow_echo(Duration::from_secs(60)));
    let addr = server.local_addr();
    // The client talks through the relay, so the server's death can be made silent: a
    // killed process sends no CONNECTION_CLOSE, and the client notices only at its idle
    // timeout, 1 s here.
    let relay = Relay::start(addr, RelayConfig::default()).await.unwrap();
    let mut limits = Limits::default();
    limits
        .idle_timeout(Duration::from_secs(1))
        .keep_alive_interval(Some(Duration::from_millis(250)))
        .handshake_timeout(Duration::from_secs(2));
    let client = client_with(&pki, relay.local_addr(), limits);
    let connection = within(10, client.connect()).await.unwrap();
    let in_flight: Vec<_> = (0..32)
        .map(|nonce| {
            let connection = connection.clone();
            tokio::spawn(async move {
                connection
                    .call(Ping {
                        nonce,
                        sent_at: None,
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.set_blackhole(true);
    server.abort();
    let killed = Instant::now();
    for call in in_flight {
        match within(10, call).await.unwrap() {
            Err(error @ CallError::Unavailable(_)) => assert!(error.is_retryable()),
            other => panic!("an in-flight call ended with {other:?}"),
        }
    }
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "in-flight calls took {took:?} to fail; the bound is the 1 s idle timeout plus 2 s"
    );
    // The server's socket is released once its tasks have unwound (the handlers of the
    // lost connection are cancelled, not left sleeping).
    let restarted = within(10, async {
        loop {
            match QuicServer::new(ServerConfig::new(addr, Arc::clone(&pki.server))) {
                Ok(server) => return server.serve(slow_echo(Duration::ZERO)),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    relay.set_blackhole(false);
    let pong = within(
        20,
        client.call(Ping {
            nonce: 99,
            sent_at: None,
        }),
    )
    .await
    .expect("the client reconnected by itself");
    assert_eq!(pong.nonce, 99);
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_connection_and_frees_its_slot() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.max_connections_per_ip(1);
    let server = start(&pki, limits, slow_echo(Duration::ZERO));
    // One client endpoint throughout, so that only the dropped handles can close it.
    let client = client(&pki, server.local_addr());
    let connection = within(10, client.connect()).await.unwrap();
    within(10, connection.call(Ping::default())).await.unwrap();
    drop(connection);
    // The server frees the only slot once the connection closes; until then it refuses.
    let started = Instant::now();
    let second = loop {
        match within(10, client.connect()).await {
            Ok(connection) => break connection,
            Err(error) if started.elapsed() < Duration::from_secs(5) => {
                assert!(error.is_retryable(), "{error:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the dropped connection still holds the slot: {error:?}"),
        }
    };
    within(10, second.call(Ping::default())).await.unwrap();
}

#[tokio::test]
async fn a_server_stream_outlives_its_dropped_connection_handle() {
    let pki = pki();
    let mut router = Router::new();
    router.server_streaming(|_ctx, request: ListCheckpointsRequest, sink| async move {
        for sequence in 0..u64::from(request.page_size) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sink.send(CheckpointSummary {
                sequence,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let request = ListCheckpointsRequest {
        page_size: 4,
        ..Default::default()
    };
    let mut stream = within(10, connection.server_stream(request, CallOptions::new()))
        .await
        .unwrap();
    // The stream alone keeps the connection open: no handle is left.
    drop(connection);
    let mut sequences = Vec::new();
    while let Some(item) = within(10, stream.message()).await.unwrap() {
        sequences.push(item.sequence);
    }
    assert_eq!(sequences, [0, 1, 2, 3]);
}

/// The GoAway names the last call stream the server accepted, by its QUIC stream id,
/// whether or not its calls carried a call header; every call up to it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_away_names_the_last_call_stream_accepted_with_or_without_a_call_header() {
    use taskwire_proto::WireMessage as _;
    use taskwire_proto::session::v1::{CallHeader, GoAway, Negotiated};

    let pki = pki();
    let server = start(
        &pki,
        Limits::default(),
        slow_echo(Duration::from_millis(400)),
    );
    let connection = common::raw_connect(&pki, server.local_addr()).await;
    let (_control_send, mut control) = common::send_hello(&connection).await;
    let (type_id, _) = within(10, common::read_raw_frame(&mut control)).await;
    assert_eq!(type_id, Negotiated::TYPE_ID);

    let mut calls = Vec::new();
    for nonce in 0..3u64 {
        let (mut send, recv) = connection.open_bi().await.unwrap();
        // The first call has a call header with request id 99; the others have none.
        if nonce == 0 {
            let header = CallHeader {
                request_id: 99,
                ..Default::default()
            };
            send.write_all(&common::frame_bytes(header)).await.unwrap();
        }
        let ping = taskwire_codec::Frame::new(Ping {
            nonce,
            sent_at: None,
        })
        .end_stream();
        let mut bytes = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut taskwire_codec::Builder::new()
                .first_frame_done(true)
                .new_binary_codec(),
            ping,
            &mut bytes,
        )
        .unwrap();
        send.write_all(&bytes).await.unwrap();
        send.finish().unwrap();
        calls.push((u64::from(send.id()), recv));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let shutdown = tokio::spawn(server.shutdown());

    let (type_id, body) = within(10, common::read_raw_frame(&mut control)).await;
    assert_eq!(type_id, GoAway::TYPE_ID);
    let go_away = <GoAway as prost::Message>::decode(body.as_slice()).unwrap();
    let last = calls.last().map(|(id, _)| *id).unwrap();
    assert_eq!(
        go_away.last_accepted_request_id, last,
        "the QUIC stream id of the third call stream"
    );
    for (_, mut recv) in calls {
        let (type_id, _) = within(10, common::read_raw_frame(&mut recv)).await;
        assert_eq!(type_id, Pong::TYPE_ID, "an accepted call is answered");
    }
    assert!(within(20, shutdown).await.unwrap().drained);
}
