//! Shared test harness: sources with `SourceState`, epoll instances, and the
//! glue the kernel would provide (observer registration, fan-out delivery).
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::HashMap;

use uk_readiness::{
    EpollError, EpollEvent, EpollInstance, Events, Observer, SourceKey, SourceState,
};

#[derive(Default)]
pub struct Harness {
    pub sources: HashMap<SourceKey, SourceState>,
    pub instances: Vec<EpollInstance>,
    /// Total `poll_now` invocations across all waits.
    pub polls: Cell<usize>,
}

impl Harness {
    pub fn new(instances: usize) -> Harness {
        Harness {
            sources: HashMap::new(),
            instances: (0..instances).map(|_| EpollInstance::new()).collect(),
            polls: Cell::new(0),
        }
    }

    pub fn source(&mut self, key: SourceKey) -> &mut SourceState {
        self.sources.entry(key).or_default()
    }

    pub fn readiness(&self, key: SourceKey) -> Events {
        self.sources
            .get(&key)
            .map_or(Events::NONE, SourceState::events)
    }

    pub fn add(
        &mut self,
        inst: usize,
        key: SourceKey,
        fd: i32,
        events: Events,
        data: u64,
    ) -> Result<(), EpollError> {
        let obs = Observer {
            instance: inst as u64,
            key,
            fd,
        };
        let fresh = self.source(key).add_observer(obs);
        // Sample after attaching the observer, as the contract requires.
        let current = self.readiness(key);
        let r = self.instances[inst].ctl_add(key, fd, events, data, current);
        if r.is_err() && fresh {
            self.source(key).remove_observer(&obs);
        }
        r
    }

    pub fn modify(
        &mut self,
        inst: usize,
        key: SourceKey,
        fd: i32,
        events: Events,
        data: u64,
    ) -> Result<(), EpollError> {
        let current = self.readiness(key);
        self.instances[inst].ctl_mod(key, fd, events, data, current)
    }

    pub fn del(&mut self, inst: usize, key: SourceKey, fd: i32) -> Result<(), EpollError> {
        let r = self.instances[inst].ctl_del(key, fd);
        if r.is_ok() {
            let obs = Observer {
                instance: inst as u64,
                key,
                fd,
            };
            assert!(self.source(key).remove_observer(&obs));
        }
        r
    }

    /// Delivers a fan-out; returns how many interests were newly queued.
    fn deliver(&mut self, f: uk_readiness::Fanout) -> usize {
        let mut queued = 0;
        for o in &f.observers {
            if self.instances[o.instance as usize].notify(o.key, o.fd, f.events) {
                queued += 1;
            }
        }
        queued
    }

    pub fn set(&mut self, key: SourceKey, events: Events) -> usize {
        let f = self.source(key).set(events);
        self.deliver(f)
    }

    pub fn raise(&mut self, key: SourceKey, events: Events) -> usize {
        let f = self.source(key).raise(events);
        self.deliver(f)
    }

    pub fn clear(&mut self, key: SourceKey, events: Events) {
        self.source(key).clear(events);
    }

    pub fn wait(&mut self, inst: usize, max: usize) -> Vec<EpollEvent> {
        let mut out = vec![EpollEvent::default(); max];
        let sources = &self.sources;
        let polls = &self.polls;
        let n = self.instances[inst].wait(max, &mut out, |k, _fd| {
            polls.set(polls.get() + 1);
            sources.get(&k).map_or(Events::NONE, SourceState::events)
        });
        out.truncate(n);
        out
    }

    pub fn poll_self(&mut self, inst: usize) -> Events {
        let sources = &self.sources;
        let polls = &self.polls;
        self.instances[inst].poll_self(|k, _fd| {
            polls.set(polls.get() + 1);
            sources.get(&k).map_or(Events::NONE, SourceState::events)
        })
    }

    pub fn take_polls(&self) -> usize {
        self.polls.replace(0)
    }
}

/// The `data` values of a wait result, in order.
pub fn datas(evs: &[EpollEvent]) -> Vec<u64> {
    evs.iter().map(|e| e.data).collect()
}
