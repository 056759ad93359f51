//! Continuous numbering of what the SFU sends a viewer on one outgoing stream, whichever
//! publisher layer feeds it: sequence numbers that close up behind packets left out, and
//! VP8 picture ids and TL0PICIDX continued across a simulcast switch.

use crate::descriptor::Vp8Ids;

/// Continuous outgoing sequence numbers for incoming packets of whichever layer is sent:
/// `out = in + delta` for the current layer from `since` on.
#[derive(Debug, Clone, Copy)]
pub struct SeqMap {
    delta: i64,
    since: u64,
    last_in: Option<u64>,
    /// The extended number the next new packet gets.
    next_out: u64,
}

impl SeqMap {
    pub fn new(first_out: u16) -> SeqMap {
        SeqMap {
            delta: 0,
            since: u64::MAX,
            last_in: None,
            next_out: u64::from(first_out),
        }
    }

    /// The sequence number the next new packet gets.
    pub fn next(&self) -> u16 {
        self.next_out as u16
    }

    /// A new layer (or the first) starts with incoming packet `s`.
    pub fn switch(&mut self, s: u64) {
        self.delta = self.next_out as i64 - s as i64;
        self.since = s;
        self.last_in = None;
    }

    /// The outgoing extended number of incoming `s`: a new packet continues the sequence,
    /// a late one (a retransmission from the publisher) gets its place if it is known.
    pub fn map(&mut self, s: u64) -> Option<u64> {
        if s < self.since {
            return None;
        }
        let out = u64::try_from(s as i64 + self.delta).ok()?;
        match self.last_in {
            Some(last) if s <= last => (out + 1024 > self.next_out).then_some(out),
            _ => {
                self.last_in = Some(s);
                self.next_out = self.next_out.max(out + 1);
                Some(out)
            }
        }
    }

    /// Incoming `s` of the current layer is not sent (a temporal layer above the
    /// selection): the numbers close up behind it. Earlier packets that arrive late are
    /// then left out, as their place is no longer known.
    pub fn skip(&mut self, s: u64) {
        if s < self.since || self.last_in.is_some_and(|l| s <= l) {
            return;
        }
        self.delta -= 1;
        self.since = s + 1;
        self.last_in = Some(s);
    }
}

/// VP8 picture ids and TL0PICIDX continued across a simulcast switch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Vp8Map {
    pid_offset: u16,
    tl0_offset: u8,
    /// The last values sent.
    last: Option<(u16, u8)>,
    /// The offsets are to be recomputed at the next packet (a switch).
    reset: bool,
}

impl Vp8Map {
    /// A new layer starts: its ids continue from the last ones sent.
    pub fn switched(&mut self) {
        self.reset = true;
    }

    /// The values to write for `ids`, or `None` when the payload is sent as it is.
    pub fn map(&mut self, ids: &Vp8Ids) -> Option<(u16, u8)> {
        let pid = ids.picture_id.map(|(_, v, _)| v);
        let tl0 = ids.tl0_pic_idx.map(|(_, v)| v);
        if self.reset {
            self.reset = false;
            if let Some((last_pid, last_tl0)) = self.last {
                self.pid_offset = last_pid.wrapping_add(1).wrapping_sub(pid.unwrap_or(0));
                self.tl0_offset = last_tl0.wrapping_add(1).wrapping_sub(tl0.unwrap_or(0));
            }
        }
        let out = (
            pid.unwrap_or(0).wrapping_add(self.pid_offset) & 0x7fff,
            tl0.unwrap_or(0).wrapping_add(self.tl0_offset),
        );
        self.last = Some(out);
        (self.pid_offset != 0 || self.tl0_offset != 0).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_continue_across_switches_and_skips() {
        let mut m = SeqMap::new(100);
        m.switch(5000);
        assert_eq!(m.map(5000), Some(100));
        assert_eq!(m.map(5001), Some(101));
        // A lost packet (5002) arrives late: it gets its own place.
        assert_eq!(m.map(5003), Some(103));
        assert_eq!(m.map(5002), Some(102));
        // A temporal-layer packet left out: the next one closes the gap.
        m.skip(5004);
        assert_eq!(m.map(5005), Some(104));
        // A late packet from before the skip has no place any more.
        assert_eq!(m.map(5001), None);
        // Another layer's numbers continue the sequence.
        m.switch(70);
        assert_eq!(m.map(70), Some(105));
        assert_eq!(m.map(71), Some(106));
        assert_eq!(m.map(69), None, "from before the switch");
    }

    #[test]
    fn vp8_ids_continue_after_a_switch() {
        let ids = |pid: u16, tl0: u8| Vp8Ids {
            picture_id: Some((2, pid, true)),
            tl0_pic_idx: Some((4, tl0)),
        };
        let mut m = Vp8Map::default();
        assert_eq!(m.map(&ids(10, 3)), None, "sent as it is at first");
        assert_eq!(m.map(&ids(11, 3)), None);
        m.switched();
        assert_eq!(m.map(&ids(500, 90)), Some((12, 4)));
        assert_eq!(m.map(&ids(501, 90)), Some((13, 4)));
        // Wrapping at 15 bits.
        m.switched();
        assert_eq!(m.map(&ids(0x7fff, 0)), Some((14, 5)));
        assert_eq!(m.map(&ids(0, 1)), Some((15, 6)));
    }
}
