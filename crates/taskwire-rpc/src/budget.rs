//! A server-wide budget of bytes held on behalf of tenants, with a share per tenant.
//!
//! Bytes are reserved before they are held and given back when the [`Reservation`] is
//! dropped, so one tenant can fill at most its share and all tenants together at most
//! the budget; past either, [`TenantBudget::reserve`] refuses with `RESOURCE_EXHAUSTED`
//! naming the limit, and nothing was allocated for the refused bytes.
//!
//! The [`Router`](crate::Router) keeps one for request frames queued for handlers that
//! have not read them yet ([`Router::buffer_budget`](crate::Router::buffer_budget)); a
//! server can keep others for what it stores (the reference server does, for images and
//! checkpoints).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Status;

/// Default for [`TenantBudget::buffered_frames`]'s total: 512 MiB of request frames
/// queued for handlers, across all tenants.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 512 * 1024 * 1024;

/// Default for [`TenantBudget::buffered_frames`]'s share: 128 MiB per tenant.
pub const DEFAULT_MAX_BUFFERED_BYTES_PER_TENANT: u64 = 128 * 1024 * 1024;

/// Bytes held for all tenants against a total, and for each against its share.
///
/// ```
/// use taskwire_rpc::TenantBudget;
///
/// let budget = TenantBudget::new("stored", 300, 200);
/// let held = budget.reserve("acme", 150).unwrap();
/// let refused = budget.reserve("acme", 60).unwrap_err();
/// assert!(refused.message().contains("share of 200"), "{refused}");
/// drop(held);
/// assert_eq!(budget.held(), 0);
/// ```
#[derive(Debug)]
pub struct TenantBudget {
    what: &'static str,
    max_total: u64,
    max_per_tenant: u64,
    /// Bytes held for all tenants, and for each tenant holding any.
    held: Mutex<(u64, HashMap<Arc<str>, u64>)>,
}

impl TenantBudget {
    /// A budget of `max_total` bytes, at most `max_per_tenant` of them for one tenant.
    /// `what` names the bytes in refusals ("stored", "buffered").
    pub fn new(what: &'static str, max_total: u64, max_per_tenant: u64) -> Arc<TenantBudget> {
        Arc::new(TenantBudget {
            what,
            max_total,
            max_per_tenant,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// The budget a [`Router`](crate::Router) starts with for queued request frames:
    /// [`DEFAULT_MAX_BUFFERED_BYTES`] in all, [`DEFAULT_MAX_BUFFERED_BYTES_PER_TENANT`]
    /// for one tenant.
    pub fn buffered_frames() -> Arc<TenantBudget> {
        TenantBudget::new(
            "buffered",
            DEFAULT_MAX_BUFFERED_BYTES,
            DEFAULT_MAX_BUFFERED_BYTES_PER_TENANT,
        )
    }

    fn lock(&self) -> MutexGuard<'_, (u64, HashMap<Arc<str>, u64>)> {
        // The counters are consistent after every statement; a panic elsewhere while the
        // lock was held leaves nothing half-updated.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves `bytes` for `tenant`, or refuses with `RESOURCE_EXHAUSTED` naming the
    /// share or the total it would pass.
    pub fn reserve(self: &Arc<Self>, tenant: &str, bytes: u64) -> Result<Reservation, Status> {
        let mut held = self.lock();
        let (total, per_tenant) = &mut *held;
        let tenant_held = per_tenant.get(tenant).copied().unwrap_or(0);
        if tenant_held.saturating_add(bytes) > self.max_per_tenant {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant:?} holds {tenant_held} {what} bytes; {bytes} more would pass its share of {}",
                self.max_per_tenant,
                what = self.what,
            )));
        }
        if total.saturating_add(bytes) > self.max_total {
            return Err(Status::resource_exhausted(format!(
                "the server holds {total} {what} bytes for all tenants; {bytes} more would pass its budget of {}",
                self.max_total,
                what = self.what,
            )));
        }
        *total += bytes;
        let tenant: Arc<str> = match per_tenant.get_key_value(tenant) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(tenant),
        };
        *per_tenant.entry(Arc::clone(&tenant)).or_insert(0) += bytes;
        Ok(Reservation {
            budget: Arc::clone(self),
            tenant,
            bytes,
        })
    }

    /// Gives back `bytes` that `tenant` no longer holds (bytes of a reservation that was
    /// [kept](Reservation::keep)).
    pub fn release(&self, tenant: &str, bytes: u64) {
        let mut held = self.lock();
        let (total, per_tenant) = &mut *held;
        *total = total.saturating_sub(bytes);
        if let Some(tenant_held) = per_tenant.get_mut(tenant) {
            *tenant_held = tenant_held.saturating_sub(bytes);
            if *tenant_held == 0 {
                per_tenant.remove(tenant);
            }
        }
    }

    /// Bytes held for all tenants now.
    pub fn held(&self) -> u64 {
        self.lock().0
    }

    /// Bytes held for `tenant` now.
    pub fn held_by(&self, tenant: &str) -> u64 {
        self.lock().1.get(tenant).copied().unwrap_or(0)
    }

    /// The most bytes held for all tenants together.
    pub fn max_total(&self) -> u64 {
        self.max_total
    }

    /// The most bytes held for one tenant.
    pub fn max_per_tenant(&self) -> u64 {
        self.max_per_tenant
    }
}

/// Bytes reserved for one tenant; given back when dropped, unless [kept](Self::keep).
#[derive(Debug)]
#[must_use = "a reservation is given back as soon as it is dropped"]
pub struct Reservation {
    budget: Arc<TenantBudget>,
    tenant: Arc<str>,
    bytes: u64,
}

impl Reservation {
    /// The bytes stay counted after this reservation is gone, until the owner gives them
    /// back with [`TenantBudget::release`] (stored data outliving the call that stored it).
    pub fn keep(mut self) {
        self.bytes = 0;
    }

    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(&self.tenant, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_the_total_refuse_before_anything_is_held() {
        let budget = TenantBudget::new("stored", 300, 200);
        budget.reserve("acme", 150).unwrap().keep();
        let over_share = budget.reserve("acme", 60).unwrap_err();
        assert!(
            over_share.message().contains("share of 200"),
            "{over_share}"
        );
        let dropped = budget.reserve("globex", 100).unwrap();
        assert_eq!(budget.held(), 250);
        drop(dropped);
        assert_eq!(budget.held(), 150, "a reservation not kept is given back");
        assert_eq!(budget.held_by("globex"), 0);
        budget.reserve("globex", 150).unwrap().keep();
        let over_total = budget.reserve("other", 1).unwrap_err();
        assert!(
            over_total.message().contains("budget of 300"),
            "{over_total}"
        );
        budget.release("acme", 150);
        budget.reserve("other", 100).unwrap().keep();
        assert_eq!(budget.held(), 250);
        assert_eq!(budget.held_by("acme"), 0);
    }
}
