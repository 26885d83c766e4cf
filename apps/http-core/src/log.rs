//! Access log lines in the Combined Log Format.

use core::fmt::{self, Display, Write};

use crate::date::{civil, month_name};

/// Writes through to `f`, escaping `"` and `\` with a backslash and every
/// control or non-ASCII byte as `\xHH`, so the line stays one printable
/// ASCII line; notes whether anything was written.
struct Esc<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    wrote: bool,
}

impl Write for Esc<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.wrote = true;
            match b {
                b'"' => self.f.write_str("\\\"")?,
                b'\\' => self.f.write_str("\\\\")?,
                0x20..=0x7e => self.f.write_char(char::from(b))?,
                _ => write!(self.f, "\\x{b:02X}")?,
            }
        }
        Ok(())
    }
}

/// A field, escaped; `-` when it is missing or empty.
fn field<T: Display + ?Sized>(f: &mut fmt::Formatter<'_>, v: Option<&T>) -> fmt::Result {
    let mut e = Esc { f, wrote: false };
    if let Some(v) = v {
        write!(e, "{v}")?;
    }
    if e.wrote { Ok(()) } else { e.f.write_char('-') }
}

/// An access log line, written as it is displayed (nothing is allocated):
/// see [`combined_log_line`].
pub struct LogLine<'a> {
    remote: &'a dyn Display,
    request_line: &'a str,
    status: u16,
    bytes: u64,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
    time_unix: u64,
}

impl Display for LogLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        field(f, Some(self.remote))?;
        let c = civil(self.time_unix);
        write!(
            f,
            " - - [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] \"",
            c.day,
            month_name(c.month),
            c.year,
            c.hour,
            c.min,
            c.sec
        )?;
        field(f, Some(self.request_line))?;
        write!(f, "\" {} ", self.status)?;
        if self.bytes == 0 {
            f.write_char('-')?;
        } else {
            write!(f, "{}", self.bytes)?;
        }
        f.write_str(" \"")?;
        field(f, self.referer)?;
        f.write_str("\" \"")?;
        field(f, self.user_agent)?;
        f.write_char('"')
    }
}

/// One access log line (no trailing newline) in the Combined Log Format:
///
/// `203.0.113.9 - - [06/Nov/1994:08:49:37 +0000] "GET / HTTP/1.1" 200 1234 "referer" "agent"`
///
/// `remote` is the client's address (anything displayable). `request_line`
/// is e.g. [`crate::Request::request_line`] or
/// [`crate::StatusError::request_line`] (pass `""` when unknown; it is logged
/// as `-`). `bytes` is the body size sent (0 is logged as `-`, as Apache's
/// `%b`). Missing referer or user agent are logged as `-`. Quotes,
/// backslashes, control and non-ASCII bytes in any field are escaped. The
/// line is produced as it is displayed (`println!("{line}")`): logging
/// allocates nothing.
pub fn combined_log_line<'a>(
    remote: &'a dyn Display,
    request_line: &'a str,
    status: u16,
    bytes: u64,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
    time_unix: u64,
) -> LogLine<'a> {
    LogLine {
        remote,
        request_line,
        status,
        bytes,
        referer,
        user_agent,
        time_unix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn format() {
        let line = combined_log_line(
            &"203.0.113.9",
            "GET /index.html HTTP/1.1",
            200,
            1234,
            Some("https://example.com/"),
            Some("curl/8.0"),
            784_111_777,
        )
        .to_string();
        assert_eq!(
            line,
            "203.0.113.9 - - [06/Nov/1994:08:49:37 +0000] \"GET /index.html HTTP/1.1\" 200 1234 \"https://example.com/\" \"curl/8.0\""
        );
        let line = combined_log_line(&"", "", 400, 0, None, Some(""), 0).to_string();
        assert_eq!(
            line,
            "- - - [01/Jan/1970:00:00:00 +0000] \"-\" 400 - \"-\" \"-\""
        );
    }

    #[test]
    fn escaping() {
        let line = combined_log_line(
            &"::1",
            "GET /\"x\\ HTTP/1.1",
            404,
            5,
            Some("a\"b"),
            Some("ua\r\n\x1b[31m\u{e9}"),
            0,
        )
        .to_string();
        assert_eq!(
            line,
            "::1 - - [01/Jan/1970:00:00:00 +0000] \"GET /\\\"x\\\\ HTTP/1.1\" 404 5 \"a\\\"b\" \"ua\\x0D\\x0A\\x1B[31m\\xC3\\xA9\""
        );
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}
