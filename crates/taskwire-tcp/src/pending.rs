//! TLS handshakes in progress at a server: a budget of their own, apart from the
//! connection slots, where a new handshake pushes out the oldest one.
//!
//! A connection takes a slot only once its TLS handshake is done. Until then it is one of
//! at most `max_pending_handshakes`; when a new one arrives at a full budget the oldest is
//! dropped, so bare TCP connections that never send a ClientHello cannot keep a real
//! client out: to do so they would have to arrive faster than the budget per handshake
//! time (64 per millisecond on loopback), not merely sit there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub(crate) struct PendingHandshakes {
    capacity: usize,
    queue: Mutex<VecDeque<(u64, CancellationToken)>>,
    next: AtomicU64,
    evicted: AtomicU64,
}

/// One handshake in the budget, until dropped; [`evicted`](Self::evicted) completes if it
/// is pushed out.
#[derive(Debug)]
pub(crate) struct PendingHandshake {
    id: u64,
    token: CancellationToken,
    owner: Arc<PendingHandshakes>,
}

impl PendingHandshakes {
    pub(crate) fn new(capacity: usize) -> Arc<PendingHandshakes> {
        Arc::new(PendingHandshakes {
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Admits a handshake, pushing out the oldest if the budget is full.
    pub(crate) fn admit(self: &Arc<Self>) -> PendingHandshake {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut queue = self.queue.lock().expect("pending lock");
        while queue.len() >= self.capacity {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.cancel();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        queue.push_back((id, token.clone()));
        PendingHandshake {
            id,
            token,
            owner: Arc::clone(self),
        }
    }

    /// Handshakes pushed out so far.
    #[cfg(test)]
    fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

impl PendingHandshake {
    /// Completes when a newer handshake pushes this one out.
    pub(crate) async fn evicted(&self) {
        self.token.cancelled().await;
    }
}

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        let mut queue = self.owner.queue.lock().expect("pending lock");
        if let Some(at) = queue.iter().position(|(id, _)| *id == self.id) {
            queue.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_budget_pushes_out_the_oldest_and_finished_ones_leave() {
        let budget = PendingHandshakes::new(2);
        let first = budget.admit();
        let second = budget.admit();
        assert!(!first.token.is_cancelled());
        let third = budget.admit();
        assert!(first.token.is_cancelled(), "the oldest made room");
        assert!(!second.token.is_cancelled() && !third.token.is_cancelled());
        assert_eq!(budget.evicted(), 1);
        drop(second);
        let _fourth = budget.admit();
        assert!(
            !third.token.is_cancelled(),
            "a finished handshake freed its place"
        );
        assert_eq!(budget.evicted(), 1);
    }
}
