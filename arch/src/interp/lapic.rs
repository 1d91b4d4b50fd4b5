//! The local APIC of a software vCPU, and the inbox through which other threads (IOAPIC,
//! other vCPUs' IPIs, the 8259, timers) post interrupts to it.
//!
//! The register page follows the xAPIC layout at IA32_APIC_BASE. The timer runs in one-shot,
//! periodic and TSC-deadline modes off the TSC clock; when it is armed the vCPU tells a
//! [`TimerQueue`], which posts [`Inbox::TIMER`] at the deadline. Interrupts are accepted at
//! block boundaries, which are instruction boundaries.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::time::Clock;

/// Interrupts and signals waiting for a vCPU to look at them, and the APIC's addressing
/// (ID, logical destination) that senders match against.
pub struct Inbox {
    pending: AtomicBool,
    irr: [AtomicU64; 4],
    events: AtomicU32,
    sipi_vector: AtomicU8,
    id: u32,
    ldr: AtomicU32,
    dfr: AtomicU32,
    sleep: Mutex<()>,
    wake: Condvar,
}

impl Inbox {
    /// The inbox of the APIC with ID `id`.
    pub fn new(id: u32) -> Self {
        Inbox {
            pending: AtomicBool::new(false),
            irr: Default::default(),
            events: AtomicU32::new(0),
            sipi_vector: AtomicU8::new(0),
            id,
            ldr: AtomicU32::new(0),
            dfr: AtomicU32::new(0xffff_ffff),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// The APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether a message to `dest` in logical (or physical) destination mode targets this
    /// APIC.
    pub fn matches(&self, dest: u32, logical: bool) -> bool {
        if !logical {
            return dest == 0xff || dest == self.id;
        }
        let ldr = self.ldr.load(Ordering::SeqCst) >> 24;
        if self.dfr.load(Ordering::SeqCst) >> 28 == 0xf {
            dest & ldr != 0
        } else {
            // Cluster model: high nibble cluster, low nibble members.
            dest == 0xff || ((dest >> 4) == (ldr >> 4) && dest & ldr & 0xf != 0)
        }
    }

    /// NMI.
    pub const NMI: u32 = 1;
    /// INIT.
    pub const INIT: u32 = 2;
    /// STARTUP IPI (vector in `sipi_vector`).
    pub const SIPI: u32 = 4;
    /// The 8259's INTR line rose (LINT0 in ExtINT mode).
    pub const EXTINT: u32 = 8;
    /// The local timer's deadline passed.
    pub const TIMER: u32 = 16;
    /// Nothing to deliver, but look at the stop flag (or other VMM state).
    pub const KICK: u32 = 32;

    /// Requests fixed interrupt `vector`.
    pub fn post_vector(&self, vector: u8) {
        self.irr[usize::from(vector >> 6)].fetch_or(1 << (vector & 63), Ordering::SeqCst);
        self.notify();
    }

    /// Posts `event` (one of the constants above).
    pub fn post(&self, event: u32) {
        self.events.fetch_or(event, Ordering::SeqCst);
        self.notify();
    }

    /// Posts a STARTUP IPI with `vector`.
    pub fn post_sipi(&self, vector: u8) {
        self.sipi_vector.store(vector, Ordering::SeqCst);
        self.post(Self::SIPI);
    }

    fn notify(&self) {
        self.pending.store(true, Ordering::SeqCst);
        let _guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Makes the vCPU look at its inbox between blocks (translated code stops), with nothing
    /// to deliver and without waking it from HLT.
    pub fn attend(&self) {
        self.pending.store(true, Ordering::SeqCst);
    }

    /// The flag behind [`Inbox::is_pending`], for translated code that polls it.
    pub fn pending_flag(&self) -> &AtomicBool {
        &self.pending
    }

    /// Whether anything was posted since the last [`Inbox::take`].
    #[inline(always)]
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Takes everything posted: requested vectors and events.
    pub fn take(&self) -> ([u64; 4], u32) {
        self.pending.store(false, Ordering::SeqCst);
        let irr = [0, 1, 2, 3].map(|i| self.irr[i].swap(0, Ordering::SeqCst));
        (irr, self.events.swap(0, Ordering::SeqCst))
    }

    /// The vector of the last STARTUP IPI.
    pub fn sipi_vector(&self) -> u8 {
        self.sipi_vector.load(Ordering::SeqCst)
    }

    /// Blocks until something is posted or `until` passes (or, with None, indefinitely).
    pub fn wait(&self, until: Option<Instant>) {
        let mut guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        while !self.pending.load(Ordering::SeqCst) {
            match until {
                None => {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return;
                    }
                    guard = self
                        .wake
                        .wait_timeout(guard, t - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

/// Schedules a vCPU's local-timer interrupt: at `deadline`, post [`Inbox::TIMER`] to it.
pub trait TimerQueue: Send + Sync {
    /// Arms (Some) or disarms (None) the timer of vCPU `cpu`.
    fn arm(&self, cpu: usize, deadline: Option<Instant>);
}

/// Where an APIC sends inter-processor interrupts.
pub trait IpiBus: Send + Sync {
    /// Delivers an IPI described by an ICR value (destination in bits 56..63 of `icr`) from
    /// the APIC with ID `source`.
    fn send_ipi(&self, source: u32, icr: u64);
}

/// Where the CPU gets the vector of an ExtINT interrupt (the 8259's INTA cycle).
pub trait ExtIntController: Send + Sync {
    /// Acknowledges the highest-priority request and returns its vector, if any.
    fn acknowledge(&self) -> Option<u8>;
}

// Register offsets.
const ID: u32 = 0x20;
const VERSION: u32 = 0x30;
const TPR: u32 = 0x80;
const APR: u32 = 0x90;
const PPR: u32 = 0xa0;
const EOI: u32 = 0xb0;
const LDR: u32 = 0xd0;
const DFR: u32 = 0xe0;
const SVR: u32 = 0xf0;
const ISR: u32 = 0x100;
const TMR: u32 = 0x180;
const IRR: u32 = 0x200;
const ESR: u32 = 0x280;
const LVT_CMCI: u32 = 0x2f0;
const ICR_LO: u32 = 0x300;
const ICR_HI: u32 = 0x310;
const LVT_TIMER: u32 = 0x320;
const LVT_ERROR: u32 = 0x370;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3e0;

const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLED: u32 = 1 << 8;
/// Version 0x14, 7 LVT entries (max index 6).
const VERSION_VALUE: u32 = 0x0006_0014;
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;
/// The shortest period of the periodic timer, in TSC ticks (100 us, as the PIT's): a guest
/// that programs a tinier one gets interrupts at this rate instead of a host thread spinning.
const MIN_PERIOD_TICKS: u64 = super::time::TSC_KHZ / 10;

/// Index of the timer entry in the LVT array (timer, thermal, perf, LINT0, LINT1, error).
const LVT_TIMER_INDEX: usize = 0;
/// Index of LINT0.
const LVT_LINT0_INDEX: usize = 3;

/// One local APIC.
pub struct LocalApic {
    cpu: usize,
    inbox: Arc<Inbox>,
    ipi: Option<Arc<dyn IpiBus>>,
    timers: Option<Arc<dyn TimerQueue>>,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    esr: u32,
    isr: [u64; 4],
    irr: [u64; 4],
    tmr: [u64; 4],
    lvt: [u32; 6],
    lvt_cmci: u32,
    icr: u64,
    timer_initial: u32,
    timer_divide: u32,
    /// TSC value when the one-shot/periodic count was loaded.
    timer_start: u64,
    /// TSC value at which the timer next fires (any mode), if armed.
    timer_deadline: Option<u64>,
    tsc_deadline: u64,
    /// Cached: some vector in IRR has priority above PPR.
    deliverable: bool,
}

fn set_bit(v: &mut [u64; 4], vector: u32, on: bool) {
    let w = &mut v[(vector >> 6) as usize];
    if on {
        *w |= 1 << (vector & 63);
    } else {
        *w &= !(1 << (vector & 63));
    }
}

fn highest(v: &[u64; 4]) -> Option<u32> {
    (0..4)
        .rev()
        .find_map(|i| (v[i] != 0).then(|| (i as u32) * 64 + 63 - v[i].leading_zeros()))
}

impl LocalApic {
    /// The APIC of vCPU `cpu`, addressed through `inbox`, in its reset state.
    pub fn new(cpu: usize, inbox: Arc<Inbox>) -> Self {
        LocalApic {
            cpu,
            inbox,
            ipi: None,
            timers: None,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            esr: 0,
            isr: [0; 4],
            irr: [0; 4],
            tmr: [0; 4],
            lvt: [LVT_MASKED; 6],
            lvt_cmci: LVT_MASKED,
            icr: 0,
            timer_initial: 0,
            timer_divide: 0,
            timer_start: 0,
            timer_deadline: None,
            tsc_deadline: 0,
            deliverable: false,
        }
    }

    /// Connects the APIC to the other APICs and to the timer service.
    pub fn connect(&mut self, ipi: Arc<dyn IpiBus>, timers: Arc<dyn TimerQueue>) {
        self.ipi = Some(ipi);
        self.timers = Some(timers);
    }

    /// The inbox other threads post to.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Whether the APIC is software-enabled.
    pub fn enabled(&self) -> bool {
        self.svr & SVR_ENABLED != 0
    }

    /// Whether LINT0 passes 8259 interrupts (ExtINT, unmasked).
    pub fn accepts_extint(&self) -> bool {
        let lint0 = self.lvt[LVT_LINT0_INDEX];
        !self.enabled() || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == 7)
    }

    fn ppr(&self) -> u32 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if (self.tpr >> 4) >= (isrv >> 4) {
            self.tpr & 0xff
        } else {
            isrv & 0xf0
        }
    }

    fn update_deliverable(&mut self) {
        self.deliverable = match highest(&self.irr) {
            Some(v) => (v & 0xf0) > (self.ppr() & 0xf0),
            None => false,
        };
    }

    /// Whether an interrupt is ready for delivery (subject to RFLAGS.IF).
    #[inline(always)]
    pub fn has_deliverable(&self) -> bool {
        self.deliverable
    }

    /// Merges vectors posted to the inbox into IRR.
    pub fn accept_posted(&mut self, irr: [u64; 4]) {
        for (mine, posted) in self.irr.iter_mut().zip(irr) {
            *mine |= posted;
        }
        self.update_deliverable();
    }

    /// Moves the highest deliverable vector from IRR to ISR and returns it.
    pub fn acknowledge(&mut self) -> Option<u8> {
        if !self.deliverable {
            return None;
        }
        let v = highest(&self.irr)?;
        set_bit(&mut self.irr, v, false);
        set_bit(&mut self.isr, v, true);
        self.update_deliverable();
        Some(v as u8)
    }

    /// TPR as CR8 sees it (priority class, 4 bits).
    pub fn cr8(&self) -> u64 {
        u64::from(self.tpr >> 4)
    }

    /// Writes CR8.
    pub fn set_cr8(&mut self, value: u64) {
        self.tpr = ((value & 0xf) << 4) as u32;
        self.update_deliverable();
    }

    /// Reads the 32-bit register at `offset` in the APIC page.
    pub fn read(&self, offset: u32, clock: &Clock) -> u32 {
        let idx = |base: u32| ((offset - base) / 0x10) as usize;
        match offset {
            ID => self.inbox.id << 24,
            VERSION => VERSION_VALUE,
            TPR => self.tpr,
            APR => 0,
            PPR => self.ppr(),
            LDR => self.ldr,
            DFR => self.dfr,
            SVR => self.svr,
            ISR..=0x170 => word(&self.isr, idx(ISR)),
            TMR..=0x1f0 => word(&self.tmr, idx(TMR)),
            IRR..=0x270 => word(&self.irr, idx(IRR)),
            ESR => self.esr,
            LVT_CMCI => self.lvt_cmci,
            ICR_LO => self.icr as u32,
            ICR_HI => (self.icr >> 32) as u32,
            LVT_TIMER..=LVT_ERROR => self.lvt[idx(LVT_TIMER)],
            TIMER_INITIAL => self.timer_initial,
            TIMER_CURRENT => self.timer_current(clock),
            TIMER_DIVIDE => self.timer_divide,
            _ => 0,
        }
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write(&mut self, offset: u32, value: u32, clock: &Clock) {
        match offset {
            TPR => {
                self.tpr = value & 0xff;
                self.update_deliverable();
            }
            EOI => self.eoi(),
            LDR => {
                self.ldr = value & 0xff00_0000;
                self.inbox.ldr.store(self.ldr, Ordering::SeqCst);
            }
            DFR => {
                self.dfr = value | 0x0fff_ffff;
                self.inbox.dfr.store(self.dfr, Ordering::SeqCst);
            }
            SVR => {
                self.svr = value & 0x13ff;
                if !self.enabled() {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            ESR => self.esr = 0,
            LVT_CMCI => self.lvt_cmci = value & 0x1_07ff,
            ICR_LO => {
                self.icr = (self.icr & !0xffff_ffff) | u64::from(value & !(1 << 12));
                if let Some(bus) = &self.ipi {
                    bus.send_ipi(self.inbox.id, self.icr);
                }
            }
            ICR_HI => self.icr = (self.icr & 0xffff_ffff) | (u64::from(value & 0xff00_0000) << 32),
            LVT_TIMER..=LVT_ERROR => {
                let i = ((offset - LVT_TIMER) / 0x10) as usize;
                let mut v = value & 0x7_17ff;
                if !self.enabled() {
                    v |= LVT_MASKED;
                }
                let old_mode = self.timer_mode();
                self.lvt[i] = v;
                if i == LVT_TIMER_INDEX && self.timer_mode() != old_mode {
                    self.timer_deadline = None;
                    self.tsc_deadline = 0;
                    self.arm(clock);
                }
            }
            TIMER_INITIAL if self.timer_mode() != TIMER_TSC_DEADLINE => {
                self.timer_initial = value;
                self.timer_start = clock.ticks();
                self.timer_deadline =
                    (value != 0).then(|| self.timer_start.wrapping_add(self.period()));
                self.arm(clock);
            }
            TIMER_DIVIDE => self.timer_divide = value & 0xb,
            _ => {}
        }
    }

    fn eoi(&mut self) {
        if let Some(v) = highest(&self.isr) {
            set_bit(&mut self.isr, v, false);
            set_bit(&mut self.tmr, v, false);
        }
        self.update_deliverable();
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt[LVT_TIMER_INDEX] >> 17) & 3
    }

    fn divisor(&self) -> u64 {
        let d = (self.timer_divide & 3) | ((self.timer_divide >> 1) & 4);
        if d == 7 {
            1
        } else {
            2 << d
        }
    }

    /// Ticks from loading the count to the interrupt: the count times the divisor, and in
    /// periodic mode at least [`MIN_PERIOD_TICKS`].
    fn period(&self) -> u64 {
        let ticks = u64::from(self.timer_initial) * self.divisor();
        if self.timer_mode() == TIMER_PERIODIC {
            ticks.max(MIN_PERIOD_TICKS)
        } else {
            ticks
        }
    }

    fn timer_current(&self, clock: &Clock) -> u32 {
        if self.timer_mode() == TIMER_TSC_DEADLINE || self.timer_initial == 0 {
            return 0;
        }
        let elapsed = clock.ticks().saturating_sub(self.timer_start);
        let (initial, period) = (u128::from(self.timer_initial), self.period());
        let elapsed = match self.timer_mode() {
            TIMER_PERIODIC => elapsed % period,
            _ => elapsed.min(period),
        };
        // The count falls evenly over the (possibly lengthened) period.
        (initial - u128::from(elapsed) * initial / u128::from(period)) as u32
    }

    /// IA32_TSC_DEADLINE.
    pub fn tsc_deadline(&self) -> u64 {
        self.tsc_deadline
    }

    /// Writes IA32_TSC_DEADLINE (`tsc_offset` maps guest TSC to the clock's ticks).
    pub fn set_tsc_deadline(&mut self, value: u64, tsc_offset: u64, clock: &Clock) {
        if self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        self.tsc_deadline = value;
        self.timer_deadline = (value != 0).then(|| value.wrapping_sub(tsc_offset));
        self.arm(clock);
    }

    fn arm(&self, clock: &Clock) {
        if let Some(t) = &self.timers {
            t.arm(
                self.cpu,
                self.timer_deadline.and_then(|d| clock.instant_at(d)),
            );
        }
    }

    /// Handles [`Inbox::TIMER`]: raises the timer interrupt if its deadline passed and
    /// rearms a periodic timer.
    pub fn timer_expired(&mut self, clock: &Clock) {
        let Some(deadline) = self.timer_deadline else {
            return;
        };
        let now = clock.ticks();
        if now < deadline {
            // Early wake-up: keep waiting.
            self.arm(clock);
            return;
        }
        let lvt = self.lvt[LVT_TIMER_INDEX];
        match self.timer_mode() {
            TIMER_PERIODIC if self.timer_initial != 0 => {
                let period = self.period();
                let mut next = deadline.wrapping_add(period);
                if next <= now {
                    next = now + period - (now - deadline) % period;
                }
                self.timer_start = next - period;
                self.timer_deadline = Some(next);
                self.arm(clock);
            }
            TIMER_TSC_DEADLINE => {
                self.tsc_deadline = 0;
                self.timer_deadline = None;
            }
            _ => self.timer_deadline = None,
        }
        if lvt & LVT_MASKED == 0 {
            set_bit(&mut self.irr, lvt & 0xff, true);
            self.update_deliverable();
        }
    }

    /// The TSC value at which the timer fires next, if armed.
    pub fn timer_deadline(&self) -> Option<u64> {
        self.timer_deadline
    }

    /// Resets the APIC as INIT does (the ID and base are kept).
    pub fn init_reset(&mut self) {
        let (cpu, inbox, ipi, timers) = (
            self.cpu,
            self.inbox.clone(),
            self.ipi.take(),
            self.timers.take(),
        );
        inbox.ldr.store(0, Ordering::SeqCst);
        inbox.dfr.store(0xffff_ffff, Ordering::SeqCst);
        *self = LocalApic::new(cpu, inbox);
        self.ipi = ipi;
        self.timers = timers;
    }
}

fn word(v: &[u64; 4], n: usize) -> u32 {
    (v[n / 2] >> (32 * (n % 2))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apic() -> LocalApic {
        let mut a = LocalApic::new(0, Arc::new(Inbox::new(0)));
        a.write(SVR, 0x1ff, &Clock::default());
        a
    }

    #[test]
    fn priority_follows_tpr_and_isr() {
        let c = Clock::default();
        let mut a = apic();
        a.accept_posted([1 << 0x31, 0, 0, 0]);
        assert!(a.has_deliverable());
        a.write(TPR, 0x40, &c);
        assert!(!a.has_deliverable(), "vector 0x31 is below TPR class 4");
        a.write(TPR, 0, &c);
        assert_eq!(a.acknowledge(), Some(0x31));
        assert_eq!(a.read(ISR + 0x10, &c), 1 << (0x31 - 32));
        a.write(EOI, 0, &c);
        assert_eq!(a.read(ISR + 0x10, &c), 0);
    }

    #[test]
    fn logical_flat_and_physical_destinations() {
        let c = Clock::default();
        let inbox = Arc::new(Inbox::new(2));
        let mut a = LocalApic::new(2, inbox.clone());
        a.write(LDR, 0x0400_0000, &c);
        assert!(inbox.matches(0x04, true));
        assert!(!inbox.matches(0x02, true));
        assert!(inbox.matches(2, false) && inbox.matches(0xff, false) && !inbox.matches(1, false));
    }

    #[test]
    fn one_shot_timer_counts_down_and_fires() {
        let c = Clock::default();
        let mut a = apic();
        a.write(TIMER_DIVIDE, 0xb, &c); // divide by 1
        a.write(LVT_TIMER, 0xec, &c);
        a.write(TIMER_INITIAL, 1000, &c);
        assert!(a.read(TIMER_CURRENT, &c) <= 1000);
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_eq!(a.read(TIMER_CURRENT, &c), 0);
        a.timer_expired(&c);
        assert_eq!(a.acknowledge(), Some(0xec));
        assert!(a.timer_deadline().is_none());
    }

    /// Records the host instants the APIC arms its timer for.
    #[derive(Default)]
    struct ArmedAt(std::sync::Mutex<Vec<Option<Instant>>>);

    impl TimerQueue for ArmedAt {
        fn arm(&self, _cpu: usize, deadline: Option<Instant>) {
            self.0.lock().unwrap().push(deadline);
        }
    }

    fn apic_with_timer_on(clock: &Clock) -> (LocalApic, Arc<ArmedAt>) {
        let armed = Arc::new(ArmedAt::default());
        let mut a = LocalApic::new(0, Arc::new(Inbox::new(0)));
        a.connect(Arc::new(NoIpis), armed.clone());
        a.write(SVR, 0x1ff, clock);
        a.write(TIMER_DIVIDE, 0xb, clock); // divide by 1
        (a, armed)
    }

    struct NoIpis;

    impl IpiBus for NoIpis {
        fn send_ipi(&self, _source: u32, _icr: u64) {}
    }

    #[test]
    fn timers_arm_for_the_right_instant_after_a_century_of_uptime() {
        for hours in [5, 6, 100 * 365 * 24] {
            let c = Clock::with_uptime(std::time::Duration::from_secs(hours * 3600));
            let (mut a, armed) = apic_with_timer_on(&c);
            a.write(LVT_TIMER, 0xec, &c);
            let before = Instant::now();
            a.write(TIMER_INITIAL, 2_000_000, &c); // 2 ms at 1 GHz
            let at = armed.0.lock().unwrap().last().copied().flatten().unwrap();
            let wait = at.duration_since(before);
            assert!(
                wait >= std::time::Duration::from_millis(2)
                    && wait < std::time::Duration::from_millis(3),
                "{hours} h: armed {wait:?} ahead"
            );
            assert!(a.read(TIMER_CURRENT, &c) <= 2_000_000);
            assert!(a.read(TIMER_CURRENT, &c) > 1_000_000, "{hours} h");
        }
    }

    #[test]
    fn a_tiny_periodic_timer_fires_no_faster_than_the_minimum_period() {
        let c = Clock::default();
        let (mut a, armed) = apic_with_timer_on(&c);
        a.write(LVT_TIMER, 0xec | (TIMER_PERIODIC << 17), &c);
        a.write(TIMER_INITIAL, 1, &c);
        let first = a.timer_deadline().unwrap();
        assert!(first - c.ticks() <= MIN_PERIOD_TICKS);
        std::thread::sleep(std::time::Duration::from_millis(1));
        a.timer_expired(&c);
        let next = a.timer_deadline().unwrap();
        assert!(next > c.ticks(), "rearmed in the future, not in a loop");
        assert!(next - first >= MIN_PERIOD_TICKS);
        assert_eq!(a.acknowledge(), Some(0xec));
        assert_eq!(a.read(TIMER_CURRENT, &c), 1);
        assert!(matches!(armed.0.lock().unwrap().last(), Some(Some(_))));
    }

    #[test]
    fn inbox_wakes_a_waiter() {
        let inbox = Arc::new(Inbox::new(0));
        let waiter = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                inbox.wait(None);
                inbox.take()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        inbox.post_vector(0x41);
        let (irr, events) = waiter.join().unwrap();
        assert_eq!(irr[1], 1 << 1);
        assert_eq!(events, 0);
    }
}
