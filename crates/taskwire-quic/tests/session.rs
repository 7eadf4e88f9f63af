//! The handshake, every refusal reason, and every limit, seen from the peer.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    client, close_code, frame_bytes, pki, raw_connect, raw_connect_with, raw_server,
    read_raw_frame, send_hello, start, within,
};
use taskwire_proto::session::v1::refused::RefusalReason;
use taskwire_proto::session::v1::{Codec, Conversation, Hello, Ping, Pong};
use taskwire_quic::{Admission, ClientConfig, Limits, QuicClient, QuicServer, ServerConfig, codes};
use taskwire_rpc::session::{ClientSession, ServerSession, refusal};
use taskwire_rpc::{CallError, Router};

fn echo() -> Router {
    let mut router = Router::new();
    router.unary(|_ctx, ping: Ping| async move {
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: ping.sent_at,
        })
    });
    router
}

fn refused_reason(result: Result<taskwire_quic::Connection, CallError>) -> RefusalReason {
    match result {
        Err(CallError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn each_refusal_reason_reaches_the_client_typed() {
    let pki = pki();

    // Decided by negotiation.
    let server = start(&pki, Limits::default(), echo());
    let mut config = ClientConfig::new(server.local_addr(), "localhost", Arc::clone(&pki.client));
    config.session = ClientSession {
        max_frame_length: 100,
        ..Default::default()
    };
    assert_eq!(
        refused_reason(within(10, QuicClient::new(config).unwrap().connect()).await),
        RefusalReason::FrameLimitTooSmall
    );

    let mut config = ClientConfig::new(server.local_addr(), "localhost", Arc::clone(&pki.client));
    config.session = ClientSession {
        conversations: vec![Conversation::Runner],
        ..Default::default()
    };
    let mut server_config = ServerConfig::new(common::localhost(), Arc::clone(&pki.server));
    server_config.session = ServerSession {
        conversations: vec![Conversation::Instance],
        ..Default::default()
    };
    let narrow = QuicServer::new(server_config).unwrap().serve(echo());
    config.server_addr = narrow.local_addr();
    assert_eq!(
        refused_reason(within(10, QuicClient::new(config).unwrap().connect()).await),
        RefusalReason::ConversationNotSupported
    );

    // Decided by the admission hook: every reason an application refuses with.
    for reason in [
        RefusalReason::Unauthenticated,
        RefusalReason::PermissionDenied,
        RefusalReason::RateLimited,
        RefusalReason::Overloaded,
        RefusalReason::Internal,
    ] {
        let mut config = ServerConfig::new(common::localhost(), Arc::clone(&pki.server));
        config.admission = Some(Admission::new(move |_peer, _hello| {
            Err(refusal(reason, "not today", Some(Duration::from_secs(7))))
        }));
        let server = QuicServer::new(config).unwrap().serve(echo());
        match within(10, client(&pki, server.local_addr()).connect()).await {
            Err(CallError::Refused {
                reason: got,
                retry_after,
                message,
            }) => {
                assert_eq!(got, reason);
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert_eq!(message, "not today");
            }
            other => panic!("{reason:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn unsupported_versions_and_codecs_are_refused() {
    let pki = pki();
    let server = start(&pki, Limits::default(), echo());
    for (hello, expected) in [
        (
            Hello {
                min_version: 2,
                max_version: 3,
                ..ClientSession::default().hello(Codec::Protobuf)
            },
            RefusalReason::UnsupportedVersion,
        ),
        (
            ClientSession::default().hello(Codec::Json),
            RefusalReason::CodecNotSupported,
        ),
    ] {
        let connection = raw_connect(&pki, server.local_addr()).await;
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(&frame_bytes(hello)).await.unwrap();
        let answer = within(10, recv.read_to_end(1 << 16)).await.unwrap();
        let refused = taskwire_codec::io::SyncReader::new(
            answer.as_slice(),
            taskwire_codec::Builder::new()
                .new_binary_message_codec::<taskwire_proto::session::v1::Refused>(),
        )
        .read()
        .unwrap()
        .unwrap()
        .message;
        assert_eq!(RefusalReason::try_from(refused.reason).unwrap(), expected);
        assert_eq!(
            close_code(&connection).await,
            codes::CLOSE_REFUSED.into_inner()
        );
    }
}

#[tokio::test]
async fn a_hello_never_sent_closes_the_connection_at_the_deadline() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.hello_timeout(Duration::from_millis(300));
    let server = start(&pki, limits, echo());
    let connection = raw_connect(&pki, server.local_addr()).await;
    let started = std::time::Instant::now();
    assert_eq!(
        close_code(&connection).await,
        codes::CLOSE_HELLO_TIMEOUT.into_inner()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A stream opened but the Hello never finished: the same deadline.
    let connection = raw_connect(&pki, server.local_addr()).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame_bytes(ClientSession::default().hello(Codec::Protobuf))[..7])
        .await
        .unwrap();
    assert_eq!(
        close_code(&connection).await,
        codes::CLOSE_HELLO_TIMEOUT.into_inner()
    );
}

#[tokio::test]
async fn a_hello_over_its_limit_is_refused_before_it_is_read() {
    let pki = pki();
    let server = start(&pki, Limits::default(), echo());
    let connection = raw_connect(&pki, server.local_addr()).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    let hello = Hello {
        peer_name: "x".repeat(70_000),
        ..ClientSession::default().hello(Codec::Protobuf)
    };
    let mut bytes = frame_bytes(hello);
    bytes.truncate(1024);
    send.write_all(&bytes).await.unwrap();
    assert_eq!(
        close_code(&connection).await,
        codes::CLOSE_HELLO_TOO_LARGE.into_inner()
    );
}

#[tokio::test]
async fn calls_before_the_hello_and_a_second_hello_are_protocol_violations() {
    let pki = pki();
    let server = start(&pki, Limits::default(), echo());

    let connection = raw_connect(&pki, server.local_addr()).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame_bytes(Ping::default())).await.unwrap();
    assert_eq!(
        close_code(&connection).await,
        codes::CLOSE_PROTOCOL_VIOLATION.into_inner()
    );

    let connection = raw_connect(&pki, server.local_addr()).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    let hello = frame_bytes(ClientSession::default().hello(Codec::Protobuf));
    send.write_all(&hello).await.unwrap();
    send.write_all(&hello).await.unwrap();
    assert_eq!(
        close_code(&connection).await,
        codes::CLOSE_PROTOCOL_VIOLATION.into_inner()
    );
}

#[tokio::test]
async fn garbage_first_bytes_close_the_connection_and_the_server_keeps_serving() {
    let pki = pki();
    let server = start(&pki, Limits::default(), echo());
    let connection = raw_connect(&pki, server.local_addr()).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(
        close_code(&connection).await,
        codes::CLOSE_PROTOCOL_VIOLATION.into_inner()
    );

    let good = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    within(
        10,
        good.call(Ping {
            nonce: 5,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn connections_past_the_limits_are_refused() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.max_connections(2);
    let server = start(&pki, limits, echo());
    let a = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let b = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let third = within(10, client(&pki, server.local_addr()).connect()).await;
    assert!(matches!(third, Err(CallError::Unavailable(_))), "{third:?}");
    assert_eq!(
        server.stats().connections_refused.load(Ordering::Relaxed),
        1
    );
    drop((a, b));

    let mut limits = Limits::default();
    limits.max_connections_per_ip(1);
    let server = start(&pki, limits, echo());
    let _a = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    assert!(
        within(10, client(&pki, server.local_addr()).connect())
            .await
            .is_err(),
        "a second connection from 127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_exceed_the_stream_limit() {
    let pki = pki();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    router.unary(move |_ctx, ping: Ping| {
        let (running, peak) = (Arc::clone(&r), Arc::clone(&p));
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let mut limits = Limits::default();
    limits.max_concurrent_calls(8);
    let server = start(&pki, limits, router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    assert_eq!(
        connection.agreed().max_concurrent_calls,
        8,
        "the limit is announced in Negotiated"
    );
    let calls: Vec<_> = (0..64u64)
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
    for call in calls {
        within(30, call).await.unwrap().unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 8, "{peak} calls ran at once past a limit of 8");
    assert!(peak >= 2, "calls did not overlap at all");
}

#[tokio::test]
async fn a_frame_over_the_announced_limit_is_refused_by_the_sender() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.max_frame_length(16 * 1024);
    let server = start(&pki, limits, echo());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    assert_eq!(connection.agreed().max_frame_length, 16 * 1024);
    let big = taskwire_proto::instance::v1::RegisterInstanceRequest {
        input: vec![0; 32 * 1024].into(),
        ..Default::default()
    };
    match within(10, connection.call(big)).await {
        Err(CallError::Codec(taskwire_codec::CodecError::FrameTooLarge { max, .. })) => {
            assert_eq!(max, 16 * 1024);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_request_arriving_in_pieces_is_answered_and_one_cut_short_is_a_protocol_violation() {
    use prost::Message as _;
    let pki = pki();
    let server = start(&pki, Limits::default(), echo());
    let connection = raw_connect(&pki, server.local_addr()).await;
    let (_control, _control_recv) = send_hello(&connection).await;
    let request = frame_bytes(Ping {
        nonce: 7,
        sent_at: None,
    });

    // The header split after 5 bytes, then the body's last byte alone, each in its own
    // write, so that the server's reader sees them arrive apart.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    for piece in [&request[..5], &request[5..13], &request[13..]] {
        send.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send.finish().unwrap();
    let (type_id, body) = within(10, read_raw_frame(&mut recv)).await;
    assert_eq!(type_id, <Pong as taskwire_proto::WireMessage>::TYPE_ID);
    assert_eq!(Pong::decode(body.as_slice()).unwrap().nonce, 7);

    // The stream finished one byte short of the frame.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&request[..request.len() - 1]).await.unwrap();
    send.finish().unwrap();
    let (type_id, body) = within(10, read_raw_frame(&mut recv)).await;
    type Status = taskwire_proto::session::v1::Status;
    assert_eq!(type_id, <Status as taskwire_proto::WireMessage>::TYPE_ID);
    let status = Status::decode(body.as_slice()).unwrap();
    assert_eq!(
        status.code,
        taskwire_proto::session::v1::StatusCode::ProtocolViolation as i32
    );
    let expected = format!(
        "ended inside a frame after {} of {} bytes",
        request.len() - 1,
        request.len()
    );
    assert!(status.message.contains(&expected), "{}", status.message);
}

#[tokio::test]
async fn a_frame_over_the_limit_from_a_rogue_peer_fails_its_call() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.max_frame_length(16 * 1024);
    let server = start(&pki, limits, echo());
    let connection = raw_connect(&pki, server.local_addr()).await;
    let (_control, _control_recv) = send_hello(&connection).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let mut header = frame_bytes(Ping::default());
    header[8..12].copy_from_slice(&(1_000_000u32).to_be_bytes());
    send.write_all(&header).await.unwrap();
    let answer = within(10, recv.read_to_end(1 << 16)).await.unwrap();
    let status = taskwire_codec::io::SyncReader::new(
        answer.as_slice(),
        taskwire_codec::Builder::new()
            .first_frame_done(true)
            .new_binary_message_codec::<taskwire_proto::session::v1::Status>(),
    )
    .read()
    .unwrap()
    .unwrap()
    .message;
    assert_eq!(
        status.code,
        taskwire_proto::session::v1::StatusCode::ProtocolViolation as i32
    );
    assert!(status.message.contains("limit"), "{}", status.message);
}

#[tokio::test]
async fn streams_opened_and_reset_past_the_budget_close_the_connection() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.cheap_event_budget(50);
    let server = start(&pki, limits, echo());
    let connection = raw_connect(&pki, server.local_addr()).await;
    let (_control, _control_recv) = send_hello(&connection).await;
    for _ in 0..200 {
        let Ok((mut send, _recv)) = connection.open_bi().await else {
            break;
        };
        let _ = send.write_all(&[0]).await;
        let _ = send.reset(quinn::VarInt::from_u32(0));
        if connection.close_reason().is_some() {
            break;
        }
    }
    assert_eq!(
        close_code(&connection).await,
        codes::CLOSE_LIMIT_EXCEEDED.into_inner()
    );
}

#[tokio::test]
async fn a_response_over_the_clients_announced_limit_becomes_a_status() {
    let pki = pki();
    let mut router = Router::new();
    router.unary(|_ctx, _ping: Ping| async move {
        Ok(Pong {
            nonce: 1,
            sent_at: None,
        })
    });
    router.route_unary(
        |_ctx, _request: taskwire_proto::instance::v1::GetCheckpointRequest| async move {
            let state = vec![7u8; 20 * 1024];
            Ok(taskwire_proto::instance::v1::GetCheckpointResponse {
                checkpoint: Some(taskwire_proto::instance::v1::Checkpoint {
                    state: state.into(),
                    ..Default::default()
                }),
            })
        },
    );
    let server = start(&pki, Limits::default(), router);
    let mut config = ClientConfig::new(server.local_addr(), "localhost", Arc::clone(&pki.client));
    config.session = ClientSession {
        max_frame_length: 8 * 1024,
        ..Default::default()
    };
    let connection = within(10, QuicClient::new(config).unwrap().connect())
        .await
        .unwrap();
    match within(
        10,
        connection.call(taskwire_proto::instance::v1::GetCheckpointRequest::default()),
    )
    .await
    {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code(), taskwire_rpc::StatusCode::ResourceExhausted);
            assert!(status.message().contains("8192"), "{status}");
        }
        other => panic!("{other:?}"),
    }
    within(10, connection.call(Ping::default()))
        .await
        .expect("small responses still flow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_during_shutdown_is_refused_as_shutting_down() {
    let pki = pki();
    let mut router = echo();
    router.route_unary(
        |_ctx, _request: taskwire_proto::instance::v1::GetCheckpointRequest| async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(taskwire_proto::instance::v1::GetCheckpointResponse::default())
        },
    );
    let server = start(&pki, Limits::default(), router);
    // One call keeps the drain going while a handshake-only connection says Hello.
    let busy = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let slow = tokio::spawn(async move {
        busy.call(taskwire_proto::instance::v1::GetCheckpointRequest::default())
            .await
    });
    let late = raw_connect(&pki, server.local_addr()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_send, mut recv) = send_hello(&late).await;
    let answer = within(10, recv.read_to_end(1 << 16)).await.unwrap();
    let refused = taskwire_codec::io::SyncReader::new(
        answer.as_slice(),
        taskwire_codec::Builder::new()
            .new_binary_message_codec::<taskwire_proto::session::v1::Refused>(),
    )
    .read()
    .unwrap()
    .unwrap()
    .message;
    assert_eq!(
        RefusalReason::try_from(refused.reason).unwrap(),
        RefusalReason::ShuttingDown
    );
    assert!(
        refused.retry_after.is_some(),
        "a shutting-down refusal says when to retry"
    );
    within(10, slow)
        .await
        .unwrap()
        .expect("the call in flight was drained");
    assert!(within(20, shutdown).await.unwrap().drained);
}

#[tokio::test]
async fn an_idle_connection_closes_at_the_idle_timeout_and_calls_then_fail_fast() {
    let pki = pki();
    let mut limits = Limits::default();
    limits
        .idle_timeout(Duration::from_millis(400))
        .keep_alive_interval(None);
    let server = start(&pki, limits, echo());
    let connection = within(
        10,
        common::client_with(&pki, server.local_addr(), limits).connect(),
    )
    .await
    .unwrap();
    within(10, connection.call(Ping::default())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !connection.is_usable(),
        "the connection outlived its idle timeout"
    );
    let error = within(2, connection.call(Ping::default()))
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn keep_alives_hold_an_idle_connection_open_past_the_idle_timeout() {
    let pki = pki();
    let mut limits = Limits::default();
    limits
        .idle_timeout(Duration::from_millis(1500))
        .keep_alive_interval(Some(Duration::from_millis(200)));
    let server = start(&pki, limits, echo());
    let connection = within(
        10,
        common::client_with(&pki, server.local_addr(), limits).connect(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        connection.is_usable(),
        "keep-alives did not hold the connection open"
    );
    within(10, connection.call(Ping::default())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_initial_floods_leave_the_server_serving() {
    let pki = pki();
    let server = start(&pki, Limits::default(), echo());
    let addr = server.local_addr();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A seeded xorshift, so a failure replays.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut datagram = vec![0u8; 1400];
    for i in 0..20_000 {
        for byte in datagram.iter_mut() {
            *byte = random().to_le_bytes()[0];
        }
        let len = if i % 4 == 0 {
            // A QUIC v1 Initial's long header with a random connection id and payload:
            // it passes quinn's first checks and fails to decrypt.
            datagram[0] = 0xc3;
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            datagram[5] = 8;
            1200
        } else {
            1 + usize::try_from(random() % 1399).unwrap()
        };
        let _ = socket.send_to(&datagram[..len], addr).await;
    }
    let good = within(20, client(&pki, addr).connect()).await.unwrap();
    let pong = within(
        10,
        good.call(Ping {
            nonce: 11,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(pong.nonce, 11);
    assert_eq!(
        server.open_connections(),
        1,
        "20,000 garbage and Initial datagrams opened no connection"
    );
}

/// A peer that sends Pings and never reads its control stream fills its own receive
/// window with Pongs, and the server's write of the next Pong waits. Shutdown must not
/// wait for that write: it gives each GoAway one second.
#[tokio::test]
async fn shutdown_finishes_while_a_peer_never_reads_its_pongs() {
    let pki = pki();
    let mut limits = Limits::default();
    limits.drain_timeout(Duration::from_millis(500));
    let server = start(&pki, limits, echo());
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(1024));
    let connection = raw_connect_with(&pki, server.local_addr(), transport).await;
    let (mut send, _never_read) = send_hello(&connection).await;
    let mut pings = Vec::new();
    for nonce in 0..500 {
        pings.extend(frame_bytes(Ping {
            nonce,
            sent_at: None,
        }));
    }
    send.write_all(&pings).await.unwrap();
    // Time for the server to answer until the window is full.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = within(10, server.shutdown()).await;
    assert_eq!(report.connections, 1);
    drop(connection);
}

/// An application that accepts a connection and drops it without serving it: the
/// connection closes, rather than stay open on keep-alives with its slot already free.
#[tokio::test]
async fn a_connection_dropped_without_being_served_closes() {
    let pki = pki();
    let mut server = QuicServer::new(ServerConfig::new(
        common::localhost(),
        Arc::clone(&pki.server),
    ))
    .unwrap();
    let client = client(&pki, server.local_addr());
    let (connection, accepted) = tokio::join!(client.connect(), server.accept());
    let connection = connection.unwrap();
    drop(accepted.expect("a connection"));
    within(5, async {
        while connection.close_reason().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!connection.is_usable());
}

/// A deadline that passes while the server is still writing a response frame (its client
/// reads nothing, so the frame outgrows the server's send window) must not be followed by
/// a status frame: the client would read the status as the rest of the cut frame. The
/// server resets the stream instead; a deadline between frames still gets its status.
#[tokio::test]
async fn a_deadline_in_the_middle_of_a_response_frame_resets_the_stream() {
    use taskwire_proto::instance::v1::{Checkpoint, GetCheckpointRequest, GetCheckpointResponse};
    let pki = pki();
    let mut router = Router::new();
    router.unary(|_ctx, _request: GetCheckpointRequest| async move {
        Ok(GetCheckpointResponse {
            checkpoint: Some(Checkpoint {
                // Over the server's 8 MiB send window: the write waits for the client.
                state: vec![7u8; 12 << 20].into(),
                ..Default::default()
            }),
        })
    });
    let server = start(&pki, Limits::default(), router);
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(64 * 1024));
    let connection = raw_connect_with(&pki, server.local_addr(), transport).await;
    let (_control, _control_recv) = send_hello(&connection).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let header = taskwire_rpc::CallOptions::new()
        .timeout(Duration::from_millis(300))
        .to_header(1);
    send.write_all(
        &[
            frame_bytes(header),
            frame_bytes(GetCheckpointRequest::default()),
        ]
        .concat(),
    )
    .await
    .unwrap();
    send.finish().unwrap();
    // Read nothing until well past the deadline.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    match within(10, recv.read_to_end(16 << 20)).await {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code, codes::RESET_CANCELLED);
        }
        other => panic!(
            "expected the stream reset, got {:?}",
            other.map(|b| b.len())
        ),
    }
}

/// A pipelined client's first call reaches the server before the server has answered the
/// Hello: this hand-written server reads the call's request first, then sends Negotiated,
/// then answers the call. A client that waited for Negotiated would never send it.
#[tokio::test]
async fn a_pipelined_call_reaches_the_server_before_it_answers_the_hello() {
    use prost::Message as _;
    use taskwire_codec::tokio_util::codec::Encoder as _;
    use taskwire_proto::WireMessage as _;
    use taskwire_proto::session::v1::Negotiated;

    let pki = pki();
    let endpoint = raw_server(&pki, quinn::TransportConfig::default());
    let addr = endpoint.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let connection = endpoint.accept().await.unwrap().await.unwrap();
        let (mut control_send, mut control_recv) = connection.accept_bi().await.unwrap();
        let (hello, _) = read_raw_frame(&mut control_recv).await;
        assert_eq!(hello, Hello::TYPE_ID);
        // The call, before any answer to the Hello.
        let (mut call_send, mut call_recv) = connection.accept_bi().await.unwrap();
        let (type_id, body) = read_raw_frame(&mut call_recv).await;
        assert_eq!(type_id, Ping::TYPE_ID);
        let ping = Ping::decode(body.as_slice()).unwrap();
        let negotiated = Negotiated {
            version: 1,
            max_frame_length: 1 << 20,
            max_concurrent_calls: 8,
            ..Default::default()
        };
        control_send
            .write_all(&frame_bytes(negotiated))
            .await
            .unwrap();
        let mut answer = bytes::BytesMut::new();
        taskwire_codec::Builder::new()
            .first_frame_done(true)
            .new_binary_codec()
            .encode(
                taskwire_codec::Frame::new(Pong {
                    nonce: ping.nonce,
                    sent_at: None,
                })
                .end_stream(),
                &mut answer,
            )
            .unwrap();
        call_send.write_all(&answer).await.unwrap();
        call_send.finish().unwrap();
        connection.closed().await;
    });

    let client = client(&pki, addr);
    let (connection, negotiation) = within(10, client.connect_pipelined()).await.unwrap();
    // The server answers the Hello only after the Ping below: until then, calls are held
    // to the first-frame limit (64 KiB).
    assert_eq!(connection.agreed().max_frame_length, 64 * 1024);
    let too_large = taskwire_proto::instance::v1::CheckpointRequest {
        state: vec![0; 100 * 1024].into(),
        ..Default::default()
    };
    let refused = within(10, connection.call(too_large)).await;
    assert!(
        matches!(
            refused,
            Err(CallError::Codec(
                taskwire_codec::CodecError::FrameTooLarge { max: 65536, .. }
            ))
        ),
        "{refused:?}"
    );
    let pong = within(
        10,
        connection.call(Ping {
            nonce: 9,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(pong.nonce, 9);
    let agreed = within(10, negotiation).await.unwrap();
    assert_eq!(agreed.max_frame_length, 1 << 20);
    assert_eq!(connection.agreed(), agreed);
    connection.close();
    within(10, server).await.unwrap();
}

/// A server that refuses a pipelined connection: the Negotiation gives the refusal, and a
/// call made behind the Hello fails instead of waiting.
#[tokio::test]
async fn a_refused_pipelined_connection_reports_the_refusal_and_fails_its_calls() {
    let pki = pki();
    let mut config = ServerConfig::new(common::localhost(), Arc::clone(&pki.server));
    config.admission = Some(Admission::new(|_peer, _hello| {
        Err(refusal(RefusalReason::Overloaded, "busy", None))
    }));
    let server = QuicServer::new(config).unwrap().serve(echo());
    let client = client(&pki, server.local_addr());
    let (connection, negotiation) = within(10, client.connect_pipelined()).await.unwrap();
    let call = within(10, connection.call(Ping::default())).await;
    assert!(call.is_err(), "{call:?}");
    match within(10, negotiation).await {
        Err(CallError::Refused {
            reason, message, ..
        }) => {
            assert_eq!(reason, RefusalReason::Overloaded);
            assert_eq!(message, "busy");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
}

/// An upload whose deadline passes while a chunk is half written (the server reads
/// nothing) resets its sending side at once, while the caller still holds the stream:
/// nothing it sends or finishes later can follow the cut frame, which the server would
/// read as the start of a corrupt one.
#[tokio::test]
async fn a_deadline_in_the_middle_of_an_upload_frame_resets_the_stream() {
    use taskwire_proto::environment::v1::ImageUpload;
    use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
    use taskwire_proto::session::v1::Negotiated;

    let pki = pki();
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(64 * 1024));
    let endpoint = raw_server(&pki, transport);
    let addr = endpoint.local_addr().unwrap();
    let (read_now, read) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let connection = endpoint.accept().await.unwrap().await.unwrap();
        let (mut control_send, mut control_recv) = connection.accept_bi().await.unwrap();
        read_raw_frame(&mut control_recv).await;
        control_send
            .write_all(&frame_bytes(Negotiated {
                version: 1,
                ..Default::default()
            }))
            .await
            .unwrap();
        let (_call_send, mut call_recv) = connection.accept_bi().await.unwrap();
        // Reads nothing until the client has given up; then the stream must already be
        // reset, though the client still holds it.
        let _ = read.await;
        let ended =
            tokio::time::timeout(Duration::from_secs(3), call_recv.read_to_end(64 << 20)).await;
        ended.map(|read| read.map(|bytes| bytes.len()))
    });

    let connection = within(10, client(&pki, addr).connect()).await.unwrap();
    let manifest = ImageUpload {
        part: Some(Part::Manifest(ImageManifest::default())),
    };
    let mut upload = within(
        10,
        connection.client_stream(
            manifest,
            taskwire_rpc::CallOptions::new().timeout(Duration::from_millis(300)),
        ),
    )
    .await
    .unwrap();
    let chunk = bytes::Bytes::from(vec![1u8; 1 << 20]);
    let cut = loop {
        let sent = within(
            10,
            upload.send(ImageUpload {
                part: Some(Part::Chunk(chunk.clone())),
            }),
        )
        .await;
        if let Err(error) = sent {
            break error;
        }
    };
    assert!(matches!(cut, CallError::DeadlineExceeded(_)), "{cut:?}");
    read_now.send(()).unwrap();
    match within(10, server).await.unwrap() {
        Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)))) => {
            assert_eq!(code, codes::RESET_CANCELLED);
        }
        other => panic!("expected the stream reset, got {other:?}"),
    }
    let finished = within(10, upload.finish()).await;
    assert!(
        matches!(finished, Err(CallError::DeadlineExceeded(_))),
        "{finished:?}"
    );
}
