//! The MC146818-style CMOS real-time clock at ports 0x70/0x71, reading the host's UTC time.
//!
//! Time registers follow the data mode (BCD or binary) and hour mode (12/24) the guest selects
//! in status register B; a guest that sets the time keeps its own offset from the host clock.
//! The update-in-progress bit is never set: every read sees a consistent time. The other
//! 114 bytes are plain CMOS RAM.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// First I/O port (index), followed by the data port.
pub const RTC_PORT: u64 = 0x70;
/// Ports the device occupies.
pub const RTC_PORTS: u64 = 2;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_C: u8 = 0x0c;
const STATUS_D: u8 = 0x0d;
/// Century, where the ACPI FADT says it is.
pub const CENTURY: u8 = 0x32;

const B_24_HOUR: u8 = 1 << 1;
const B_BINARY: u8 = 1 << 2;
const D_VALID: u8 = 1 << 7;

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: u32,
}

/// Days since 1970-01-01 to a civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A civil date to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn from_unix(secs: i64) -> DateTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    DateTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
        weekday: ((days + 4).rem_euclid(7) + 1) as u32,
    }
}

fn to_unix(t: &DateTime) -> i64 {
    days_from_civil(t.year, t.month, t.day) * 86_400
        + i64::from(t.hour) * 3600
        + i64::from(t.minute) * 60
        + i64::from(t.second)
}

/// A wall clock: seconds since the Unix epoch.
pub type WallClock = Box<dyn Fn() -> i64 + Send>;

/// The host's wall clock.
fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The CMOS RTC.
pub struct Rtc {
    index: u8,
    ram: [u8; 128],
    /// Guest time minus wall-clock time, in seconds.
    offset: i64,
    clock: WallClock,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

impl Rtc {
    /// An RTC showing the host's time, in BCD with a 24-hour clock, as firmware leaves it.
    pub fn new() -> Self {
        Self::with_clock(Box::new(host_now))
    }

    /// An RTC that runs from `clock` instead of the host's wall clock.
    pub fn with_clock(clock: WallClock) -> Self {
        let mut ram = [0u8; 128];
        ram[usize::from(STATUS_A)] = 0x26;
        ram[usize::from(STATUS_B)] = B_24_HOUR;
        ram[usize::from(STATUS_D)] = D_VALID;
        Rtc {
            index: 0,
            ram,
            offset: 0,
            clock,
        }
    }

    fn encode(&self, v: u32) -> u8 {
        if self.ram[usize::from(STATUS_B)] & B_BINARY != 0 {
            v as u8
        } else {
            ((v / 10) << 4 | (v % 10)) as u8
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.ram[usize::from(STATUS_B)] & B_BINARY != 0 {
            u32::from(v)
        } else {
            u32::from(v >> 4) * 10 + u32::from(v & 0xf)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.ram[usize::from(STATUS_B)] & B_24_HOUR != 0 {
            return self.encode(hour);
        }
        let pm = hour >= 12;
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if pm { 0x80 } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.ram[usize::from(STATUS_B)] & B_24_HOUR != 0 {
            return self.decode(v);
        }
        let h = self.decode(v & 0x7f) % 12;
        if v & 0x80 != 0 {
            h + 12
        } else {
            h
        }
    }

    fn now(&self) -> DateTime {
        from_unix((self.clock)() + self.offset)
    }

    fn read_register(&mut self, reg: u8) -> u8 {
        let t = self.now();
        match reg {
            SECONDS => self.encode(t.second),
            MINUTES => self.encode(t.minute),
            HOURS => self.encode_hour(t.hour),
            WEEKDAY => self.encode(t.weekday),
            DAY => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode(t.year.rem_euclid(100) as u32),
            CENTURY => self.encode(t.year.div_euclid(100) as u32),
            STATUS_A => self.ram[usize::from(STATUS_A)] & 0x7f,
            STATUS_C => std::mem::take(&mut self.ram[usize::from(STATUS_C)]),
            r => self.ram[usize::from(r & 0x7f)],
        }
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        let time_reg = matches!(
            reg,
            SECONDS | MINUTES | HOURS | DAY | MONTH | YEAR | CENTURY
        );
        if !time_reg {
            match reg {
                STATUS_C | STATUS_D => {}
                r => self.ram[usize::from(r & 0x7f)] = value,
            }
            return;
        }
        let mut t = self.now();
        match reg {
            SECONDS => t.second = self.decode(value).min(59),
            MINUTES => t.minute = self.decode(value).min(59),
            HOURS => t.hour = self.decode_hour(value).min(23),
            DAY => t.day = self.decode(value).clamp(1, 31),
            MONTH => t.month = self.decode(value).clamp(1, 12),
            YEAR => t.year = t.year.div_euclid(100) * 100 + i64::from(self.decode(value) % 100),
            _ => t.year = i64::from(self.decode(value)) * 100 + t.year.rem_euclid(100),
        }
        self.offset = to_unix(&t) - (self.clock)();
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = if offset == 0 {
            self.index
        } else {
            self.read_register(self.index & 0x7f)
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset == 0 {
            // Bit 7 is the NMI mask on PCs; the index is the rest.
            self.index = v & 0x7f;
        } else {
            self.write_register(self.index, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(0, &[reg]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    fn write(rtc: &mut Rtc, reg: u8, v: u8) {
        rtc.write(0, &[reg]);
        rtc.write(1, &[v]);
    }

    #[test]
    fn calendar_conversion_round_trips() {
        for secs in [
            0i64,
            951_782_400,
            1_709_164_800,
            4_102_444_799,
            1_795_651_200,
        ] {
            assert_eq!(to_unix(&from_unix(secs)), secs);
        }
        let t = from_unix(951_782_400); // 2000-02-29 00:00:00, a Tuesday
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 3));
    }

    /// An RTC whose wall clock reads 2031-12-31 23:59:58 (a Wednesday) plus what the
    /// returned cell holds, so a test decides when time moves.
    fn stopped_rtc() -> (Rtc, std::sync::Arc<std::sync::atomic::AtomicI64>) {
        use std::sync::atomic::{AtomicI64, Ordering};
        let elapsed = std::sync::Arc::new(AtomicI64::new(0));
        let t = elapsed.clone();
        let rtc = Rtc::with_clock(Box::new(move || 1_956_527_998 + t.load(Ordering::SeqCst)));
        (rtc, elapsed)
    }

    #[test]
    fn reads_its_clock_in_bcd_and_keeps_guest_settings() {
        let (mut rtc, elapsed) = stopped_rtc();
        assert_eq!(
            read(&mut rtc, STATUS_A) & 0x80,
            0,
            "never update-in-progress"
        );
        assert_ne!(read(&mut rtc, STATUS_D) & D_VALID, 0);
        let fields = [SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY];
        let now: Vec<u8> = fields.iter().map(|&r| read(&mut rtc, r)).collect();
        assert_eq!(now, [0x58, 0x59, 0x23, 0x04, 0x31, 0x12, 0x31, 0x20]);
        // Two seconds later it is 2032.
        elapsed.store(2, std::sync::atomic::Ordering::SeqCst);
        let later: Vec<u8> = fields.iter().map(|&r| read(&mut rtc, r)).collect();
        assert_eq!(later, [0x00, 0x00, 0x00, 0x05, 0x01, 0x01, 0x32, 0x20]);
        // Binary mode, then set the year to 2040: it stays set as the clock runs on.
        write(&mut rtc, STATUS_B, B_24_HOUR | B_BINARY);
        write(&mut rtc, YEAR, 40);
        elapsed.store(3, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(read(&mut rtc, YEAR), 40);
        assert_eq!(read(&mut rtc, SECONDS), 1);
        write(&mut rtc, 0x40, 0x5a);
        assert_eq!(read(&mut rtc, 0x40), 0x5a, "CMOS RAM");
    }

    #[test]
    fn twelve_hour_mode_marks_pm() {
        let (mut rtc, _) = stopped_rtc();
        write(&mut rtc, STATUS_B, B_BINARY);
        write(&mut rtc, HOURS, 0x80 | 3); // 3 PM
        assert_eq!(read(&mut rtc, HOURS), 0x83);
        write(&mut rtc, HOURS, 0x80 | 12); // 12 PM is noon
        assert_eq!(read(&mut rtc, HOURS), 0x8c);
        write(&mut rtc, STATUS_B, B_BINARY | B_24_HOUR);
        assert_eq!(read(&mut rtc, HOURS), 12);
    }
}
