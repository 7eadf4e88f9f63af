//! The bytes a reference server stores for its tenants (checkpoint state, instance input,
//! image content), against a server-wide budget with a share per tenant. Bytes are
//! reserved before they are kept, and an image upload reserves its declared size before
//! its first chunk is read, so a refusal costs no allocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use taskwire_rpc::Status;

#[derive(Debug)]
pub(crate) struct StoredBytes {
    max_total: u64,
    max_per_tenant: u64,
    /// Bytes held for all tenants, and for each.
    used: Mutex<(u64, HashMap<String, u64>)>,
}

/// Bytes reserved for one tenant; given back when dropped unless [`kept`](Self::keep).
#[derive(Debug)]
pub(crate) struct Reserved {
    owner: Arc<StoredBytes>,
    tenant: String,
    bytes: u64,
}

impl StoredBytes {
    pub(crate) fn new(max_total: u64, max_per_tenant: u64) -> Arc<StoredBytes> {
        Arc::new(StoredBytes {
            max_total,
            max_per_tenant,
            used: Mutex::new((0, HashMap::new())),
        })
    }

    /// Reserves `bytes` for `tenant`, or refuses with `RESOURCE_EXHAUSTED` naming the
    /// share or the budget it would pass.
    pub(crate) fn reserve(self: &Arc<Self>, tenant: &str, bytes: u64) -> Result<Reserved, Status> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_tenant) = &mut *used;
        let held = per_tenant.get(tenant).copied().unwrap_or(0);
        if held.saturating_add(bytes) > self.max_per_tenant {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant:?} stores {held} bytes; {bytes} more would pass its share of {}",
                self.max_per_tenant
            )));
        }
        if total.saturating_add(bytes) > self.max_total {
            return Err(Status::resource_exhausted(format!(
                "the server stores {total} bytes for all tenants; {bytes} more would pass its budget of {}",
                self.max_total
            )));
        }
        *total += bytes;
        *per_tenant.entry(tenant.to_owned()).or_insert(0) += bytes;
        Ok(Reserved {
            owner: Arc::clone(self),
            tenant: tenant.to_owned(),
            bytes,
        })
    }

    /// Gives back `bytes` that `tenant` no longer stores.
    pub(crate) fn release(&self, tenant: &str, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_tenant) = &mut *used;
        *total = total.saturating_sub(bytes);
        if let Some(held) = per_tenant.get_mut(tenant) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                per_tenant.remove(tenant);
            }
        }
    }

    /// Bytes held for all tenants.
    #[cfg(test)]
    fn total(&self) -> u64 {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Reserved {
    /// The bytes are now stored: they stay counted until released.
    pub(crate) fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.owner.release(&self.tenant, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_the_budget_refuse_before_anything_is_kept() {
        let stored = StoredBytes::new(300, 200);
        stored.reserve("acme", 150).unwrap().keep();
        let over_share = stored.reserve("acme", 60).unwrap_err();
        assert!(
            over_share.message().contains("share of 200"),
            "{over_share}"
        );
        let dropped = stored.reserve("globex", 100).unwrap();
        assert_eq!(stored.total(), 250);
        drop(dropped);
        assert_eq!(stored.total(), 150, "an unkept reservation is given back");
        stored.reserve("globex", 150).unwrap().keep();
        let over_budget = stored.reserve("other", 1).unwrap_err();
        assert!(
            over_budget.message().contains("budget of 300"),
            "{over_budget}"
        );
        stored.release("acme", 150);
        stored.reserve("other", 100).unwrap().keep();
        assert_eq!(stored.total(), 250);
    }
}
