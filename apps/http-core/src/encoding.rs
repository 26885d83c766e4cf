//! Content-coding negotiation for precompressed siblings (`file.br`, `file.gz`).

/// The representation to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The file itself.
    #[default]
    Identity,
    /// The `.gz` sibling, `Content-Encoding: gzip`.
    Gzip,
    /// The `.br` sibling, `Content-Encoding: br`.
    Brotli,
}

impl Encoding {
    /// The `Content-Encoding` value, `None` for identity.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Brotli => Some("br"),
        }
    }

    /// Suffix of the sibling file name (`""`, `".gz"`, `".br"`).
    pub fn file_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Gzip => ".gz",
            Encoding::Brotli => ".br",
        }
    }
}

/// Parses a qvalue (`0`, `0.5`, `1.000`, ...) into thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let b = v.as_bytes();
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i.as_bytes(), f.as_bytes()),
        None => (b, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut milli = 0u16;
    for i in 0..3 {
        milli = milli * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int[0] {
        b'0' => Some(milli),
        b'1' if milli == 0 => Some(1000),
        _ => None,
    }
}

/// Picks the representation to send given the request's `Accept-Encoding`
/// and which precompressed siblings exist (RFC 9110 §12.5.3).
///
/// No header → identity. Each coding's weight is its own q-value, else the
/// `*` q-value, else 0 (`x-gzip` counts as `gzip`). Identity is acceptable
/// unless `identity;q=0`, or `*;q=0` without an explicit `identity` entry; when
/// it is not listed its weight is that of `*` or, without `*`, the lowest
/// positive weight, so any acceptable compressed sibling is preferred. The
/// highest weight wins; ties prefer br, then gzip, then identity. Elements
/// with malformed q-values are ignored. When nothing is acceptable, identity
/// is returned anyway (a 406 is allowed but unhelpful for a static server).
pub fn choose_encoding(accept_encoding: Option<&str>, has_br: bool, has_gz: bool) -> Encoding {
    let Some(accept) = accept_encoding else {
        return Encoding::Identity;
    };
    let (mut q_br, mut q_gz, mut q_id, mut q_star) = (None, None, None, None);
    for item in accept.split(',') {
        let mut params = item.split(';');
        let coding = params.next().unwrap_or("").trim_matches([' ', '\t']);
        if coding.is_empty() {
            continue;
        }
        let mut q = Some(1000u16);
        for p in params {
            if let Some((k, v)) = p.split_once('=')
                && k.trim_matches([' ', '\t']).eq_ignore_ascii_case("q")
            {
                q = parse_q(v.trim_matches([' ', '\t']));
            }
        }
        let Some(q) = q else { continue };
        let slot = if coding.eq_ignore_ascii_case("br") {
            &mut q_br
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut q_gz
        } else if coding.eq_ignore_ascii_case("identity") {
            &mut q_id
        } else if coding == "*" {
            &mut q_star
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(q);
        }
    }
    let weight = |own: Option<u16>| own.or(q_star).unwrap_or(0);
    let br = if has_br { weight(q_br) } else { 0 };
    let gz = if has_gz { weight(q_gz) } else { 0 };
    let id = q_id.or(q_star).unwrap_or(1);
    if br > 0 && br >= gz && br >= id {
        Encoding::Brotli
    } else if gz > 0 && gz >= id {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    #[test]
    fn qvalues() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1."), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.123"), Some(123));
        assert_eq!(parse_q("0.001"), Some(1));
        assert_eq!(parse_q("1.001"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("2"), None);
        assert_eq!(parse_q(""), None);
        assert_eq!(parse_q(".5"), None);
        assert_eq!(parse_q("0.x"), None);
    }

    #[test]
    fn negotiation() {
        let c = choose_encoding;
        assert_eq!(c(None, true, true), Identity);
        assert_eq!(c(Some(""), true, true), Identity);
        assert_eq!(c(Some("gzip, deflate, br"), true, true), Brotli);
        assert_eq!(c(Some("gzip, deflate, br"), false, true), Gzip);
        assert_eq!(c(Some("gzip, deflate, br"), false, false), Identity);
        assert_eq!(c(Some("gzip"), true, false), Identity);
        assert_eq!(c(Some("br;q=0.5, gzip;q=0.8"), true, true), Gzip);
        assert_eq!(c(Some("br;q=0, gzip"), true, true), Gzip);
        assert_eq!(c(Some("br;q=0, gzip;q=0"), true, true), Identity);
        assert_eq!(c(Some("*"), true, true), Brotli);
        assert_eq!(c(Some("*;q=0.5, br;q=0"), true, true), Gzip);
        assert_eq!(c(Some("identity;q=1, gzip;q=0.5"), false, true), Identity);
        assert_eq!(c(Some("identity;q=0, gzip;q=0.1"), false, true), Gzip);
        assert_eq!(c(Some("*;q=0.7, gzip;q=0.5"), false, true), Identity);
        assert_eq!(c(Some("*;q=0"), true, true), Identity);
        assert_eq!(c(Some("x-gzip"), false, true), Gzip);
        assert_eq!(c(Some("GZIP ; Q=0.9"), false, true), Gzip);
        assert_eq!(c(Some("gzip;q=bogus"), false, true), Identity);
        assert_eq!(c(Some("gzip;q=0.001"), false, true), Gzip);
        assert_eq!(c(Some(",,, ,br"), true, false), Brotli);
        assert_eq!(Brotli.file_suffix(), ".br");
        assert_eq!(Gzip.content_encoding(), Some("gzip"));
        assert_eq!(Identity.content_encoding(), None);
    }
}
