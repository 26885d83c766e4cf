//! Access log lines in the Combined Log Format.

use alloc::string::String;
use core::fmt::Write;

use crate::date::{civil, month_name};

/// Appends `s`, escaping `"` and `\` with a backslash and every control or
/// non-ASCII byte as `\xHH`, so the line stays one printable ASCII line.
fn push_escaped(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

fn push_field(out: &mut String, v: Option<&str>) {
    match v {
        Some(v) if !v.is_empty() => push_escaped(out, v),
        _ => out.push('-'),
    }
}

/// One access log line (no trailing newline) in the Combined Log Format:
///
/// `203.0.113.9 - - [06/Nov/1994:08:49:37 +0000] "GET / HTTP/1.1" 200 1234 "referer" "agent"`
///
/// `request_line` is e.g. [`crate::Request::request_line`] or
/// [`crate::StatusError::request_line`] (pass `""` when unknown; it is logged
/// as `-`). `bytes` is the body size sent (0 is logged as `-`, as Apache's
/// `%b`). Missing referer or user agent are logged as `-`. Quotes,
/// backslashes, control and non-ASCII bytes in any field are escaped.
pub fn combined_log_line(
    remote: &str,
    request_line: &str,
    status: u16,
    bytes: u64,
    referer: Option<&str>,
    user_agent: Option<&str>,
    time_unix: u64,
) -> String {
    let mut out = String::with_capacity(128 + request_line.len());
    push_field(&mut out, Some(remote));
    let c = civil(time_unix);
    let _ = write!(
        out,
        " - - [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] \"",
        c.day,
        month_name(c.month),
        c.year,
        c.hour,
        c.min,
        c.sec
    );
    push_field(&mut out, Some(request_line));
    let _ = write!(out, "\" {status} ");
    if bytes == 0 {
        out.push('-');
    } else {
        let _ = write!(out, "{bytes}");
    }
    out.push_str(" \"");
    push_field(&mut out, referer);
    out.push_str("\" \"");
    push_field(&mut out, user_agent);
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        let line = combined_log_line(
            "203.0.113.9",
            "GET /index.html HTTP/1.1",
            200,
            1234,
            Some("https://example.com/"),
            Some("curl/8.0"),
            784_111_777,
        );
        assert_eq!(
            line,
            "203.0.113.9 - - [06/Nov/1994:08:49:37 +0000] \"GET /index.html HTTP/1.1\" 200 1234 \"https://example.com/\" \"curl/8.0\""
        );
        let line = combined_log_line("", "", 400, 0, None, Some(""), 0);
        assert_eq!(
            line,
            "- - - [01/Jan/1970:00:00:00 +0000] \"-\" 400 - \"-\" \"-\""
        );
    }

    #[test]
    fn escaping() {
        let line = combined_log_line(
            "::1",
            "GET /\"x\\ HTTP/1.1",
            404,
            5,
            Some("a\"b"),
            Some("ua\r\n\x1b[31m\u{e9}"),
            0,
        );
        assert_eq!(
            line,
            "::1 - - [01/Jan/1970:00:00:00 +0000] \"GET /\\\"x\\\\ HTTP/1.1\" 404 5 \"a\\\"b\" \"ua\\x0D\\x0A\\x1B[31m\\xC3\\xA9\""
        );
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}
