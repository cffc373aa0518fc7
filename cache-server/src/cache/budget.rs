//! A ceiling on the memory all uploads together may hold.
//!
//! Each upload buffers a bounded amount (a frame being hashed and
//! compressed, a part being filled, the parts in flight to storage), but
//! two hundred of them at once would still add up to gigabytes. Every
//! write reserves what it can hold at most before reading its body; when
//! the budget is spent, new uploads wait, their clients held back by TCP
//! flow control, until earlier ones finish. Memory stays flat however many
//! clients push at once.

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::blob::format::FRAME_SIZE;

/// Reservations are counted in these units.
const UNIT: u64 = 1024 * 1024;

/// Default budget: 512 MiB.
pub const DEFAULT_UPLOAD_MEMORY: u64 = 512 * UNIT;

/// The shared upload memory budget.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: Semaphore,
    total_units: u32,
    per_upload_units: u32,
}

impl MemoryBudget {
    /// A budget of `total` bytes, for uploads that hold at most `per_upload`
    /// bytes each (their parts in flight plus a frame or two).
    pub fn new(total: u64, per_upload: u64) -> Self {
        let per_upload_units = units(per_upload + 2 * FRAME_SIZE as u64);
        // At least one upload of the largest kind always fits.
        let total_units = units(total).max(per_upload_units);
        Self {
            permits: Semaphore::new(total_units as usize),
            total_units,
            per_upload_units,
        }
    }

    /// Waits until an upload whose body is `plain_length` bytes (when known
    /// and not compressed) fits, and reserves it until the permit drops.
    pub async fn reserve(&self, plain_length: Option<u64>) -> SemaphorePermit<'_> {
        let wanted = plain_length
            .map(|length| units(length + 2 * FRAME_SIZE as u64))
            .unwrap_or(self.per_upload_units)
            .min(self.per_upload_units);
        self.permits
            .acquire_many(wanted)
            .await
            .expect("the upload memory budget is never closed")
    }

    /// Bytes reserved right now.
    pub fn reserved(&self) -> u64 {
        u64::from(self.total_units - self.permits.available_permits() as u32) * UNIT
    }
}

fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u64::from(u32::MAX >> 4)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn uploads_wait_once_the_budget_is_spent_and_go_on_when_it_frees() {
        let budget = std::sync::Arc::new(MemoryBudget::new(64 * UNIT, 24 * UNIT));
        let first = budget.reserve(None).await;
        let second = budget.reserve(Some(30 * UNIT)).await;
        assert_eq!(budget.reserved(), 52 * UNIT);
        let small = budget.reserve(Some(1000)).await;
        assert_eq!(budget.reserved(), 55 * UNIT);
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let _third = budget.reserve(None).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a third large upload went over budget"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("it goes on once room frees")
            .unwrap();
        drop((second, small));
        assert_eq!(budget.reserved(), 0);
    }
}
