//! The in-memory state, per tenant, and the instance lifecycle rules every conversation
//! shares.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use taskwire_proto::environment::v1::ImageInfo;
use taskwire_proto::instance::v1::{
    Checkpoint, CheckpointSummary, InstanceState, InstanceStatus, Signal, SignalKind,
};
use taskwire_proto::wkt::Timestamp;
use taskwire_rpc::{CallContext, Status, StatusCode};
use tokio::sync::watch;

use crate::ReferenceConfig;
use taskwire_rpc::TenantBudget;

/// What every handler shares: the configuration, the store, and a change counter that
/// long polls and signal subscriptions wait on.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ReferenceConfig,
    pub(crate) started: Instant,
    store: Store,
    /// What the tenants' stored bytes come to, against the budget.
    pub(crate) stored: Arc<TenantBudget>,
    /// Request frames queued for handlers, against the buffer budget every router of
    /// this server shares, so that QUIC and TCP together stay within it.
    pub(crate) buffered: Arc<TenantBudget>,
    changes: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(config: ReferenceConfig, started: Instant) -> Shared {
        Shared {
            config,
            started,
            store: Store::default(),
            stored: TenantBudget::new(
                "stored",
                config.max_stored_bytes,
                config.max_stored_bytes_per_tenant,
            ),
            buffered: TenantBudget::new(
                "buffered",
                config.max_buffered_bytes,
                config.max_buffered_bytes_per_tenant,
            ),
            changes: watch::Sender::new(0),
        }
    }

    /// The tenant `ctx` acts for (the router's authorization hook already checked it).
    pub(crate) fn tenant_of(&self, ctx: &CallContext) -> Result<String, Status> {
        self.config.tenants.resolve(ctx)
    }

    /// Runs `f` on the tenant's data, under that tenant's lock alone: one tenant's work,
    /// however large its data, never waits for or delays another's. Never held across an
    /// await.
    pub(crate) fn with_tenant<T>(&self, tenant: &str, f: impl FnOnce(&mut Tenant) -> T) -> T {
        let tenant = self.store.tenant(tenant);
        f(&mut lock(&tenant))
    }

    /// Wakes every long poll and subscription to look again.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next [`Shared::changed`].
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn sizes(&self) -> StoreSizes {
        let tenants = self.store.all();
        let mut sizes = StoreSizes {
            tenants: tenants.len(),
            ..StoreSizes::default()
        };
        // One tenant at a time, so that no lock is held over everyone's data.
        for tenant in tenants {
            let tenant = lock(&tenant);
            sizes.instances += tenant.instances.len();
            sizes.images += tenant.images.len();
            sizes.running_jobs += tenant.jobs.len();
            sizes.checkpoints += tenant.checkpoint_count;
            for instance in tenant.instances.values() {
                sizes.bytes += instance
                    .checkpoints
                    .iter()
                    .map(|c| c.state.len())
                    .sum::<usize>();
                sizes.bytes += instance.input.len();
            }
            sizes.bytes += tenant
                .images
                .values()
                .map(|i| i.content.len())
                .sum::<usize>();
        }
        sizes
    }
}

fn lock(tenant: &Mutex<Tenant>) -> MutexGuard<'_, Tenant> {
    // A handler that panicked under the lock left the tenant consistent (every update is a
    // single assignment after its checks), so the poison is ignored.
    tenant
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How much a reference server holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreSizes {
    /// Tenants that have made a call.
    pub tenants: usize,
    /// Instances, all tenants.
    pub instances: usize,
    /// Stored checkpoints, all instances.
    pub checkpoints: usize,
    /// Stored images.
    pub images: usize,
    /// Runner jobs executing now.
    pub running_jobs: usize,
    /// Bytes of checkpoint state, inputs and image content held.
    pub bytes: usize,
}

/// Every tenant's data, each behind its own lock; the map's lock is held only to find or
/// add a tenant.
#[derive(Debug, Default)]
struct Store {
    tenants: Mutex<HashMap<String, Arc<Mutex<Tenant>>>>,
}

impl Store {
    fn tenant(&self, tenant: &str) -> Arc<Mutex<Tenant>> {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(tenants.entry(tenant.to_owned()).or_default())
    }

    fn all(&self) -> Vec<Arc<Mutex<Tenant>>> {
        self.tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// One tenant's data. Nothing in it refers to another tenant's.
#[derive(Debug, Default)]
pub(crate) struct Tenant {
    pub(crate) instances: BTreeMap<String, Instance>,
    pub(crate) images: BTreeMap<String, Image>,
    /// Runner jobs executing now, by job id.
    pub(crate) jobs: HashMap<String, Arc<crate::runner::Job>>,
    /// Source of generated ids and of creation order (for newest-first listings).
    counter: u64,
    /// Instance ids by creation order, so that a listing pages without sorting.
    by_order: BTreeMap<u64, String>,
    /// Checkpoints stored over all instances, kept as they are added.
    pub(crate) checkpoint_count: usize,
}

/// A stored image.
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) info: ImageInfo,
    pub(crate) content: Bytes,
    pub(crate) order: u64,
}

/// One instance and everything stored for it.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) status: InstanceStatus,
    pub(crate) input: Bytes,
    /// Ascending by sequence.
    pub(crate) checkpoints: Vec<Checkpoint>,
    pub(crate) signals: Vec<SignalRecord>,
    pub(crate) retries: BTreeSet<u32>,
}

#[derive(Debug)]
pub(crate) struct SignalRecord {
    pub(crate) signal: Signal,
    pub(crate) acked: bool,
}

/// A signal to enqueue.
#[derive(Debug, Default)]
pub(crate) struct NewSignal {
    pub(crate) kind: i32,
    pub(crate) custom_type: String,
    pub(crate) payload: Bytes,
    /// Caller-chosen id; sending the same id again returns it without a second signal.
    pub(crate) signal_id: String,
}

pub(crate) fn now() -> Timestamp {
    Timestamp::now()
}

pub(crate) fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} {id:?} not found"))
}

pub(crate) fn required(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

impl Tenant {
    pub(crate) fn next_order(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// The instance, after applying any wake-up that came due.
    pub(crate) fn instance(&mut self, id: &str) -> Result<&mut Instance, Status> {
        if id.is_empty() {
            return Err(required("instance_id"));
        }
        let instance = self
            .instances
            .get_mut(id)
            .ok_or_else(|| not_found("instance", id))?;
        instance.wake_if_due(SystemTime::now());
        Ok(instance)
    }

    /// Creates an instance record in `state`.
    pub(crate) fn create_instance(
        &mut self,
        tenant: &str,
        config: &ReferenceConfig,
        stored: &Arc<TenantBudget>,
        status: InstanceStatus,
        input: Bytes,
    ) -> Result<&mut Instance, Status> {
        if self.instances.len() >= config.max_instances_per_tenant {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant:?} holds {} instances, the most this server keeps",
                config.max_instances_per_tenant
            )));
        }
        let order = self.next_order();
        let id = status.instance_id.clone();
        let at = now();
        let status = InstanceStatus {
            tenant_id: tenant.to_owned(),
            created_at: Some(at),
            updated_at: Some(at),
            attempt: 1,
            ..status
        };
        Ok(match self.instances.entry(id) {
            Entry::Occupied(existing) => existing.into_mut(),
            Entry::Vacant(vacant) => {
                stored.reserve(tenant, input.len() as u64)?.keep();
                self.by_order.insert(order, vacant.key().clone());
                vacant.insert(Instance {
                    status,
                    input,
                    checkpoints: Vec::new(),
                    signals: Vec::new(),
                    retries: BTreeSet::new(),
                })
            }
        })
    }
}

impl Instance {
    pub(crate) fn state(&self) -> InstanceState {
        self.status.state()
    }

    pub(crate) fn is_final(&self) -> bool {
        matches!(
            self.state(),
            InstanceState::Completed | InstanceState::Failed | InstanceState::Cancelled
        )
    }

    /// Moves to `state`, stamping the times the status documents.
    pub(crate) fn set_state(&mut self, state: InstanceState) {
        let at = now();
        self.status.set_state(state);
        self.status.updated_at = Some(at);
        if state != InstanceState::Sleeping {
            self.status.wake_at = None;
        }
        if matches!(
            state,
            InstanceState::Completed | InstanceState::Failed | InstanceState::Cancelled
        ) {
            self.status.finished_at = Some(at);
        } else {
            self.status.finished_at = None;
        }
    }

    /// A durable sleep whose time has come leaves the instance PENDING, waiting for a
    /// process to register and resume it.
    fn wake_if_due(&mut self, now: SystemTime) {
        if self.state() != InstanceState::Sleeping {
            return;
        }
        let due = self
            .status
            .wake_at
            .and_then(|at| SystemTime::try_from(at).ok())
            .is_none_or(|at| at <= now);
        if due {
            self.set_state(InstanceState::Pending);
        }
    }

    pub(crate) fn latest_checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoints.last()
    }

    /// The named checkpoint, or the latest when `id` is empty (`Ok(None)` if there is
    /// none yet).
    pub(crate) fn checkpoint(&self, id: &str) -> Result<Option<&Checkpoint>, Status> {
        if id.is_empty() {
            return Ok(self.latest_checkpoint());
        }
        self.checkpoints
            .iter()
            .find(|c| c.summary.as_ref().is_some_and(|s| s.checkpoint_id == id))
            .map(Some)
            .ok_or_else(|| not_found("checkpoint", id))
    }

    pub(crate) fn summaries(&self) -> impl Iterator<Item = &CheckpointSummary> {
        self.checkpoints.iter().filter_map(|c| c.summary.as_ref())
    }

    pub(crate) fn pending_signals(&self) -> impl Iterator<Item = &Signal> {
        self.signals.iter().filter(|r| !r.acked).map(|r| &r.signal)
    }

    /// Enqueues a signal for the instance and returns its id.
    pub(crate) fn send_signal(
        &mut self,
        signal: NewSignal,
        max_pending: usize,
    ) -> Result<String, Status> {
        let kind = SignalKind::try_from(signal.kind).map_err(|_| {
            Status::invalid_argument(format!("kind {} is not a SignalKind", signal.kind))
        })?;
        match kind {
            SignalKind::Unspecified => {
                return Err(Status::invalid_argument(
                    "kind SIGNAL_KIND_UNSPECIFIED is not a signal",
                ));
            }
            SignalKind::Custom if signal.custom_type.is_empty() => {
                return Err(required("custom_type of a SIGNAL_KIND_CUSTOM signal"));
            }
            _ => {}
        }
        if !signal.signal_id.is_empty()
            && let Some(existing) = self
                .signals
                .iter()
                .find(|r| r.signal.signal_id == signal.signal_id)
        {
            // A retried send with the caller's id: the first one stands.
            return Ok(existing.signal.signal_id.clone());
        }
        if self.is_final() {
            return Err(Status::failed_precondition(format!(
                "instance {:?} is {} and takes no signals",
                self.status.instance_id,
                self.state().as_str_name()
            )));
        }
        if self.pending_signals().count() >= max_pending {
            return Err(Status::resource_exhausted(format!(
                "instance {:?} has {max_pending} unacknowledged signals, the most this server keeps",
                self.status.instance_id
            )));
        }
        let signal_id = if signal.signal_id.is_empty() {
            format!("sig-{}", self.signals.len() + 1)
        } else {
            signal.signal_id
        };
        self.signals.push(SignalRecord {
            signal: Signal {
                signal_id: signal_id.clone(),
                instance_id: self.status.instance_id.clone(),
                kind: kind as i32,
                custom_type: signal.custom_type,
                payload: signal.payload,
                sent_at: Some(now()),
            },
            acked: false,
        });
        Ok(signal_id)
    }

    /// The status as listings show it: without the output, to keep pages small.
    pub(crate) fn listed_status(&self) -> InstanceStatus {
        InstanceStatus {
            output: Bytes::new(),
            ..self.full_status()
        }
    }

    pub(crate) fn full_status(&self) -> InstanceStatus {
        InstanceStatus {
            last_checkpoint: self.summaries().last().cloned(),
            ..self.status.clone()
        }
    }
}

/// Checks `states` filter values of a listing request.
pub(crate) fn state_filter(states: &[i32]) -> Result<Vec<InstanceState>, Status> {
    states
        .iter()
        .map(|&s| {
            InstanceState::try_from(s).map_err(|_| {
                Status::new(
                    StatusCode::InvalidArgument,
                    format!("states holds {s}, which is not an InstanceState"),
                )
            })
        })
        .collect()
}

impl Tenant {
    /// One page of instances, newest first, filtered by state (any of `states`, or all
    /// when empty) and image (any when empty). Listings leave `output` empty.
    pub(crate) fn list_instances(
        &mut self,
        states: &[i32],
        image_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<InstanceStatus>, String), Status> {
        let states = state_filter(states)?;
        let after = crate::paging::parse_token(page_token)?;
        let size = crate::paging::page_size(page_size);
        let wake = SystemTime::now();
        let Tenant {
            by_order,
            instances,
            ..
        } = self;
        // Newest first from the token on, visiting only as far as the page reaches.
        let matching = by_order
            .range(..after.unwrap_or(u64::MAX))
            .rev()
            .filter_map(|(order, id)| {
                let instance = instances.get_mut(id)?;
                instance.wake_if_due(wake);
                let wanted = (states.is_empty() || states.contains(&instance.state()))
                    && (image_id.is_empty() || instance.status.image_id == image_id);
                wanted.then(|| (*order, instance.listed_status()))
            });
        Ok(crate::paging::page(matching, size))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn one_tenants_work_never_waits_for_another_tenants_lock() {
        let shared = Arc::new(Shared::new(ReferenceConfig::default(), Instant::now()));
        let (served, done) = std::sync::mpsc::channel();
        shared.with_tenant("acme", |_acme| {
            // While acme's data is locked (as by a long listing), globex is served.
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let instances = shared.with_tenant("globex", |t| t.instances.len());
                let _ = served.send(instances);
            });
            assert_eq!(
                done.recv_timeout(Duration::from_secs(5)),
                Ok(0),
                "globex waited for acme's lock"
            );
        });
    }

    #[test]
    fn listings_page_newest_first_through_the_order_index() {
        let config = ReferenceConfig::default();
        let stored = TenantBudget::new("stored", 1 << 20, 1 << 20);
        let mut tenant = Tenant::default();
        for n in 0..250 {
            let status = InstanceStatus {
                instance_id: format!("i{n}"),
                image_id: if n % 2 == 0 { "even" } else { "odd" }.into(),
                ..InstanceStatus::default()
            };
            tenant
                .create_instance("acme", &config, &stored, status, Bytes::new())
                .unwrap();
        }
        // Creating an existing id again adds nothing to the index.
        let again = InstanceStatus {
            instance_id: "i3".into(),
            ..InstanceStatus::default()
        };
        tenant
            .create_instance("acme", &config, &stored, again, Bytes::new())
            .unwrap();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = tenant.list_instances(&[], "odd", 40, &token).unwrap();
            seen.extend(page.into_iter().map(|s| s.instance_id));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        let expected: Vec<String> = (0..250)
            .rev()
            .filter(|n| n % 2 == 1)
            .map(|n| format!("i{n}"))
            .collect();
        assert_eq!(seen, expected);
    }
}
