//! Every call shape over real QUIC on 127.0.0.1, with deadlines and cancellation.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, pki, start, within};
use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_proto::environment::v1::{ImageUpload, RegisterImageResponse};
use taskwire_proto::instance::v1::{
    Checkpoint, CheckpointSummary, GetCheckpointRequest, GetCheckpointResponse, InstanceEvent,
    ListCheckpointsRequest, RegisterInstanceRequest, RegisterInstanceResponse, Signal,
    SubscribeSignalsRequest,
};
use taskwire_proto::journal::v1::{End, OutputEntry, Start, Suspension};
use taskwire_proto::management::v1::HealthRequest;
use taskwire_proto::registry::JournalMessage;
use taskwire_proto::session::v1::{Ping, Pong};
use taskwire_quic::Limits;
use taskwire_rpc::journal::{JournalRole, JournalValidator};
use taskwire_rpc::{CallError, CallOptions, Router, Status, StatusCode};
use tokio::sync::{mpsc, oneshot};

fn register_router() -> Router {
    let mut router = Router::new();
    router.unary(|ctx, request: RegisterInstanceRequest| async move {
        if request.instance_id.is_empty() {
            return Err(Status::invalid_argument("instance_id is empty"));
        }
        let tenant = ctx.peer.tenant().unwrap_or_default().to_owned();
        Ok(RegisterInstanceResponse {
            accepted: true,
            rejection_reason: tenant,
            ..Default::default()
        })
    });
    router
}

#[tokio::test]
async fn a_unary_call_returns_the_paired_response_type() {
    let pki = pki();
    let server = start(&pki, Limits::default(), register_router());
    let client = client(&pki, server.local_addr());
    let connection = within(10, client.connect()).await.unwrap();
    let request = RegisterInstanceRequest {
        instance_id: "order-7".into(),
        ..Default::default()
    };
    let response: RegisterInstanceResponse =
        within(10, taskwire_quic::send_request(&connection, request))
            .await
            .unwrap();
    assert!(response.accepted);
    assert_eq!(
        response.rejection_reason, "acme",
        "the handler saw the client certificate's tenant"
    );
}

#[tokio::test]
async fn a_handler_status_reaches_the_caller_typed() {
    let pki = pki();
    let server = start(&pki, Limits::default(), register_router());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    match within(10, connection.call(RegisterInstanceRequest::default())).await {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code(), StatusCode::InvalidArgument);
            assert_eq!(status.message(), "instance_id is empty");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_call_without_a_handler_is_unimplemented_but_ping_needs_none() {
    let pki = pki();
    let server = start(&pki, Limits::default(), Router::new());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    match within(10, connection.call(HealthRequest {})).await {
        Err(CallError::Status(status)) => assert_eq!(status.code(), StatusCode::Unimplemented),
        other => panic!("{other:?}"),
    }
    // Ping is the session conversation's own rpc: the server answers it without a route.
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
}

#[tokio::test]
async fn a_server_stream_delivers_every_item_then_ends() {
    let pki = pki();
    let mut router = Router::new();
    router.server_streaming(|_ctx, request: ListCheckpointsRequest, sink| async move {
        for sequence in 0..request.page_size {
            sink.send(CheckpointSummary {
                sequence: u64::from(sequence),
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
        page_size: 500,
        ..Default::default()
    };
    let mut stream = within(10, connection.server_stream(request, CallOptions::new()))
        .await
        .unwrap();
    let mut sequences = Vec::new();
    while let Some(item) = within(10, stream.message()).await.unwrap() {
        sequences.push(item.sequence);
    }
    assert_eq!(sequences, (0..500).collect::<Vec<u64>>());
}

/// Responses with long `bytes` fields go out as the header and the body's own buffer;
/// they must arrive whole, as a unary answer and as stream items.
#[tokio::test]
async fn long_responses_arrive_whole() {
    let pki = pki();
    let state = bytes::Bytes::from((0..=255u8).cycle().take(256 * 1024).collect::<Vec<u8>>());
    let payload = bytes::Bytes::from(vec![0xa5; 64 * 1024]);
    let mut router = Router::new();
    let answer = state.clone();
    router.unary(move |_ctx, _request: GetCheckpointRequest| {
        let state = answer.clone();
        async move {
            Ok(GetCheckpointResponse {
                checkpoint: Some(Checkpoint {
                    state,
                    ..Default::default()
                }),
            })
        }
    });
    let items = payload.clone();
    router.server_streaming(move |_ctx, _request: SubscribeSignalsRequest, sink| {
        let payload = items.clone();
        async move {
            for n in 0..3 {
                sink.send(Signal {
                    signal_id: format!("s{n}"),
                    payload: payload.clone(),
                    ..Default::default()
                })
                .await?;
            }
            Ok(())
        }
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let response = within(10, connection.call(GetCheckpointRequest::default()))
        .await
        .unwrap();
    assert_eq!(response.checkpoint.unwrap().state, state);
    let mut stream = within(
        10,
        connection.server_stream(SubscribeSignalsRequest::default(), CallOptions::new()),
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    while let Some(signal) = within(10, stream.message()).await.unwrap() {
        assert_eq!(signal.payload, payload);
        ids.push(signal.signal_id);
    }
    assert_eq!(ids, ["s0", "s1", "s2"]);
}

#[tokio::test]
async fn a_failing_server_stream_ends_with_its_status() {
    let pki = pki();
    let mut router = Router::new();
    router.server_streaming(|_ctx, _request: ListCheckpointsRequest, sink| async move {
        sink.send(CheckpointSummary::default()).await?;
        Err(Status::not_found("no more checkpoints"))
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let mut stream = within(
        10,
        connection.server_stream(ListCheckpointsRequest::default(), CallOptions::new()),
    )
    .await
    .unwrap();
    assert!(within(10, stream.message()).await.unwrap().is_some());
    match within(10, stream.message()).await {
        Err(CallError::Status(status)) => assert_eq!(status.code(), StatusCode::NotFound),
        other => panic!("{other:?}"),
    }
}

/// A router whose handlers panic: a unary one, and a server stream after one item.
fn panicking_router() -> Router {
    let mut router = Router::new();
    router.unary(|_ctx, _request: RegisterInstanceRequest| async move {
        if true {
            panic!("a bug in the handler");
        }
        Ok(RegisterInstanceResponse::default())
    });
    router.server_streaming(|_ctx, _request: ListCheckpointsRequest, sink| async move {
        sink.send(CheckpointSummary::default()).await?;
        panic!("a bug after the first item");
    });
    router
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_never_looks_like_success() {
    let pki = pki();
    let server = start(&pki, Limits::default(), panicking_router());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    for _ in 0..2 {
        match within(10, connection.call(RegisterInstanceRequest::default())).await {
            Err(CallError::Status(status)) => assert_eq!(status.code(), StatusCode::Internal),
            other => panic!("{other:?}"),
        }
    }
    let mut stream = within(
        10,
        connection.server_stream(ListCheckpointsRequest::default(), CallOptions::new()),
    )
    .await
    .unwrap();
    assert!(within(10, stream.message()).await.unwrap().is_some());
    match within(10, stream.message()).await {
        Err(CallError::Status(status)) => assert_eq!(status.code(), StatusCode::Internal),
        other => panic!("a truncated stream must not end cleanly: {other:?}"),
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).to_vec()
}

/// The image upload handler: the manifest first, then chunks, checked while streaming.
fn upload_router(received: Arc<AtomicUsize>) -> Router {
    let mut router = Router::new();
    router.client_streaming(
        move |_ctx, mut parts: taskwire_rpc::RequestStream<ImageUpload>| {
            let received = Arc::clone(&received);
            async move {
                let Some(ImageUpload {
                    part: Some(Part::Manifest(manifest)),
                }) = parts.message().await?
                else {
                    return Err(Status::invalid_argument(
                        "the upload must open with its manifest",
                    ));
                };
                use sha2::Digest as _;
                let mut hash = sha2::Sha256::new();
                let mut size = 0u64;
                while let Some(part) = parts.message().await? {
                    let Some(Part::Chunk(chunk)) = part.part else {
                        return Err(Status::invalid_argument("a second manifest"));
                    };
                    size += chunk.len() as u64;
                    if size > manifest.size_bytes {
                        return Err(Status::invalid_argument(format!(
                            "byte {size} is past the announced size of {}",
                            manifest.size_bytes
                        )));
                    }
                    received.fetch_add(chunk.len(), Ordering::Relaxed);
                    hash.update(&chunk);
                }
                if size != manifest.size_bytes {
                    return Err(Status::invalid_argument(format!(
                        "got {size} of {} bytes",
                        manifest.size_bytes
                    )));
                }
                if hash.finalize().as_slice() != manifest.sha256.as_ref() {
                    return Err(Status::invalid_argument("sha256 mismatch"));
                }
                Ok(RegisterImageResponse {
                    ..Default::default()
                })
            }
        },
    );
    router
}

async fn upload(
    connection: &taskwire_quic::Connection,
    data: &[u8],
    announced_size: u64,
    announced_hash: Vec<u8>,
) -> Result<RegisterImageResponse, CallError> {
    let manifest = ImageUpload {
        part: Some(Part::Manifest(ImageManifest {
            name: "image".into(),
            size_bytes: announced_size,
            sha256: announced_hash.into(),
            ..Default::default()
        })),
    };
    let mut stream = connection
        .client_stream(manifest, CallOptions::new())
        .await?;
    for chunk in data.chunks(64 * 1024) {
        stream
            .send(ImageUpload {
                part: Some(Part::Chunk(bytes::Bytes::copy_from_slice(chunk))),
            })
            .await?;
    }
    stream.finish().await
}

/// A server that answers with success before the upload ends stops reading; the client's
/// next writes fail, and the answer it then reads is the one `finish` returns.
#[tokio::test]
async fn an_early_successful_answer_is_what_finish_returns() {
    let pki = pki();
    let mut router = Router::new();
    router.client_streaming(
        |_ctx, mut parts: taskwire_rpc::RequestStream<ImageUpload>| async move {
            parts.message().await?;
            Ok(RegisterImageResponse {
                already_registered: true,
                ..Default::default()
            })
        },
    );
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let manifest = ImageUpload {
        part: Some(Part::Manifest(ImageManifest::default())),
    };
    let mut stream = within(10, connection.client_stream(manifest, CallOptions::new()))
        .await
        .unwrap();
    // Enough data to outlast the server's stop: 64 MiB would not fit its windows.
    let chunk = bytes::Bytes::from(vec![1u8; 64 * 1024]);
    for _ in 0..1024 {
        within(
            10,
            stream.send(ImageUpload {
                part: Some(Part::Chunk(chunk.clone())),
            }),
        )
        .await
        .unwrap();
    }
    let answer = within(10, stream.finish()).await.unwrap();
    assert!(answer.already_registered, "{answer:?}");
}

#[tokio::test]
async fn a_client_stream_uploads_with_size_and_hash_checked_while_streaming() {
    let pki = pki();
    let received = Arc::new(AtomicUsize::new(0));
    let server = start(
        &pki,
        Limits::default(),
        upload_router(Arc::clone(&received)),
    );
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();

    within(
        30,
        upload(&connection, &data, data.len() as u64, sha256(&data)),
    )
    .await
    .expect("a correct upload succeeds");
    assert_eq!(received.load(Ordering::Relaxed), data.len());

    match within(
        30,
        upload(&connection, &data, data.len() as u64 - 1, sha256(&data)),
    )
    .await
    {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code(), StatusCode::InvalidArgument);
            assert!(
                status.message().contains("past the announced size"),
                "{status}"
            );
        }
        other => panic!("a byte past the announced size was accepted: {other:?}"),
    }

    match within(
        30,
        upload(&connection, &data, data.len() as u64, vec![0; 32]),
    )
    .await
    {
        Err(CallError::Status(status)) => assert!(status.message().contains("sha256"), "{status}"),
        other => panic!("a hash mismatch was accepted: {other:?}"),
    }
}

/// A journal service: validates the runtime's stream, answers each entry with an output
/// entry, and ends with End (or a Suspension when asked).
fn journal_router() -> Router {
    let mut router = Router::new();
    router.bidi::<Start, JournalMessage, _, _>(|_ctx, mut incoming, outgoing| async move {
        let mut runtime = JournalValidator::new(JournalRole::Runtime);
        let mut invocation = JournalValidator::new(JournalRole::Invocation);
        let mut suspend = false;
        while let Some(message) = incoming.message().await? {
            runtime.observe(&message)?;
            if let JournalMessage::Start(start) = &message {
                suspend = start.key == "suspend";
                continue;
            }
            let reply = JournalMessage::from(OutputEntry {
                name: "echo".into(),
                ..Default::default()
            });
            invocation.observe(&reply)?;
            outgoing.send(reply).await?;
        }
        runtime.finish()?;
        let last = if suspend {
            JournalMessage::from(Suspension {
                entry_indexes: vec![],
            })
        } else {
            JournalMessage::from(End::default())
        };
        invocation.observe(&last)?;
        outgoing.send(last).await?;
        invocation.finish()
    });
    router
}

#[tokio::test]
async fn a_journal_session_streams_both_ways_and_ends_with_end() {
    let pki = pki();
    let server = start(&pki, Limits::default(), journal_router());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let mut session = within(
        10,
        connection.bidi(JournalMessage::from(Start::default()), CallOptions::new()),
    )
    .await
    .unwrap();
    let mut seen = JournalValidator::new(JournalRole::Invocation);
    for i in 0..3 {
        within(10, session.send(OutputEntry::default(), i == 2))
            .await
            .unwrap();
    }
    let mut replies = 0;
    while let Some(message) = within(10, session.message()).await.unwrap() {
        seen.observe(&message).unwrap();
        replies += 1;
    }
    seen.finish()
        .expect("the service ended its stream correctly");
    assert_eq!(replies, 4, "three echoes and End");
}

/// Reads a journal stream until it fails, which it must after `violation`.
async fn stream_error(
    session: &mut taskwire_quic::BidiStream<JournalMessage>,
    violation: &str,
) -> CallError {
    loop {
        match within(10, session.message()).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended cleanly after {violation}"),
            Err(error) => return error,
        }
    }
}

#[tokio::test]
async fn journal_order_violations_end_the_stream_with_protocol_violation() {
    let pki = pki();
    let server = start(&pki, Limits::default(), journal_router());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();

    // The runtime sends a second Start.
    let mut session = within(
        10,
        connection.bidi(JournalMessage::from(Start::default()), CallOptions::new()),
    )
    .await
    .unwrap();
    within(10, session.send(Start::default(), true))
        .await
        .unwrap();
    let error = stream_error(&mut session, "a second Start").await;
    match error {
        CallError::Status(status) => {
            assert_eq!(status.code(), StatusCode::ProtocolViolation, "{status}");
        }
        other => panic!("{other:?}"),
    }

    // The service tries to suspend on nothing: its own validator refuses.
    let start_suspending = Start {
        key: "suspend".into(),
        ..Default::default()
    };
    let mut session = within(
        10,
        connection.bidi(JournalMessage::from(start_suspending), CallOptions::new()),
    )
    .await
    .unwrap();
    within(10, session.send(OutputEntry::default(), true))
        .await
        .unwrap();
    let error = stream_error(&mut session, "an empty Suspension").await;
    match error {
        CallError::Status(status) => {
            assert_eq!(status.code(), StatusCode::ProtocolViolation);
            assert!(status.message().contains("Suspension"), "{status}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn one_way_events_reach_the_handler() {
    let pki = pki();
    let (tx, mut rx) = mpsc::channel(16);
    let mut router = Router::new();
    router.one_way(move |_ctx, event: InstanceEvent| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event.instance_id).await;
        }
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    for i in 0..5 {
        connection
            .send_event(InstanceEvent {
                instance_id: format!("i{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(within(10, rx.recv()).await.unwrap());
    }
    got.sort();
    assert_eq!(got, ["i0", "i1", "i2", "i3", "i4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_unary_calls_share_one_connection() {
    let pki = pki();
    let mut router = Router::new();
    router.unary(|_ctx, ping: Ping| async move {
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: ping.sent_at,
        })
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let calls: Vec<_> = (0..1000u64)
        .map(|nonce| {
            let connection = connection.clone();
            tokio::spawn(async move {
                connection
                    .call(Ping {
                        nonce,
                        sent_at: None,
                    })
                    .await
                    .map(|pong| (nonce, pong.nonce))
            })
        })
        .collect();
    for call in calls {
        let (sent, echoed) = within(60, call).await.unwrap().unwrap();
        assert_eq!(sent, echoed, "a response was paired with the wrong call");
    }
    assert_eq!(server.stats().calls_started.load(Ordering::Relaxed), 1000);
    assert_eq!(server.open_connections(), 1);
}

#[tokio::test]
async fn a_passed_deadline_cancels_the_handler_and_the_caller_stops_waiting() {
    let pki = pki();
    let (cancelled_tx, cancelled_rx) = oneshot::channel::<()>();
    let cancelled_tx = Arc::new(Mutex::new(Some(cancelled_tx)));
    let mut router = Router::new();
    router.unary(move |ctx, ping: Ping| {
        let cancelled_tx = Arc::clone(&cancelled_tx);
        async move {
            assert!(
                ctx.deadline.is_some(),
                "the deadline travelled to the server"
            );
            let token = ctx.cancel.clone();
            let _guard = NotifyOnDrop(cancelled_tx, token);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let result = within(
        10,
        connection.call_with(
            Ping::default(),
            CallOptions::new().timeout(Duration::from_millis(300)),
        ),
    )
    .await;
    let waited = started.elapsed();
    match result {
        Err(CallError::DeadlineExceeded(_)) => {}
        Err(CallError::Status(status)) if status.code() == StatusCode::DeadlineExceeded => {}
        other => panic!("{other:?}"),
    }
    assert!(
        waited < Duration::from_secs(3),
        "the caller waited {waited:?}"
    );
    within(5, cancelled_rx)
        .await
        .expect("the handler was cancelled");
}

/// Reports, when a handler's future is dropped or its token fires, that it was cancelled.
struct NotifyOnDrop(
    Arc<Mutex<Option<oneshot::Sender<()>>>>,
    tokio_util::sync::CancellationToken,
);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        if self.1.is_cancelled()
            && let Some(tx) = self.0.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn dropping_a_call_fires_the_handlers_cancellation_token() {
    let pki = pki();
    let (cancelled_tx, cancelled_rx) = oneshot::channel::<()>();
    let cancelled_tx = Arc::new(Mutex::new(Some(cancelled_tx)));
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let mut router = Router::new();
    router.unary(move |ctx, ping: Ping| {
        let (cancelled_tx, started_tx) = (Arc::clone(&cancelled_tx), Arc::clone(&started_tx));
        async move {
            let _ = started_tx.lock().unwrap().take().map(|tx| tx.send(()));
            let token = ctx.cancel.clone();
            let _guard = NotifyOnDrop(cancelled_tx, token.clone());
            token.cancelled().await;
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let call = tokio::spawn({
        let connection = connection.clone();
        async move { connection.call(Ping::default()).await }
    });
    within(10, started_rx).await.unwrap();
    call.abort();
    within(10, cancelled_rx)
        .await
        .expect("the handler's token fired after the caller dropped the call");
    assert_eq!(
        within(10, async {
            loop {
                let n = server.stats().calls_cancelled.load(Ordering::Relaxed);
                if n > 0 {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await,
        1
    );
}

#[tokio::test]
async fn call_options_reach_the_handler() {
    let pki = pki();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let mut router = Router::new();
    let sink = Arc::clone(&seen);
    router.unary(move |ctx, ping: Ping| {
        let sink = Arc::clone(&sink);
        async move {
            let mut seen = sink.lock().unwrap();
            seen.insert("traceparent", ctx.trace.traceparent.clone());
            seen.insert("idempotency_key", ctx.idempotency_key.clone());
            seen.insert("request_id", ctx.request_id.to_string());
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let options = CallOptions::new()
        .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .idempotency_key("checkpoint-9");
    within(10, connection.call_with(Ping::default(), options))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(seen["idempotency_key"], "checkpoint-9");
    assert_ne!(seen["request_id"], "0");
}

#[tokio::test]
async fn ping_measures_a_round_trip_on_the_control_stream() {
    let pki = pki();
    let server = start(&pki, Limits::default(), Router::new());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let rtt = within(10, connection.ping()).await.unwrap();
    assert!(rtt < Duration::from_secs(5));
}

#[tokio::test]
async fn a_call_typed_only_at_run_time_answers_with_the_response_message() {
    use taskwire_proto::MessageSet;
    use taskwire_proto::registry::{AnyMessage, InstanceMessage};

    let pki = pki();
    let server = start(&pki, Limits::default(), register_router());
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let type_id = AnyMessage::type_id_of("taskwire.instance.v1.RegisterInstanceRequest").unwrap();
    let request = AnyMessage::deserialize_json_body(
        type_id,
        &mut serde_json::Deserializer::from_str(r#"{"instanceId":"order-7"}"#),
    )
    .unwrap();
    let answer: AnyMessage = within(10, connection.call_message(request, CallOptions::default()))
        .await
        .unwrap();
    match answer {
        AnyMessage::Instance(InstanceMessage::RegisterInstanceResponse(response)) => {
            assert!(response.accepted);
        }
        other => panic!("{other:?}"),
    }
    let refused = within(
        10,
        connection.call_message(
            AnyMessage::from(InstanceMessage::from(RegisterInstanceRequest::default())),
            CallOptions::default(),
        ),
    )
    .await;
    assert!(
        matches!(refused, Err(CallError::Status(ref s)) if s.code() == StatusCode::InvalidArgument),
        "a status frame is a failure even when the answer set includes Status: {refused:?}"
    );
}

#[tokio::test]
async fn an_amplified_request_is_resource_exhausted_and_the_connection_goes_on() {
    use taskwire_proto::instance::v1::{InstanceEventBatch, SendEventBatchResponse};

    let applied = Arc::new(AtomicUsize::new(0));
    let mut router = register_router();
    let seen = Arc::clone(&applied);
    router.unary(move |_ctx, batch: InstanceEventBatch| {
        seen.fetch_add(batch.events.len(), Ordering::SeqCst);
        async move { Ok(SendEventBatchResponse::default()) }
    });
    let pki = pki();
    let server = start(&pki, Limits::default(), router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    // 100,000 empty events: 200 KB on the wire, about 100 MiB counted decoded.
    let batch = InstanceEventBatch {
        events: vec![InstanceEvent::default(); 100_000],
    };
    match within(10, connection.call(batch)).await {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code(), StatusCode::ResourceExhausted, "{status}");
            assert!(status.message().contains("InstanceEventBatch"), "{status}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(applied.load(Ordering::SeqCst), 0, "the handler never ran");
    let small = InstanceEventBatch {
        events: vec![InstanceEvent::default(); 10],
    };
    within(10, connection.call(small)).await.unwrap();
    assert_eq!(
        applied.load(Ordering::SeqCst),
        10,
        "the connection still serves"
    );
}

/// A new connection's peer gets 16 streams of credit, and more as calls come in: 200
/// calls that each wait until all 200 are running at once complete, which they could not
/// if the credit stayed at the handshake's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_credit_grows_from_the_initial_grant_to_the_call_limit() {
    const CALLS: usize = 200;
    let everyone = Arc::new(tokio::sync::Barrier::new(CALLS));
    let mut router = Router::new();
    router.unary(move |_ctx, ping: Ping| {
        let everyone = Arc::clone(&everyone);
        async move {
            everyone.wait().await;
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let mut limits = Limits::default();
    limits.initial_call_credit(16).max_concurrent_calls(256);
    let pongs = pings_at_once(limits, router, CALLS as u64).await;
    for (nonce, pong) in pongs.into_iter().enumerate() {
        assert_eq!(pong.unwrap().nonce, nonce as u64);
    }
}

/// The credit never passes the call limit: with a limit of 8, the ninth call waits for a
/// slot instead of running alongside the other eight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_credit_stops_at_the_call_limit() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    let (counter, peak) = (Arc::clone(&running), Arc::clone(&most));
    router.unary(move |_ctx, ping: Ping| {
        let (counter, peak) = (Arc::clone(&counter), Arc::clone(&peak));
        async move {
            let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            counter.fetch_sub(1, Ordering::SeqCst);
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    let mut limits = Limits::default();
    limits.initial_call_credit(2).max_concurrent_calls(8);
    for pong in pings_at_once(limits, router, 40).await {
        pong.unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 8, "{most} calls ran at once past a limit of 8");
    assert!(most > 2, "the credit grew past the initial 2: {most}");
}

/// `n` Pings made at once on one connection to a server with `limits` and `router`.
async fn pings_at_once(limits: Limits, router: Router, n: u64) -> Vec<Result<Pong, CallError>> {
    let pki = pki();
    let server = start(&pki, limits, router);
    let connection = within(10, client(&pki, server.local_addr()).connect())
        .await
        .unwrap();
    let calls = (0..n).map(|nonce| {
        let connection = connection.clone();
        async move {
            connection
                .call(Ping {
                    nonce,
                    sent_at: None,
                })
                .await
        }
    });
    within(20, futures::future::join_all(calls)).await
}
