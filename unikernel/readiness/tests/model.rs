//! Randomized model test: the O(ready) `EpollInstance`, driven through the
//! readiness contract (`SourceState` fan-out), against a naive reference
//! that rescans every registered interest on each wait.

mod common;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};

use common::Harness;
use uk_readiness::*;

const N_SOURCES: u64 = 8;
const N_FDS: i32 = 4;
const N_INST: usize = 2;
/// Upper bound on interests per instance (for the starvation bound).
const MAX_INTERESTS: usize = (N_SOURCES as usize) * (N_FDS as usize);

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
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Reference interest. `pending` records "notified (or ADD/MOD found it
/// ready) since last consumed"; level-triggered items never consume it.
#[derive(Clone, Debug)]
struct RefItem {
    events: Events,
    data: u64,
    armed: bool,
    pending: bool,
    /// Consecutive waits in which the item was eligible but not reported.
    starved: usize,
}

impl RefItem {
    fn mask(&self) -> Events {
        if self.armed {
            self.events.reportable()
        } else {
            Events::NONE
        }
    }
    fn lt(&self) -> bool {
        !self.events.intersects(Events::ET | Events::ONESHOT)
    }
}

type RefInstance = BTreeMap<(u64, i32), RefItem>;

fn random_mask(rng: &mut XorShift, allow_flags: bool) -> Events {
    const BITS: [Events; 6] = [
        Events::IN,
        Events::OUT,
        Events::PRI,
        Events::RDHUP,
        Events::RDNORM,
        Events::WRNORM,
    ];
    let mut e = Events::NONE;
    for b in BITS {
        if rng.chance(35) {
            e |= b;
        }
    }
    if allow_flags {
        if rng.chance(25) {
            e |= Events::ET;
        }
        if rng.chance(15) {
            e |= Events::ONESHOT;
        }
    }
    e
}

fn random_readiness(rng: &mut XorShift) -> Events {
    const BITS: [Events; 8] = [
        Events::IN,
        Events::OUT,
        Events::PRI,
        Events::RDHUP,
        Events::RDNORM,
        Events::WRNORM,
        Events::ERR,
        Events::HUP,
    ];
    let mut e = Events::NONE;
    for (i, b) in BITS.into_iter().enumerate() {
        // ERR/HUP rarer.
        if rng.chance(if i >= 6 { 5 } else { 30 }) {
            e |= b;
        }
    }
    e
}

/// Eligible items of the reference for one instance: key -> expected revents.
/// Level-triggered: the naive rule, every armed interest whose source is
/// ready. ET/oneshot: additionally needs an unconsumed notification.
fn eligible(h: &Harness, r: &RefInstance) -> BTreeMap<(u64, i32), Events> {
    let mut m = BTreeMap::new();
    for (&(k, fd), it) in r {
        let rev = h.readiness(k) & it.mask();
        if rev.is_empty() {
            continue;
        }
        if it.lt() {
            // Model sanity: a ready LT interest always has a notification.
            assert!(it.pending, "model: LT item ready without notification");
            m.insert((k, fd), rev);
        } else if it.pending {
            m.insert((k, fd), rev);
        }
    }
    m
}

fn run(seed: u64, steps: usize, allow_flags: bool) {
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut h = Harness::new(N_INST);
    let mut refs: Vec<RefInstance> = (0..N_INST).map(|_| RefInstance::new()).collect();
    let mut next_data = 1u64;
    let mut reported_total = 0usize;

    for step in 0..steps {
        let inst = rng.below(N_INST as u64) as usize;
        let k = rng.below(N_SOURCES);
        let fd = rng.below(N_FDS as u64) as i32;
        let ctx = format!("seed {seed} step {step}");
        match rng.below(100) {
            // ADD
            0..=14 => {
                let ev = random_mask(&mut rng, allow_flags);
                let data = next_data;
                next_data += 1;
                let r = h.add(inst, k, fd, ev, data);
                let current = h.readiness(k);
                match refs[inst].entry((k, fd)) {
                    Entry::Occupied(_) => assert_eq!(r, Err(EpollError::Exists), "{ctx}"),
                    Entry::Vacant(slot) => {
                        r.unwrap();
                        let events = ev | Events::ALWAYS;
                        let pending = current.intersects(events.reportable());
                        slot.insert(RefItem {
                            events,
                            data,
                            armed: true,
                            pending,
                            starved: 0,
                        });
                    }
                }
            }
            // MOD
            15..=22 => {
                let ev = random_mask(&mut rng, allow_flags);
                let data = next_data;
                next_data += 1;
                let r = h.modify(inst, k, fd, ev, data);
                match refs[inst].get_mut(&(k, fd)) {
                    None => assert_eq!(r, Err(EpollError::NotFound), "{ctx}"),
                    Some(it) => {
                        r.unwrap();
                        it.events = ev | Events::ALWAYS;
                        it.data = data;
                        it.armed = true;
                        it.pending |= h.readiness(k).intersects(it.mask());
                        it.starved = 0;
                    }
                }
            }
            // DEL
            23..=29 => {
                let r = h.del(inst, k, fd);
                if refs[inst].remove(&(k, fd)).is_some() {
                    r.unwrap();
                } else {
                    assert_eq!(r, Err(EpollError::NotFound), "{ctx}");
                }
            }
            // Source readiness changes, delivered per the contract.
            30..=59 => {
                let ev = random_readiness(&mut rng);
                let (arrived, raise) = if rng.chance(50) {
                    (ev - h.readiness(k), false)
                } else {
                    (ev, true)
                };
                if raise {
                    h.raise(k, ev);
                } else {
                    h.set(k, ev);
                }
                for r in refs.iter_mut() {
                    for (&(rk, _), it) in r.iter_mut() {
                        if rk == k {
                            if arrived.intersects(it.mask()) {
                                it.pending = true;
                            }
                            it.starved = 0;
                        }
                    }
                }
            }
            60..=69 => {
                let ev = random_readiness(&mut rng);
                h.clear(k, ev);
                for r in refs.iter_mut() {
                    for (&(rk, _), it) in r.iter_mut() {
                        if rk == k {
                            it.starved = 0;
                        }
                    }
                }
            }
            // Nested-epoll readiness.
            70..=74 => {
                let expect = !eligible(&h, &refs[inst]).is_empty();
                let got = h.poll_self(inst);
                assert_eq!(got.is_empty(), !expect, "{ctx}: poll_self");
                if expect {
                    assert_eq!(got, Events::IN | Events::RDNORM);
                }
                for it in refs[inst].values_mut() {
                    it.starved = 0;
                }
            }
            // WAIT
            _ => {
                let max = match rng.below(4) {
                    0 => 1,
                    1 => 1 + rng.below(4) as usize,
                    _ => 1000,
                };
                let elig = eligible(&h, &refs[inst]);
                let queued = h.instances[inst].ready_count();
                assert!(queued >= elig.len(), "{ctx}: ready list misses items");
                h.take_polls();
                let out = h.wait(inst, max);
                let polls = h.take_polls();
                assert!(polls <= queued, "{ctx}: polled {polls} > queued {queued}");
                assert_eq!(
                    out.len(),
                    max.min(elig.len()),
                    "{ctx}: count, elig {elig:?}"
                );
                let by_data: BTreeMap<u64, (u64, i32)> =
                    refs[inst].iter().map(|(&key, it)| (it.data, key)).collect();
                let mut seen = HashSet::new();
                for ev in &out {
                    let key = *by_data.get(&ev.data).expect("unknown data reported");
                    assert!(seen.insert(key), "{ctx}: duplicate report {key:?}");
                    assert_eq!(Some(&ev.events), elig.get(&key), "{ctx}: events of {key:?}");
                }
                reported_total += out.len();
                for (key, it) in refs[inst].iter_mut() {
                    if seen.contains(key) {
                        it.starved = 0;
                        if it.events.contains(Events::ONESHOT) {
                            it.armed = false;
                            it.pending = false;
                            it.events &= Events::PRIVATE;
                        } else if it.events.contains(Events::ET) {
                            it.pending = false;
                        }
                    } else if elig.contains_key(key) {
                        it.starved += 1;
                        assert!(
                            it.starved < MAX_INTERESTS,
                            "{ctx}: {key:?} starved for {} waits",
                            it.starved
                        );
                    } else {
                        it.starved = 0;
                    }
                }
            }
        }

        // Structural agreement after every step.
        for (i, r) in refs.iter().enumerate() {
            let ep = &h.instances[i];
            assert_eq!(ep.interest_count(), r.len(), "{ctx}: interest_count");
            for (&(rk, rfd), it) in r {
                let snap = ep.interest(rk, rfd).expect("missing interest");
                assert_eq!(snap.events, it.events, "{ctx}");
                assert_eq!(snap.data, it.data, "{ctx}");
                assert_eq!(snap.state == InterestState::Disarmed, !it.armed, "{ctx}");
                let obs = Observer {
                    instance: i as u64,
                    key: rk,
                    fd: rfd,
                };
                assert!(h.sources[&rk].observers().contains(&obs), "{ctx}");
            }
        }
    }
    assert!(
        reported_total > steps / 20,
        "test exercised too few reports"
    );
}

#[test]
fn model_level_triggered() {
    for seed in 1..=25 {
        run(seed, 3_000, false);
    }
}

#[test]
fn model_with_edge_triggered_and_oneshot() {
    for seed in 100..=125 {
        run(seed, 3_000, true);
    }
}
