//! Outgoing UDP datagrams collected into runs per destination and sent with one system call
//! each (UDP GSO through quinn-udp where the kernel has it): a video frame leaves the SFU as
//! several equal-sized packets to each subscriber, so a run is one `sendmsg` instead of one
//! `sendto` per packet. The [`Outbox`] keeps a run open for every destination of one
//! wake-up, since packets are forwarded to all subscribers in turn.

use std::io;
use std::net::SocketAddr;

use std::net::UdpSocket;

use quinn_udp::{Transmit, UdpSocketState};

/// Most bytes in one run (the kernel's GSO limit is 64 KiB).
const MAX_RUN_BYTES: usize = 60 * 1024;

/// The run being collected: datagrams of `segment` bytes to `destination`, the last one
/// possibly shorter (which ends the run). Datagrams are written straight into `buf` (which
/// only grows, so it is not cleared per datagram); `used` bytes of it are the run.
#[derive(Debug, Default)]
pub(crate) struct Run {
    destination: Option<SocketAddr>,
    segment: usize,
    count: usize,
    ended: bool,
    buf: Vec<u8>,
    used: usize,
}

impl Run {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Add one datagram for `to` of at most `max` bytes, written by `fill` (which returns
    /// its length, or `None` for nothing to send) into the run's buffer; its length. The run
    /// is sent first when the datagram cannot join it (a failure there loses that run, as
    /// the network would, and is only logged).
    pub fn send_with(
        &mut self,
        socket: &UdpSocket,
        state: &UdpSocketState,
        to: SocketAddr,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        let full = self.ended
            || self.count >= state.max_gso_segments()
            || self.used + max > MAX_RUN_BYTES
            || self.destination != Some(to);
        if !self.is_empty() && full {
            self.flush(socket, state);
        }
        let start = self.used;
        if self.buf.len() < start + max {
            self.buf.resize(start + max, 0);
        }
        let n = fill(&mut self.buf[start..start + max]).filter(|n| *n <= max)?;
        if !self.is_empty() && n > self.segment {
            // Longer than the run's datagrams: the run goes first, this one starts the next.
            log_failure(self.send_used(socket, state, start));
            self.buf.copy_within(start..start + n, 0);
            self.reset();
        }
        if self.is_empty() {
            self.destination = Some(to);
            self.segment = n;
        } else if n < self.segment {
            self.ended = true;
        }
        self.used += n;
        self.count += 1;
        Some(n)
    }

    /// Queue `data` for `to` (see [`Run::send_with`]).
    #[cfg(test)]
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        state: &UdpSocketState,
        to: SocketAddr,
        data: &[u8],
    ) -> io::Result<usize> {
        self.send_with(socket, state, to, data.len(), |b| {
            b.copy_from_slice(data);
            Some(data.len())
        });
        Ok(data.len())
    }

    /// Send the first `len` bytes collected as the run (lost on a full socket buffer, as on
    /// the network).
    fn send_used(&self, socket: &UdpSocket, state: &UdpSocketState, len: usize) -> io::Result<()> {
        let Some(to) = self.destination else {
            return Ok(());
        };
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: &self.buf[..len],
            segment_size: (self.count > 1).then_some(self.segment),
            src_ip: None,
        };
        // Straight to the non-blocking socket: the worker never waits for writability (a
        // full buffer drops the run), so tokio's readiness is not involved.
        state.try_send(socket.into(), &t)
    }

    fn reset(&mut self) {
        self.used = 0;
        self.count = 0;
        self.ended = false;
        self.destination = None;
    }

    /// Send what is collected (a failure loses it, as the network would, and is logged).
    pub fn flush(&mut self, socket: &UdpSocket, state: &UdpSocketState) {
        log_failure(self.send_used(socket, state, self.used));
        self.reset();
    }
}

fn log_failure(r: io::Result<()>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "SFU send failed");
    }
}

/// Runs open at once at most; the oldest is sent when another destination comes.
const MAX_OPEN_RUNS: usize = 256;

/// Emptied runs kept for their buffers.
const MAX_FREE_RUNS: usize = 64;

/// One open run per destination until [`Outbox::flush`].
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    open: Vec<Run>,
    free: Vec<Run>,
}

impl Outbox {
    /// Queue a datagram of at most `max` bytes for `to`, written by `fill` (see
    /// [`Run::send_with`]): into that destination's open run, or a new run.
    pub fn send_with<'a>(
        &mut self,
        socket_for: impl Fn(SocketAddr) -> (&'a UdpSocket, &'a UdpSocketState),
        to: SocketAddr,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        let (socket, state) = socket_for(to);
        if let Some(run) = self
            .open
            .iter_mut()
            .rev()
            .find(|r| r.destination == Some(to))
        {
            return run.send_with(socket, state, to, max, fill);
        }
        if self.open.len() >= MAX_OPEN_RUNS {
            let mut oldest = self.open.remove(0);
            if let Some(d) = oldest.destination {
                let (s, st) = socket_for(d);
                oldest.flush(s, st);
            }
            self.recycle(oldest);
        }
        let mut run = self.free.pop().unwrap_or_default();
        let sent = run.send_with(socket, state, to, max, fill);
        if run.is_empty() {
            self.recycle(run);
        } else {
            self.open.push(run);
        }
        sent
    }

    /// Queue `data` for `to` (see [`Outbox::send_with`]).
    pub fn send<'a>(
        &mut self,
        socket_for: impl Fn(SocketAddr) -> (&'a UdpSocket, &'a UdpSocketState),
        to: SocketAddr,
        data: &[u8],
    ) -> usize {
        self.send_with(socket_for, to, data.len(), |b| {
            b.copy_from_slice(data);
            Some(data.len())
        });
        data.len()
    }

    fn recycle(&mut self, run: Run) {
        if self.free.len() < MAX_FREE_RUNS {
            self.free.push(run);
        }
    }

    /// Send every open run (a failure drops that run, as the network would).
    pub fn flush<'a>(
        &mut self,
        socket_for: impl Fn(SocketAddr) -> (&'a UdpSocket, &'a UdpSocketState),
    ) {
        while let Some(mut run) = self.open.pop() {
            if let Some(d) = run.destination {
                let (s, st) = socket_for(d);
                run.flush(s, st);
            }
            self.recycle(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_equal_datagrams_arrives_as_separate_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let to = rx.local_addr().expect("addr");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
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
        run.flush(&tx, &state);
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

    #[test]
    fn the_outbox_keeps_one_run_per_destination() {
        let rx: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        for r in &rx {
            r.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .expect("timeout");
        }
        let to: Vec<SocketAddr> = rx.iter().map(|r| r.local_addr().expect("addr")).collect();
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = UdpSocketState::new((&tx).into()).expect("state");
        let mut out = Outbox::default();
        // Packets of two frames forwarded to two subscribers in turn.
        for (i, len) in [900usize, 900, 400].iter().enumerate() {
            for d in &to {
                out.send(|_| (&tx, &state), *d, &vec![i as u8; *len]);
            }
        }
        assert_eq!(out.open.len(), 2);
        assert!(out.open.iter().all(|r| r.count == 3));
        out.flush(|_| (&tx, &state));
        assert!(out.open.is_empty());
        let mut buf = [0u8; 2048];
        for r in &rx {
            let got: Vec<(usize, u8)> = (0..3)
                .map(|_| {
                    let n = r.recv(&mut buf).expect("a datagram");
                    (n, buf[0])
                })
                .collect();
            assert_eq!(got, vec![(900, 0), (900, 1), (400, 2)]);
        }
    }
}
