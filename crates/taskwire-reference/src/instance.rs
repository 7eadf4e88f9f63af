//! The instance conversation: a workflow instance calling the engine core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskwire_proto::instance::v1::instance_event::EventType;
use taskwire_proto::instance::v1::signal_ack_request::SignalOutcome;
use taskwire_proto::instance::v1::sleep_request::Wake;
use taskwire_proto::instance::v1::{
    Checkpoint, CheckpointRequest, CheckpointResponse, CheckpointSummary, GetCheckpointRequest,
    GetCheckpointResponse, GetInstanceStatusRequest, GetInstanceStatusResponse, InstanceEvent,
    InstanceEventBatch, InstanceState, InstanceStatus, ListCheckpointsRequest, PollSignalsRequest,
    PollSignalsResponse, RecordRetryAttemptRequest, RecordRetryAttemptResponse,
    RegisterInstanceRequest, RegisterInstanceResponse, SendEventBatchResponse, Signal,
    SignalAckRequest, SignalAckResponse, SignalKind, SleepRequest, SleepResponse,
    SubscribeSignalsRequest,
};
use taskwire_proto::wkt::Timestamp;
use taskwire_rpc::{CallContext, ResponseSink, Router, Status};

use crate::store::{Instance, Shared, Tenant, not_found, now, required};
use crate::tenant::check_named;
use crate::unary;

/// Most signals one `PollSignals` returns when the request leaves it to the server.
const DEFAULT_MAX_SIGNALS: usize = 100;
/// Most checkpoint summaries one `ListCheckpoints` call streams by default.
const DEFAULT_CHECKPOINT_PAGE: usize = 1_000;
/// Largest `ListCheckpoints` page honoured.
const MAX_CHECKPOINT_PAGE: usize = 10_000;

pub(crate) fn routes(router: &mut Router, shared: &Arc<Shared>) {
    unary(router, shared, register);
    unary(router, shared, checkpoint);
    unary(router, shared, get_checkpoint);
    unary(router, shared, signal_ack);
    unary(router, shared, sleep);
    unary(router, shared, send_event_batch);
    unary(router, shared, get_instance_status);
    unary(router, shared, record_retry_attempt);

    let s = Arc::clone(shared);
    router
        .unary(move |ctx, request: PollSignalsRequest| poll_signals(Arc::clone(&s), ctx, request));
    let s = Arc::clone(shared);
    router.server_streaming(move |ctx, request: SubscribeSignalsRequest, sink| {
        subscribe_signals(Arc::clone(&s), ctx, request, sink)
    });
    let s = Arc::clone(shared);
    router.server_streaming(move |ctx, request: ListCheckpointsRequest, sink| {
        list_checkpoints(Arc::clone(&s), ctx, request, sink)
    });
    let s = Arc::clone(shared);
    router.one_way(move |ctx, event: InstanceEvent| {
        let outcome = s.tenant_of(&ctx).and_then(|tenant| {
            let applied = s.with_tenant(&tenant, |t| apply_event(t, &event));
            s.changed();
            applied.map_err(Status::invalid_argument)
        });
        if let Err(status) = outcome {
            tracing::debug!(%status, "dropped a one-way instance event");
        }
        async {}
    });
}

fn register(
    shared: &Shared,
    tenant: &str,
    request: RegisterInstanceRequest,
) -> Result<RegisterInstanceResponse, Status> {
    if request.instance_id.is_empty() {
        return Err(required("instance_id"));
    }
    if request.image_id.is_empty() {
        return Err(required("image_id"));
    }
    check_named(tenant, &request.tenant_id, "tenant_id")?;
    let response = shared.with_tenant(tenant, |t| {
        let instance = match t.instance(&request.instance_id) {
            Ok(instance) => {
                if instance.is_final() {
                    return Ok(RegisterInstanceResponse {
                        accepted: false,
                        rejection_reason: format!(
                            "instance {:?} is {}",
                            request.instance_id,
                            instance.state().as_str_name()
                        ),
                        checkpoint: None,
                    });
                }
                instance
            }
            Err(_) => {
                if !request.resumed_from_checkpoint_id.is_empty() {
                    return Err(not_found("checkpoint", &request.resumed_from_checkpoint_id));
                }
                let status = InstanceStatus {
                    instance_id: request.instance_id.clone(),
                    image_id: request.image_id.clone(),
                    labels: request.labels.clone(),
                    ..InstanceStatus::default()
                };
                t.create_instance(
                    tenant,
                    &shared.config,
                    &shared.stored,
                    status,
                    request.input.clone(),
                )?
            }
        };
        let checkpoint = instance
            .checkpoint(&request.resumed_from_checkpoint_id)?
            .cloned();
        if instance.state() != InstanceState::Paused {
            instance.set_state(InstanceState::Running);
        }
        instance.status.started_at.get_or_insert_with(now);
        Ok(RegisterInstanceResponse {
            accepted: true,
            rejection_reason: String::new(),
            checkpoint,
        })
    })?;
    shared.changed();
    Ok(response)
}

fn checkpoint(
    shared: &Shared,
    tenant: &str,
    request: CheckpointRequest,
) -> Result<CheckpointResponse, Status> {
    if request.checkpoint_id.is_empty() {
        return Err(required("checkpoint_id"));
    }
    if request.sequence == 0 {
        return Err(Status::invalid_argument(
            "sequence 0 is not a position; sequences start at 1",
        ));
    }
    let max_checkpoints = shared.config.max_checkpoints_per_instance;
    shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        let pending_signals = u32::try_from(instance.pending_signals().count()).unwrap_or(u32::MAX);
        if let Some(existing) = instance
            .summaries()
            .find(|s| s.checkpoint_id == request.checkpoint_id)
        {
            return Ok(CheckpointResponse {
                duplicate: true,
                checkpoint: Some(existing.clone()),
                pending_signals,
            });
        }
        if instance.is_final() {
            return Err(Status::failed_precondition(format!(
                "instance {:?} is {} and takes no checkpoints",
                request.instance_id,
                instance.state().as_str_name()
            )));
        }
        if let Some(latest) = instance.summaries().last()
            && request.sequence <= latest.sequence
        {
            return Err(Status::failed_precondition(format!(
                "sequence {} is not greater than {}, the latest stored",
                request.sequence, latest.sequence
            )));
        }
        if instance.checkpoints.len() >= max_checkpoints {
            return Err(Status::resource_exhausted(format!(
                "instance {:?} holds {max_checkpoints} checkpoints, the most this server keeps",
                request.instance_id
            )));
        }
        let summary = CheckpointSummary {
            instance_id: request.instance_id.clone(),
            checkpoint_id: request.checkpoint_id,
            sequence: request.sequence,
            size_bytes: request.state.len() as u64,
            created_at: Some(now()),
        };
        shared
            .stored
            .reserve(tenant, request.state.len() as u64)?
            .keep();
        instance.checkpoints.push(Checkpoint {
            summary: Some(summary.clone()),
            state: request.state,
        });
        instance.status.updated_at = summary.created_at;
        t.checkpoint_count += 1;
        Ok(CheckpointResponse {
            duplicate: false,
            checkpoint: Some(summary),
            pending_signals,
        })
    })
}

fn get_checkpoint(
    shared: &Shared,
    tenant: &str,
    request: GetCheckpointRequest,
) -> Result<GetCheckpointResponse, Status> {
    shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        Ok(GetCheckpointResponse {
            checkpoint: instance.checkpoint(&request.checkpoint_id)?.cloned(),
        })
    })
}

async fn poll_signals(
    shared: Arc<Shared>,
    ctx: CallContext,
    request: PollSignalsRequest,
) -> Result<PollSignalsResponse, Status> {
    let tenant = shared.tenant_of(&ctx)?;
    let max = match request.max_signals {
        0 => DEFAULT_MAX_SIGNALS,
        n => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(DEFAULT_MAX_SIGNALS * 10),
    };
    let wait = match request.wait {
        None => Duration::ZERO,
        Some(wait) => Duration::try_from(wait).map_err(|_| {
            Status::invalid_argument(format!(
                "wait {}s {}ns is not a non-negative duration",
                wait.seconds, wait.nanos
            ))
        })?,
    };
    // Not capped by the call's deadline: if it comes first, the transport answers
    // DEADLINE_EXCEEDED; capping would race that answer with an empty one.
    let wait = wait.min(shared.config.max_poll_wait);
    let give_up = Instant::now() + wait;
    // Subscribed before the first look, so a signal sent in between is not missed.
    let mut changes = shared.watch();
    loop {
        let (signals, finished) = shared.with_tenant(&tenant, |t| {
            let instance = t.instance(&request.instance_id)?;
            let signals: Vec<Signal> = instance.pending_signals().take(max).cloned().collect();
            Ok::<_, Status>((signals, instance.is_final()))
        })?;
        if !signals.is_empty() || finished || Instant::now() >= give_up {
            return Ok(PollSignalsResponse { signals });
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(give_up.into()) => {}
            () = ctx.cancel.cancelled() => return Err(Status::cancelled("the poll was cancelled")),
        }
    }
}

fn signal_ack(
    shared: &Shared,
    tenant: &str,
    request: SignalAckRequest,
) -> Result<SignalAckResponse, Status> {
    if request.signal_id.is_empty() {
        return Err(required("signal_id"));
    }
    let outcome = SignalOutcome::try_from(request.outcome).map_err(|_| {
        Status::invalid_argument(format!(
            "outcome {} is not a SignalOutcome",
            request.outcome
        ))
    })?;
    let response = shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        let record = instance
            .signals
            .iter_mut()
            .find(|r| r.signal.signal_id == request.signal_id)
            .ok_or_else(|| not_found("signal", &request.signal_id))?;
        if record.acked {
            return Ok(SignalAckResponse { duplicate: true });
        }
        record.acked = true;
        let kind = record.signal.kind();
        if matches!(outcome, SignalOutcome::Unspecified | SignalOutcome::Applied) {
            apply_signal(instance, kind);
        }
        Ok(SignalAckResponse { duplicate: false })
    })?;
    shared.changed();
    Ok(response)
}

/// What an applied signal does to the instance's state.
fn apply_signal(instance: &mut Instance, kind: SignalKind) {
    match kind {
        SignalKind::Cancel if !instance.is_final() => instance.set_state(InstanceState::Cancelled),
        SignalKind::Pause if instance.state() == InstanceState::Running => {
            instance.set_state(InstanceState::Paused);
        }
        SignalKind::Resume if instance.state() == InstanceState::Paused => {
            instance.set_state(InstanceState::Running);
        }
        _ => instance.status.updated_at = Some(now()),
    }
}

async fn subscribe_signals(
    shared: Arc<Shared>,
    ctx: CallContext,
    request: SubscribeSignalsRequest,
    sink: ResponseSink<Signal>,
) -> Result<(), Status> {
    let tenant = shared.tenant_of(&ctx)?;
    let mut changes = shared.watch();
    // Position in the instance's signal list up to which everything was sent or acked.
    let mut sent = 0;
    loop {
        let (batch, finished) = shared.with_tenant(&tenant, |t| {
            let instance = t.instance(&request.instance_id)?;
            let batch: Vec<Signal> = instance.signals[sent..]
                .iter()
                .filter(|r| !r.acked)
                .map(|r| r.signal.clone())
                .collect();
            sent = instance.signals.len();
            Ok::<_, Status>((batch, instance.is_final()))
        })?;
        for signal in batch {
            sink.send(signal).await?;
        }
        if finished {
            return Ok(());
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = ctx.cancel.cancelled() => return Ok(()),
        }
    }
}

async fn list_checkpoints(
    shared: Arc<Shared>,
    ctx: CallContext,
    request: ListCheckpointsRequest,
    sink: ResponseSink<CheckpointSummary>,
) -> Result<(), Status> {
    let tenant = shared.tenant_of(&ctx)?;
    let page = match request.page_size {
        0 => DEFAULT_CHECKPOINT_PAGE,
        n => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(MAX_CHECKPOINT_PAGE),
    };
    let summaries: Vec<CheckpointSummary> = shared.with_tenant(&tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        Ok::<_, Status>(
            instance
                .summaries()
                .filter(|s| s.sequence > request.after_sequence)
                .take(page)
                .cloned()
                .collect(),
        )
    })?;
    for summary in summaries {
        sink.send(summary).await?;
    }
    Ok(())
}

fn sleep(shared: &Shared, tenant: &str, request: SleepRequest) -> Result<SleepResponse, Status> {
    let wake_at = match request.wake {
        Some(Wake::WakeAt(at)) if at.is_valid() => at,
        Some(Wake::WakeAt(at)) => {
            return Err(Status::invalid_argument(format!(
                "wake_at {}s {}ns is outside the Timestamp range",
                at.seconds, at.nanos
            )));
        }
        Some(Wake::Duration(duration)) => {
            let duration = Duration::try_from(duration).map_err(|_| {
                Status::invalid_argument(format!(
                    "duration {}s {}ns is not a non-negative duration",
                    duration.seconds, duration.nanos
                ))
            })?;
            std::time::SystemTime::now()
                .checked_add(duration)
                .map(Timestamp::from)
                .filter(Timestamp::is_valid)
                .ok_or_else(|| Status::invalid_argument("duration wakes past year 9999"))?
        }
        None => return Err(required("one of wake_at and duration")),
    };
    let response = shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        if instance.is_final() {
            return Err(Status::failed_precondition(format!(
                "instance {:?} is {} and cannot sleep",
                request.instance_id,
                instance.state().as_str_name()
            )));
        }
        instance.checkpoint(&request.checkpoint_id)?;
        instance.set_state(InstanceState::Sleeping);
        instance.status.wake_at = Some(wake_at);
        Ok(SleepResponse {
            wake_at: Some(wake_at),
        })
    })?;
    shared.changed();
    Ok(response)
}

/// Applies one event; the error says why it was not.
fn apply_event(tenant: &mut Tenant, event: &InstanceEvent) -> Result<(), String> {
    let instance = tenant
        .instance(&event.instance_id)
        .map_err(|status| status.message().to_owned())?;
    let Ok(event_type) = EventType::try_from(event.event_type) else {
        return Err(format!(
            "event_type {} is not an EventType",
            event.event_type
        ));
    };
    if event_type == EventType::Unspecified {
        return Err("event_type EVENT_TYPE_UNSPECIFIED is not an event".into());
    }
    if instance.is_final() {
        return Err(format!(
            "instance {:?} is {} and takes no events",
            event.instance_id,
            instance.state().as_str_name()
        ));
    }
    match event_type {
        EventType::Completed => {
            instance.status.output = event.output.clone();
            instance.set_state(InstanceState::Completed);
        }
        EventType::Failed => {
            instance.status.error = event.error.clone();
            instance.set_state(InstanceState::Failed);
        }
        EventType::Suspended => {
            instance
                .checkpoint(&event.checkpoint_id)
                .map_err(|status| status.message().to_owned())?;
            instance.set_state(InstanceState::Suspended);
        }
        EventType::Custom if event.custom_type.is_empty() => {
            return Err("custom_type of an EVENT_TYPE_CUSTOM event is required".into());
        }
        EventType::Heartbeat | EventType::Custom | EventType::Unspecified => {
            instance.status.updated_at = Some(now());
        }
    }
    Ok(())
}

fn send_event_batch(
    shared: &Shared,
    tenant: &str,
    request: InstanceEventBatch,
) -> Result<SendEventBatchResponse, Status> {
    if request.events.is_empty() {
        return Err(Status::invalid_argument(
            "events is empty; a batch needs at least one",
        ));
    }
    let response = shared.with_tenant(tenant, |t| {
        for (index, event) in request.events.iter().enumerate() {
            if let Err(reason) = apply_event(t, event) {
                return SendEventBatchResponse {
                    accepted: u32::try_from(index).unwrap_or(u32::MAX),
                    rejection_reason: format!("event {index}: {reason}"),
                };
            }
        }
        SendEventBatchResponse {
            accepted: u32::try_from(request.events.len()).unwrap_or(u32::MAX),
            rejection_reason: String::new(),
        }
    });
    shared.changed();
    Ok(response)
}

fn get_instance_status(
    shared: &Shared,
    tenant: &str,
    request: GetInstanceStatusRequest,
) -> Result<GetInstanceStatusResponse, Status> {
    shared.with_tenant(tenant, |t| {
        Ok(GetInstanceStatusResponse {
            status: Some(t.instance(&request.instance_id)?.full_status()),
        })
    })
}

fn record_retry_attempt(
    shared: &Shared,
    tenant: &str,
    request: RecordRetryAttemptRequest,
) -> Result<RecordRetryAttemptResponse, Status> {
    if request.attempt < 2 {
        return Err(Status::invalid_argument(format!(
            "attempt {} is not a retry; the first retry is attempt 2",
            request.attempt
        )));
    }
    let response = shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        if instance.retries.contains(&request.attempt) {
            return Ok(RecordRetryAttemptResponse { duplicate: true });
        }
        if matches!(
            instance.state(),
            InstanceState::Completed | InstanceState::Cancelled
        ) {
            return Err(Status::failed_precondition(format!(
                "instance {:?} is {} and will not be retried",
                request.instance_id,
                instance.state().as_str_name()
            )));
        }
        instance.retries.insert(request.attempt);
        instance.status.attempt = instance.status.attempt.max(request.attempt);
        if request.error.is_some() {
            instance.status.error = request.error;
        }
        instance.set_state(InstanceState::Pending);
        Ok(RecordRetryAttemptResponse { duplicate: false })
    })?;
    shared.changed();
    Ok(response)
}
