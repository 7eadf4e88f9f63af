//! The management conversation: an environment calling the engine core.

use std::collections::BTreeMap;
use std::sync::Arc;

use taskwire_proto::instance::v1::SignalKind;
use taskwire_proto::management::v1::health_response::{CheckResult, ServingStatus};
use taskwire_proto::management::v1::{
    GetCheckpointRequest, GetCheckpointResponse, GetInstanceStatusRequest,
    GetInstanceStatusResponse, HealthRequest, HealthResponse, ListCheckpointsRequest,
    ListCheckpointsResponse, ListInstancesRequest, ListInstancesResponse, SendCustomSignalRequest,
    SendCustomSignalResponse, SendSignalRequest, SendSignalResponse,
};
use taskwire_rpc::{Router, Status};

use crate::paging;
use crate::store::{NewSignal, Shared, required};
use crate::tenant::check_named;
use crate::unary;

pub(crate) fn routes(router: &mut Router, shared: &Arc<Shared>) {
    unary(router, shared, health);
    unary(router, shared, send_signal);
    unary(router, shared, send_custom_signal);
    unary(router, shared, get_instance_status);
    unary(router, shared, list_instances);
    unary(router, shared, list_checkpoints);
    unary(router, shared, get_checkpoint);
}

fn health(shared: &Shared, tenant: &str, _: HealthRequest) -> Result<HealthResponse, Status> {
    // The caller's own counts only: totals over every tenant would tell each tenant how
    // much the others hold.
    // Counts kept as data is added: a health check costs the same whatever the tenant holds.
    let (instances, checkpoints, images) = shared.with_tenant(tenant, |t| {
        (t.instances.len(), t.checkpoint_count, t.images.len())
    });
    let checks = BTreeMap::from([(
        "store".to_owned(),
        CheckResult {
            status: ServingStatus::Serving as i32,
            message: format!(
                "in memory (not durable); this tenant holds {instances} instances, {checkpoints} checkpoints, {images} images"
            ),
        },
    )]);
    Ok(HealthResponse {
        status: ServingStatus::Serving as i32,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime: Some(shared.started.elapsed().into()),
        checks: checks.into_iter().collect(),
    })
}

fn send_signal(
    shared: &Shared,
    tenant: &str,
    request: SendSignalRequest,
) -> Result<SendSignalResponse, Status> {
    if request.kind == SignalKind::Custom as i32 {
        return Err(Status::invalid_argument(
            "kind SIGNAL_KIND_CUSTOM is sent with SendCustomSignal",
        ));
    }
    let signal_id = enqueue(
        shared,
        tenant,
        &request.instance_id,
        NewSignal {
            kind: request.kind,
            signal_id: request.signal_id,
            ..NewSignal::default()
        },
    )?;
    Ok(SendSignalResponse { signal_id })
}

fn send_custom_signal(
    shared: &Shared,
    tenant: &str,
    request: SendCustomSignalRequest,
) -> Result<SendCustomSignalResponse, Status> {
    let signal_id = enqueue(
        shared,
        tenant,
        &request.instance_id,
        NewSignal {
            kind: SignalKind::Custom as i32,
            custom_type: request.custom_type,
            payload: request.payload,
            signal_id: request.signal_id,
        },
    )?;
    Ok(SendCustomSignalResponse { signal_id })
}

fn enqueue(
    shared: &Shared,
    tenant: &str,
    instance_id: &str,
    signal: NewSignal,
) -> Result<String, Status> {
    let max_pending = shared.config.max_pending_signals;
    let signal_id = shared.with_tenant(tenant, |t| {
        t.instance(instance_id)?.send_signal(signal, max_pending)
    })?;
    shared.changed();
    Ok(signal_id)
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

fn list_instances(
    shared: &Shared,
    tenant: &str,
    request: ListInstancesRequest,
) -> Result<ListInstancesResponse, Status> {
    check_named(tenant, &request.tenant, "tenant")?;
    let (instances, next_page_token) = shared.with_tenant(tenant, |t| {
        t.list_instances(
            &request.states,
            &request.image_id,
            request.page_size,
            &request.page_token,
        )
    })?;
    Ok(ListInstancesResponse {
        instances,
        next_page_token,
    })
}

fn list_checkpoints(
    shared: &Shared,
    tenant: &str,
    request: ListCheckpointsRequest,
) -> Result<ListCheckpointsResponse, Status> {
    let after = paging::parse_token(&request.page_token)?;
    let size = paging::page_size(request.page_size);
    shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        let (checkpoints, next_page_token) = paging::page(
            instance
                .summaries()
                .filter(|s| after.is_none_or(|after| s.sequence > after))
                .map(|s| (s.sequence, s.clone())),
            size,
        );
        Ok(ListCheckpointsResponse {
            checkpoints,
            next_page_token,
        })
    })
}

fn get_checkpoint(
    shared: &Shared,
    tenant: &str,
    request: GetCheckpointRequest,
) -> Result<GetCheckpointResponse, Status> {
    if request.instance_id.is_empty() {
        return Err(required("instance_id"));
    }
    shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        Ok(GetCheckpointResponse {
            checkpoint: instance.checkpoint(&request.checkpoint_id)?.cloned(),
        })
    })
}
