//! Credit-based flow control of one connection, as the virtio specification defines it. Each
//! side tells the other, in every header, how big its receive buffer is (`buf_alloc`) and how
//! many bytes it has taken out of it so far (`fwd_cnt`, wrapping). A sender may have at most
//! `peer buf_alloc - (bytes sent - peer fwd_cnt)` bytes in flight.

/// The counters of both directions of one connection (all byte counts wrap at 2^32).
#[derive(Debug, Clone)]
pub struct Credit {
    /// The guest's receive buffer size, from its latest header.
    peer_buf_alloc: u32,
    /// Bytes the guest has consumed, from its latest header.
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    /// Our receive buffer (the connection's buffer toward the host socket).
    buf_alloc: u32,
    /// Bytes received from the guest.
    rx_cnt: u32,
    /// Bytes of those passed on to the host socket.
    fwd_cnt: u32,
    /// `fwd_cnt` as the guest last heard it.
    advertised_fwd_cnt: u32,
}

impl Credit {
    /// A connection whose buffer toward the host holds `buf_alloc` bytes; the guest has given
    /// no credit yet.
    pub fn new(buf_alloc: u32) -> Self {
        Credit {
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            buf_alloc,
            rx_cnt: 0,
            fwd_cnt: 0,
            advertised_fwd_cnt: 0,
        }
    }

    /// Takes the guest's `buf_alloc` and `fwd_cnt` from a header it sent.
    pub fn peer_says(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
    }

    /// Bytes the guest can take now. A guest claiming to have consumed more than it was sent
    /// gives no credit rather than a wrapped-around huge one.
    pub fn peer_free(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records `n` bytes sent to the guest (at most [`Credit::peer_free`]).
    pub fn sent(&mut self, n: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
    }

    /// Bytes received from the guest and not yet passed on.
    pub fn held(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// Records `n` bytes received from the guest; false (and nothing recorded) if they do not
    /// fit in the buffer, which means the guest ignored its credit.
    pub fn received(&mut self, n: u32) -> bool {
        let fits = u64::from(self.held()) + u64::from(n) <= u64::from(self.buf_alloc);
        if fits {
            self.rx_cnt = self.rx_cnt.wrapping_add(n);
        }
        fits
    }

    /// Records `n` bytes passed on to the host socket.
    pub fn forwarded(&mut self, n: u32) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
    }

    /// Whether the guest should hear about the room made since it last heard: once half the
    /// buffer has been passed on. A guest that has used all its credit holds at least that
    /// much unannounced room once the buffer has drained below half, so it never waits for
    /// ever.
    pub fn update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.advertised_fwd_cnt) >= self.buf_alloc / 2
    }

    /// Our `(buf_alloc, fwd_cnt)` for a header being sent; the guest now knows them.
    pub fn announce(&mut self) -> (u32, u32) {
        self.advertised_fwd_cnt = self.fwd_cnt;
        (self.buf_alloc, self.fwd_cnt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_gets_no_more_than_its_credit() {
        let mut c = Credit::new(1000);
        assert_eq!(c.peer_free(), 0, "no credit before the guest says anything");
        c.peer_says(4096, 0);
        assert_eq!(c.peer_free(), 4096);
        c.sent(4000);
        assert_eq!(c.peer_free(), 96);
        c.sent(96);
        assert_eq!(c.peer_free(), 0);
        c.peer_says(4096, 1000);
        assert_eq!(c.peer_free(), 1000);
        // A shrunken buffer with more in flight than it holds gives nothing.
        c.peer_says(1000, 1000);
        assert_eq!(c.peer_free(), 0);
        // A guest claiming to have consumed bytes never sent gives nothing either.
        c.peer_says(4096, 10_000);
        assert_eq!(c.peer_free(), 0);
    }

    #[test]
    fn counters_wrap_around() {
        let mut c = Credit::new(1000);
        c.peer_says(4096, u32::MAX - 10);
        c.sent(u32::MAX - 10);
        c.sent(100);
        assert_eq!(c.peer_free(), 4096 - 100);
        c.rx_cnt = u32::MAX - 5;
        c.fwd_cnt = u32::MAX - 5;
        c.advertised_fwd_cnt = u32::MAX - 5;
        assert!(c.received(600));
        assert_eq!(c.held(), 600);
        c.forwarded(600);
        assert_eq!(c.held(), 0);
        assert!(c.update_due());
    }

    #[test]
    fn the_guest_may_not_overfill_the_buffer() {
        let mut c = Credit::new(1000);
        assert!(c.received(600));
        assert!(!c.received(401), "past the buffer");
        assert_eq!(c.held(), 600, "a refused packet is not counted");
        assert!(c.received(400));
        c.forwarded(300);
        assert!(c.received(300));
        assert!(!c.received(1));
    }

    #[test]
    fn an_update_is_due_after_half_the_buffer_was_passed_on() {
        let mut c = Credit::new(1000);
        assert!(c.received(1000));
        c.forwarded(499);
        assert!(!c.update_due());
        c.forwarded(1);
        assert!(c.update_due());
        assert_eq!(c.announce(), (1000, 500));
        assert!(!c.update_due(), "announced");
    }
}
