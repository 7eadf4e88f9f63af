//! Connection slots: a server-wide limit and a per-IP limit, released when a connection
//! ends. Shared by the transports.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts connections against a total and a per-address limit.
#[derive(Debug)]
pub struct ConnectionSlots {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl ConnectionSlots {
    /// Slots for at most `max_total` connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            max_total,
            max_per_ip,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a connection from `ip`, or `None` past either limit.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut state = self.state.lock().expect("slots lock");
        let (total, per_ip) = &mut *state;
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip || *total >= self.max_total {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *count += 1;
        *total += 1;
        Some(ConnectionSlot {
            slots: Arc::clone(self),
            ip,
        })
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.state.lock().expect("slots lock").0
    }
}

/// One connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Arc<ConnectionSlots>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut state = self.slots.state.lock().expect("slots lock");
        let (total, per_ip) = &mut *state;
        *total -= 1;
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_respect_both_limits_and_free_on_drop() {
        let slots = ConnectionSlots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.try_acquire(a).unwrap();
        let _second = slots.try_acquire(a).unwrap();
        assert!(slots.try_acquire(a).is_none(), "a third from one address");
        let _third = slots.try_acquire(b).unwrap();
        assert!(slots.try_acquire(b).is_none(), "a fourth in all");
        drop(first);
        assert_eq!(slots.in_use(), 2);
        assert!(slots.try_acquire(b).is_some(), "a freed slot is reusable");
    }
}
