//! Byte buffers reused for packets that cross a channel: datagrams from the in-process TURN
//! server to the worker, and ICE-TCP frames between the worker and a connection's reader
//! and writer tasks. A buffer goes back once its packet is handled, so steady media
//! allocates nothing per packet (the hot-path rule).

use std::sync::Mutex;

/// Buffers kept for reuse at most: more than are in flight while the worker keeps up.
const POOL_BUFFERS: usize = 512;

/// Buffers larger than this are not kept (media packets are far smaller).
pub(crate) const POOL_BUFFER_BYTES: usize = 4096;

/// Free buffers; shared by the threads and tasks that pass packets to each other.
#[derive(Debug, Default)]
pub(crate) struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// An empty buffer, reused when one is free.
    pub fn take(&self) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut free| free.pop());
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(1500));
        buf.clear();
        buf
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_of(&self, data: &[u8]) -> Vec<u8> {
        let mut buf = self.take();
        buf.extend_from_slice(data);
        buf
    }

    /// A buffer of `len` zero bytes, to read into.
    pub fn zeroed(&self, len: usize) -> Vec<u8> {
        let mut buf = self.take();
        buf.resize(len, 0);
        buf
    }

    /// Hand a buffer back for the next packet (one that grew too big is freed instead).
    pub fn put_back(&self, buf: Vec<u8>) {
        if buf.capacity() > POOL_BUFFER_BYTES {
            return;
        }
        if let Ok(mut free) = self.0.lock()
            && free.len() < POOL_BUFFERS
        {
            free.push(buf);
        }
    }

    /// How many buffers are free now.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.0.lock().map_or(0, |f| f.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_handed_back_is_reused_empty_and_a_big_one_is_not_kept() {
        let pool = BufferPool::default();
        let a = pool.copy_of(b"first");
        let ptr = a.as_ptr();
        pool.put_back(a);
        assert_eq!(pool.free(), 1);
        let b = pool.copy_of(b"2nd");
        assert_eq!(b.as_slice(), b"2nd", "only the new bytes");
        assert_eq!(b.as_ptr(), ptr, "the buffer was not reused");
        pool.put_back(b);
        let z = pool.zeroed(3);
        assert_eq!((z.as_slice(), z.as_ptr()), (&[0u8; 3][..], ptr));
        pool.put_back(vec![0; POOL_BUFFER_BYTES + 1]);
        assert_eq!(pool.free(), 0);
        for _ in 0..POOL_BUFFERS + 10 {
            pool.put_back(Vec::with_capacity(16));
        }
        assert_eq!(pool.free(), POOL_BUFFERS, "the pool is bounded");
    }
}
