//! Reconcile slots: how many reconciles do their work at once (`2 × --max-concurrent-exchanges`,
//! at least 16). The controller runs more reconciles than that, so that a reconcile whose token
//! request has stalled (no answer for [`STALL`]: a hanging endpoint) gives its slot back while it
//! waits for the answer or the timeout; it takes a slot again to record the outcome. Hanging
//! endpoints therefore hold neither the budget of token requests nor the reconciles of others.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::decide::scheduling::{STALL, STALLED_TOTAL};

/// The slots of one process.
#[derive(Debug, Clone)]
pub struct Slots {
    work: Arc<Semaphore>,
    count: usize,
    budget: usize,
}

/// A reconcile's slot, held while it works.
#[derive(Debug)]
pub struct Slot {
    work: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slots {
    /// The slots for a budget of `budget` token requests.
    pub fn new(budget: usize) -> Slots {
        let count = budget.saturating_mul(2).max(16);
        Slots {
            work: Arc::new(Semaphore::new(count)),
            count,
            budget: budget.max(1),
        }
    }

    /// How many reconciles the controller runs at once: the working ones, and as many more as
    /// there may be stalled token requests (each waits without a slot) and woken clients.
    pub fn controller_concurrency(&self) -> u16 {
        let stalled = self.budget.saturating_mul(STALLED_TOTAL);
        u16::try_from(
            self.count
                .saturating_add(stalled)
                .saturating_add(self.budget),
        )
        .unwrap_or(u16::MAX)
    }

    /// Waits for a slot.
    pub async fn take(&self) -> Slot {
        let permit = self.work.clone().acquire_owned().await.ok();
        Slot {
            work: self.work.clone(),
            permit,
        }
    }
}

impl Slot {
    /// Awaits `request`; when it is still unanswered after [`STALL`], gives the slot back
    /// until it ends, then takes one again.
    pub async fn release_while_stalled<T>(&mut self, request: impl Future<Output = T>) -> T {
        let request = std::pin::pin!(request);
        let mut request = request;
        tokio::select! {
            out = &mut request => return out,
            () = tokio::time::sleep(STALL) => {}
        }
        self.permit = None;
        let out = request.await;
        self.permit = self.work.clone().acquire_owned().await.ok();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stalled_request_gives_its_slot_back_until_it_ends() {
        let slots = Slots::new(1);
        assert_eq!(slots.count, 16);
        let mut held: Vec<Slot> = Vec::new();
        for _ in 0..15 {
            held.push(slots.take().await);
        }
        let mut slot = slots.take().await;
        assert_eq!(slots.work.available_permits(), 0);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = tokio::spawn(async move {
            slot.release_while_stalled(rx).await.unwrap();
            slot
        });
        tokio::time::sleep(STALL + Duration::from_millis(100)).await;
        // Another reconcile works meanwhile.
        let other = tokio::time::timeout(Duration::from_secs(1), slots.take())
            .await
            .expect("the stalled reconcile's slot is free");
        drop(other);
        tx.send(()).unwrap();
        let slot = waiting.await.unwrap();
        assert!(slot.permit.is_some(), "a slot again to record the outcome");
        assert_eq!(slots.work.available_permits(), 0);
        // A quick request keeps its slot.
        drop(slot);
        let mut slot = slots.take().await;
        slot.release_while_stalled(async {}).await;
        assert!(slot.permit.is_some());
        assert_eq!(slots.work.available_permits(), 0);
    }
}
