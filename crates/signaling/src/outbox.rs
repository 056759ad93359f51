//! Outbound frames of one WebSocket connection: a queue the hub pushes serialized
//! frames into without blocking, drained in batches by the connection's writer task.
//! The queue is bounded by `[limits] max_queued_messages`; a push past the bound
//! reports an overflow so the hub can disconnect the client with a reason instead of
//! dropping frames silently.

use std::collections::VecDeque;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Queue capacity kept after a burst is drained.
pub const KEEP_CAPACITY: usize = 64;

/// How the writer should end the connection after the queued frames.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

struct Inner {
    frames: VecDeque<Utf8Bytes>,
    close: Option<CloseRequest>,
}

/// One connection's outbound queue.
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    limit: usize,
}

/// Result of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue is full: the client does not read fast enough.
    Overflow,
    /// The connection is closing; the frame was not queued.
    Closed,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                frames: VecDeque::new(),
                close: None,
            }),
            notify: Notify::new(),
            limit: limit.max(1),
        }
    }

    pub fn push(&self, frame: Utf8Bytes) -> Push {
        let mut g = self.inner.lock();
        if g.close.is_some() {
            return Push::Closed;
        }
        if g.frames.len() >= self.limit {
            return Push::Overflow;
        }
        g.frames.push_back(frame);
        drop(g);
        self.notify.notify_one();
        Push::Queued
    }

    /// Queue frames unconditionally (offline buffer hand-over, final frames).
    pub fn push_all(&self, frames: impl IntoIterator<Item = Utf8Bytes>) {
        let mut g = self.inner.lock();
        g.frames.extend(frames);
        drop(g);
        self.notify.notify_one();
    }

    /// Queue a last frame (ignoring the bound) and ask the writer to close afterwards.
    /// Returns false when a close was already requested.
    pub fn close_with(&self, last: Option<Utf8Bytes>, close: CloseRequest) -> bool {
        let mut g = self.inner.lock();
        if g.close.is_some() {
            return false;
        }
        if let Some(f) = last {
            g.frames.push_back(f);
        }
        g.close = Some(close);
        drop(g);
        self.notify.notify_one();
        true
    }

    /// Drop queued frames and ask the writer to close without sending more.
    pub fn abort(&self, close: CloseRequest) {
        let mut g = self.inner.lock();
        g.frames.clear();
        if g.close.is_none() {
            g.close = Some(close);
        }
        drop(g);
        self.notify.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.inner.lock().close.is_some()
    }

    /// Wait for frames; returns the batch and, when the queue is closing and now
    /// empty, the close request.
    pub async fn next_batch(&self, batch: &mut Vec<Utf8Bytes>) -> Option<CloseRequest> {
        loop {
            {
                let mut g = self.inner.lock();
                if !g.frames.is_empty() {
                    batch.extend(g.frames.drain(..));
                    // A burst grew the queue; give the memory back (thousands of idle
                    // connections would each keep it).
                    if g.frames.capacity() > KEEP_CAPACITY {
                        g.frames = VecDeque::new();
                    }
                    return None;
                }
                if let Some(c) = &g.close {
                    return Some(c.clone());
                }
            }
            self.notify.notified().await;
        }
    }

    /// Take the frames that were never written (when a connection dies).
    pub fn take_unsent(&self) -> VecDeque<Utf8Bytes> {
        std::mem::take(&mut self.inner.lock().frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_then_closes_after_the_last_frame() {
        let o = Outbox::new(2);
        assert_eq!(o.push("a".into()), Push::Queued);
        assert_eq!(o.push("b".into()), Push::Queued);
        assert_eq!(o.push("c".into()), Push::Overflow);
        assert!(o.close_with(
            Some("bye".into()),
            CloseRequest {
                code: 1000,
                reason: "x".into()
            }
        ));
        assert_eq!(o.push("d".into()), Push::Closed);
        let mut batch = Vec::new();
        assert!(o.next_batch(&mut batch).await.is_none());
        assert_eq!(batch.len(), 3);
        batch.clear();
        assert!(o.next_batch(&mut batch).await.is_some());
    }
}
