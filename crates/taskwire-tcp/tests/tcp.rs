//! The TCP transport on 127.0.0.1: calls, multiplexing, limits, cancellation, and the
//! listener under bad input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use taskwire_codec::tokio_util::codec::Encoder as _;
use taskwire_proto::instance::v1::{CheckpointSummary, ListCheckpointsRequest};
use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
use taskwire_proto::session::v1::{Codec, Ping, Pong};
use taskwire_rpc::session::ClientSession;
use taskwire_rpc::{CallError, CallOptions, Router, StatusCode};
use taskwire_tcp::runner::{Orchestrator, RunnerError};
use taskwire_tcp::{
    TcpClient, TcpClientConfig, TcpConnection, TcpLimits, TcpServer, TcpServerConfig,
    TcpServerHandle,
};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .expect("test step timed out")
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn router() -> Router {
    let mut router = Router::new();
    router.unary(|_ctx, ping: Ping| async move {
        // A little jitter so that answers come back out of order.
        tokio::time::sleep(Duration::from_micros(ping.nonce % 7 * 300)).await;
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: None,
        })
    });
    router.server_streaming(|_ctx, request: ListCheckpointsRequest, sink| async move {
        for sequence in 0..u64::from(request.page_size) {
            sink.send(CheckpointSummary {
                sequence,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    });
    router
}

async fn plaintext_server(limits: TcpLimits, router: Router) -> TcpServerHandle {
    let mut config = TcpServerConfig::plaintext_loopback(loopback());
    config.limits = limits;
    TcpServer::bind(config).await.unwrap().serve(router)
}

async fn plaintext_client(addr: SocketAddr, codec: Codec) -> TcpConnection {
    let mut config = TcpClientConfig::plaintext_loopback(addr);
    config.codec = codec;
    within(10, TcpClient::new(config).connect()).await.unwrap()
}

#[tokio::test]
async fn a_unary_call_over_mutual_tls_sees_the_clients_tenant() {
    let ca = CertificateAuthority::generate(&CaParams::new("tcp test CA")).unwrap();
    let server_cert = ca
        .issue_server(&ServerCertParams::new(["localhost"]))
        .unwrap();
    let client_cert = ca
        .issue_client(&ClientCertParams::new("acme", "orchestrator-1"))
        .unwrap();
    let server_tls = ServerConfigBuilder::new(server_cert.credentials().unwrap())
        .client_auth(ClientAuth::Required(ca.ca_bundle().unwrap()))
        .build()
        .unwrap();
    let client_tls = ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .client_credentials(client_cert.credentials().unwrap())
        .build()
        .unwrap();
    let mut router = Router::new();
    router.unary(|ctx, ping: Ping| async move {
        assert_eq!(ctx.peer.tenant(), Some("acme"));
        Ok(Pong {
            nonce: ping.nonce + 1,
            sent_at: None,
        })
    });
    let server = TcpServer::bind(TcpServerConfig::new(loopback(), Arc::new(server_tls)))
        .await
        .unwrap()
        .serve(router);
    let config = TcpClientConfig::new(server.local_addr(), "localhost", Arc::new(client_tls));
    let connection = within(10, TcpClient::new(config).connect()).await.unwrap();
    let pong = within(
        10,
        connection.call(Ping {
            nonce: 41,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(pong.nonce, 42);
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_frees_its_call_slot() {
    let mut router = Router::new();
    router.unary(|_ctx, ping: Ping| async move {
        if ping.nonce == 0 {
            panic!("a bug in the handler");
        }
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: None,
        })
    });
    let mut limits = TcpLimits::default();
    limits.max_concurrent_calls(1);
    let server = plaintext_server(limits, router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    // With one call slot, a second panic or the call after it would find the slot taken
    // if the first panic had leaked it.
    for _ in 0..2 {
        let ping = Ping {
            nonce: 0,
            sent_at: None,
        };
        match within(10, connection.call(ping)).await {
            Err(CallError::Status(status)) => assert_eq!(status.code(), StatusCode::Internal),
            other => panic!("{other:?}"),
        }
    }
    let pong = within(
        10,
        connection.call(Ping {
            nonce: 5,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(pong.nonce, 5);
}

#[tokio::test]
async fn a_json_client_and_a_binary_client_share_one_server() {
    let server = plaintext_server(TcpLimits::default(), router()).await;
    for codec in [Codec::Json, Codec::Protobuf] {
        let connection = plaintext_client(server.local_addr(), codec).await;
        let pong = within(
            10,
            connection.call(Ping {
                nonce: 7,
                sent_at: None,
            }),
        )
        .await
        .unwrap();
        assert_eq!(pong.nonce, 7, "{codec:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_interleave_on_one_connection() {
    let server = plaintext_server(TcpLimits::default(), router()).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let calls: Vec<_> = (0..100u64)
        .map(|nonce| {
            let connection = connection.clone();
            tokio::spawn(async move {
                // Within the in-flight limit of 64: the rest wait their turn here.
                loop {
                    match connection
                        .call(Ping {
                            nonce,
                            sent_at: None,
                        })
                        .await
                    {
                        Err(CallError::ResourceExhausted(_)) => {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        other => return other.map(|pong| (nonce, pong.nonce)),
                    }
                }
            })
        })
        .collect();
    for call in calls {
        let (sent, got) = within(30, call).await.unwrap().unwrap();
        assert_eq!(sent, got, "an answer went to the wrong call");
    }
    assert_eq!(server.stats().calls_started.load(Ordering::Relaxed), 100);
}

#[tokio::test]
async fn a_server_stream_ends_after_its_last_item() {
    let server = plaintext_server(TcpLimits::default(), router()).await;
    let connection = plaintext_client(server.local_addr(), Codec::Json).await;
    let mut stream = within(
        10,
        connection.server_stream(
            ListCheckpointsRequest {
                page_size: 50,
                ..Default::default()
            },
            CallOptions::new(),
        ),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Some(item) = within(10, stream.message()).await.unwrap() {
        got.push(item.sequence);
    }
    assert_eq!(got, (0..50).collect::<Vec<u64>>());
}

#[tokio::test]
async fn calls_past_the_in_flight_limit_get_resource_exhausted() {
    let mut router = Router::new();
    router.unary(|_ctx, ping: Ping| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: None,
        })
    });
    let mut limits = TcpLimits::default();
    limits.max_concurrent_calls(4);
    let server = plaintext_server(limits, router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    assert_eq!(connection.agreed().max_concurrent_calls, 4);
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let connection = connection.clone();
            tokio::spawn(async move { connection.call(Ping::default()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    match connection.call(Ping::default()).await {
        Err(CallError::ResourceExhausted(message)) => assert!(message.contains('4'), "{message}"),
        other => panic!("{other:?}"),
    }
    for call in busy {
        within(10, call).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn dropping_a_call_cancels_its_handler_and_deadlines_end_calls() {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    let seen = Arc::clone(&cancelled);
    router.unary(move |ctx, ping: Ping| {
        let seen = Arc::clone(&seen);
        async move {
            // Watches the token from outside the handler, which the server drops once it
            // is cancelled.
            let token = ctx.cancel.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                seen.fetch_add(1, Ordering::SeqCst);
            });
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let server = plaintext_server(TcpLimits::default(), router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let call = tokio::spawn({
        let connection = connection.clone();
        async move { connection.call(Ping::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    within(10, async {
        while cancelled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let result = within(
        10,
        connection.call_with(
            Ping::default(),
            CallOptions::new().timeout(Duration::from_millis(200)),
        ),
    )
    .await;
    match result {
        Err(CallError::DeadlineExceeded(_)) => {}
        Err(CallError::Status(status)) if status.code() == StatusCode::DeadlineExceeded => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_outcome_for_another_job_is_rejected() {
    let mut router = Router::new();
    router.unary(|_ctx, request: ExecutionRequest| async move {
        Ok(ExecutionOutcome {
            job_id: "someone-else".into(),
            request_id: request.request_id,
            outcome: None,
        })
    });
    let server = plaintext_server(TcpLimits::default(), router).await;
    let orchestrator =
        Orchestrator::new(plaintext_client(server.local_addr(), Codec::Protobuf).await);
    let job = ExecutionRequest {
        job_id: "mine".into(),
        request_id: "r1".into(),
        ..Default::default()
    };
    match within(10, orchestrator.execute(job, Duration::from_secs(5))).await {
        Err(RunnerError::OutcomeMismatch {
            expected_job,
            got_job,
            ..
        }) => {
            assert_eq!(
                (expected_job.as_str(), got_job.as_str()),
                ("mine", "someone-else")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Writes `bytes` on a raw connection and waits for the server to close it.
async fn closes_after(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    within(10, stream.read_to_end(&mut sink))
        .await
        .expect("the server closed the connection");
}

fn hello_frame() -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    taskwire_codec::Builder::new()
        .new_binary_message_codec::<taskwire_proto::session::v1::Hello>()
        .encode(
            taskwire_codec::Frame::new(ClientSession::default().hello(Codec::Protobuf)),
            &mut out,
        )
        .unwrap();
    out.to_vec()
}

#[tokio::test]
async fn garbage_first_bytes_are_closed_and_the_listener_keeps_serving() {
    let server = plaintext_server(TcpLimits::default(), router()).await;
    closes_after(server.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    within(10, connection.call(Ping::default())).await.unwrap();
}

#[tokio::test]
async fn a_first_frame_over_the_hello_limit_is_closed_unread() {
    let server = plaintext_server(TcpLimits::default(), router()).await;
    let mut header = hello_frame()[..12].to_vec();
    header[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    closes_after(server.local_addr(), &header).await;
    assert_eq!(
        server
            .stats()
            .connections_closed_for_cause
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_hello_too_slow_for_the_deadline_is_closed() {
    let mut limits = TcpLimits::default();
    limits.hello_timeout(Duration::from_millis(300));
    let server = plaintext_server(limits, router()).await;
    let started = std::time::Instant::now();
    closes_after(server.local_addr(), &hello_frame()[..5]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_call_before_the_hello_is_closed() {
    let server = plaintext_server(TcpLimits::default(), router()).await;
    let mut out = bytes::BytesMut::new();
    taskwire_codec::Builder::new()
        .new_binary_codec()
        .encode(
            taskwire_codec::Frame::new(Ping::default()).with_stream_id(1),
            &mut out,
        )
        .unwrap();
    closes_after(server.local_addr(), &out).await;
}

#[tokio::test]
async fn a_connection_flood_stops_at_the_limit() {
    let mut limits = TcpLimits::default();
    limits.max_connections(3);
    let server = plaintext_server(limits, router()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(plaintext_client(server.local_addr(), Codec::Protobuf).await);
    }
    // Closed unread, a refused connection ends in an EOF or, when the Hello reaches the
    // closed socket first, a reset: either way a retryable UNAVAILABLE, never an I/O
    // error the caller would not retry.
    for _ in 0..20 {
        let mut config = TcpClientConfig::plaintext_loopback(server.local_addr());
        config.limits.hello_timeout(Duration::from_secs(2));
        match within(10, TcpClient::new(config).connect()).await {
            Ok(_) => panic!("a connection past the limit was served"),
            Err(error) => assert!(
                matches!(error, CallError::Unavailable(_)) && error.is_retryable(),
                "{error:?}"
            ),
        }
    }
    assert_eq!(
        server.stats().connections_refused.load(Ordering::Relaxed),
        20
    );
    for connection in &held {
        within(10, connection.call(Ping::default())).await.unwrap();
    }
}

#[tokio::test]
async fn a_peer_vanishing_mid_frame_does_not_disturb_the_server() {
    let server = plaintext_server(TcpLimits::default(), router()).await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let hello = hello_frame();
    stream.write_all(&hello).await.unwrap();
    let mut answer = [0u8; 12];
    within(10, stream.read_exact(&mut answer)).await.unwrap();
    let mut out = bytes::BytesMut::new();
    taskwire_codec::Builder::new()
        .first_frame_done(true)
        .new_binary_codec()
        .encode(
            taskwire_codec::Frame::new(Ping::default()).with_stream_id(1),
            &mut out,
        )
        .unwrap();
    stream.write_all(&out[..7]).await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    within(10, connection.call(Ping::default())).await.unwrap();
}

#[tokio::test]
async fn plaintext_off_loopback_is_refused() {
    let config = TcpServerConfig {
        allow_plaintext: true,
        ..TcpServerConfig::plaintext_loopback("0.0.0.0:0".parse().unwrap())
    };
    assert!(TcpServer::bind(config).await.is_err());
    let client = TcpClient::new(TcpClientConfig::plaintext_loopback(
        "192.0.2.1:9".parse().unwrap(),
    ));
    assert!(matches!(
        client.connect().await,
        Err(CallError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_is_chunked_and_small_calls_run_beside_it() {
    use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
    use taskwire_proto::environment::v1::{ImageUpload, RegisterImageResponse};
    let mut router = router();
    router.client_streaming(
        |_ctx, mut parts: taskwire_rpc::RequestStream<ImageUpload>| async move {
            let mut size = 0u64;
            while let Some(part) = parts.message().await? {
                if let Some(Part::Chunk(chunk)) = part.part {
                    size += chunk.len() as u64;
                    // A slow consumer: the upload takes a while.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            Ok(RegisterImageResponse {
                image: Some(taskwire_proto::environment::v1::ImageInfo {
                    size_bytes: size,
                    ..Default::default()
                }),
                ..Default::default()
            })
        },
    );
    let server = plaintext_server(TcpLimits::default(), router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let upload = {
        let connection = connection.clone();
        tokio::spawn(async move {
            let manifest = ImageUpload {
                part: Some(Part::Manifest(ImageManifest {
                    size_bytes: 4 << 20,
                    ..Default::default()
                })),
            };
            let mut stream = connection
                .client_stream(manifest, CallOptions::new())
                .await?;
            for _ in 0..64 {
                stream
                    .send(ImageUpload {
                        part: Some(Part::Chunk(vec![1u8; 64 * 1024].into())),
                    })
                    .await?;
            }
            let response = stream.finish().await?;
            Ok::<_, CallError>((response, std::time::Instant::now()))
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    for nonce in 0..20 {
        within(
            10,
            connection.call(Ping {
                nonce,
                sent_at: None,
            }),
        )
        .await
        .unwrap();
    }
    let pings_done = std::time::Instant::now();
    let (response, upload_done) = within(30, upload).await.unwrap().unwrap();
    assert_eq!(
        response.image.unwrap().size_bytes,
        4 << 20,
        "every chunk arrived"
    );
    assert!(
        pings_done < upload_done,
        "small calls waited for the whole upload"
    );
}

#[tokio::test]
async fn a_bidirectional_stream_echoes_until_both_sides_end() {
    use taskwire_proto::journal::v1::{End, OutputEntry, Start};
    use taskwire_proto::registry::JournalMessage;
    let mut router = Router::new();
    router.bidi::<Start, JournalMessage, _, _>(|_ctx, mut incoming, outgoing| async move {
        while let Some(message) = incoming.message().await? {
            if !matches!(message, JournalMessage::Start(_)) {
                outgoing.send(message).await?;
            }
        }
        outgoing.send(End::default()).await
    });
    let server = plaintext_server(TcpLimits::default(), router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Json).await;
    let mut stream = within(
        10,
        connection.bidi(JournalMessage::from(Start::default()), CallOptions::new()),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        stream
            .send(JournalMessage::from(OutputEntry::default()))
            .await
            .unwrap();
    }
    stream.close_send().await.unwrap();
    let mut received = Vec::new();
    while let Some(message) = within(10, stream.message()).await.unwrap() {
        received.push(message);
    }
    assert_eq!(received.len(), 4, "three echoes and End: {received:?}");
    assert!(matches!(received[3], JournalMessage::End(_)));
}

/// An upload the server answers early: the client's remaining items arrive on a stream the
/// server has finished with, and must be dropped, not taken for a new call.
#[tokio::test]
async fn items_after_an_early_answer_are_dropped_not_taken_for_a_new_call() {
    use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
    use taskwire_proto::environment::v1::{ImageUpload, RegisterImageResponse};
    let started = Arc::new(AtomicUsize::new(0));
    let mut router = router();
    let counter = Arc::clone(&started);
    router.client_streaming(
        move |_ctx, mut parts: taskwire_rpc::RequestStream<ImageUpload>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                parts.message().await?;
                Err::<RegisterImageResponse, _>(taskwire_rpc::Status::failed_precondition(
                    "refused after the manifest",
                ))
            }
        },
    );
    let server = plaintext_server(TcpLimits::default(), router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let manifest = ImageUpload {
        part: Some(Part::Manifest(ImageManifest::default())),
    };
    let mut upload = within(10, connection.client_stream(manifest, CallOptions::new()))
        .await
        .unwrap();
    for _ in 0..20 {
        upload
            .send(ImageUpload {
                part: Some(Part::Chunk(vec![7u8; 1024].into())),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    match within(10, upload.finish()).await {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code(), StatusCode::FailedPrecondition);
        }
        other => panic!("{other:?}"),
    }
    // The connection still works, and the handler ran once.
    let pong = within(
        10,
        connection.call(Ping {
            nonce: 3,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(pong.nonce, 3);
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "late items started new calls"
    );
}

/// A call whose header went out but whose request was refused locally (over the frame
/// limit) is cancelled; the server must forget the header, or after as many such calls as
/// the call limit it takes the connection for a flood of headers and closes it.
#[tokio::test]
async fn headers_of_calls_cancelled_before_their_request_are_forgotten() {
    let mut limits = TcpLimits::default();
    limits.max_frame_length(1024).max_concurrent_calls(4);
    let server = plaintext_server(limits, router()).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let too_large = ListCheckpointsRequest {
        instance_id: "x".repeat(4096),
        ..Default::default()
    };
    for _ in 0..12 {
        let options = CallOptions::new().timeout(Duration::from_secs(5));
        let refused = within(10, connection.server_stream(too_large.clone(), options)).await;
        assert!(
            matches!(refused, Err(CallError::Codec(_))),
            "the request is over the frame limit: {refused:?}"
        );
    }
    let pong = within(
        10,
        connection.call(Ping {
            nonce: 4,
            sent_at: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(pong.nonce, 4);
}

/// Shutting down lets calls in flight finish within the drain timeout, while the client
/// hears the GoAway and makes no new calls on the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_calls_in_flight_finish() {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let mut router = Router::new();
    router.unary(move |_ctx, ping: Ping| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let mut limits = TcpLimits::default();
    limits.drain_timeout(Duration::from_secs(5));
    let server = plaintext_server(limits, router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let calls: Vec<_> = (1..=3)
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
    // Shut down once every call is in its handler.
    within(10, async {
        while started.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let shutdown = tokio::spawn(server.shutdown());
    for (call, nonce) in calls.into_iter().zip(1..) {
        let pong = within(10, call).await.unwrap().unwrap();
        assert_eq!(pong.nonce, nonce, "the call was answered, not cancelled");
    }
    assert!(within(10, shutdown).await.unwrap(), "every call drained");
    assert!(!connection.is_usable(), "the client heard the GoAway");
}

/// A stream the server ended while the client never ended its side: dropping it ends the
/// client's side (CancelCall), so the server frees the call. With one call slot, a leak
/// shows at the second stream.
#[tokio::test]
async fn a_stream_the_client_never_ended_frees_its_slot_when_dropped() {
    use taskwire_proto::journal::v1::{End, Start};
    use taskwire_proto::registry::JournalMessage;
    let mut router = Router::new();
    router.bidi::<Start, JournalMessage, _, _>(|_ctx, mut incoming, outgoing| async move {
        incoming.message().await?;
        outgoing.send(End::default()).await
    });
    let mut limits = TcpLimits::default();
    limits.max_concurrent_calls(1);
    let server = plaintext_server(limits, router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    for _ in 0..3 {
        let mut stream = within(
            10,
            connection.bidi(JournalMessage::from(Start::default()), CallOptions::new()),
        )
        .await
        .unwrap();
        let end = within(10, stream.message()).await.unwrap();
        assert!(matches!(end, Some(JournalMessage::End(_))), "{end:?}");
        assert_eq!(within(10, stream.message()).await.unwrap(), None);
        // Its CancelCall goes out before the next stream's first frame.
        drop(stream);
    }
}

/// A request under the server's frame limit as protobuf but over it as JSON (field names,
/// the envelope) cannot be sent on a JSON connection: the call fails with
/// RESOURCE_EXHAUSTED instead of waiting for an answer that cannot come, and the server
/// is told to forget the call's header (more such calls than the call limit would
/// otherwise close the connection).
#[tokio::test]
async fn a_request_too_large_only_as_json_fails_instead_of_hanging() {
    let mut limits = TcpLimits::default();
    limits.max_frame_length(1024).max_concurrent_calls(2);
    let server = plaintext_server(limits, router()).await;
    let connection = plaintext_client(server.local_addr(), Codec::Json).await;
    let request = ListCheckpointsRequest {
        instance_id: "x".repeat(1000),
        ..Default::default()
    };
    for _ in 0..4 {
        // A deadline, so that a CallHeader goes out before the request.
        let options = CallOptions::new().timeout(Duration::from_secs(10));
        let mut stream = within(10, connection.server_stream(request.clone(), options))
            .await
            .unwrap();
        match within(10, stream.message()).await {
            Err(CallError::Status(status)) => {
                assert_eq!(status.code(), StatusCode::ResourceExhausted);
                assert!(status.message().contains("1024"), "{}", status.message());
            }
            other => panic!("{other:?}"),
        }
    }
    // The connection goes on.
    let small = ListCheckpointsRequest {
        page_size: 2,
        ..Default::default()
    };
    let mut stream = within(10, connection.server_stream(small, CallOptions::new()))
        .await
        .unwrap();
    let mut items = 0;
    while within(10, stream.message()).await.unwrap().is_some() {
        items += 1;
    }
    assert_eq!(items, 2);
}

/// A conversation where each side waits for the other: the client's latest item must
/// reach the server before the client waits for the answer to it.
#[tokio::test]
async fn a_bidirectional_stream_can_take_turns() {
    use taskwire_proto::journal::v1::{End, OutputEntry, Start};
    use taskwire_proto::registry::JournalMessage;
    let mut router = Router::new();
    router.bidi::<Start, JournalMessage, _, _>(|_ctx, mut incoming, outgoing| async move {
        // Answers each message, the opening Start included, as it arrives.
        while let Some(message) = incoming.message().await? {
            outgoing.send(message).await?;
        }
        outgoing.send(End::default()).await
    });
    let server = plaintext_server(TcpLimits::default(), router).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let mut stream = within(
        10,
        connection.bidi(JournalMessage::from(Start::default()), CallOptions::new()),
    )
    .await
    .unwrap();
    let first = within(10, stream.message()).await.unwrap();
    assert!(matches!(first, Some(JournalMessage::Start(_))), "{first:?}");
    for turn in 0..3 {
        let entry = OutputEntry {
            name: format!("turn {turn}"),
            ..Default::default()
        };
        stream
            .send(JournalMessage::from(entry.clone()))
            .await
            .unwrap();
        let echo = within(10, stream.message()).await.unwrap();
        assert_eq!(echo, Some(JournalMessage::from(entry)));
    }
    stream.close_send().await.unwrap();
    let late = stream
        .send(JournalMessage::from(OutputEntry::default()))
        .await;
    assert!(
        matches!(late, Err(CallError::Protocol(_))),
        "nothing is sent after the client's side ended: {late:?}"
    );
    let end = within(10, stream.message()).await.unwrap();
    assert!(matches!(end, Some(JournalMessage::End(_))), "{end:?}");
    assert_eq!(within(10, stream.message()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_connection_and_frees_its_slot() {
    let mut limits = TcpLimits::default();
    limits.max_connections_per_ip(1);
    let server = plaintext_server(limits, router()).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    within(10, connection.call(Ping::default())).await.unwrap();
    drop(connection);
    // The server frees the only slot once the connection closes; until then it refuses.
    let client = TcpClient::new(TcpClientConfig::plaintext_loopback(server.local_addr()));
    let started = std::time::Instant::now();
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
    let server = plaintext_server(TcpLimits::default(), router()).await;
    let connection = plaintext_client(server.local_addr(), Codec::Protobuf).await;
    let request = ListCheckpointsRequest {
        page_size: 2_000,
        ..Default::default()
    };
    let mut stream = within(10, connection.server_stream(request, CallOptions::new()))
        .await
        .unwrap();
    // The stream alone keeps the connection open: no handle is left.
    drop(connection);
    let mut count = 0u64;
    while let Some(item) = within(10, stream.message()).await.unwrap() {
        assert_eq!(item.sequence, count);
        count += 1;
    }
    assert_eq!(count, 2_000);
}

/// Reads one binary frame off a raw connection: its header, then its body.
async fn read_raw_frame(
    stream: &mut tokio::net::TcpStream,
) -> (taskwire_codec::FrameHeader, Vec<u8>) {
    let mut head = [0u8; taskwire_codec::HEADER_LEN];
    stream.read_exact(&mut head).await.unwrap();
    let header = taskwire_codec::FrameHeader::parse(&head).unwrap();
    let mut body = vec![0; header.body_len as usize];
    stream.read_exact(&mut body).await.unwrap();
    (header, body)
}

/// A call dropped while the connection's send queue is full (an upload the server does
/// not read fills it) still gets its CancelCall out, once there is room, and keeps its
/// call slot until then: without it the server would hold the call for the connection's
/// life, and the client could reuse the slot the server still counts.
#[tokio::test]
async fn a_cancel_call_behind_a_full_send_queue_goes_out_once_there_is_room() {
    use prost::Message as _;
    use taskwire_proto::WireMessage as _;
    use taskwire_proto::environment::v1::ImageUpload;
    use taskwire_proto::environment::v1::image_upload::Part;
    use taskwire_proto::session::v1::{CancelCall, Hello};

    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (start_reading, reading) = tokio::sync::oneshot::channel::<()>();
    // A hand-played server: it answers the Hello, allowing two calls at once, then reads
    // nothing until told, and then reads until the CancelCall of stream 2.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (_, body) = read_raw_frame(&mut stream).await;
        let hello = Hello::decode(body.as_slice()).unwrap();
        let session = taskwire_rpc::session::ServerSession {
            max_concurrent_calls: 2,
            ..Default::default()
        };
        let negotiated = session.negotiate(&hello, Codec::Protobuf, "raw").unwrap();
        let mut out = bytes::BytesMut::new();
        taskwire_codec::BinaryCodec::new()
            .encode(taskwire_codec::Frame::new(negotiated), &mut out)
            .unwrap();
        stream.write_all(&out).await.unwrap();
        reading.await.unwrap();
        loop {
            let (header, body) = read_raw_frame(&mut stream).await;
            if header.type_id == CancelCall::TYPE_ID {
                let cancel = CancelCall::decode(body.as_slice()).unwrap();
                if cancel.request_id == 2 {
                    return cancel;
                }
            }
        }
    });
    let connection = plaintext_client(addr, Codec::Protobuf).await;

    // Stream 1: an upload that sends until the socket and then the send queue are full.
    let sent = Arc::new(AtomicUsize::new(0));
    let upload = {
        let connection = connection.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let chunk = || ImageUpload {
                part: Some(Part::Chunk(vec![7u8; 64 * 1024].into())),
            };
            let mut stream = connection
                .client_stream(chunk(), CallOptions::new())
                .await
                .expect("the upload opens");
            while stream.send(chunk()).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Full once the upload makes no progress while every other task gets its turns (this
    // runtime has one thread, so yielding runs the upload and the connection's writer),
    // and past the queue's 256 frames.
    within(60, async {
        loop {
            let before = sent.load(Ordering::Relaxed);
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if before >= 256 && sent.load(Ordering::Relaxed) == before {
                break;
            }
        }
    })
    .await;

    // Stream 2: a call that cannot even queue its request, given up on.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        connection.call(Ping {
            nonce: 1,
            sent_at: None,
        }),
    )
    .await;
    assert!(gave_up.is_err(), "the call could not have been answered");
    // Its slot is still taken: the server has not been told yet. (A free slot would let
    // this call wait for room in the queue instead.)
    let third = tokio::time::timeout(
        Duration::from_secs(5),
        connection.call(Ping {
            nonce: 2,
            sent_at: None,
        }),
    )
    .await;
    assert!(
        matches!(third, Ok(Err(CallError::ResourceExhausted(_)))),
        "a slot was reused before its CancelCall went out: {third:?}"
    );

    start_reading.send(()).unwrap();
    let cancel = within(30, server).await.unwrap();
    assert_eq!(cancel.request_id, 2);
    upload.abort();
}

/// On shutdown the GoAway names the highest stream id a call was accepted on; those calls
/// are answered, a call that arrives after the GoAway is refused `UNAVAILABLE`, and the
/// connection then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_away_names_the_last_call_accepted_and_every_accepted_call_is_answered() {
    use prost::Message as _;
    use taskwire_proto::WireMessage as _;
    use taskwire_proto::session::v1::{GoAway, Negotiated, Status as StatusMessage};

    let mut router = Router::new();
    router.unary(|_ctx, ping: Ping| async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: None,
        })
    });
    let server = plaintext_server(TcpLimits::default(), router).await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    stream.write_all(&hello_frame()).await.unwrap();
    let (header, _) = within(10, read_raw_frame(&mut stream)).await;
    assert_eq!(header.type_id, Negotiated::TYPE_ID);
    let call = |stream_id: u32| {
        let mut out = bytes::BytesMut::new();
        taskwire_codec::Builder::new()
            .first_frame_done(true)
            .new_binary_codec()
            .encode(
                taskwire_codec::Frame::new(Ping {
                    nonce: u64::from(stream_id),
                    sent_at: None,
                })
                .with_stream_id(stream_id)
                .end_stream(),
                &mut out,
            )
            .unwrap();
        out.to_vec()
    };
    for stream_id in [1, 2, 5] {
        stream.write_all(&call(stream_id)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown = tokio::spawn(server.shutdown());

    let (header, body) = within(10, read_raw_frame(&mut stream)).await;
    assert_eq!(header.type_id, GoAway::TYPE_ID);
    assert_eq!(
        GoAway::decode(body.as_slice())
            .unwrap()
            .last_accepted_request_id,
        5
    );
    stream.write_all(&call(7)).await.unwrap();
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    while answered.len() + refused.len() < 4 {
        let (header, body) = within(10, read_raw_frame(&mut stream)).await;
        match header.type_id {
            id if id == Pong::TYPE_ID => answered.push(header.stream_id),
            id if id == StatusMessage::TYPE_ID => {
                let status = StatusMessage::decode(body.as_slice()).unwrap();
                assert_eq!(status.code(), StatusCode::Unavailable);
                refused.push(header.stream_id);
            }
            other => panic!("unexpected frame type {other:#06x}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [1, 2, 5], "every accepted call is answered");
    assert_eq!(refused, [7], "a call after the GoAway is refused");
    let mut rest = Vec::new();
    within(10, stream.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "nothing after the last answer");
    assert!(within(20, shutdown).await.unwrap());
}

/// A TLS server (no client certificates) with `limits`, and a client config for it.
async fn tls_server(limits: TcpLimits) -> (TcpServerHandle, Arc<rustls::ClientConfig>) {
    let ca = CertificateAuthority::generate(&CaParams::new("tcp flood CA")).unwrap();
    let server_cert = ca
        .issue_server(&ServerCertParams::new(["localhost"]))
        .unwrap();
    let server_tls = ServerConfigBuilder::new(server_cert.credentials().unwrap())
        .build()
        .unwrap();
    let client_tls = ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .build()
        .unwrap();
    let mut config = TcpServerConfig::new(loopback(), Arc::new(server_tls));
    config.limits = limits;
    let server = TcpServer::bind(config).await.unwrap().serve(router());
    (server, Arc::new(client_tls))
}

#[tokio::test]
async fn connections_that_never_finish_tls_do_not_keep_a_real_client_out() {
    let mut limits = TcpLimits::default();
    limits.max_connections_per_ip(50);
    let (server, client_tls) = tls_server(limits).await;
    // 200 bare TCP connections from 127.0.0.1 that never send a ClientHello: more than the
    // address's 50 slots and than the 64 pending handshakes.
    let mut bare = Vec::new();
    for _ in 0..200 {
        bare.push(
            tokio::net::TcpStream::connect(server.local_addr())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // None of them holds a slot, and the oldest were pushed out for newer ones.
    let pushed_out = server.stats().handshakes_pushed_out.load(Ordering::Relaxed);
    assert!(pushed_out >= 100, "{pushed_out} pushed out");
    assert_eq!(
        server.stats().connections_refused.load(Ordering::Relaxed),
        0
    );
    // A real client from the same address is served at once.
    let config = TcpClientConfig::new(server.local_addr(), "localhost", client_tls);
    let connection = within(5, TcpClient::new(config).connect())
        .await
        .expect("a real client connects through the flood");
    within(5, connection.call(Ping::default())).await.unwrap();
    drop(bare);
}

/// A server session store that counts the sessions clients resumed.
#[derive(Debug)]
struct CountingResumptions {
    store: Arc<dyn rustls::server::StoresServerSessions>,
    resumed: Arc<AtomicUsize>,
}

impl rustls::server::StoresServerSessions for CountingResumptions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.store.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let taken = self.store.take(key);
        if taken.is_some() {
            self.resumed.fetch_add(1, Ordering::SeqCst);
        }
        taken
    }
    fn can_cache(&self) -> bool {
        self.store.can_cache()
    }
}

/// TLS 1.3 resumption over TCP: a client that connects again with the same TLS
/// configuration resumes its session (no certificate sent or verified) and its calls
/// work as on the first connection.
#[tokio::test]
async fn a_client_reconnecting_with_the_same_tls_config_resumes_its_session() {
    let ca = CertificateAuthority::generate(&CaParams::new("tcp resumption CA")).unwrap();
    let server_cert = ca
        .issue_server(&ServerCertParams::new(["localhost"]))
        .unwrap();
    let mut server_tls = ServerConfigBuilder::new(server_cert.credentials().unwrap())
        .tls13_only(true)
        .build()
        .unwrap();
    let resumed = Arc::new(AtomicUsize::new(0));
    server_tls.session_storage = Arc::new(CountingResumptions {
        store: Arc::clone(&server_tls.session_storage),
        resumed: Arc::clone(&resumed),
    });
    let server = TcpServer::bind(TcpServerConfig::new(loopback(), Arc::new(server_tls)))
        .await
        .unwrap()
        .serve(router());
    let client_tls = Arc::new(
        ClientConfigBuilder::new(ca.ca_bundle().unwrap())
            .build()
            .unwrap(),
    );
    let client = TcpClient::new(TcpClientConfig::new(
        server.local_addr(),
        "localhost",
        Arc::clone(&client_tls),
    ));
    for round in 0..3u64 {
        let connection = within(10, client.connect()).await.unwrap();
        let pong = within(
            10,
            connection.call(Ping {
                nonce: round,
                sent_at: None,
            }),
        )
        .await
        .unwrap();
        assert_eq!(pong.nonce, round);
        assert_eq!(
            resumed.load(Ordering::SeqCst),
            usize::try_from(round).unwrap(),
            "every connection after the first resumes"
        );
    }
    server.shutdown().await;
}
