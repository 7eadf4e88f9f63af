//! Tenant isolation over every conversation of the reference server: tenant `globex`
//! cannot read, list, signal, checkpoint, stop, resume or otherwise touch tenant `acme`'s
//! instances, checkpoints, signals, images or runner jobs, and a caller without a
//! certificate tenant is refused. Another tenant's object answers `NOT_FOUND` exactly as a
//! missing one does; naming another tenant in a request answers `PERMISSION_DENIED`.
//!
//! Each test checks afterwards, from acme's side, that acme's objects are exactly as they
//! were (status with `updated_at`, checkpoints, latest checkpoint state, pending signals).

mod common;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Fixture, assert_code, fixture, status, within};
use sha2::{Digest, Sha256};
use taskwire_proto::environment::v1 as env;
use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_proto::instance::v1 as inst;
use taskwire_proto::instance::v1::instance_event::EventType;
use taskwire_proto::instance::v1::sleep_request::Wake;
use taskwire_proto::instance::v1::{
    Checkpoint, CheckpointSummary, InstanceState, InstanceStatus, Signal, SignalKind,
};
use taskwire_proto::journal::v1::Start;
use taskwire_proto::management::v1 as mgmt;
use taskwire_proto::registry::JournalMessage;
use taskwire_proto::runner::v1::cancel_response::CancelState;
use taskwire_proto::runner::v1::execution_outcome::Outcome;
use taskwire_proto::runner::v1::{CancelRequest, ExecutionRequest};
use taskwire_proto::wkt::{Struct, Value, value::Kind};
use taskwire_proto::{Rpc, WireMessage};
use taskwire_quic::Connection;
use taskwire_reference::{ReferenceConfig, ReferenceServer};
use taskwire_rpc::{CallError, CallOptions, Status, StatusCode};
use taskwire_tcp::{TcpClient, TcpClientConfig, TcpConnection, TcpServer, TcpServerConfig};
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder,
};

/// acme's instance that globex goes after.
const ACME: &str = "acme-order";
/// acme's pending signal on [`ACME`].
const ACME_SIGNAL: &str = "acme-sig-1";
/// globex's own instance: proves globex is served at all, and orders its one-way events.
const PROBE: &str = "globex-probe";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Asserts that `rpc` failed with `code`; the failure message names the rpc.
fn refused<T: Debug>(rpc: &str, result: Result<T, CallError>, code: StatusCode) -> Status {
    match result {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code(), code, "{rpc}: {status}");
            status
        }
        other => panic!("{rpc}: expected {code:?}, got {other:?}"),
    }
}

/// Asserts that a refusal for another tenant's object is the refusal for a missing one,
/// the ids aside: the answer tells globex nothing about what acme holds.
fn same_as_missing(
    rpc: &str,
    foreign: &Status,
    foreign_id: &str,
    missing: &Status,
    missing_id: &str,
) {
    assert_eq!(foreign.code(), missing.code(), "{rpc}");
    assert_eq!(
        foreign.message().replace(foreign_id, "<id>"),
        missing.message().replace(missing_id, "<id>"),
        "{rpc}: another tenant's object must answer exactly like a missing one"
    );
}

async fn register(connection: &Connection, id: &str, image: &str, input: &'static [u8]) {
    let response = connection
        .call(inst::RegisterInstanceRequest {
            instance_id: id.into(),
            image_id: image.into(),
            input: Bytes::from_static(input),
            labels: [("owner".to_owned(), image.to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(response.accepted, "{response:?}");
}

async fn checkpoint(connection: &Connection, id: &str, checkpoint: &str, sequence: u64) {
    let response = connection
        .call(inst::CheckpointRequest {
            instance_id: id.into(),
            checkpoint_id: checkpoint.into(),
            sequence,
            state: Bytes::from(format!("{id}-state-{sequence}")),
        })
        .await
        .unwrap();
    assert!(!response.duplicate, "{response:?}");
}

async fn status_of(connection: &Connection, id: &str) -> InstanceStatus {
    connection
        .call(inst::GetInstanceStatusRequest {
            instance_id: id.into(),
        })
        .await
        .unwrap()
        .status
        .unwrap()
}

/// Waits until `id` (as `connection`'s tenant sees it) is in `state`.
async fn until_state(connection: &Connection, id: &str, state: InstanceState) -> InstanceStatus {
    within(10, async {
        loop {
            let status = status_of(connection, id).await;
            if status.state() == state {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn event(id: &str, event_type: EventType) -> inst::InstanceEvent {
    inst::InstanceEvent {
        instance_id: id.into(),
        event_type: event_type as i32,
        ..Default::default()
    }
}

/// Everything acme can see of one of its instances. Any change by another tenant (a
/// state change, a heartbeat's `updated_at`, a checkpoint, a signal sent or acknowledged)
/// makes two of these differ.
#[derive(Debug, PartialEq)]
struct Seen {
    status: InstanceStatus,
    checkpoints: Vec<CheckpointSummary>,
    latest: Option<Checkpoint>,
    pending: Vec<Signal>,
}

async fn seen(connection: &Connection, id: &str) -> Seen {
    Seen {
        status: status_of(connection, id).await,
        checkpoints: connection
            .call(mgmt::ListCheckpointsRequest {
                instance_id: id.into(),
                page_size: 1_000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .checkpoints,
        latest: connection
            .call(inst::GetCheckpointRequest {
                instance_id: id.into(),
                checkpoint_id: String::new(),
            })
            .await
            .unwrap()
            .checkpoint,
        pending: connection
            .call(inst::PollSignalsRequest {
                instance_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .signals,
    }
}

/// acme's instance [`ACME`]: running, with checkpoints `c1` and `c2` and the pending
/// custom signal [`ACME_SIGNAL`].
async fn acme_instance(f: &Fixture) -> Seen {
    register(&f.acme, ACME, "img-acme", b"acme-secret-input").await;
    checkpoint(&f.acme, ACME, "c1", 1).await;
    checkpoint(&f.acme, ACME, "c2", 2).await;
    f.acme
        .call(mgmt::SendCustomSignalRequest {
            instance_id: ACME.into(),
            custom_type: "acme.approval".into(),
            payload: Bytes::from_static(b"acme-secret-payload"),
            signal_id: ACME_SIGNAL.into(),
        })
        .await
        .unwrap();
    let seen = seen(&f.acme, ACME).await;
    assert_eq!(seen.status.state(), InstanceState::Running);
    assert_eq!(seen.checkpoints.len(), 2);
    assert_eq!(seen.pending.len(), 1);
    seen
}

/// How long a call that should be refused at once may take.
const BOUND: Duration = Duration::from_secs(10);

/// `call`, ended with `DEADLINE_EXCEEDED` after [`BOUND`]: a call that waits instead of
/// being refused fails the test with the rpc's name rather than a bare timeout.
async fn bounded<T>(call: impl Future<Output = Result<T, CallError>>) -> Result<T, CallError> {
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or(Err(CallError::DeadlineExceeded(BOUND)))
}

/// The first item (or end, or refusal) of a server-streaming call.
async fn first_streamed<R>(
    connection: &Connection,
    request: R,
) -> Result<Option<R::Response>, CallError>
where
    R: Rpc,
    R::Response: WireMessage,
{
    let mut stream = connection
        .server_stream(request, CallOptions::default())
        .await?;
    bounded(stream.message()).await
}

fn manifest(name: &str, tenant: &str, content: &[u8]) -> env::ImageUpload {
    env::ImageUpload {
        part: Some(Part::Manifest(ImageManifest {
            name: name.into(),
            version: "1.0.0".into(),
            size_bytes: content.len() as u64,
            sha256: Bytes::copy_from_slice(&Sha256::digest(content)),
            tenant: tenant.into(),
            ..Default::default()
        })),
    }
}

async fn upload(
    connection: &Connection,
    name: &str,
    tenant: &str,
    content: &[u8],
) -> Result<env::RegisterImageResponse, CallError> {
    let mut stream = connection
        .client_stream(manifest(name, tenant, content), CallOptions::default())
        .await?;
    stream
        .send(env::ImageUpload {
            part: Some(Part::Chunk(Bytes::copy_from_slice(content))),
        })
        .await?;
    within(10, stream.finish()).await
}

fn instance_ids(instances: &[InstanceStatus]) -> Vec<&str> {
    instances.iter().map(|i| i.instance_id.as_str()).collect()
}

fn sleep_job(job_id: &str, seconds: f64) -> ExecutionRequest {
    ExecutionRequest {
        request_id: format!("req-{job_id}"),
        job_id: job_id.into(),
        function_name: "sleep".into(),
        params: Some(Struct {
            fields: [(
                "seconds".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(seconds)),
                },
            )]
            .into(),
        }),
        context: None,
    }
}

// ---------------------------------------------------------------------------------------
// Instance conversation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn instance_register_with_acmes_id_from_globex_creates_a_separate_globex_instance() {
    let f = fixture().await;
    let before = acme_instance(&f).await;
    let instances_before = f.reference.sizes().instances;
    let g = &f.globex;

    // Resuming from acme's checkpoint id: globex has no such checkpoint.
    refused(
        "instance.RegisterInstance resumed_from acme's checkpoint",
        g.call(inst::RegisterInstanceRequest {
            instance_id: ACME.into(),
            image_id: "img-globex".into(),
            resumed_from_checkpoint_id: "c2".into(),
            ..Default::default()
        })
        .await,
        StatusCode::NotFound,
    );

    let registered = g
        .call(inst::RegisterInstanceRequest {
            instance_id: ACME.into(),
            image_id: "img-globex".into(),
            input: Bytes::from_static(b"globex-input"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(registered.accepted, "{registered:?}");
    assert_eq!(
        registered.checkpoint, None,
        "globex's registration must not resume from acme's checkpoint"
    );
    assert_eq!(
        f.reference.sizes().instances,
        instances_before + 1,
        "a second, separate instance was created"
    );

    let mine = status_of(g, ACME).await;
    assert_eq!(mine.tenant_id, "globex");
    assert_eq!(mine.image_id, "img-globex");
    assert_eq!(mine.state(), InstanceState::Running);
    assert_eq!(
        mine.last_checkpoint, None,
        "acme's checkpoints are not globex's"
    );
    assert!(mine.labels.is_empty(), "acme's labels leaked: {mine:?}");
    assert_eq!(
        g.call(inst::GetCheckpointRequest {
            instance_id: ACME.into(),
            checkpoint_id: String::new(),
        })
        .await
        .unwrap()
        .checkpoint,
        None
    );
    assert_code(
        g.call(inst::GetCheckpointRequest {
            instance_id: ACME.into(),
            checkpoint_id: "c1".into(),
        })
        .await,
        StatusCode::NotFound,
    );
    assert_eq!(
        g.call(inst::PollSignalsRequest {
            instance_id: ACME.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .signals,
        [],
        "acme's pending signal was delivered to globex"
    );
    // acme's checkpoint id "c1" is new to globex, not a duplicate of acme's.
    checkpoint(g, ACME, "c1", 1).await;

    // globex completes its own instance: acme's, with the same id, stays running.
    let mut completed = event(ACME, EventType::Completed);
    completed.output = Bytes::from_static(b"globex-output");
    g.send_event(completed).await.unwrap();
    let done = until_state(g, ACME, InstanceState::Completed).await;
    assert_eq!(done.output, Bytes::from_static(b"globex-output"));

    let after = seen(&f.acme, ACME).await;
    assert_eq!(after, before, "globex's calls changed acme's instance");
    assert_eq!(after.status.state(), InstanceState::Running);
    assert_eq!(after.status.tenant_id, "acme");
    assert_eq!(after.status.image_id, "img-acme");
    assert!(after.status.output.is_empty());

    // acme still resumes from its own latest checkpoint.
    let resumed = f
        .acme
        .call(inst::RegisterInstanceRequest {
            instance_id: ACME.into(),
            image_id: "img-acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(resumed.accepted, "{resumed:?}");
    let checkpoint = resumed.checkpoint.unwrap();
    assert_eq!(checkpoint.summary.unwrap().checkpoint_id, "c2");
    assert_eq!(checkpoint.state, Bytes::from(format!("{ACME}-state-2")));
}

#[tokio::test]
async fn instance_rpcs_from_globex_on_acmes_instance_are_not_found_and_change_nothing() {
    let f = fixture().await;
    let before = acme_instance(&f).await;
    register(&f.globex, PROBE, "img-globex", b"probe").await;
    let g = &f.globex;

    let calls: Vec<(&str, Result<String, CallError>)> = vec![
        (
            "instance.Checkpoint (new checkpoint)",
            g.call(inst::CheckpointRequest {
                instance_id: ACME.into(),
                checkpoint_id: "globex-c3".into(),
                sequence: 3,
                state: Bytes::from_static(b"globex-state"),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.Checkpoint (acme's checkpoint id)",
            g.call(inst::CheckpointRequest {
                instance_id: ACME.into(),
                checkpoint_id: "c1".into(),
                sequence: 1,
                state: Bytes::new(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.GetCheckpoint (latest)",
            g.call(inst::GetCheckpointRequest {
                instance_id: ACME.into(),
                checkpoint_id: String::new(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.GetCheckpoint (by id)",
            g.call(inst::GetCheckpointRequest {
                instance_id: ACME.into(),
                checkpoint_id: "c1".into(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.PollSignals",
            g.call(inst::PollSignalsRequest {
                instance_id: ACME.into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.PollSignals (long poll)",
            bounded(g.call(inst::PollSignalsRequest {
                instance_id: ACME.into(),
                max_signals: 0,
                wait: Some(Duration::from_secs(5).into()),
            }))
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.SignalAck",
            g.call(inst::SignalAckRequest {
                instance_id: ACME.into(),
                signal_id: ACME_SIGNAL.into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.SubscribeSignals",
            first_streamed(
                g,
                inst::SubscribeSignalsRequest {
                    instance_id: ACME.into(),
                },
            )
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.ListCheckpoints",
            first_streamed(
                g,
                inst::ListCheckpointsRequest {
                    instance_id: ACME.into(),
                    page_size: 0,
                    after_sequence: 0,
                },
            )
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.Sleep",
            g.call(inst::SleepRequest {
                instance_id: ACME.into(),
                checkpoint_id: String::new(),
                wake: Some(Wake::Duration(Duration::from_secs(3_600).into())),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.GetInstanceStatus",
            g.call(inst::GetInstanceStatusRequest {
                instance_id: ACME.into(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.RecordRetryAttempt",
            g.call(inst::RecordRetryAttemptRequest {
                instance_id: ACME.into(),
                attempt: 2,
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
    ];
    for (rpc, result) in calls {
        refused(rpc, result, StatusCode::NotFound);
    }

    // The answer is the one for an instance that exists nowhere.
    let foreign = status(
        g.call(inst::GetInstanceStatusRequest {
            instance_id: ACME.into(),
        })
        .await,
    );
    let missing = status(
        g.call(inst::GetInstanceStatusRequest {
            instance_id: "never-existed".into(),
        })
        .await,
    );
    same_as_missing(
        "instance.GetInstanceStatus",
        &foreign,
        ACME,
        &missing,
        "never-existed",
    );

    // A batch naming acme's instance: nothing of it is applied.
    let mut completed = event(ACME, EventType::Completed);
    completed.output = Bytes::from_static(b"globex-output");
    let batch = g
        .call(inst::InstanceEventBatch {
            events: vec![event(ACME, EventType::Heartbeat), completed.clone()],
        })
        .await
        .unwrap();
    assert_eq!(batch.accepted, 0, "instance.SendEventBatch: {batch:?}");
    assert!(
        batch.rejection_reason.starts_with("event 0:") && batch.rejection_reason.contains(ACME),
        "instance.SendEventBatch: {}",
        batch.rejection_reason
    );

    // One-way events are not answered: send globex's foreign COMPLETED and FAILED, then a
    // COMPLETED for globex's own probe, and look once the probe has completed.
    g.send_event(completed).await.unwrap();
    g.send_event(event(ACME, EventType::Failed)).await.unwrap();
    g.send_event(event(PROBE, EventType::Completed))
        .await
        .unwrap();
    until_state(g, PROBE, InstanceState::Completed).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let after = seen(&f.acme, ACME).await;
    assert_eq!(after, before, "globex's calls changed acme's instance");
    assert_eq!(after.status.state(), InstanceState::Running);
    assert!(after.status.output.is_empty());
    assert_eq!(
        after.pending[0].signal_id, ACME_SIGNAL,
        "still unacknowledged"
    );

    // None of the refused calls made globex a copy of acme's instance.
    let listed = g.call(mgmt::ListInstancesRequest::default()).await.unwrap();
    assert_eq!(instance_ids(&listed.instances), [PROBE]);
    assert_eq!(f.reference.sizes().instances, 2);
}

// ---------------------------------------------------------------------------------------
// Environment conversation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn environment_rpcs_from_globex_cannot_touch_acmes_images_or_instances() {
    let f = fixture().await;
    let g = &f.globex;
    let acme_image = upload(&f.acme, "acme-app", "", b"acme app v1")
        .await
        .unwrap()
        .image
        .unwrap();
    assert_eq!(acme_image.tenant, "acme");
    f.acme
        .call(env::StartInstanceRequest {
            image_id: acme_image.id.clone(),
            instance_id: "acme-run".into(),
            input: Bytes::from_static(b"acme-secret-input"),
            ..Default::default()
        })
        .await
        .unwrap();
    // Running, then paused: a state ResumeInstance (and StopInstance) would act on.
    register(&f.acme, "acme-run", &acme_image.id, b"").await;
    f.acme
        .call(mgmt::SendSignalRequest {
            instance_id: "acme-run".into(),
            kind: SignalKind::Pause as i32,
            signal_id: "pause-1".into(),
        })
        .await
        .unwrap();
    f.acme
        .call(inst::SignalAckRequest {
            instance_id: "acme-run".into(),
            signal_id: "pause-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = seen(&f.acme, "acme-run").await;
    assert_eq!(before.status.state(), InstanceState::Paused);
    let acme_images = f
        .acme
        .call(env::ListImagesRequest::default())
        .await
        .unwrap();
    assert_eq!(acme_images.images.len(), 1);

    let image_calls: Vec<(&str, Result<String, CallError>)> = vec![
        (
            "environment.GetImage",
            g.call(env::GetImageRequest {
                image_id: acme_image.id.clone(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.StartInstance (acme's image)",
            g.call(env::StartInstanceRequest {
                image_id: acme_image.id.clone(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.StartInstance (acme's image and instance id)",
            g.call(env::StartInstanceRequest {
                image_id: acme_image.id.clone(),
                instance_id: "acme-run".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.StopInstance (graceful)",
            g.call(env::StopInstanceRequest {
                instance_id: "acme-run".into(),
                reason: "globex says stop".into(),
                grace_period: Some(Duration::from_millis(1).into()),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.StopInstance (force)",
            g.call(env::StopInstanceRequest {
                instance_id: "acme-run".into(),
                mode: env::stop_instance_request::StopMode::Force as i32,
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.ResumeInstance",
            g.call(env::ResumeInstanceRequest {
                instance_id: "acme-run".into(),
                checkpoint_id: String::new(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.SendSignal",
            g.call(env::SendSignalRequest {
                instance_id: "acme-run".into(),
                kind: SignalKind::Cancel as i32,
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.GetInstanceStatus",
            g.call(env::GetInstanceStatusRequest {
                instance_id: "acme-run".into(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
    ];
    for (rpc, result) in image_calls {
        refused(rpc, result, StatusCode::NotFound);
    }
    let foreign = status(
        g.call(env::GetImageRequest {
            image_id: acme_image.id.clone(),
        })
        .await,
    );
    let missing = status(
        g.call(env::GetImageRequest {
            image_id: "img-never".into(),
        })
        .await,
    );
    same_as_missing(
        "environment.GetImage",
        &foreign,
        &acme_image.id,
        &missing,
        "img-never",
    );

    let deleted = g
        .call(env::DeleteImageRequest {
            image_id: acme_image.id.clone(),
        })
        .await
        .unwrap();
    assert!(
        !deleted.deleted,
        "environment.DeleteImage deleted acme's image"
    );

    // Listings from globex show none of acme's, before and after globex has its own.
    let listed = g.call(env::ListImagesRequest::default()).await.unwrap();
    assert_eq!(listed.images, [], "environment.ListImages");
    let listed = g.call(env::ListInstancesRequest::default()).await.unwrap();
    assert_eq!(listed.instances, [], "environment.ListInstances");
    let globex_image = upload(g, "globex-app", "", b"globex app")
        .await
        .unwrap()
        .image
        .unwrap();
    assert_eq!(globex_image.tenant, "globex");
    g.call(env::StartInstanceRequest {
        image_id: globex_image.id.clone(),
        instance_id: "globex-run".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let listed = g.call(env::ListImagesRequest::default()).await.unwrap();
    assert_eq!(
        listed
            .images
            .iter()
            .map(|i| (i.name.as_str(), i.tenant.as_str()))
            .collect::<Vec<_>>(),
        [("globex-app", "globex")],
        "environment.ListImages"
    );
    let listed = g.call(env::ListInstancesRequest::default()).await.unwrap();
    assert_eq!(
        instance_ids(&listed.instances),
        ["globex-run"],
        "environment.ListInstances"
    );

    // acme's image and instance are as they were.
    assert_eq!(
        f.acme
            .call(env::ListImagesRequest::default())
            .await
            .unwrap(),
        acme_images,
        "acme's images changed"
    );
    let image = f
        .acme
        .call(env::GetImageRequest {
            image_id: acme_image.id.clone(),
        })
        .await
        .unwrap()
        .image
        .unwrap();
    assert_eq!(image, acme_image, "acme's image changed");
    // Past globex's 1 ms grace period: a leaked graceful stop would have cancelled by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = seen(&f.acme, "acme-run").await;
    assert_eq!(after, before, "globex's calls changed acme's instance");
    assert_eq!(after.status.state(), InstanceState::Paused);
    assert_eq!(after.pending, [], "a signal reached acme's instance");
}

#[tokio::test]
async fn naming_tenant_acme_in_a_request_from_globex_is_permission_denied() {
    let f = fixture().await;
    let before = acme_instance(&f).await;
    upload(&f.acme, "acme-app", "", b"acme app v1")
        .await
        .unwrap();
    let sizes = f.reference.sizes();
    let g = &f.globex;

    let calls: Vec<(&str, Result<String, CallError>)> = vec![
        (
            "environment.ListImages tenant=acme",
            g.call(env::ListImagesRequest {
                tenant: "acme".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.ListInstances tenant=acme",
            g.call(env::ListInstancesRequest {
                tenant: "acme".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "management.ListInstances tenant=acme",
            g.call(mgmt::ListInstancesRequest {
                tenant: "acme".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.RegisterImage manifest.tenant=acme",
            upload(g, "planted", "acme", b"planted image")
                .await
                .map(|r| format!("{r:?}")),
        ),
        (
            "instance.RegisterInstance tenant_id=acme (new id)",
            g.call(inst::RegisterInstanceRequest {
                instance_id: "planted".into(),
                tenant_id: "acme".into(),
                image_id: "img-globex".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.RegisterInstance tenant_id=acme (acme's instance)",
            g.call(inst::RegisterInstanceRequest {
                instance_id: ACME.into(),
                tenant_id: "acme".into(),
                image_id: "img-acme".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
    ];
    for (rpc, result) in calls {
        refused(rpc, result, StatusCode::PermissionDenied);
    }
    assert_eq!(
        f.reference.sizes(),
        sizes,
        "a refused request stored something"
    );

    // Naming its own tenant is fine: the refusals above are about acme, not the field.
    let own = g
        .call(env::ListImagesRequest {
            tenant: "globex".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(own.images, []);
    let own = g
        .call(mgmt::ListInstancesRequest {
            tenant: "globex".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(own.instances, []);
    let own = g
        .call(env::ListInstancesRequest {
            tenant: "globex".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(own.instances, []);
    let registered = g
        .call(inst::RegisterInstanceRequest {
            instance_id: PROBE.into(),
            tenant_id: "globex".into(),
            image_id: "img-globex".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(registered.accepted);
    let image = upload(g, "globex-app", "globex", b"globex app")
        .await
        .unwrap()
        .image
        .unwrap();
    assert_eq!(image.tenant, "globex");

    assert_eq!(seen(&f.acme, ACME).await, before, "acme's instance changed");
    let acme_images = f
        .acme
        .call(env::ListImagesRequest::default())
        .await
        .unwrap();
    assert_eq!(
        acme_images
            .images
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["acme-app"],
        "acme's images changed"
    );
}

// ---------------------------------------------------------------------------------------
// Management conversation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn management_rpcs_from_globex_on_acmes_instance_are_not_found_and_change_nothing() {
    let f = fixture().await;
    let before = acme_instance(&f).await;
    register(&f.globex, PROBE, "img-globex", b"probe").await;
    let g = &f.globex;

    let calls: Vec<(&str, Result<String, CallError>)> = vec![
        (
            "management.SendSignal",
            g.call(mgmt::SendSignalRequest {
                instance_id: ACME.into(),
                kind: SignalKind::Cancel as i32,
                signal_id: String::new(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "management.SendSignal (acme's signal id)",
            g.call(mgmt::SendSignalRequest {
                instance_id: ACME.into(),
                kind: SignalKind::Pause as i32,
                signal_id: ACME_SIGNAL.into(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "management.SendCustomSignal",
            g.call(mgmt::SendCustomSignalRequest {
                instance_id: ACME.into(),
                custom_type: "globex.meddle".into(),
                payload: Bytes::from_static(b"globex"),
                signal_id: String::new(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "management.GetInstanceStatus",
            g.call(mgmt::GetInstanceStatusRequest {
                instance_id: ACME.into(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "management.ListCheckpoints",
            g.call(mgmt::ListCheckpointsRequest {
                instance_id: ACME.into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "management.GetCheckpoint (by id)",
            g.call(mgmt::GetCheckpointRequest {
                instance_id: ACME.into(),
                checkpoint_id: "c1".into(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "management.GetCheckpoint (latest)",
            g.call(mgmt::GetCheckpointRequest {
                instance_id: ACME.into(),
                checkpoint_id: String::new(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
    ];
    for (rpc, result) in calls {
        refused(rpc, result, StatusCode::NotFound);
    }
    let foreign = status(
        g.call(mgmt::GetCheckpointRequest {
            instance_id: ACME.into(),
            checkpoint_id: "c1".into(),
        })
        .await,
    );
    let missing = status(
        g.call(mgmt::GetCheckpointRequest {
            instance_id: "never-existed".into(),
            checkpoint_id: "c1".into(),
        })
        .await,
    );
    same_as_missing(
        "management.GetCheckpoint",
        &foreign,
        ACME,
        &missing,
        "never-existed",
    );

    let listed = g.call(mgmt::ListInstancesRequest::default()).await.unwrap();
    assert_eq!(
        instance_ids(&listed.instances),
        [PROBE],
        "management.ListInstances"
    );
    assert!(listed.instances.iter().all(|i| i.tenant_id == "globex"));

    assert_eq!(seen(&f.acme, ACME).await, before, "acme's instance changed");
}

/// `Health` reports the caller's own store sizes: totals over every tenant would let each
/// tenant watch how much the others hold.
#[tokio::test]
async fn management_health_reports_only_the_callers_own_store_sizes() {
    let f = fixture().await;
    register(&f.globex, PROBE, "img-globex", b"probe").await;
    let store_check = |health: mgmt::HealthResponse| {
        health
            .checks
            .get("store")
            .map(|check| check.message.clone())
            .unwrap_or_default()
    };
    let before = store_check(f.globex.call(mgmt::HealthRequest {}).await.unwrap());
    assert!(
        before.contains("holds 1 instances"),
        "globex sees its own probe instance: {before}"
    );
    acme_instance(&f).await;
    upload(&f.acme, "acme-app", "", b"acme app v1")
        .await
        .unwrap();
    let after = store_check(f.globex.call(mgmt::HealthRequest {}).await.unwrap());
    assert_eq!(
        after, before,
        "globex's Health answer changed when only acme's data did"
    );
}

// ---------------------------------------------------------------------------------------
// Runner conversation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn runner_cancel_from_globex_does_not_find_or_stop_acmes_running_job() {
    let f = fixture().await;
    let runner = f.acme.clone();
    let running = tokio::spawn(async move { runner.call(sleep_job("acme-job", 30.0)).await });
    // Until acme's job is registered (what acme's own Cancel would find), without
    // cancelling it from acme.
    within(10, async {
        while f.reference.sizes().running_jobs == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let globex_cancel = f
        .globex
        .call(CancelRequest {
            job_id: "acme-job".into(),
            reason: "globex was here".into(),
            hard_kill: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!globex_cancel.found, "runner.Cancel: {globex_cancel:?}");
    assert_eq!(globex_cancel.state(), CancelState::Unspecified);

    // globex's own job with the same id runs: acme's does not exist for globex.
    let echoed = within(
        10,
        f.globex.call(ExecutionRequest {
            function_name: "echo".into(),
            ..sleep_job("acme-job", 0.0)
        }),
    )
    .await
    .unwrap();
    assert!(
        matches!(echoed.outcome, Some(Outcome::Success(_))),
        "runner.Execute: {echoed:?}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !running.is_finished(),
        "acme's job ended after globex's cancel"
    );
    assert_eq!(f.reference.sizes().running_jobs, 1);

    let acme_cancel = f
        .acme
        .call(CancelRequest {
            job_id: "acme-job".into(),
            reason: "acme operator".into(),
            hard_kill: false,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(acme_cancel.found, "{acme_cancel:?}");
    assert_eq!(acme_cancel.state(), CancelState::Requested);
    let outcome = within(10, running).await.unwrap().unwrap();
    match outcome.outcome {
        Some(Outcome::Cancelled(cancelled)) => {
            assert_eq!(cancelled.reason, "acme operator");
            assert!(!cancelled.hard_killed, "globex's hard kill was applied");
        }
        other => panic!("acme's job: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Callers without a certificate tenant
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn anonymous_caller_is_unauthenticated_on_every_conversation() {
    let f = fixture().await;
    let before = acme_instance(&f).await;
    let a = &f.anonymous;

    let mut journal = a
        .bidi::<JournalMessage>(
            Start {
                invocation_id: Bytes::from_static(b"inv-anon"),
                debug_id: "inv-anon".into(),
                ..Default::default()
            }
            .into(),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let calls: Vec<(&str, Result<String, CallError>)> = vec![
        (
            "instance.GetInstanceStatus",
            a.call(inst::GetInstanceStatusRequest {
                instance_id: ACME.into(),
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.RegisterInstance tenant_id=acme",
            a.call(inst::RegisterInstanceRequest {
                instance_id: ACME.into(),
                tenant_id: "acme".into(),
                image_id: "img-acme".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "instance.SubscribeSignals",
            first_streamed(
                a,
                inst::SubscribeSignalsRequest {
                    instance_id: ACME.into(),
                },
            )
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "environment.ListImages",
            a.call(env::ListImagesRequest::default())
                .await
                .map(|r| format!("{r:?}")),
        ),
        (
            "environment.RegisterImage",
            upload(a, "anon-app", "", b"anon")
                .await
                .map(|r| format!("{r:?}")),
        ),
        (
            "management.ListInstances",
            a.call(mgmt::ListInstancesRequest::default())
                .await
                .map(|r| format!("{r:?}")),
        ),
        (
            "runner.Cancel",
            a.call(CancelRequest {
                job_id: "acme-job".into(),
                ..Default::default()
            })
            .await
            .map(|r| format!("{r:?}")),
        ),
        (
            "runner.Execute",
            a.call(sleep_job("anon-job", 0.0))
                .await
                .map(|r| format!("{r:?}")),
        ),
        (
            "journal (Start)",
            bounded(journal.message()).await.map(|r| format!("{r:?}")),
        ),
    ];
    for (rpc, result) in calls {
        let status = refused(rpc, result, StatusCode::Unauthenticated);
        assert!(
            status.message().contains("client certificate"),
            "{rpc}: {status}"
        );
    }

    // A one-way event is dropped, not applied to acme's instance of that id.
    a.send_event(event(ACME, EventType::Completed))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen(&f.acme, ACME).await, before, "acme's instance changed");
    assert_eq!(f.reference.sizes().instances, 1);
    assert_eq!(f.reference.sizes().images, 0);
}

// ---------------------------------------------------------------------------------------
// The same isolation over TCP
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn over_tcp_globex_gets_not_found_for_acmes_instance_and_permission_denied_for_acme() {
    let ca = CertificateAuthority::generate(&CaParams::new("tenants TCP CA")).unwrap();
    let server_cert = ca
        .issue_server(&ServerCertParams::new(["localhost"]))
        .unwrap();
    let tls = ServerConfigBuilder::new(server_cert.credentials().unwrap())
        .client_auth(ClientAuth::Optional(ca.ca_bundle().unwrap()))
        .build()
        .unwrap();
    let reference = ReferenceServer::new(ReferenceConfig::default());
    let server = TcpServer::bind(TcpServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(tls),
    ))
    .await
    .unwrap()
    .serve(reference.router());
    // `claimed` is the tenant the Hello names: a claim the certificate overrides.
    let connect = |tenant: Option<&str>, claimed: &str| {
        let mut builder = ClientConfigBuilder::new(ca.ca_bundle().unwrap());
        if let Some(tenant) = tenant {
            let cert = ca
                .issue_client(&ClientCertParams::new(tenant, "worker-1"))
                .unwrap();
            builder = builder.client_credentials(cert.credentials().unwrap());
        }
        let mut config = TcpClientConfig::new(
            server.local_addr(),
            "localhost",
            Arc::new(builder.build().unwrap()),
        );
        config.session.tenant = claimed.to_owned();
        async move { within(10, TcpClient::new(config).connect()).await.unwrap() }
    };
    let acme: TcpConnection = connect(Some("acme"), "").await;
    let globex = connect(Some("globex"), "").await;
    let globex_claiming_acme = connect(Some("globex"), "acme").await;
    let anonymous_claiming_acme = connect(None, "acme").await;

    let registered = acme
        .call(inst::RegisterInstanceRequest {
            instance_id: "tcp-order".into(),
            image_id: "img-acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(registered.accepted);
    // The server saw acme's certificate tenant over TCP.
    let acme_status = acme
        .call(inst::GetInstanceStatusRequest {
            instance_id: "tcp-order".into(),
        })
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(acme_status.tenant_id, "acme");

    for (who, connection) in [
        ("globex", &globex),
        ("globex claiming acme in its Hello", &globex_claiming_acme),
    ] {
        refused(
            &format!("tcp {who}: instance.GetInstanceStatus"),
            connection
                .call(inst::GetInstanceStatusRequest {
                    instance_id: "tcp-order".into(),
                })
                .await,
            StatusCode::NotFound,
        );
        refused(
            &format!("tcp {who}: environment.GetInstanceStatus"),
            connection
                .call(env::GetInstanceStatusRequest {
                    instance_id: "tcp-order".into(),
                })
                .await,
            StatusCode::NotFound,
        );
        refused(
            &format!("tcp {who}: management.GetInstanceStatus"),
            connection
                .call(mgmt::GetInstanceStatusRequest {
                    instance_id: "tcp-order".into(),
                })
                .await,
            StatusCode::NotFound,
        );
        refused(
            &format!("tcp {who}: management.ListInstances tenant=acme"),
            connection
                .call(mgmt::ListInstancesRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                })
                .await,
            StatusCode::PermissionDenied,
        );
        refused(
            &format!("tcp {who}: environment.ListImages tenant=acme"),
            connection
                .call(env::ListImagesRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                })
                .await,
            StatusCode::PermissionDenied,
        );
        refused(
            &format!("tcp {who}: instance.RegisterInstance tenant_id=acme"),
            connection
                .call(inst::RegisterInstanceRequest {
                    instance_id: "tcp-order".into(),
                    tenant_id: "acme".into(),
                    image_id: "img-acme".into(),
                    ..Default::default()
                })
                .await,
            StatusCode::PermissionDenied,
        );
        let listed = connection
            .call(mgmt::ListInstancesRequest::default())
            .await
            .unwrap();
        assert_eq!(listed.instances, [], "tcp {who}: management.ListInstances");
    }
    refused(
        "tcp anonymous claiming acme: instance.GetInstanceStatus",
        anonymous_claiming_acme
            .call(inst::GetInstanceStatusRequest {
                instance_id: "tcp-order".into(),
            })
            .await,
        StatusCode::Unauthenticated,
    );

    let after = acme
        .call(inst::GetInstanceStatusRequest {
            instance_id: "tcp-order".into(),
        })
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(after, acme_status, "acme's instance changed");
    assert_eq!(reference.sizes().instances, 1);
}
