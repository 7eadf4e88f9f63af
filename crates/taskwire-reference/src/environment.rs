//! The environment conversation: a management client calling the environment that
//! stores images and runs their instances.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use taskwire_proto::environment::v1::image_upload::Part;
use taskwire_proto::environment::v1::stop_instance_request::StopMode;
use taskwire_proto::environment::v1::{
    DeleteImageRequest, DeleteImageResponse, GetImageRequest, GetImageResponse,
    GetInstanceStatusRequest, GetInstanceStatusResponse, ImageInfo, ImageUpload, ListImagesRequest,
    ListImagesResponse, ListInstancesRequest, ListInstancesResponse, RegisterImageResponse,
    ResumeInstanceRequest, ResumeInstanceResponse, SendSignalRequest, SendSignalResponse,
    StartInstanceRequest, StartInstanceResponse, StopInstanceRequest, StopInstanceResponse,
};
use taskwire_proto::instance::v1::{InstanceError, InstanceState, InstanceStatus, SignalKind};
use taskwire_rpc::{CallContext, RequestStream, Router, Status, StatusCode};

use crate::paging;
use crate::store::{Image, NewSignal, Shared, not_found, now, required};
use crate::tenant::check_named;
use crate::unary;

/// Grace period of a graceful stop when the request gives none.
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

pub(crate) fn routes(router: &mut Router, shared: &Arc<Shared>) {
    unary(router, shared, list_images);
    unary(router, shared, get_image);
    unary(router, shared, delete_image);
    unary(router, shared, start_instance);
    unary(router, shared, resume_instance);
    unary(router, shared, list_instances);
    unary(router, shared, get_instance_status);
    unary(router, shared, send_signal);

    let s = Arc::clone(shared);
    router.client_streaming(move |ctx, uploads: RequestStream<ImageUpload>| {
        register_image(Arc::clone(&s), ctx, uploads)
    });
    let s = Arc::clone(shared);
    router.unary(move |ctx, request: StopInstanceRequest| {
        let result = s
            .tenant_of(&ctx)
            .and_then(|tenant| stop_instance(&s, &tenant, request));
        async move { result }
    });
}

async fn register_image(
    shared: Arc<Shared>,
    ctx: CallContext,
    mut uploads: RequestStream<ImageUpload>,
) -> Result<RegisterImageResponse, Status> {
    let tenant = shared.tenant_of(&ctx)?;
    let Some(Part::Manifest(manifest)) = uploads.message().await?.and_then(|u| u.part) else {
        return Err(Status::invalid_argument(
            "the first ImageUpload must carry the manifest",
        ));
    };
    if manifest.name.is_empty() {
        return Err(required("manifest.name"));
    }
    check_named(&tenant, &manifest.tenant, "manifest.tenant")?;
    if manifest.sha256.len() != 32 {
        return Err(Status::invalid_argument(format!(
            "manifest.sha256 is {} bytes; a SHA-256 digest is exactly 32 raw bytes",
            manifest.sha256.len()
        )));
    }
    let max = shared.config.max_image_bytes;
    if manifest.size_bytes > max {
        return Err(Status::resource_exhausted(format!(
            "manifest.size_bytes {} is over {max}, the largest image this server accepts",
            manifest.size_bytes
        )));
    }
    // The declared size is reserved before any chunk is read (a refusal allocates
    // nothing); the buffer grows with the bytes that arrive, never by the size up front.
    let reserved = shared.stored.reserve(&tenant, manifest.size_bytes)?;
    let mut content = BytesMut::new();
    let mut digest = Sha256::new();
    while let Some(upload) = uploads.message().await? {
        match upload.part {
            Some(Part::Chunk(chunk)) => {
                let received = content.len() as u64 + chunk.len() as u64;
                if received > manifest.size_bytes {
                    return Err(Status::invalid_argument(format!(
                        "{received} bytes arrived, more than manifest.size_bytes {}",
                        manifest.size_bytes
                    )));
                }
                digest.update(&chunk);
                content.extend_from_slice(&chunk);
            }
            Some(Part::Manifest(_)) => {
                return Err(Status::invalid_argument("the manifest was sent twice"));
            }
            None => {
                return Err(Status::invalid_argument(
                    "an ImageUpload carries neither manifest nor chunk",
                ));
            }
        }
    }
    if content.len() as u64 != manifest.size_bytes {
        return Err(Status::invalid_argument(format!(
            "the upload ended after {} bytes; manifest.size_bytes is {}",
            content.len(),
            manifest.size_bytes
        )));
    }
    let digest = digest.finalize();
    if digest.as_slice() != manifest.sha256.as_ref() {
        return Err(Status::invalid_argument(
            "the content's SHA-256 digest differs from manifest.sha256",
        ));
    }
    let max_images = shared.config.max_images_per_tenant;
    shared.with_tenant(&tenant, |t| {
        if let Some(existing) = t.images.values().find(|i| {
            i.info.name == manifest.name
                && i.info.version == manifest.version
                && i.info.sha256 == manifest.sha256
        }) {
            return Ok(RegisterImageResponse {
                image: Some(existing.info.clone()),
                already_registered: true,
            });
        }
        if t.images.len() >= max_images {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant:?} holds {max_images} images, the most this server keeps"
            )));
        }
        let order = t.next_order();
        let info = ImageInfo {
            id: format!("img-{order}"),
            name: manifest.name,
            version: manifest.version,
            size_bytes: manifest.size_bytes,
            sha256: manifest.sha256,
            created_at: Some(now()),
            tenant: tenant.clone(),
            content_type: manifest.content_type,
            labels: manifest.labels,
        };
        t.images.insert(
            info.id.clone(),
            Image {
                info: info.clone(),
                content: content.freeze(),
                order,
            },
        );
        reserved.keep();
        Ok(RegisterImageResponse {
            image: Some(info),
            already_registered: false,
        })
    })
}

fn list_images(
    shared: &Shared,
    tenant: &str,
    request: ListImagesRequest,
) -> Result<ListImagesResponse, Status> {
    check_named(tenant, &request.tenant, "tenant")?;
    let after = paging::parse_token(&request.page_token)?;
    let size = paging::page_size(request.page_size);
    shared.with_tenant(tenant, |t| {
        let mut images: Vec<&Image> = t
            .images
            .values()
            .filter(|i| after.is_none_or(|after| i.order < after))
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.order));
        let (images, next_page_token) =
            paging::page(images.into_iter().map(|i| (i.order, i.info.clone())), size);
        Ok(ListImagesResponse {
            images,
            next_page_token,
        })
    })
}

fn get_image(
    shared: &Shared,
    tenant: &str,
    request: GetImageRequest,
) -> Result<GetImageResponse, Status> {
    if request.image_id.is_empty() {
        return Err(required("image_id"));
    }
    shared.with_tenant(tenant, |t| {
        let image = t
            .images
            .get(&request.image_id)
            .ok_or_else(|| not_found("image", &request.image_id))?;
        Ok(GetImageResponse {
            image: Some(image.info.clone()),
        })
    })
}

fn delete_image(
    shared: &Shared,
    tenant: &str,
    request: DeleteImageRequest,
) -> Result<DeleteImageResponse, Status> {
    if request.image_id.is_empty() {
        return Err(required("image_id"));
    }
    let removed = shared.with_tenant(tenant, |t| t.images.remove(&request.image_id));
    if let Some(image) = &removed {
        shared.stored.release(tenant, image.content.len() as u64);
    }
    let deleted = removed.is_some();
    Ok(DeleteImageResponse { deleted })
}

fn start_instance(
    shared: &Shared,
    tenant: &str,
    request: StartInstanceRequest,
) -> Result<StartInstanceResponse, Status> {
    if request.image_id.is_empty() {
        return Err(required("image_id"));
    }
    let response = shared.with_tenant(tenant, |t| {
        if !t.images.contains_key(&request.image_id) {
            return Err(not_found("image", &request.image_id));
        }
        let instance_id = if request.instance_id.is_empty() {
            format!("inst-{}", t.next_order())
        } else if t.instances.contains_key(&request.instance_id) {
            return Err(Status::new(
                StatusCode::AlreadyExists,
                format!("instance {:?} already exists", request.instance_id),
            ));
        } else {
            request.instance_id
        };
        let status = InstanceStatus {
            instance_id: instance_id.clone(),
            image_id: request.image_id,
            state: InstanceState::Pending as i32,
            labels: request.labels,
            ..InstanceStatus::default()
        };
        let instance = t.create_instance(
            tenant,
            &shared.config,
            &shared.stored,
            status,
            request.input,
        )?;
        Ok(StartInstanceResponse {
            instance_id,
            state: instance.state() as i32,
        })
    })?;
    shared.changed();
    Ok(response)
}

fn stop_instance(
    shared: &Arc<Shared>,
    tenant: &str,
    request: StopInstanceRequest,
) -> Result<StopInstanceResponse, Status> {
    let mode = StopMode::try_from(request.mode).map_err(|_| {
        Status::invalid_argument(format!("mode {} is not a StopMode", request.mode))
    })?;
    let grace = match request.grace_period {
        None => DEFAULT_GRACE_PERIOD,
        Some(grace) => Duration::try_from(grace).map_err(|_| {
            Status::invalid_argument(format!(
                "grace_period {}s {}ns is not a non-negative duration",
                grace.seconds, grace.nanos
            ))
        })?,
    };
    let max_pending = shared.config.max_pending_signals;
    let response = shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        if instance.is_final() {
            return Ok(StopInstanceResponse {
                stopped: true,
                state: instance.state() as i32,
            });
        }
        instance.status.error = Some(InstanceError {
            code: "instance.stopped".into(),
            message: request.reason.clone(),
            ..InstanceError::default()
        });
        if mode == StopMode::Force || instance.state() == InstanceState::Pending {
            // Nothing runs a PENDING instance, so there is no one to ask politely.
            instance.set_state(InstanceState::Cancelled);
            return Ok(StopInstanceResponse {
                stopped: true,
                state: instance.state() as i32,
            });
        }
        instance.send_signal(
            NewSignal {
                kind: SignalKind::Cancel as i32,
                ..NewSignal::default()
            },
            max_pending,
        )?;
        Ok(StopInstanceResponse {
            stopped: false,
            state: instance.state() as i32,
        })
    })?;
    shared.changed();
    if !response.stopped {
        // Force the stop once the grace period has passed, if the instance has not
        // acknowledged the CANCEL by then.
        let shared = Arc::clone(shared);
        let tenant = tenant.to_owned();
        let instance_id = request.instance_id;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            shared.with_tenant(&tenant, |t| {
                if let Ok(instance) = t.instance(&instance_id)
                    && !instance.is_final()
                {
                    instance.set_state(InstanceState::Cancelled);
                }
            });
            shared.changed();
        });
    }
    Ok(response)
}

fn resume_instance(
    shared: &Shared,
    tenant: &str,
    request: ResumeInstanceRequest,
) -> Result<ResumeInstanceResponse, Status> {
    let response = shared.with_tenant(tenant, |t| {
        let instance = t.instance(&request.instance_id)?;
        match instance.state() {
            InstanceState::Paused
            | InstanceState::Sleeping
            | InstanceState::Suspended
            | InstanceState::Failed => {}
            state => {
                return Err(Status::failed_precondition(format!(
                    "instance {:?} is {}; only PAUSED, SLEEPING, SUSPENDED or FAILED instances resume",
                    request.instance_id,
                    state.as_str_name()
                )));
            }
        }
        instance.checkpoint(&request.checkpoint_id)?;
        instance.set_state(InstanceState::Pending);
        Ok(ResumeInstanceResponse {
            state: instance.state() as i32,
        })
    })?;
    shared.changed();
    Ok(response)
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

fn send_signal(
    shared: &Shared,
    tenant: &str,
    request: SendSignalRequest,
) -> Result<SendSignalResponse, Status> {
    let max_pending = shared.config.max_pending_signals;
    let signal_id = shared.with_tenant(tenant, |t| {
        t.instance(&request.instance_id)?.send_signal(
            NewSignal {
                kind: request.kind,
                custom_type: request.custom_type,
                payload: request.payload,
                signal_id: request.signal_id,
            },
            max_pending,
        )
    })?;
    shared.changed();
    Ok(SendSignalResponse { signal_id })
}
