//! The queue of buffers (each one or more whole frames) towards one stream client, bounded
//! in bytes rather than in buffers, so relayed data is dropped (replies wait) once a client
//! is that far behind instead of piling up in memory and in latency.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// Bytes queued towards one stream client at most (the kernel's send buffer comes on top).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Buffers queued at most (each at least one frame).
const QUEUE_BUFFERS: usize = 4096;

/// Why a buffer was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

/// The sending side; cloned by every producer of the connection's frames.
#[derive(Clone)]
pub struct WriteTx {
    tx: mpsc::Sender<Vec<u8>>,
    budget: Arc<Semaphore>,
}

/// The writer's side: hands back the bytes it took.
pub struct WriteRx {
    rx: mpsc::Receiver<Vec<u8>>,
    budget: Arc<Semaphore>,
}

pub fn channel() -> (WriteTx, WriteRx) {
    let (tx, rx) = mpsc::channel(QUEUE_BUFFERS);
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
    (
        WriteTx {
            tx,
            budget: budget.clone(),
        },
        WriteRx { rx, budget },
    )
}

/// What a buffer costs of the budget (a buffer larger than the budget takes all of it).
fn cost(buf: &[u8]) -> u32 {
    buf.len().clamp(1, QUEUE_BYTES) as u32
}

impl WriteTx {
    /// Queues `buf` if there is room now.
    pub fn try_send(&self, buf: Vec<u8>) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        let permit = self
            .budget
            .try_acquire_many(cost(&buf))
            .map_err(|_| Refused::Full)?;
        match self.tx.try_send(buf) {
            Ok(()) => {
                permit.forget();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refused::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Closed),
        }
    }

    /// Queues `buf`, waiting for room; `Err` when the writer is gone.
    pub async fn send(&self, buf: Vec<u8>) -> Result<(), Refused> {
        let permit = tokio::select! {
            p = self.budget.acquire_many(cost(&buf)) => p.map_err(|_| Refused::Closed)?,
            _ = self.tx.closed() => return Err(Refused::Closed),
        };
        self.tx.send(buf).await.map_err(|_| Refused::Closed)?;
        permit.forget();
        Ok(())
    }
}

impl WriteRx {
    /// The next buffer; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let buf = self.rx.recv().await?;
        self.budget.add_permits(cost(&buf) as usize);
        Some(buf)
    }

    /// The next buffer if one is queued.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        let buf = self.rx.try_recv().ok()?;
        self.budget.add_permits(cost(&buf) as usize);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_bytes() {
        let (tx, mut rx) = channel();
        assert_eq!(tx.try_send(vec![0; QUEUE_BYTES - 10]), Ok(()));
        assert_eq!(tx.try_send(vec![0; 11]), Err(Refused::Full));
        assert_eq!(tx.try_send(vec![0; 10]), Ok(()));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(QUEUE_BYTES - 10));
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(10));
        // A buffer over the whole budget still goes, alone.
        assert_eq!(tx.send(vec![0; QUEUE_BYTES * 2]).await, Ok(()));
        assert_eq!(tx.try_send(vec![1]), Err(Refused::Full));
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(QUEUE_BYTES * 2));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.try_send(vec![1]), Err(Refused::Closed));
        assert_eq!(tx.send(vec![1]).await, Err(Refused::Closed));
    }
}
