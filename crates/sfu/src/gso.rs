//! Outgoing UDP datagrams collected into runs for one destination and sent with one system
//! call each (UDP GSO through quinn-udp where the kernel has it): a video frame leaves the
//! SFU as several equal-sized packets to the same subscriber back to back, so a run is one
//! `sendmsg` instead of one `sendto` per packet.

use std::io;
use std::net::SocketAddr;

use quinn_udp::{Transmit, UdpSocketState};
use tokio::net::UdpSocket;

/// Most bytes in one run (the kernel's GSO limit is 64 KiB).
const MAX_RUN_BYTES: usize = 60 * 1024;

/// The run being collected: datagrams of `segment` bytes to `destination`, the last one
/// possibly shorter (which ends the run).
#[derive(Debug, Default)]
pub(crate) struct Run {
    destination: Option<SocketAddr>,
    segment: usize,
    count: usize,
    ended: bool,
    buf: Vec<u8>,
}

impl Run {
    /// Whether `len` bytes to `to` can join this run.
    fn fits(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.destination == Some(to)
            && !self.ended
            && len <= self.segment
            && self.count < max_segments
            && self.buf.len() + len <= MAX_RUN_BYTES
    }

    /// Add one datagram; the caller flushed first unless it `fits`.
    fn push(&mut self, to: SocketAddr, data: &[u8]) {
        if self.count == 0 {
            self.destination = Some(to);
            self.segment = data.len();
        } else if data.len() < self.segment {
            self.ended = true;
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Where the collected datagrams go.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.destination
    }

    /// Queue `data` for `to` on `socket`, sending the run before if it cannot join.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        state: &UdpSocketState,
        to: SocketAddr,
        data: &[u8],
    ) -> io::Result<usize> {
        let mut result = Ok(());
        if !self.is_empty() && !self.fits(to, data.len(), state.max_gso_segments()) {
            result = self.flush(socket, state);
        }
        self.push(to, data);
        result.map(|_| data.len())
    }

    /// Send what is collected (lost on a full socket buffer, as on the network).
    pub fn flush(&mut self, socket: &UdpSocket, state: &UdpSocketState) -> io::Result<()> {
        let Some(to) = self.destination else {
            return Ok(());
        };
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: &self.buf,
            segment_size: (self.count > 1).then_some(self.segment),
            src_ip: None,
        };
        // Straight to the non-blocking socket: the worker never waits for writability (a
        // full buffer drops the run), so tokio's readiness is not involved.
        let r = state.try_send(socket.into(), &t);
        self.buf.clear();
        self.count = 0;
        self.ended = false;
        self.destination = None;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_of_equal_datagrams_arrives_as_separate_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let to = rx.local_addr().expect("addr");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let state = UdpSocketState::new((&tx).into()).expect("state");
        let mut run = Run::default();
        // Three of 1000 bytes and a short one: one run; then another destination's.
        for (i, len) in [1000usize, 1000, 1000, 300].iter().enumerate() {
            run.send(&tx, &state, to, &vec![i as u8; *len])
                .expect("queued");
        }
        assert_eq!(run.count, 4);
        // A datagram after the short one starts a new run (the first is sent).
        run.send(&tx, &state, to, &[9u8; 1000]).expect("queued");
        assert_eq!(run.count, 1);
        run.flush(&tx, &state).expect("sent");
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..5 {
            let n = rx.recv(&mut buf).expect("a datagram");
            got.push((n, buf[0]));
        }
        assert_eq!(
            got,
            vec![(1000, 0), (1000, 1), (1000, 2), (300, 3), (1000, 9)]
        );
        assert!(run.is_empty());
    }
}
