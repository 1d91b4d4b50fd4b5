//! An 8254 programmable interval timer (ports 0x40-0x43) and the PC's system control port B
//! (0x61, channel 2's gate and output), for the software CPU. Counters run from the host's
//! monotonic clock at 1.193182 MHz; channel 0's rising output edges raise ISA IRQ 0 through a
//! [`DeadlineTimer`] the VMM provides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::BusDevice;
use crate::irq::InterruptLine;

/// First port of the PIT (channel 0); the device sees port `p` at offset `p - PIT_PORT`.
pub const PIT_PORT: u64 = 0x40;
/// Ports of the PIT: three channels and the mode/command register.
pub const PIT_PORTS: u64 = 4;
/// System control port B.
pub const PORT_B: u64 = 0x61;
/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// The shortest interrupt period channel 0 is allowed, in input ticks (about 100 us), so a
/// guest cannot flood the VMM with timer interrupts.
const MIN_IRQ_PERIOD_TICKS: u64 = 120;

/// A one-shot timer the VMM runs for the PIT: when `deadline` passes it calls
/// [`Pit::expire`].
pub trait DeadlineTimer: Send + Sync {
    /// Arms the timer for `deadline`, or disarms it.
    fn arm(&self, deadline: Option<Instant>);
}

/// Access mode of a counter's data port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Access {
    /// Low byte only.
    Low,
    /// High byte only.
    High,
    /// Low byte, then high byte.
    #[default]
    Word,
}

#[derive(Debug, Clone)]
struct Channel {
    mode: u8,
    access: Access,
    bcd: bool,
    /// The reload value (0 stands for 65536, or 10000 in BCD).
    reload: u16,
    /// Whether a count has been written since the mode was set.
    loaded: bool,
    /// Gate input (only channel 2's is wired).
    gate: bool,
    /// Ticks counted before `started` (while the gate was last high).
    ticks_before: u64,
    /// When counting last (re)started, if the gate is high.
    started: Option<Instant>,
    /// A partially written word: its low byte.
    write_low: Option<u8>,
    /// Reading the high byte of a word next.
    read_high: bool,
    /// A latched count, and whether its high byte is next.
    latch: Option<(u16, bool)>,
    /// A latched status byte.
    status: Option<u8>,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            mode: 0,
            access: Access::Word,
            bcd: false,
            reload: 0,
            loaded: false,
            gate: true,
            ticks_before: 0,
            started: None,
            write_low: None,
            read_high: false,
            latch: None,
            status: None,
        }
    }
}

fn ticks_between(from: Instant, to: Instant) -> u64 {
    let ns = to.saturating_duration_since(from).as_nanos();
    (ns * u128::from(PIT_HZ) / 1_000_000_000) as u64
}

/// The time `ticks` input ticks take, rounded up so that `ticks` have passed by then.
fn ticks_to_duration(ticks: u64) -> Duration {
    let ns = (u128::from(ticks) * 1_000_000_000).div_ceil(u128::from(PIT_HZ));
    Duration::from_nanos(ns as u64)
}

fn from_bcd(v: u16) -> u16 {
    (v & 0xf) + ((v >> 4) & 0xf) * 10 + ((v >> 8) & 0xf) * 100 + ((v >> 12) & 0xf) * 1000
}

fn to_bcd(v: u16) -> u16 {
    (v % 10) | ((v / 10 % 10) << 4) | ((v / 100 % 10) << 8) | ((v / 1000 % 10) << 12)
}

impl Channel {
    /// The count the reload value stands for.
    fn period(&self) -> u64 {
        match (self.reload, self.bcd) {
            (0, false) => 0x1_0000,
            (0, true) => 10_000,
            (n, true) => u64::from(from_bcd(n)).max(1),
            (n, false) => u64::from(n),
        }
    }

    /// Input ticks counted since the count was loaded (or the gate triggered it).
    fn elapsed(&self, now: Instant) -> Option<u64> {
        if !self.loaded {
            return None;
        }
        let running = self.started.map_or(0, |s| ticks_between(s, now));
        Some(self.ticks_before + running)
    }

    /// The counting element's value at `now`.
    fn count(&self, now: Instant) -> u16 {
        let Some(d) = self.elapsed(now) else {
            return self.reload;
        };
        let period = self.period();
        let value = match self.mode {
            2 => period - d % period,
            3 => period - (2 * d) % period,
            // Modes 0, 1, 4, 5 count down through zero and wrap.
            _ => (period + 0x1_0000 - d % 0x1_0000) % 0x1_0000,
        };
        let value = value as u16;
        if self.bcd {
            to_bcd(value % 10_000)
        } else {
            value
        }
    }

    /// The OUT pin at `now`.
    fn output(&self, now: Instant) -> bool {
        let Some(d) = self.elapsed(now) else {
            return self.mode != 0;
        };
        let period = self.period();
        match self.mode {
            0 => d >= period,
            1 => (self.started.is_none() && self.ticks_before == 0) || d >= period,
            2 => d % period != period - 1,
            3 => d % period < period.div_ceil(2),
            _ => d != period,
        }
    }

    /// The elapsed tick count of the next rising OUT edge after `d` ticks, if one will come.
    fn next_rising_edge(&self, d: u64) -> Option<u64> {
        let period = self.period();
        match self.mode {
            0 | 1 => (d < period).then_some(period),
            2 | 3 => {
                let step = period.max(MIN_IRQ_PERIOD_TICKS);
                Some((d / step + 1) * step)
            }
            _ => (d <= period).then_some(period + 1),
        }
    }

    fn status_byte(&self, now: Instant) -> u8 {
        let access = match self.access {
            Access::Low => 1,
            Access::High => 2,
            Access::Word => 3,
        };
        (u8::from(self.output(now)) << 7)
            | (u8::from(!self.loaded) << 6)
            | (access << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn set_mode(&mut self, control: u8) {
        let mode = (control >> 1) & 7;
        *self = Channel {
            mode: if mode >= 6 { mode - 4 } else { mode },
            access: match (control >> 4) & 3 {
                1 => Access::Low,
                2 => Access::High,
                _ => Access::Word,
            },
            bcd: control & 1 != 0,
            gate: self.gate,
            ..Channel::default()
        };
    }

    /// Loads a new count; counting starts now unless the mode waits for a gate trigger.
    fn load(&mut self, reload: u16, now: Instant) {
        self.reload = reload;
        self.loaded = true;
        self.ticks_before = 0;
        let waits_for_trigger = matches!(self.mode, 1 | 5);
        self.started = (self.gate && !waits_for_trigger).then_some(now);
    }

    fn set_gate(&mut self, gate: bool, now: Instant) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        if gate {
            if matches!(self.mode, 1 | 2 | 3 | 5) {
                self.ticks_before = 0;
            }
            self.started = Some(now);
        } else if let Some(started) = self.started.take() {
            if matches!(self.mode, 1 | 5) {
                // Gate does not stop modes 1 and 5 once triggered.
                self.started = Some(started);
            } else {
                self.ticks_before += ticks_between(started, now);
            }
        }
    }

    fn read(&mut self, now: Instant) -> u8 {
        if let Some(status) = self.status.take() {
            return status;
        }
        if let Some((value, high)) = self.latch {
            return match self.access {
                Access::Low => {
                    self.latch = None;
                    value as u8
                }
                Access::High => {
                    self.latch = None;
                    (value >> 8) as u8
                }
                Access::Word if !high => {
                    self.latch = Some((value, true));
                    value as u8
                }
                Access::Word => {
                    self.latch = None;
                    (value >> 8) as u8
                }
            };
        }
        let value = self.count(now);
        match self.access {
            Access::Low => value as u8,
            Access::High => (value >> 8) as u8,
            Access::Word => {
                self.read_high = !self.read_high;
                if self.read_high {
                    value as u8
                } else {
                    (value >> 8) as u8
                }
            }
        }
    }

    /// Takes a byte written to the data port; returns whether a whole count was loaded.
    fn write(&mut self, value: u8, now: Instant) -> bool {
        let reload = match self.access {
            Access::Low => u16::from(value),
            Access::High => u16::from(value) << 8,
            Access::Word => match self.write_low.take() {
                None => {
                    self.write_low = Some(value);
                    return false;
                }
                Some(low) => u16::from(low) | (u16::from(value) << 8),
            },
        };
        self.load(reload, now);
        true
    }
}

/// The three counters.
pub struct Pit {
    channels: [Channel; 3],
    irq: Arc<dyn InterruptLine>,
    timer: Arc<dyn DeadlineTimer>,
    /// Channel 0's next rising edge, in its elapsed ticks, if armed.
    next_edge: Option<u64>,
    /// Speaker data enable (port B bit 1).
    speaker: bool,
    /// Port B's refresh-request bit, toggled on each read.
    refresh: bool,
}

impl Pit {
    /// A PIT with no counts loaded, raising ISA IRQ 0 on `irq`, with its interrupts timed by
    /// `timer`.
    pub fn new(irq: Arc<dyn InterruptLine>, timer: Arc<dyn DeadlineTimer>) -> Self {
        Pit {
            channels: [Channel::default(), Channel::default(), Channel::default()],
            irq,
            timer,
            next_edge: None,
            speaker: false,
            refresh: false,
        }
    }

    /// Programs channel 0 as a PC BIOS leaves it: `mode` with reload value `reload`.
    pub fn set_bios_state(&mut self, mode: u8, reload: u16) {
        let now = Instant::now();
        self.channels[0].set_mode(0x30 | (mode << 1));
        self.channels[0].load(reload, now);
        self.schedule(now);
    }

    /// The timer armed by [`Pit::new`] expired: raises IRQ 0 if channel 0's edge is due and
    /// arms the timer for the next one.
    pub fn expire(&mut self, now: Instant) {
        let ch = &self.channels[0];
        if let (Some(edge), Some(d)) = (self.next_edge, ch.elapsed(now)) {
            if d >= edge {
                if let Err(e) = self.irq.trigger() {
                    log::warn!("PIT interrupt: {e}");
                }
            }
        }
        self.schedule(now);
    }

    /// Arms the timer for channel 0's next rising edge after `now`.
    fn schedule(&mut self, now: Instant) {
        let ch = &self.channels[0];
        let deadline = match (ch.started, ch.elapsed(now)) {
            (Some(started), Some(d)) => ch.next_rising_edge(d).map(|edge| {
                self.next_edge = Some(edge);
                started + ticks_to_duration(edge - ch.ticks_before)
            }),
            _ => None,
        };
        if deadline.is_none() {
            self.next_edge = None;
        }
        self.timer.arm(deadline);
    }

    fn control(&mut self, value: u8, now: Instant) {
        let select = usize::from(value >> 6);
        if select == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches status.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 && ch.latch.is_none() {
                    ch.latch = Some((ch.count(now), false));
                }
                if value & 0x10 == 0 && ch.status.is_none() {
                    ch.status = Some(ch.status_byte(now));
                }
            }
            return;
        }
        let ch = &mut self.channels[select];
        if value & 0x30 == 0 {
            if ch.latch.is_none() {
                ch.latch = Some((ch.count(now), false));
            }
            return;
        }
        ch.set_mode(value);
        if select == 0 {
            self.schedule(now);
        }
    }

    fn read_port_b(&mut self, now: Instant) -> u8 {
        self.refresh = !self.refresh;
        let ch2 = &self.channels[2];
        u8::from(ch2.gate)
            | (u8::from(self.speaker) << 1)
            | (u8::from(self.refresh) << 4)
            | (u8::from(ch2.output(now)) << 5)
    }

    fn write_port_b(&mut self, value: u8, now: Instant) {
        self.channels[2].set_gate(value & 1 != 0, now);
        self.speaker = value & 2 != 0;
    }
}

impl BusDevice for Pit {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let now = Instant::now();
        let value = match offset {
            0..=2 => self.channels[offset as usize].read(now),
            o if o == PORT_B - PIT_PORT => self.read_port_b(now),
            _ => return,
        };
        if let Some(byte) = data.first_mut() {
            *byte = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        let now = Instant::now();
        match offset {
            0..=2 => {
                let loaded = self.channels[offset as usize].write(value, now);
                if loaded && offset == 0 {
                    self.schedule(now);
                }
            }
            3 => self.control(value, now),
            o if o == PORT_B - PIT_PORT => self.write_port_b(value, now),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        irqs: AtomicUsize,
        armed: Mutex<Option<Instant>>,
    }

    impl InterruptLine for Recorder {
        fn trigger(&self) -> std::io::Result<()> {
            self.irqs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    impl DeadlineTimer for Recorder {
        fn arm(&self, deadline: Option<Instant>) {
            *self.armed.lock().unwrap() = deadline;
        }
    }

    fn pit() -> (Pit, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (Pit::new(rec.clone(), rec.clone()), rec)
    }

    #[test]
    fn rate_generator_counts_down_and_interrupts_each_period() {
        let (mut pit, rec) = pit();
        let t0 = Instant::now();
        pit.control(0x34, t0);
        assert!(!pit.channels[0].write(0x9c, t0));
        assert!(pit.channels[0].write(0x2e, t0));
        pit.schedule(t0);
        let period = ticks_to_duration(0x2e9c);
        let deadline = rec.armed.lock().unwrap().expect("armed");
        assert!(deadline.duration_since(t0).abs_diff(period) < Duration::from_micros(2));

        let mid = t0 + period / 2;
        let count = pit.channels[0].count(mid);
        assert!(
            (0x2e9c / 2 - 2..=0x2e9c / 2 + 2).contains(&count),
            "{count:#x}"
        );

        pit.expire(deadline);
        assert_eq!(rec.irqs.load(Ordering::SeqCst), 1);
        let next = rec.armed.lock().unwrap().expect("re-armed");
        assert!(next.duration_since(deadline).abs_diff(period) < Duration::from_micros(2));
    }

    #[test]
    fn latch_and_read_back_freeze_the_count() {
        let (mut pit, _) = pit();
        let t0 = Instant::now();
        pit.control(0xb0, t0);
        pit.channels[2].write(0xff, t0);
        pit.channels[2].write(0xff, t0);
        let later = t0 + Duration::from_millis(10);
        pit.control(0x80, later);
        let expected = 0xffff - ticks_between(t0, later) as u16;
        let low = pit.channels[2].read(later + Duration::from_millis(5));
        let high = pit.channels[2].read(later + Duration::from_millis(5));
        assert_eq!(u16::from(low) | (u16::from(high) << 8), expected);

        pit.control(0xe8, later);
        let status = pit.channels[2].read(later);
        assert_eq!(status & 0x3f, 0x30, "mode 0, word access, binary");
    }

    #[test]
    fn one_shot_on_channel_2_shows_on_port_b_and_stops_with_the_gate() {
        let (mut pit, _) = pit();
        let t0 = Instant::now();
        pit.write_port_b(0, t0);
        pit.control(0xb0, t0);
        pit.channels[2].write(100, t0);
        pit.channels[2].write(0, t0);
        let late = t0 + Duration::from_millis(1);
        assert_eq!(pit.channels[2].count(late), 100, "gate low: not counting");
        pit.write_port_b(1, late);
        assert_eq!(pit.read_port_b(late) & 0x20, 0, "OUT low while counting");
        let done = late + ticks_to_duration(101);
        assert_ne!(
            pit.read_port_b(done) & 0x20,
            0,
            "OUT high at terminal count"
        );
        let a = pit.read_port_b(done) & 0x10;
        let b = pit.read_port_b(done) & 0x10;
        assert_ne!(a, b, "refresh bit toggles");
    }

    #[test]
    fn square_wave_and_bcd() {
        let (mut pit, _) = pit();
        let t0 = Instant::now();
        pit.control(0x37, t0);
        pit.channels[0].write(0x00, t0);
        pit.channels[0].write(0x10, t0);
        assert_eq!(pit.channels[0].period(), 1000);
        let quarter = t0 + ticks_to_duration(250);
        assert!(pit.channels[0].output(quarter));
        let three_quarters = t0 + ticks_to_duration(750);
        assert!(!pit.channels[0].output(three_quarters));
        let count = from_bcd(pit.channels[0].count(quarter));
        assert!((495..=505).contains(&count), "{count}");
    }

    #[test]
    fn fast_periods_are_limited() {
        let (mut pit, rec) = pit();
        let t0 = Instant::now();
        pit.control(0x34, t0);
        pit.channels[0].write(2, t0);
        pit.channels[0].write(0, t0);
        pit.schedule(t0);
        let deadline = rec.armed.lock().unwrap().unwrap();
        assert!(deadline.duration_since(t0) >= ticks_to_duration(MIN_IRQ_PERIOD_TICKS));
    }
}
