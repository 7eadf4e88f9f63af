//! Every conversation of the reference server over real QUIC: the lifecycle rules the
//! protocol documents, one behaviour per test.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{assert_code, fixture, fixture_with, within};
use sha2::{Digest, Sha256};
use taskwire_proto::environment::v1 as env;
use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_proto::instance::v1::instance_event::EventType;
use taskwire_proto::instance::v1::sleep_request::Wake;
use taskwire_proto::instance::v1::*;
use taskwire_proto::journal::v1::{
    Completion, EntryAck, InputEntry, SleepEntry, Start, completion, output_entry, run_entry,
    sleep_entry,
};
use taskwire_proto::management::v1 as mgmt;
use taskwire_proto::registry::JournalMessage;
use taskwire_proto::runner::v1::execution_outcome::Outcome;
use taskwire_proto::runner::v1::{CancelRequest, ExecutionRequest};
use taskwire_proto::wkt::{Struct, Value, value::Kind};
use taskwire_quic::Connection;
use taskwire_reference::{ReferenceConfig, greeting};
use taskwire_rpc::{CallOptions, StatusCode};

async fn register(connection: &Connection, id: &str) -> RegisterInstanceResponse {
    connection
        .call(RegisterInstanceRequest {
            instance_id: id.into(),
            image_id: "img-test".into(),
            input: Bytes::from_static(b"input"),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn checkpoint(
    connection: &Connection,
    id: &str,
    checkpoint: &str,
    sequence: u64,
) -> CheckpointResponse {
    connection
        .call(CheckpointRequest {
            instance_id: id.into(),
            checkpoint_id: checkpoint.into(),
            sequence,
            state: Bytes::from(format!("state-{sequence}")),
        })
        .await
        .unwrap()
}

async fn state_of(connection: &Connection, id: &str) -> InstanceStatus {
    connection
        .call(GetInstanceStatusRequest {
            instance_id: id.into(),
        })
        .await
        .unwrap()
        .status
        .unwrap()
}

fn event(id: &str, event_type: EventType) -> InstanceEvent {
    InstanceEvent {
        instance_id: id.into(),
        event_type: event_type as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn checkpoints_are_idempotent_by_id_and_ordered_by_sequence() {
    let f = fixture().await;
    assert!(register(&f.acme, "order-1").await.accepted);
    assert!(!checkpoint(&f.acme, "order-1", "c1", 1).await.duplicate);
    assert!(!checkpoint(&f.acme, "order-1", "c2", 2).await.duplicate);
    let retried = checkpoint(&f.acme, "order-1", "c1", 1).await;
    assert!(retried.duplicate, "a retried checkpoint id is applied once");
    assert_eq!(retried.checkpoint.unwrap().sequence, 1);
    let stale = f
        .acme
        .call(CheckpointRequest {
            instance_id: "order-1".into(),
            checkpoint_id: "c3".into(),
            sequence: 2,
            state: Bytes::new(),
        })
        .await;
    let status = assert_code(stale, StatusCode::FailedPrecondition);
    assert!(status.message().contains("sequence 2"), "{status}");

    let latest = f
        .acme
        .call(GetCheckpointRequest {
            instance_id: "order-1".into(),
            checkpoint_id: String::new(),
        })
        .await
        .unwrap()
        .checkpoint
        .unwrap();
    assert_eq!(latest.state, Bytes::from_static(b"state-2"));
    assert_code(
        f.acme
            .call(GetCheckpointRequest {
                instance_id: "order-1".into(),
                checkpoint_id: "nope".into(),
            })
            .await,
        StatusCode::NotFound,
    );
    assert_eq!(
        state_of(&f.acme, "order-1")
            .await
            .last_checkpoint
            .unwrap()
            .checkpoint_id,
        "c2"
    );
}

#[tokio::test]
async fn list_checkpoints_streams_one_page_after_a_sequence() {
    let f = fixture().await;
    register(&f.acme, "order-2").await;
    for sequence in 1..=5 {
        checkpoint(&f.acme, "order-2", &format!("c{sequence}"), sequence).await;
    }
    let mut stream = f
        .acme
        .server_stream(
            ListCheckpointsRequest {
                instance_id: "order-2".into(),
                page_size: 2,
                after_sequence: 1,
            },
            CallOptions::default(),
        )
        .await
        .unwrap();
    let mut sequences = Vec::new();
    while let Some(summary) = within(10, stream.message()).await.unwrap() {
        sequences.push(summary.sequence);
    }
    assert_eq!(sequences, [2, 3]);
}

#[tokio::test]
async fn a_durable_sleep_leaves_the_instance_pending_when_it_is_due() {
    let f = fixture().await;
    register(&f.acme, "sleeper").await;
    checkpoint(&f.acme, "sleeper", "before-sleep", 1).await;
    let response = f
        .acme
        .call(SleepRequest {
            instance_id: "sleeper".into(),
            wake: Some(Wake::Duration(Duration::from_millis(100).into())),
            checkpoint_id: "before-sleep".into(),
        })
        .await
        .unwrap();
    assert!(response.wake_at.is_some());
    assert_eq!(
        state_of(&f.acme, "sleeper").await.state(),
        InstanceState::Sleeping
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        state_of(&f.acme, "sleeper").await.state(),
        InstanceState::Pending
    );
    let resumed = register(&f.acme, "sleeper").await;
    assert_eq!(
        resumed.checkpoint.unwrap().summary.unwrap().checkpoint_id,
        "before-sleep",
        "a woken instance resumes from its latest checkpoint"
    );
    assert_code(
        f.acme
            .call(SleepRequest {
                instance_id: "sleeper".into(),
                wake: None,
                checkpoint_id: String::new(),
            })
            .await,
        StatusCode::InvalidArgument,
    );
}

#[tokio::test]
async fn completion_is_final_and_refuses_a_later_registration() {
    let f = fixture().await;
    register(&f.acme, "done").await;
    let mut completed = event("done", EventType::Completed);
    completed.output = Bytes::from_static(b"result");
    f.acme.send_event(completed).await.unwrap();
    let status = within(10, async {
        loop {
            let status = state_of(&f.acme, "done").await;
            if status.state() == InstanceState::Completed {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(status.output, Bytes::from_static(b"result"));
    assert!(status.finished_at.is_some());
    let again = register(&f.acme, "done").await;
    assert!(!again.accepted);
    assert!(
        again.rejection_reason.contains("COMPLETED"),
        "{}",
        again.rejection_reason
    );
}

#[tokio::test]
async fn pause_and_resume_signals_change_state_when_acknowledged() {
    let f = fixture().await;
    register(&f.acme, "pausable").await;
    let sent = f
        .acme
        .call(mgmt::SendSignalRequest {
            instance_id: "pausable".into(),
            kind: SignalKind::Pause as i32,
            signal_id: "pause-1".into(),
        })
        .await
        .unwrap();
    let again = f
        .acme
        .call(mgmt::SendSignalRequest {
            instance_id: "pausable".into(),
            kind: SignalKind::Pause as i32,
            signal_id: "pause-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        sent.signal_id, again.signal_id,
        "a retried signal id is one signal"
    );
    let polled = f
        .acme
        .call(PollSignalsRequest {
            instance_id: "pausable".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(polled.signals.len(), 1);
    assert_eq!(polled.signals[0].kind(), SignalKind::Pause);
    let ack = SignalAckRequest {
        instance_id: "pausable".into(),
        signal_id: "pause-1".into(),
        ..Default::default()
    };
    assert!(!f.acme.call(ack.clone()).await.unwrap().duplicate);
    assert!(f.acme.call(ack).await.unwrap().duplicate);
    assert_eq!(
        state_of(&f.acme, "pausable").await.state(),
        InstanceState::Paused
    );

    let resume = f
        .acme
        .call(env::SendSignalRequest {
            instance_id: "pausable".into(),
            kind: SignalKind::Resume as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    f.acme
        .call(SignalAckRequest {
            instance_id: "pausable".into(),
            signal_id: resume.signal_id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        state_of(&f.acme, "pausable").await.state(),
        InstanceState::Running
    );
    assert_code(
        f.acme
            .call(SignalAckRequest {
                instance_id: "pausable".into(),
                signal_id: "nope".into(),
                ..Default::default()
            })
            .await,
        StatusCode::NotFound,
    );
}

#[tokio::test]
async fn a_long_poll_returns_when_a_signal_arrives() {
    let f = fixture().await;
    register(&f.acme, "waiting").await;
    let poller = f.acme.clone();
    let poll = tokio::spawn(async move {
        poller
            .call(PollSignalsRequest {
                instance_id: "waiting".into(),
                max_signals: 0,
                wait: Some(Duration::from_secs(20).into()),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.acme
        .call(mgmt::SendCustomSignalRequest {
            instance_id: "waiting".into(),
            custom_type: "approval.granted".into(),
            payload: Bytes::from_static(b"yes"),
            signal_id: String::new(),
        })
        .await
        .unwrap();
    let polled = within(5, poll).await.unwrap().unwrap();
    assert_eq!(polled.signals.len(), 1);
    assert_eq!(polled.signals[0].custom_type, "approval.granted");
}

#[tokio::test]
async fn subscribe_signals_streams_waiting_then_new_signals_and_ends_with_the_instance() {
    let f = fixture().await;
    register(&f.acme, "subscribed").await;
    let send = |kind: SignalKind| {
        f.acme.call(mgmt::SendSignalRequest {
            instance_id: "subscribed".into(),
            kind: kind as i32,
            signal_id: String::new(),
        })
    };
    send(SignalKind::Pause).await.unwrap();
    let mut stream = f
        .acme
        .server_stream(
            SubscribeSignalsRequest {
                instance_id: "subscribed".into(),
            },
            CallOptions::default(),
        )
        .await
        .unwrap();
    let first = within(10, stream.message()).await.unwrap().unwrap();
    assert_eq!(
        first.kind(),
        SignalKind::Pause,
        "a waiting signal comes first"
    );
    let cancel = send(SignalKind::Cancel).await.unwrap();
    let second = within(10, stream.message()).await.unwrap().unwrap();
    assert_eq!(second.signal_id, cancel.signal_id);
    f.acme
        .call(SignalAckRequest {
            instance_id: "subscribed".into(),
            signal_id: cancel.signal_id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        within(10, stream.message()).await.unwrap(),
        None,
        "the stream ends with the instance"
    );
}

#[tokio::test]
async fn an_event_batch_applies_events_in_order_up_to_the_first_rejected() {
    let f = fixture().await;
    register(&f.acme, "batched").await;
    let response = f
        .acme
        .call(InstanceEventBatch {
            events: vec![
                event("batched", EventType::Heartbeat),
                event("unknown-instance", EventType::Heartbeat),
                event("batched", EventType::Completed),
            ],
        })
        .await
        .unwrap();
    assert_eq!(response.accepted, 1);
    assert!(
        response.rejection_reason.starts_with("event 1:"),
        "{}",
        response.rejection_reason
    );
    assert_eq!(
        state_of(&f.acme, "batched").await.state(),
        InstanceState::Running,
        "nothing after the rejected event was applied"
    );
    assert_code(
        f.acme.call(InstanceEventBatch { events: vec![] }).await,
        StatusCode::InvalidArgument,
    );
}

#[tokio::test]
async fn a_retry_attempt_is_recorded_once() {
    let f = fixture().await;
    register(&f.acme, "flaky").await;
    let request = RecordRetryAttemptRequest {
        instance_id: "flaky".into(),
        attempt: 2,
        error: Some(InstanceError {
            code: "http.503".into(),
            ..Default::default()
        }),
        scheduled_at: None,
    };
    assert!(!f.acme.call(request.clone()).await.unwrap().duplicate);
    assert!(f.acme.call(request).await.unwrap().duplicate);
    let status = state_of(&f.acme, "flaky").await;
    assert_eq!(status.attempt, 2);
    assert_eq!(status.error.unwrap().code, "http.503");
    assert_code(
        f.acme
            .call(RecordRetryAttemptRequest {
                instance_id: "flaky".into(),
                attempt: 1,
                ..Default::default()
            })
            .await,
        StatusCode::InvalidArgument,
    );
}

fn manifest(name: &str, content: &[u8]) -> env::ImageUpload {
    env::ImageUpload {
        part: Some(Part::Manifest(ImageManifest {
            name: name.into(),
            version: "1.0.0".into(),
            size_bytes: content.len() as u64,
            sha256: Bytes::copy_from_slice(&Sha256::digest(content)),
            ..Default::default()
        })),
    }
}

fn chunk(bytes: &[u8]) -> env::ImageUpload {
    env::ImageUpload {
        part: Some(Part::Chunk(Bytes::copy_from_slice(bytes))),
    }
}

async fn upload(
    connection: &Connection,
    first: env::ImageUpload,
    chunks: &[&[u8]],
) -> Result<env::RegisterImageResponse, taskwire_rpc::CallError> {
    let mut stream = connection
        .client_stream(first, CallOptions::default())
        .await?;
    for part in chunks {
        stream.send(chunk(part)).await?;
    }
    within(10, stream.finish()).await
}

#[tokio::test]
async fn an_image_upload_is_counted_and_hashed_and_registered_once() {
    let f = fixture().await;
    let content = b"#!/bin/sh\necho workflow\n";
    let first = upload(
        &f.acme,
        manifest("orders", content),
        &[&content[..10], &content[10..]],
    )
    .await
    .unwrap();
    assert!(!first.already_registered);
    let image = first.image.unwrap();
    assert_eq!(image.size_bytes, content.len() as u64);
    assert_eq!(image.tenant, "acme");
    let second = upload(&f.acme, manifest("orders", content), &[content])
        .await
        .unwrap();
    assert!(second.already_registered);
    assert_eq!(second.image.unwrap().id, image.id);

    let listed = f
        .acme
        .call(env::ListImagesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.images.len(), 1);
    assert_eq!(
        f.acme
            .call(env::GetImageRequest {
                image_id: image.id.clone()
            })
            .await
            .unwrap()
            .image
            .unwrap()
            .name,
        "orders"
    );
    assert!(
        f.acme
            .call(env::DeleteImageRequest {
                image_id: image.id.clone()
            })
            .await
            .unwrap()
            .deleted
    );
    assert!(
        !f.acme
            .call(env::DeleteImageRequest {
                image_id: image.id.clone()
            })
            .await
            .unwrap()
            .deleted,
        "deleting twice is not an error"
    );
    assert_code(
        f.acme
            .call(env::GetImageRequest { image_id: image.id })
            .await,
        StatusCode::NotFound,
    );
}

#[tokio::test]
async fn an_image_upload_that_breaks_its_manifest_is_refused() {
    let f = fixture_with(ReferenceConfig::default().max_image_bytes(1024)).await;
    let content = b"0123456789";
    let status = assert_code(
        upload(&f.acme, manifest("too-long", content), &[content, b"x"]).await,
        StatusCode::InvalidArgument,
    );
    assert!(
        status
            .message()
            .contains("more than manifest.size_bytes 10"),
        "{status}"
    );
    let status = assert_code(
        upload(&f.acme, manifest("short", content), &[&content[..4]]).await,
        StatusCode::InvalidArgument,
    );
    assert!(status.message().contains("after 4 bytes"), "{status}");
    let status = assert_code(
        upload(&f.acme, manifest("tampered", content), &[b"9876543210"]).await,
        StatusCode::InvalidArgument,
    );
    assert!(status.message().contains("SHA-256"), "{status}");
    assert_code(
        upload(&f.acme, manifest("huge", &[0; 2048]), &[]).await,
        StatusCode::ResourceExhausted,
    );
    assert_code(
        upload(&f.acme, chunk(b"no manifest"), &[]).await,
        StatusCode::InvalidArgument,
    );
    assert_eq!(f.reference.sizes().images, 0, "nothing was stored");
}

#[tokio::test]
async fn environment_starts_stops_and_resumes_instances() {
    let f = fixture().await;
    assert_code(
        f.acme
            .call(env::StartInstanceRequest {
                image_id: "img-missing".into(),
                ..Default::default()
            })
            .await,
        StatusCode::NotFound,
    );
    let image = upload(&f.acme, manifest("app", b"app"), &[b"app"])
        .await
        .unwrap()
        .image
        .unwrap();
    let started = f
        .acme
        .call(env::StartInstanceRequest {
            image_id: image.id.clone(),
            instance_id: "run-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(started.state(), InstanceState::Pending);
    assert_code(
        f.acme
            .call(env::StartInstanceRequest {
                image_id: image.id.clone(),
                instance_id: "run-1".into(),
                ..Default::default()
            })
            .await,
        StatusCode::AlreadyExists,
    );
    register(&f.acme, "run-1").await;
    let graceful = f
        .acme
        .call(env::StopInstanceRequest {
            instance_id: "run-1".into(),
            reason: "maintenance".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!graceful.stopped, "a graceful stop asks the instance first");
    let polled = f
        .acme
        .call(PollSignalsRequest {
            instance_id: "run-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(polled.signals[0].kind(), SignalKind::Cancel);
    let forced = f
        .acme
        .call(env::StopInstanceRequest {
            instance_id: "run-1".into(),
            mode: env::stop_instance_request::StopMode::Force as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(forced.stopped);
    assert_eq!(forced.state(), InstanceState::Cancelled);
    assert_code(
        f.acme
            .call(env::ResumeInstanceRequest {
                instance_id: "run-1".into(),
                checkpoint_id: String::new(),
            })
            .await,
        StatusCode::FailedPrecondition,
    );
}

#[tokio::test]
async fn instance_listings_page_newest_first_and_filter_by_state() {
    let f = fixture().await;
    for n in 1..=5 {
        register(&f.acme, &format!("listed-{n}")).await;
    }
    f.acme
        .send_event(event("listed-5", EventType::Completed))
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = f
            .acme
            .call(mgmt::ListInstancesRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.instances.len() <= 2);
        ids.extend(page.instances.into_iter().map(|i| i.instance_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        ids,
        ["listed-5", "listed-4", "listed-3", "listed-2", "listed-1"]
    );
    let running = within(10, async {
        loop {
            let page = f
                .acme
                .call(env::ListInstancesRequest {
                    states: vec![InstanceState::Running as i32],
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.instances.len() == 4 {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        running
            .instances
            .iter()
            .all(|i| i.state() == InstanceState::Running)
    );
    assert_code(
        f.acme
            .call(mgmt::ListInstancesRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        StatusCode::InvalidArgument,
    );
}

#[tokio::test]
async fn management_pages_checkpoints_and_reports_health() {
    let f = fixture().await;
    register(&f.acme, "managed").await;
    for sequence in 1..=3 {
        checkpoint(&f.acme, "managed", &format!("c{sequence}"), sequence).await;
    }
    let first = f
        .acme
        .call(mgmt::ListCheckpointsRequest {
            instance_id: "managed".into(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(first.checkpoints.len(), 2);
    let rest = f
        .acme
        .call(mgmt::ListCheckpointsRequest {
            instance_id: "managed".into(),
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.checkpoints
            .iter()
            .map(|c| c.sequence)
            .collect::<Vec<_>>(),
        [3]
    );
    assert!(rest.next_page_token.is_empty());
    let checkpoint = f
        .acme
        .call(mgmt::GetCheckpointRequest {
            instance_id: "managed".into(),
            checkpoint_id: "c2".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        checkpoint.checkpoint.unwrap().state,
        Bytes::from_static(b"state-2")
    );
    let health = f.acme.call(mgmt::HealthRequest {}).await.unwrap();
    assert_eq!(
        health.status(),
        mgmt::health_response::ServingStatus::Serving
    );
    assert!(health.checks.contains_key("store"));
}

fn params(fields: &[(&str, Kind)]) -> Option<Struct> {
    Some(Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect(),
    })
}

fn job(job_id: &str, function: &str, params: Option<Struct>) -> ExecutionRequest {
    ExecutionRequest {
        request_id: format!("req-{job_id}"),
        job_id: job_id.into(),
        function_name: function.into(),
        params,
        context: None,
    }
}

#[tokio::test]
async fn runner_functions_end_with_each_outcome() {
    let f = fixture().await;
    let added = f
        .acme
        .call(job(
            "j1",
            "add",
            params(&[
                ("a", Kind::NumberValue(2.0)),
                ("b", Kind::NumberValue(40.0)),
            ]),
        ))
        .await
        .unwrap();
    assert_eq!(added.request_id, "req-j1");
    match added.outcome {
        Some(Outcome::Success(success)) => {
            assert_eq!(success.result.unwrap().kind, Some(Kind::NumberValue(42.0)));
        }
        other => panic!("{other:?}"),
    }
    let failed = f
        .acme
        .call(job(
            "j2",
            "fail",
            params(&[("message", Kind::StringValue("card declined".into()))]),
        ))
        .await
        .unwrap();
    assert!(
        matches!(failed.outcome, Some(Outcome::Failure(ref failure)) if failure.message == "card declined"),
        "{failed:?}"
    );
    let limited = f.acme.call(job("j3", "rate_limited", None)).await.unwrap();
    assert!(
        matches!(limited.outcome, Some(Outcome::RetryAfter(_))),
        "{limited:?}"
    );
    let missing = f
        .acme
        .call(job("j4", "no_such_function", None))
        .await
        .unwrap();
    assert!(
        matches!(missing.outcome, Some(Outcome::HandlerNotFound(ref h)) if h.function_name == "no_such_function")
    );
    let mut sleepy = job(
        "j5",
        "sleep",
        params(&[("seconds", Kind::NumberValue(30.0))]),
    );
    sleepy.context = Some(
        taskwire_proto::runner::v1::execution_request::ExecutionContext {
            deadline: Some((std::time::SystemTime::now() + Duration::from_millis(200)).into()),
            ..Default::default()
        },
    );
    let timed_out = within(10, f.acme.call(sleepy)).await.unwrap();
    assert!(
        matches!(timed_out.outcome, Some(Outcome::Timeout(_))),
        "{timed_out:?}"
    );
}

#[tokio::test]
async fn a_cancelled_job_ends_cancelled_with_the_reason() {
    let f = fixture().await;
    let runner = f.acme.clone();
    let running = tokio::spawn(async move {
        runner
            .call(job(
                "long",
                "sleep",
                params(&[("seconds", Kind::NumberValue(30.0))]),
            ))
            .await
    });
    let cancelled = within(10, async {
        loop {
            let response = f
                .acme
                .call(CancelRequest {
                    job_id: "long".into(),
                    reason: "operator asked".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            if response.found {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(cancelled.found);
    let outcome = within(10, running).await.unwrap().unwrap();
    match outcome.outcome {
        Some(Outcome::Cancelled(cancelled)) => assert_eq!(cancelled.reason, "operator asked"),
        other => panic!("{other:?}"),
    }
    assert!(
        !f.acme
            .call(CancelRequest {
                job_id: "long".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .found,
        "a finished job is not found"
    );
}

fn start(known_entries: u32) -> Start {
    Start {
        invocation_id: Bytes::from_static(b"inv-1"),
        debug_id: "inv-1".into(),
        known_entries,
        ..Default::default()
    }
}

fn input() -> InputEntry {
    InputEntry {
        value: Bytes::from_static(b"Ada"),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_journal_suspends_on_its_timer_and_finishes_on_replay() {
    let f = fixture().await;
    // First attempt: the greeter journals its side effect and its timer, then suspends.
    let mut stream = f
        .acme
        .bidi::<JournalMessage>(start(0).into(), CallOptions::default())
        .await
        .unwrap();
    stream.send(input(), false).await.unwrap();
    let run = within(10, stream.message()).await.unwrap().unwrap();
    let JournalMessage::RunEntry(run) = run else {
        panic!("{run:?}")
    };
    assert_eq!(run.result, Some(run_entry::Result::Value(greeting(b"Ada"))));
    stream
        .send(EntryAck { entry_index: 1 }, false)
        .await
        .unwrap();
    let sleep = within(10, stream.message()).await.unwrap().unwrap();
    let JournalMessage::SleepEntry(sleep) = sleep else {
        panic!("{sleep:?}")
    };
    let suspension = within(10, stream.message()).await.unwrap().unwrap();
    let JournalMessage::Suspension(suspension) = suspension else {
        panic!("{suspension:?}")
    };
    assert_eq!(suspension.entry_indexes, [2]);

    // Second attempt: the runtime replays the journal with the timer fired.
    let mut stream = f
        .acme
        .bidi::<JournalMessage>(start(3).into(), CallOptions::default())
        .await
        .unwrap();
    stream.send(input(), false).await.unwrap();
    stream.send(run, false).await.unwrap();
    stream
        .send(
            SleepEntry {
                result: Some(sleep_entry::Result::Empty(Default::default())),
                ..sleep
            },
            false,
        )
        .await
        .unwrap();
    let output = within(10, stream.message()).await.unwrap().unwrap();
    let JournalMessage::OutputEntry(output) = output else {
        panic!("{output:?}")
    };
    assert_eq!(
        output.result,
        Some(output_entry::Result::Value(greeting(b"Ada")))
    );
    assert!(matches!(
        within(10, stream.message()).await.unwrap(),
        Some(JournalMessage::End(_))
    ));
}

#[tokio::test]
async fn a_journal_timer_completed_live_finishes_without_suspending() {
    let f = fixture().await;
    let mut stream = f
        .acme
        .bidi::<JournalMessage>(start(0).into(), CallOptions::default())
        .await
        .unwrap();
    stream.send(input(), false).await.unwrap();
    within(10, stream.message()).await.unwrap().unwrap();
    stream
        .send(EntryAck { entry_index: 1 }, false)
        .await
        .unwrap();
    within(10, stream.message()).await.unwrap().unwrap();
    stream
        .send(
            Completion {
                entry_index: 2,
                result: Some(completion::Result::Empty(Default::default())),
            },
            false,
        )
        .await
        .unwrap();
    let output = within(10, stream.message()).await.unwrap().unwrap();
    assert!(
        matches!(output, JournalMessage::OutputEntry(_)),
        "{output:?}"
    );
}

#[tokio::test]
async fn a_replayed_journal_that_differs_from_the_code_is_a_journal_mismatch() {
    let f = fixture().await;
    let mut stream = f
        .acme
        .bidi::<JournalMessage>(start(2).into(), CallOptions::default())
        .await
        .unwrap();
    stream.send(input(), false).await.unwrap();
    stream.send(SleepEntry::default(), false).await.unwrap();
    let error = within(10, stream.message()).await.unwrap().unwrap();
    let JournalMessage::Error(error) = error else {
        panic!("{error:?}")
    };
    assert_eq!(error.code, 570);
    assert_eq!(error.related_entry_index, Some(1));
    assert_eq!(error.related_entry_type, Some(0x0512));
}

#[tokio::test]
async fn a_caller_without_a_certificate_tenant_is_unauthenticated() {
    let f = fixture().await;
    let status = assert_code(
        f.anonymous.call(mgmt::HealthRequest {}).await,
        StatusCode::Unauthenticated,
    );
    assert!(status.message().contains("client certificate"), "{status}");
}

#[tokio::test]
async fn stored_bytes_have_a_server_wide_budget_and_a_share_per_tenant() {
    // Budget 3 KiB, share 2 KiB: acme fills its share with images, globex the rest.
    let f = fixture_with(
        ReferenceConfig::default()
            .max_stored_bytes(3 << 10)
            .max_stored_bytes_per_tenant(2 << 10),
    )
    .await;
    let kib = [7u8; 1024];
    let first = upload(&f.acme, manifest("a1", &kib), &[&kib])
        .await
        .unwrap();
    upload(&f.acme, manifest("a2", &kib), &[&kib])
        .await
        .unwrap();
    // Refused on the manifest alone: no chunk is sent, none is needed.
    let status = assert_code(
        upload(&f.acme, manifest("a3", &kib), &[]).await,
        StatusCode::ResourceExhausted,
    );
    assert!(status.message().contains("share of 2048"), "{status}");
    // A checkpoint of acme's counts against the same share.
    f.acme
        .call(RegisterInstanceRequest {
            instance_id: "o1".into(),
            image_id: "img".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = assert_code(
        f.acme
            .call(CheckpointRequest {
                instance_id: "o1".into(),
                checkpoint_id: "c1".into(),
                sequence: 1,
                state: vec![1; 100].into(),
            })
            .await,
        StatusCode::ResourceExhausted,
    );
    assert!(status.message().contains("acme"), "{status}");

    // globex is served within what is left of the budget, then refused by the budget.
    upload(&f.globex, manifest("g1", &kib), &[&kib])
        .await
        .unwrap();
    let status = assert_code(
        upload(&f.globex, manifest("g2", &kib), &[]).await,
        StatusCode::ResourceExhausted,
    );
    assert!(status.message().contains("budget of 3072"), "{status}");
    // Deleting gives the bytes back.
    f.acme
        .call(env::DeleteImageRequest {
            image_id: first.image.unwrap().id,
        })
        .await
        .unwrap();
    upload(&f.globex, manifest("g2", &kib), &[&kib])
        .await
        .unwrap();
    assert_eq!(f.reference.sizes().images, 3);
}

/// Every router of one reference server counts queued request frames against the same
/// buffer budget, so a server serving QUIC and TCP from two routers has one budget.
#[test]
fn the_routers_of_one_server_share_its_buffer_budget() {
    let reference = taskwire_reference::ReferenceServer::new(
        ReferenceConfig::default()
            .max_buffered_bytes(3 << 20)
            .max_buffered_bytes_per_tenant(1 << 20),
    );
    let (quic, tcp) = (reference.router(), reference.router());
    assert!(std::sync::Arc::ptr_eq(quic.buffers(), tcp.buffers()));
    assert_eq!(quic.buffers().max_total(), 3 << 20);
    assert_eq!(quic.buffers().max_per_tenant(), 1 << 20);
    let held = quic.buffers().reserve("acme", 1 << 20).unwrap();
    assert_eq!(tcp.buffers().held_by("acme"), 1 << 20);
    drop(held);
    let other_server = taskwire_reference::ReferenceServer::new(ReferenceConfig::default());
    assert!(!std::sync::Arc::ptr_eq(
        quic.buffers(),
        other_server.router().buffers()
    ));
}
