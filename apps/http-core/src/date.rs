//! HTTP-date formatting and parsing (RFC 9110 §5.6.7) with self-contained
//! civil calendar arithmetic.

use alloc::string::String;
use core::fmt::Write;

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const WEEKDAYS_LONG: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Largest timestamp that can be formatted (`Fri, 31 Dec 9999 23:59:59 GMT`).
/// Larger values are clamped to it by [`format_http_date`].
pub const MAX_HTTP_DATE: u64 = 253_402_300_799;

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month 1..=12, day 1..=31).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Broken-down UTC time.
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub weekday: usize,
}

pub(crate) fn civil(t: u64) -> Civil {
    let t = t.min(MAX_HTTP_DATE) as i64;
    let days = t / 86_400;
    let secs = (t % 86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        min: secs / 60 % 60,
        sec: secs % 60,
        // 1970-01-01 was a Thursday.
        weekday: ((days + 4) % 7) as usize,
    }
}

pub(crate) fn month_name(m: u32) -> &'static str {
    MONTHS[(m.clamp(1, 12) - 1) as usize]
}

/// Appends the IMF-fixdate form of `t` to `out`.
pub(crate) fn write_http_date(out: &mut impl Write, t: u64) {
    let c = civil(t);
    let _ = write!(
        out,
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[c.weekday],
        c.day,
        month_name(c.month),
        c.year,
        c.hour,
        c.min,
        c.sec
    );
}

/// Formats a Unix timestamp as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
///
/// Timestamps past year 9999 are clamped to [`MAX_HTTP_DATE`].
pub fn format_http_date(t: u64) -> String {
    let mut s = String::with_capacity(29);
    write_http_date(&mut s, t);
    s
}

/// Parses an HTTP-date into a Unix timestamp.
///
/// Accepts the three forms RFC 9110 requires recipients to understand:
/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
/// (`Sunday, 06-Nov-94 08:49:37 GMT`, two-digit years `00..=69` are taken as
/// 20xx and `70..=99` as 19xx) and asctime (`Sun Nov  6 08:49:37 1994`).
/// Surrounding spaces/tabs are ignored; weekday and month names are
/// case-sensitive; the weekday is not cross-checked against the date. Dates
/// before 1970 and anything malformed yield `None`.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let b = s.trim_matches([' ', '\t']).as_bytes();
    if b.len() == 29 && b[3] == b',' {
        parse_imf(b)
    } else if let Some(comma) = b.iter().position(|&c| c == b',') {
        parse_rfc850(&b[..comma], &b[comma + 1..])
    } else {
        parse_asctime(b)
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 4 {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn month(b: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.as_bytes() == b)
        .map(|i| i as u32 + 1)
}

fn short_weekday(b: &[u8]) -> bool {
    WEEKDAYS.iter().any(|w| w.as_bytes() == b)
}

fn time_of_day(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let h = digits(&b[0..2])?;
    let m = digits(&b[3..5])?;
    let s = digits(&b[6..8])?;
    (h <= 23 && m <= 59 && s <= 60).then_some((h, m, s))
}

fn to_unix(year: u32, month: u32, day: u32, (h, m, s): (u32, u32, u32)) -> Option<u64> {
    let year = i64::from(year);
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day) as u64;
    Some(days * 86_400 + u64::from(h) * 3600 + u64::from(m) * 60 + u64::from(s))
}

fn parse_imf(b: &[u8]) -> Option<u64> {
    if !short_weekday(&b[0..3])
        || b[4] != b' '
        || b[7] != b' '
        || b[11] != b' '
        || b[16] != b' '
        || &b[25..] != b" GMT"
    {
        return None;
    }
    let day = digits(&b[5..7])?;
    let mon = month(&b[8..11])?;
    let year = digits(&b[12..16])?;
    to_unix(year, mon, day, time_of_day(&b[17..25])?)
}

fn parse_rfc850(wd: &[u8], rest: &[u8]) -> Option<u64> {
    if !WEEKDAYS_LONG.iter().any(|w| w.as_bytes() == wd)
        || rest.len() != 23
        || rest[0] != b' '
        || rest[3] != b'-'
        || rest[7] != b'-'
        || rest[10] != b' '
        || &rest[19..] != b" GMT"
    {
        return None;
    }
    let day = digits(&rest[1..3])?;
    let mon = month(&rest[4..7])?;
    let yy = digits(&rest[8..10])?;
    let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
    to_unix(year, mon, day, time_of_day(&rest[11..19])?)
}

fn parse_asctime(b: &[u8]) -> Option<u64> {
    if b.len() != 24 || !short_weekday(&b[0..3]) || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' {
        return None;
    }
    let mon = month(&b[4..7])?;
    let day = if b[8] == b' ' {
        digits(&b[9..10])?
    } else {
        digits(&b[8..10])?
    };
    if b[19] != b' ' {
        return None;
    }
    let year = digits(&b[20..24])?;
    to_unix(year, mon, day, time_of_day(&b[11..19])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sun Nov 06 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format_http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(
            parse_http_date("  Thu, 01 Jan 1970 00:00:00 GMT\t"),
            Some(0)
        );
    }

    #[test]
    fn rfc850_two_digit_years() {
        assert_eq!(parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Saturday, 01-Jan-00 00:00:00 GMT"),
            Some(946_684_800)
        );
        assert_eq!(
            parse_http_date("Friday, 31-Dec-69 00:00:00 GMT"),
            parse_http_date("Tue, 31 Dec 2069 00:00:00 GMT")
        );
    }

    #[test]
    fn round_trips() {
        // Every day across several centuries plus assorted times of day.
        let mut t = 0u64;
        while t < MAX_HTTP_DATE {
            let s = format_http_date(t);
            assert_eq!(parse_http_date(&s), Some(t), "{s}");
            t += 86_400 * 3 + 3_661;
        }
        for t in [951_782_400u64, 951_868_799, 4_107_542_400, MAX_HTTP_DATE] {
            assert_eq!(parse_http_date(&format_http_date(t)), Some(t));
        }
        assert_eq!(
            format_http_date(951_782_400),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn civil_arithmetic() {
        for d in -800_000i64..800_000 {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 1994 08:60:37 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun, 06 Nov 19a4 08:49:37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun,  6 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov 6 08:49:37 1994",
            "1994-11-06T08:49:37Z",
            "\u{e9}\u{e9}\u{e9}, 06 Nov 1994 08:49:37 GMT",
            ",",
        ] {
            assert_eq!(parse_http_date(s), None, "{s:?}");
        }
        // Leap second is accepted and rolls over.
        assert_eq!(
            parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT"),
            Some(1_483_228_800)
        );
    }
}
