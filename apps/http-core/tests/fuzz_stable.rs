//! Stable-Rust stand-in for the cargo-fuzz target: runs [`uk_http::fuzz_one`]
//! on a seed corpus and ~200k mutated / random inputs from a xorshift PRNG.
//!
//! Set `UK_HTTP_FUZZ_ITERS` to change the iteration count and
//! `UK_HTTP_FUZZ_SEED` to change the PRNG seed.

use uk_http::fuzz_one;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const SEEDS: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "HEAD /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET /a/b/../c.txt?x=1#f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET /f HTTP/1.1\r\nHost: a\r\nRange: bytes=0-0,5-9,-3\r\nIf-Range: \"1-2-3\"\r\n\r\n",
    "GET /f HTTP/1.1\r\nHost: a\r\nIf-None-Match: W/\"x\", \"3e8-0-0\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    "GET /f HTTP/1.1\r\nHost: a\r\nIf-Match: *\r\nIf-Unmodified-Since: Sunday, 06-Nov-94 08:49:37 GMT\r\n\r\n",
    "GET /f.js HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip;q=0.5, br, identity;q=0\r\n\r\n",
    "GET /%2e%2e/%2fetc HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET http://h/x%20y/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxyGET /b HTTP/1.1\r\nHost: a\r\nRange: bytes=1-\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/2.0\r\n\r\n",
    "Sun Nov  6 08:49:37 1994",
    "bytes=0-1,3-4,-2,100-",
    "\r\n\r\nGET /dir HTTP/1.1\nHost: x\n\n",
];

const DICT: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    " ",
    ":",
    ",",
    ";",
    "=",
    "-",
    "/",
    "..",
    ".",
    "%",
    "%2e",
    "%2f",
    "%00",
    "%C3%A9",
    "\\",
    "?",
    "#",
    "*",
    "\"",
    "W/",
    "q=0",
    "q=1",
    "bytes=",
    "0",
    "9",
    "-1",
    "18446744073709551615",
    "HTTP/1.0",
    "HTTP/1.1",
    "HTTP/9.9",
    "Host: x\r\n",
    "Range: bytes=0-\r\n",
    "Content-Length: 1\r\n",
    "Connection: close\r\n",
    "Connection: keep-alive\r\n",
    "If-None-Match: *\r\n",
    "If-Range: ",
    "Accept-Encoding: ",
    "GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "HEAD",
    "GET",
    "\u{e9}",
    "\x7f",
    "\0",
];

fn mutate(rng: &mut XorShift, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(input.len() + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if !input.is_empty() => {
                let i = rng.below(input.len());
                let n = 1 + rng.below((input.len() - i).min(16));
                input.drain(i..i + n);
            }
            4 | 5 => {
                let i = rng.below(input.len() + 1);
                let tok = DICT[rng.below(DICT.len())].as_bytes();
                input.splice(i..i, tok.iter().copied());
            }
            6 if !input.is_empty() => {
                // Duplicate a chunk (pipelining, repeated headers).
                let i = rng.below(input.len());
                let n = 1 + rng.below((input.len() - i).min(64));
                let chunk: Vec<u8> = input[i..i + n].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
            }
            _ => {
                // Splice with another seed.
                let other = SEEDS[rng.below(SEEDS.len())].as_bytes();
                let cut = rng.below(input.len() + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
    input.truncate(4096);
}

#[test]
fn seeds_do_not_panic() {
    for s in SEEDS {
        fuzz_one(s.as_bytes());
    }
    fuzz_one(b"");
    fuzz_one(&[0xff; 100]);
    fuzz_one(&vec![b'a'; 20_000]);
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    big.extend(std::iter::repeat_n(b"X: y\r\n".as_slice(), 3000).flatten());
    fuzz_one(&big);
}

#[test]
fn randomized() {
    let iters: usize = std::env::var("UK_HTTP_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let seed: u64 = std::env::var("UK_HTTP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = XorShift(seed | 1);
    // A small evolving pool: mutated inputs that still parse get reused.
    let mut pool: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    for i in 0..iters {
        let mut input = if rng.below(50) == 0 {
            let n = rng.below(256);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            pool[rng.below(pool.len())].clone()
        };
        mutate(&mut rng, &mut input);
        let result = std::panic::catch_unwind(|| fuzz_one(&input));
        if result.is_err() {
            panic!(
                "fuzz_one panicked at iteration {i} (seed {seed}) on input {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        if i % 64 == 0 && input.windows(4).any(|w| w == b"\r\n\r\n") {
            if pool.len() < 256 {
                pool.push(input);
            } else {
                let slot = rng.below(pool.len());
                pool[slot] = input;
            }
        }
    }
}
