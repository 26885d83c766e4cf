//! Calendar arithmetic for the wall clock: turning the CMOS RTC's fields into
//! seconds since the Unix epoch (proleptic Gregorian, UTC).

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's algorithm).
pub const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The raw fields of the CMOS real-time clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RtcFields {
    /// Seconds register.
    pub sec: u8,
    /// Minutes register.
    pub min: u8,
    /// Hours register (bit 7 = PM in 12-hour mode).
    pub hour: u8,
    /// Day of month.
    pub day: u8,
    /// Month.
    pub month: u8,
    /// Year within the century.
    pub year: u8,
    /// Century register (0 if absent).
    pub century: u8,
    /// Status register B: bit 2 = binary (else BCD), bit 1 = 24-hour.
    pub status_b: u8,
}

fn bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0f)
}

/// Seconds since the Unix epoch for RTC fields, or None if they are not a
/// valid date (a missing or broken RTC).
pub fn rtc_to_unix(f: RtcFields) -> Option<u64> {
    let binary = f.status_b & 0x04 != 0;
    let h24 = f.status_b & 0x02 != 0;
    let conv = |v: u8| if binary { v } else { bcd(v) };
    let pm = f.hour & 0x80 != 0;
    let mut hour = conv(f.hour & 0x7f);
    if !h24 {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let (sec, min, day, month, yy) = (
        conv(f.sec),
        conv(f.min),
        conv(f.day),
        conv(f.month),
        conv(f.year),
    );
    let century = if f.century != 0 {
        conv(f.century) as i64
    } else {
        20
    };
    let year = century * 100 + yy as i64;
    if sec > 59
        || min > 59
        || hour > 23
        || !(1..=31).contains(&day)
        || !(1..=12).contains(&month)
        || year < 1970
    {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    Some(days as u64 * 86_400 + hour as u64 * 3600 + min as u64 * 60 + sec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 21), 20_778);
    }

    #[test]
    fn bcd_24h_and_12h_and_binary() {
        let bcd24 = RtcFields {
            sec: 0x56,
            min: 0x34,
            hour: 0x12,
            day: 0x21,
            month: 0x11,
            year: 0x26,
            century: 0x20,
            status_b: 0x02,
        };
        assert_eq!(
            rtc_to_unix(bcd24),
            Some(20_778 * 86_400 + 12 * 3600 + 34 * 60 + 56)
        );
        let bcd12pm = RtcFields {
            hour: 0x80 | 0x01,
            status_b: 0x00,
            ..bcd24
        };
        assert_eq!(
            rtc_to_unix(bcd12pm),
            Some(20_778 * 86_400 + 13 * 3600 + 34 * 60 + 56)
        );
        let midnight12 = RtcFields {
            hour: 0x12,
            status_b: 0x00,
            ..bcd24
        };
        assert_eq!(
            rtc_to_unix(midnight12),
            Some(20_778 * 86_400 + 34 * 60 + 56)
        );
        let bin = RtcFields {
            sec: 56,
            min: 34,
            hour: 12,
            day: 21,
            month: 11,
            year: 26,
            century: 20,
            status_b: 0x06,
        };
        assert_eq!(rtc_to_unix(bin), rtc_to_unix(bcd24));
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(
            rtc_to_unix(RtcFields {
                sec: 0xff,
                min: 0xff,
                hour: 0xff,
                day: 0xff,
                month: 0xff,
                year: 0xff,
                century: 0xff,
                status_b: 0xff
            }),
            None
        );
        assert_eq!(rtc_to_unix(RtcFields::default()), None);
        for b in 0..=255u8 {
            let _ = rtc_to_unix(RtcFields {
                sec: b,
                min: b,
                hour: b,
                day: b,
                month: b,
                year: b,
                century: b,
                status_b: b,
            });
        }
    }
}
