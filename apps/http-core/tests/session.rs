//! TLS session resumption state: the bounded session store and the ticket
//! key ring's rotation schedule.

use uk_http::session::{KeyRing, NamedKey, SessionStore};

fn v(n: u8, len: usize) -> Vec<u8> {
    vec![n; len]
}

#[test]
fn store_puts_gets_takes_and_replaces() {
    let mut s = SessionStore::new(4, 1000);
    assert!(s.put(v(1, 32), v(10, 100)));
    assert!(s.put(v(2, 32), v(20, 100)));
    assert_eq!(s.get(&v(1, 32)), Some(v(10, 100)));
    assert_eq!(s.len(), 2);
    // The same key again replaces the value.
    assert!(s.put(v(1, 32), v(11, 50)));
    assert_eq!(s.len(), 2);
    assert_eq!(s.bytes(), 32 + 50 + 32 + 100);
    assert_eq!(s.take(&v(1, 32)), Some(v(11, 50)));
    assert_eq!(s.get(&v(1, 32)), None);
    assert_eq!(s.take(&v(1, 32)), None);
    assert_eq!(s.bytes(), 132);
    assert_eq!(s.get(&v(9, 3)), None);
}

#[test]
fn store_is_bounded_in_entries_and_bytes_oldest_first() {
    let mut s = SessionStore::new(3, 10_000);
    for i in 0..10u8 {
        assert!(s.put(v(i, 8), v(i, 8)));
        assert!(s.len() <= 3);
    }
    // The three newest are left.
    assert_eq!(s.get(&v(6, 8)), None);
    for i in 7..10u8 {
        assert_eq!(s.get(&v(i, 8)), Some(v(i, 8)));
    }
    let mut s = SessionStore::new(100, 1000);
    for i in 0..20u8 {
        assert!(s.put(v(i, 10), v(i, 190)));
        assert!(s.bytes() <= 1000, "{}", s.bytes());
    }
    assert_eq!(s.len(), 5);
    assert_eq!(s.get(&v(19, 10)), Some(v(19, 190)));
    assert_eq!(s.get(&v(14, 10)), None);
    // Larger than the whole store: refused, nothing evicted.
    assert!(!s.put(v(99, 10), v(0, 1000)));
    assert_eq!(s.len(), 5);
    // A store of nothing stores nothing.
    let mut s = SessionStore::new(0, 1000);
    assert!(!s.put(v(1, 1), v(1, 1)));
    assert!(s.is_empty());
}

/// A key maker that counts its keys (the key is its number) and can be
/// made to fail.
struct Maker {
    made: u8,
    fail: bool,
}

impl Maker {
    fn make(&mut self) -> Option<NamedKey<u8>> {
        if self.fail {
            return None;
        }
        self.made += 1;
        Some(NamedKey {
            name: [self.made; 16],
            key: self.made,
        })
    }
}

fn seal(r: &mut KeyRing<u8>, m: &mut Maker, now: u64) -> Option<u8> {
    r.sealing(now, &mut || m.make()).map(|k| k.key)
}

fn open(r: &mut KeyRing<u8>, m: &mut Maker, now: u64, key: u8) -> bool {
    r.opening(now, &[key; 16], &mut || m.make()).is_some()
}

#[test]
fn ring_rotates_on_schedule_and_keeps_the_previous_key_one_period() {
    let mut m = Maker {
        made: 0,
        fail: false,
    };
    let mut r = KeyRing::new(1000);
    // The first use makes key 1, current until 1000 after it.
    assert_eq!(seal(&mut r, &mut m, 500), Some(1));
    assert_eq!(seal(&mut r, &mut m, 1499), Some(1));
    assert!(open(&mut r, &mut m, 1499, 1));
    // Rotated at 1500 (the schedule, not the first call after it): key 2
    // seals, key 1 still opens until 2500.
    assert_eq!(seal(&mut r, &mut m, 2000), Some(2));
    assert!(open(&mut r, &mut m, 2499, 1));
    assert!(open(&mut r, &mut m, 2499, 2));
    assert!(!open(&mut r, &mut m, 2499, 7));
    // At 2500 key 1 is gone, key 2 opens, key 3 seals.
    assert!(!open(&mut r, &mut m, 2500, 1));
    assert!(open(&mut r, &mut m, 2500, 2));
    assert_eq!(seal(&mut r, &mut m, 2500), Some(3));
    // Idle for more than a period past the next rotation (3500): no key
    // older than the new one opens.
    assert!(!open(&mut r, &mut m, 4600, 3));
    assert!(!open(&mut r, &mut m, 4600, 2));
    assert_eq!(seal(&mut r, &mut m, 4600), Some(4));
    assert!(open(&mut r, &mut m, 5599, 4));
    assert_eq!(m.made, 4);
}

#[test]
fn ring_without_randomness_issues_nothing_and_recovers() {
    let mut m = Maker {
        made: 0,
        fail: true,
    };
    let mut r = KeyRing::new(1000);
    assert_eq!(seal(&mut r, &mut m, 0), None);
    assert!(!open(&mut r, &mut m, 0, 1));
    m.fail = false;
    // Asked again on the next use, on the same schedule.
    assert_eq!(seal(&mut r, &mut m, 10), Some(1));
    assert_eq!(seal(&mut r, &mut m, 999), Some(1));
    m.fail = true;
    // The rotation at 1000 fails: nothing seals, the old key still opens.
    assert_eq!(seal(&mut r, &mut m, 1000), None);
    assert!(open(&mut r, &mut m, 1500, 1));
    m.fail = false;
    assert_eq!(seal(&mut r, &mut m, 1600), Some(2));
    assert!(open(&mut r, &mut m, 1600, 1));
    assert!(!open(&mut r, &mut m, 2000, 1));
}
