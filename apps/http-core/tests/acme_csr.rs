//! The ACME encodings with a real P-256 key (ring): the certificate request
//! verifies under `openssl req -verify` (skipped without openssl) and names
//! the domain, and a JWS signature verifies against the JWK's point.

use std::process::Command;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
    EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use uk_http::acme::{Json, Signer, b64url, csr_p256, jwk_p256, jws, protected_header};

fn key(alg: &'static ring::signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
}

#[test]
fn csr_verifies_with_openssl() {
    let k = key(&ECDSA_P256_SHA256_ASN1_SIGNING);
    let rng = SystemRandom::new();
    let der = csr_p256("www.example.test", k.public_key().as_ref(), |info| {
        k.sign(&rng, info).map(|s| s.as_ref().to_vec())
    })
    .unwrap();
    // The signature verifies over the request info whatever openssl says.
    let path = std::env::temp_dir().join(format!("uk-acme-csr-{}.der", std::process::id()));
    std::fs::write(&path, &der).unwrap();
    let out = Command::new("openssl")
        .args(["req", "-inform", "DER", "-noout", "-verify", "-text", "-in"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let Ok(out) = out else {
        eprintln!("SKIP csr_verifies_with_openssl: openssl is not installed");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl refused the CSR:\n{text}");
    assert!(text.contains("verify OK"), "{text}");
    assert!(text.contains("DNS:www.example.test"), "{text}");
    assert!(
        text.contains("CN") && text.contains("www.example.test"),
        "{text}"
    );
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    // A corrupted signature is refused.
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x55;
    let path = std::env::temp_dir().join(format!("uk-acme-badcsr-{}.der", std::process::id()));
    std::fs::write(&path, &bad).unwrap();
    let out = Command::new("openssl")
        .args(["req", "-inform", "DER", "-noout", "-verify", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() || !text.contains("verify OK"),
        "a corrupted CSR verified: {text}"
    );
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        }
    };
    let mut out = Vec::new();
    for ch in s.as_bytes().chunks(4) {
        let n = ch
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &c)| a | (val(c) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..ch.len()]);
    }
    out
}

#[test]
fn jws_signature_verifies_against_the_jwk() {
    let k = key(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let rng = SystemRandom::new();
    let jwk = jwk_p256(k.public_key().as_ref()).unwrap();
    let ph = protected_header(Signer::Jwk(&jwk), "nonce", "https://a.test/new-acct");
    let out = jws(&ph, "{\"termsOfServiceAgreed\":true}", |input| {
        k.sign(&rng, input).map(|s| s.as_ref().to_vec())
    })
    .unwrap();
    let o = Json::parse(out.as_bytes()).unwrap();
    let (p, b, s) = (
        o.str_of("protected").unwrap(),
        o.str_of("payload").unwrap(),
        o.str_of("signature").unwrap(),
    );
    assert_eq!(b64url_decode(b), b"{\"termsOfServiceAgreed\":true}");
    // The point rebuilt from the JWK's x and y verifies the signature.
    let header = Json::parse(&b64url_decode(p)).unwrap();
    let j = header.get("jwk").unwrap();
    let mut point = vec![4u8];
    point.extend(b64url_decode(j.str_of("x").unwrap()));
    point.extend(b64url_decode(j.str_of("y").unwrap()));
    assert_eq!(point, k.public_key().as_ref());
    let sig = b64url_decode(s);
    assert_eq!(sig.len(), 64);
    let pk = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point);
    pk.verify(format!("{p}.{b}").as_bytes(), &sig).unwrap();
    assert!(pk.verify(format!("{p}.{b}x").as_bytes(), &sig).is_err());
    assert_eq!(b64url(&b64url_decode(s)), s);
}
