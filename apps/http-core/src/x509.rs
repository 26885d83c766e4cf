//! The validity period of an X.509 certificate (RFC 5280 §4.1.2.5), read
//! from its DER encoding: enough for httpd to refuse to start with an
//! expired (or not yet valid) certificate. rustls checks the rest.

use crate::date::days_from_civil;

/// `notBefore` and `notAfter` as seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First second the certificate is valid.
    pub not_before: i64,
    /// Last second the certificate is valid.
    pub not_after: i64,
}

/// Why [`validity`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCertificate;

impl core::fmt::Display for BadCertificate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("malformed certificate (no readable validity period)")
    }
}

/// One DER TLV: (tag, contents, rest).
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), BadCertificate> {
    let (&tag, b) = b.split_first().ok_or(BadCertificate)?;
    let (&l0, b) = b.split_first().ok_or(BadCertificate)?;
    let (len, b) = if l0 < 0x80 {
        (usize::from(l0), b)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return Err(BadCertificate);
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, &b[n..])
    };
    if b.len() < len {
        return Err(BadCertificate);
    }
    Ok((tag, &b[..len], &b[len..]))
}

fn digits(s: &[u8]) -> Result<u32, BadCertificate> {
    s.iter().try_fold(0u32, |a, &c| {
        if c.is_ascii_digit() {
            Ok(a * 10 + u32::from(c - b'0'))
        } else {
            Err(BadCertificate)
        }
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950-2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), the only forms RFC 5280 allows.
fn time(tag: u8, v: &[u8]) -> Result<i64, BadCertificate> {
    let (year, rest) = match (tag, v.len()) {
        (0x17, 13) => {
            let yy = digits(&v[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &v[2..])
        }
        (0x18, 15) => (digits(&v[..4])?, &v[4..]),
        _ => return Err(BadCertificate),
    };
    if rest[10] != b'Z' {
        return Err(BadCertificate);
    }
    let (mo, d) = (digits(&rest[0..2])?, digits(&rest[2..4])?);
    let (h, mi, s) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(BadCertificate);
    }
    let days = days_from_civil(i64::from(year), mo, d);
    Ok(days * 86_400 + i64::from(h * 3600 + mi * 60 + s))
}

/// The validity period of the DER certificate `der`.
pub fn validity(der: &[u8]) -> Result<Validity, BadCertificate> {
    let (tag, cert, _) = tlv(der)?;
    if tag != 0x30 {
        return Err(BadCertificate);
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != 0x30 {
        return Err(BadCertificate);
    }
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer.
    for want in [0x02, 0x30, 0x30] {
        let (tag, _, r) = tlv(rest)?;
        if tag != want {
            return Err(BadCertificate);
        }
        rest = r;
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != 0x30 {
        return Err(BadCertificate);
    }
    let (t1, v1, r) = tlv(validity)?;
    let (t2, v2, _) = tlv(r)?;
    Ok(Validity {
        not_before: time(t1, v1)?,
        not_after: time(t2, v2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn enc(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = alloc::vec![tag];
        if body.len() < 128 {
            v.push(body.len() as u8);
        } else {
            v.push(0x82);
            v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    fn cert(version: bool, nb: (u8, &[u8]), na: (u8, &[u8])) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(enc(0xa0, &enc(0x02, &[2])));
        }
        tbs.extend(enc(0x02, &[0x01, 0x23]));
        tbs.extend(enc(0x30, &enc(0x06, &[0x2a, 0x86])));
        tbs.extend(enc(0x30, &[0u8; 200])); // a long issuer: 2-byte length
        let mut val = enc(nb.0, nb.1);
        val.extend(enc(na.0, na.1));
        tbs.extend(enc(0x30, &val));
        tbs.extend(enc(0x30, b"subject..."));
        let mut c = enc(0x30, &tbs);
        c.extend(enc(0x30, b"sigalg"));
        enc(0x30, &c)
    }

    #[test]
    fn utc_and_generalized_times() {
        let c = cert(true, (0x17, b"250101000000Z"), (0x18, b"20501231235959Z"));
        let v = validity(&c).unwrap();
        assert_eq!(v.not_before, 1_735_689_600); // 2025-01-01T00:00:00Z
        assert_eq!(v.not_after, 2_556_143_999); // 2050-12-31T23:59:59Z
        // UTCTime 50..99 is 19xx; no version field (v1 certificate).
        let c = cert(false, (0x17, b"700101000000Z"), (0x17, b"491231235959Z"));
        let v = validity(&c).unwrap();
        assert_eq!(v.not_before, 0);
        assert_eq!(v.not_after, 2_524_607_999);
    }

    #[test]
    fn malformed_is_an_error() {
        assert_eq!(validity(&[]), Err(BadCertificate));
        assert_eq!(validity(&[0x30, 0x05, 0x30]), Err(BadCertificate));
        let c = cert(true, (0x17, b"250101000000"), (0x17, b"250101000000Z"));
        assert_eq!(validity(&c), Err(BadCertificate));
        let c = cert(true, (0x17, b"251301000000Z"), (0x17, b"250101000000Z"));
        assert_eq!(validity(&c), Err(BadCertificate));
        let c = cert(true, (0x04, b"250101000000Z"), (0x17, b"250101000000Z"));
        assert_eq!(validity(&c), Err(BadCertificate));
        // Every truncation fails cleanly.
        let c = cert(true, (0x17, b"250101000000Z"), (0x17, b"260101000000Z"));
        for n in 0..c.len() {
            assert!(validity(&c[..n]).is_err());
        }
    }
}
