//! One epoll instance: the interest list and the ready list.

use alloc::vec::Vec;
use core::fmt;
use core::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use uk_core::hashindex::HashIndex;

use crate::events::Events;

/// Opaque identity of a watched source (socket, pipe, eventfd, nested epoll
/// ...), derived by the kernel from its open-file object. Two descriptors that
/// refer to the same open file share a `SourceKey`.
pub type SourceKey = u64;

/// Key of one interest: the watched source plus the descriptor number through
/// which it was added, like Linux's `(struct file *, fd)` pair. Adding the same
/// open file through two `dup`ed descriptors creates two independent
/// interests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct WatchKey {
    /// The watched source.
    pub source: SourceKey,
    /// The descriptor number used in `epoll_ctl`.
    pub fd: i32,
}

impl WatchKey {
    /// Builds a key.
    #[inline]
    pub const fn new(source: SourceKey, fd: i32) -> WatchKey {
        WatchKey { source, fd }
    }
}

/// One reported event, the content of Linux's `struct epoll_event`.
///
/// This is the logical record, not the user ABI layout (on x86-64 Linux the
/// ABI struct is packed to 12 bytes); the system-call shim converts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct EpollEvent {
    /// The events that are ready (already masked by the interest).
    pub events: Events,
    /// The user data registered with the interest.
    pub data: u64,
}

/// `EPOLL_CTL_ADD` (1).
pub const EPOLL_CTL_ADD: i32 = 1;
/// `EPOLL_CTL_DEL` (2).
pub const EPOLL_CTL_DEL: i32 = 2;
/// `EPOLL_CTL_MOD` (3).
pub const EPOLL_CTL_MOD: i32 = 3;

/// An `epoll_ctl` operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CtlOp {
    /// `EPOLL_CTL_ADD`.
    Add,
    /// `EPOLL_CTL_DEL`.
    Del,
    /// `EPOLL_CTL_MOD`.
    Mod,
}

impl CtlOp {
    /// Decodes the raw `op` argument of `epoll_ctl`; unknown values are
    /// `EINVAL` in Linux.
    pub const fn from_raw(op: i32) -> Result<CtlOp, EpollError> {
        match op {
            EPOLL_CTL_ADD => Ok(CtlOp::Add),
            EPOLL_CTL_DEL => Ok(CtlOp::Del),
            EPOLL_CTL_MOD => Ok(CtlOp::Mod),
            _ => Err(EpollError::Invalid),
        }
    }

    /// The raw Linux value.
    pub const fn to_raw(self) -> i32 {
        match self {
            CtlOp::Add => EPOLL_CTL_ADD,
            CtlOp::Del => EPOLL_CTL_DEL,
            CtlOp::Mod => EPOLL_CTL_MOD,
        }
    }
}

/// Errors of the epoll operations, each mapping to the errno Linux returns.
///
/// This crate itself produces [`Exists`](EpollError::Exists),
/// [`NotFound`](EpollError::NotFound), [`Invalid`](EpollError::Invalid) and
/// [`BadFd`](EpollError::BadFd). [`Perm`](EpollError::Perm) (the target does
/// not support polling, e.g. a regular file) and [`Loop`](EpollError::Loop)
/// (nested epoll cycle or depth > 5) need knowledge of the file objects and
/// are detected by the kernel, which can use this same type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EpollError {
    /// `EEXIST`: `EPOLL_CTL_ADD` of an interest that is already registered.
    Exists,
    /// `ENOENT`: `EPOLL_CTL_MOD`/`EPOLL_CTL_DEL` of an unregistered interest.
    NotFound,
    /// `EINVAL`: bad `op`, misuse of `EPOLLEXCLUSIVE`, adding an epoll to
    /// itself, `maxevents <= 0`.
    Invalid,
    /// `EBADF`: negative or closed descriptor.
    BadFd,
    /// `EPERM`: the target does not support polling.
    Perm,
    /// `ELOOP`: the addition would create a cycle of epoll instances or nest
    /// them too deeply.
    Loop,
    /// `ENOMEM`: no memory for the interest.
    NoMemory,
}

impl EpollError {
    /// The positive Linux errno value (the system call returns its negation).
    pub const fn errno(self) -> i32 {
        match self {
            EpollError::Perm => 1,
            EpollError::NotFound => 2,
            EpollError::BadFd => 9,
            EpollError::NoMemory => 12,
            EpollError::Exists => 17,
            EpollError::Invalid => 22,
            EpollError::Loop => 40,
        }
    }
}

impl fmt::Display for EpollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EpollError::Exists => "EEXIST: interest already registered",
            EpollError::NotFound => "ENOENT: interest not registered",
            EpollError::Invalid => "EINVAL: invalid argument",
            EpollError::BadFd => "EBADF: bad file descriptor",
            EpollError::Perm => "EPERM: target does not support polling",
            EpollError::Loop => "ELOOP: epoll nesting loop or too deep",
            EpollError::NoMemory => "ENOMEM: no memory for the interest",
        })
    }
}

impl core::error::Error for EpollError {}

/// Life-cycle state of an interest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum InterestState {
    /// Armed, not on the ready list: waits for a notification.
    Idle,
    /// On the ready list; the next `wait` re-polls it.
    Queued,
    /// A oneshot interest that has reported its event; it ignores
    /// notifications until `EPOLL_CTL_MOD` re-arms it.
    Disarmed,
}

/// A snapshot of one registered interest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Interest {
    /// The stored mask: the requested bits plus `EPOLLERR | EPOLLHUP` (which
    /// Linux always adds), plus the input flags. A disarmed oneshot interest
    /// keeps only the input flags ([`Events::PRIVATE`]).
    pub events: Events,
    /// The user data returned with each event.
    pub data: u64,
    /// Where the interest is in its life-cycle.
    pub state: InterestState,
}

const NIL: u32 = u32::MAX;

/// Internal per-interest record, stored in a slab; the ready list is an
/// intrusive doubly-linked list threaded through `prev`/`next`.
#[derive(Clone, Debug)]
struct Entry {
    key: WatchKey,
    events: Events,
    data: u64,
    linked: bool,
    prev: u32,
    next: u32,
}

impl Entry {
    /// The bits this interest can report right now (empty when disarmed).
    #[inline]
    fn mask(&self) -> Events {
        self.events.reportable()
    }

    #[inline]
    fn armed(&self) -> bool {
        !self.mask().is_empty()
    }

    fn snapshot(&self) -> Interest {
        let state = if self.linked {
            InterestState::Queued
        } else if self.armed() {
            InterestState::Idle
        } else {
            InterestState::Disarmed
        };
        Interest {
            events: self.events,
            data: self.data,
            state,
        }
    }
}

/// One epoll instance (one epoll file descriptor): an interest list keyed by
/// [`WatchKey`] and a ready list of the interests that were notified.
///
/// Costs: `ctl_*` and [`notify`](EpollInstance::notify) are O(1) expected
/// (one hash lookup); [`wait`](EpollInstance::wait) is O(items it pops from
/// the ready list), never O(registered interests). Every entry on the ready
/// list is there because of a notification or a ready `ADD`/`MOD`, and is
/// removed the first time `wait` finds it no longer ready, so stale entries
/// are paid for once, by the event that queued them.
///
/// This is the pure data structure: the kernel wraps it in a lock, parks
/// waiting threads and wakes them when [`notify`](EpollInstance::notify)
/// returns `true` or [`is_ready`](EpollInstance::is_ready) becomes true.
/// See the crate-level readiness contract.
#[derive(Clone, Default)]
pub struct EpollInstance {
    /// The slot of each interest, by [`WatchKey`] (the keys are in the
    /// slots).
    index: HashIndex,
    hasher: DefaultHashBuilder,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    ready_len: usize,
}

impl fmt::Debug for EpollInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpollInstance")
            .field("interests", &self.index.len())
            .field("ready", &self.ready_len)
            .finish()
    }
}

impl EpollInstance {
    /// An empty instance (`epoll_create1`).
    pub fn new() -> EpollInstance {
        EpollInstance {
            index: HashIndex::new(),
            hasher: DefaultHashBuilder::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            ready_len: 0,
        }
    }

    /// Number of registered interests.
    #[inline]
    pub fn interest_count(&self) -> usize {
        self.index.len()
    }

    /// Number of interests on the ready list. This is an upper bound on the
    /// number of events a `wait` can report: entries whose readiness has
    /// vanished since they were queued are only dropped when `wait` (or
    /// [`poll_self`](EpollInstance::poll_self)) re-polls them.
    #[inline]
    pub fn ready_count(&self) -> usize {
        self.ready_len
    }

    /// True when the ready list is non-empty (Linux's `ep_events_available`):
    /// a waiter should be woken and `wait` run. May be a false positive for
    /// entries whose readiness has vanished; use
    /// [`poll_self`](EpollInstance::poll_self) for an exact answer.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.ready_len != 0
    }

    /// The slot of `wk`.
    fn find(&self, wk: WatchKey) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(self.hasher.hash_one(wk), |i| {
            slots[i as usize].as_ref().is_some_and(|e| e.key == wk)
        })
    }

    /// True when `(key, fd)` is registered.
    pub fn contains(&self, key: SourceKey, fd: i32) -> bool {
        self.find(WatchKey::new(key, fd)).is_some()
    }

    /// Snapshot of the interest registered for `(key, fd)`.
    pub fn interest(&self, key: SourceKey, fd: i32) -> Option<Interest> {
        let idx = self.find(WatchKey::new(key, fd))?;
        Some(self.entry(idx).snapshot())
    }

    /// Every registered interest, in no particular order (for example to
    /// detach the instance from its sources when it is closed).
    pub fn interests(&self) -> impl Iterator<Item = (WatchKey, Interest)> + '_ {
        self.slots.iter().flatten().map(|e| (e.key, e.snapshot()))
    }

    /// Dispatches a raw `epoll_ctl` call: `op` is `EPOLL_CTL_ADD`, `_DEL` or
    /// `_MOD`; `events` and `data` are ignored for `DEL`; `current` is the
    /// source's readiness (see [`ctl_add`](EpollInstance::ctl_add)).
    pub fn ctl(
        &mut self,
        op: i32,
        key: SourceKey,
        fd: i32,
        events: Events,
        data: u64,
        current: Events,
    ) -> Result<(), EpollError> {
        match CtlOp::from_raw(op)? {
            CtlOp::Add => self.ctl_add(key, fd, events, data, current),
            CtlOp::Mod => self.ctl_mod(key, fd, events, data, current),
            CtlOp::Del => self.ctl_del(key, fd),
        }
    }

    /// `EPOLL_CTL_ADD`: registers interest in `events` of `(key, fd)`.
    ///
    /// `current` is the source's readiness sampled *after* the kernel
    /// attached this instance as an observer of the source (Linux calls
    /// `f_op->poll` at this point); if it intersects the mask the interest is
    /// queued at once. `EPOLLERR | EPOLLHUP` are always added to the mask.
    ///
    /// Errors: `EBADF` for a negative `fd`; `EINVAL` when `EPOLLEXCLUSIVE`
    /// is combined with bits outside [`Events::EXCLUSIVE_OK`] (notably
    /// `EPOLLONESHOT`); `EEXIST` when already registered.
    pub fn ctl_add(
        &mut self,
        key: SourceKey,
        fd: i32,
        events: Events,
        data: u64,
        current: Events,
    ) -> Result<(), EpollError> {
        if fd < 0 {
            return Err(EpollError::BadFd);
        }
        if events.contains(Events::EXCLUSIVE) && !Events::EXCLUSIVE_OK.contains(events) {
            return Err(EpollError::Invalid);
        }
        let wk = WatchKey::new(key, fd);
        if self.find(wk).is_some() {
            return Err(EpollError::Exists);
        }
        if self.index.try_reserve(1).is_err()
            || (self.free.is_empty() && self.slots.try_reserve(1).is_err())
        {
            return Err(EpollError::NoMemory);
        }
        let entry = Entry {
            key: wk,
            events: events | Events::ALWAYS,
            data,
            linked: false,
            prev: NIL,
            next: NIL,
        };
        let ready = current.intersects(entry.mask());
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(entry);
                i
            }
            None => {
                let i = u32::try_from(self.slots.len()).expect("too many epoll interests");
                assert!(i != NIL, "too many epoll interests");
                self.slots.push(Some(entry));
                i
            }
        };
        self.index.insert(self.hasher.hash_one(wk), idx);
        if ready {
            self.push_back(idx);
        }
        Ok(())
    }

    /// `EPOLL_CTL_MOD`: replaces the mask and data of `(key, fd)` and re-arms
    /// a disarmed oneshot interest. `current` is the source's readiness now;
    /// if it intersects the new mask the interest is queued (if not queued
    /// already; an interest that is queued keeps its place).
    ///
    /// Errors: `EINVAL` when `events` contains `EPOLLEXCLUSIVE` or the
    /// interest was added with it; `ENOENT` when not registered.
    pub fn ctl_mod(
        &mut self,
        key: SourceKey,
        fd: i32,
        events: Events,
        data: u64,
        current: Events,
    ) -> Result<(), EpollError> {
        if fd < 0 {
            return Err(EpollError::BadFd);
        }
        if events.contains(Events::EXCLUSIVE) {
            return Err(EpollError::Invalid);
        }
        let idx = self
            .find(WatchKey::new(key, fd))
            .ok_or(EpollError::NotFound)?;
        let e = self.entry_mut(idx);
        if e.events.contains(Events::EXCLUSIVE) {
            return Err(EpollError::Invalid);
        }
        e.events = events | Events::ALWAYS;
        e.data = data;
        if current.intersects(e.mask()) && !e.linked {
            self.push_back(idx);
        }
        Ok(())
    }

    /// `EPOLL_CTL_DEL`: removes `(key, fd)` and its ready-list entry, if any.
    ///
    /// Errors: `EBADF` for a negative `fd`; `ENOENT` when not registered.
    pub fn ctl_del(&mut self, key: SourceKey, fd: i32) -> Result<(), EpollError> {
        if fd < 0 {
            return Err(EpollError::BadFd);
        }
        let wk = WatchKey::new(key, fd);
        let slots = &self.slots;
        let idx = self
            .index
            .remove(self.hasher.hash_one(wk), |i| {
                slots[i as usize].as_ref().is_some_and(|e| e.key == wk)
            })
            .ok_or(EpollError::NotFound)?;
        if self.entry(idx).linked {
            self.unlink(idx);
        }
        self.slots[idx as usize] = None;
        self.free.push(idx);
        Ok(())
    }

    /// Called by (or on behalf of) a source when new events arrive on it:
    /// `ready` are the arriving events (the source's state must already
    /// include them, so that a `poll_now` issued after this call sees them).
    ///
    /// Queues the interest when it is armed and `ready` intersects its mask
    /// (`EPOLLERR`/`EPOLLHUP` always do) and it is not queued already, so
    /// repeated notifications never duplicate an entry. Unknown `(key, fd)`
    /// pairs are ignored (a notification may race with `EPOLL_CTL_DEL`).
    ///
    /// Returns `true` when the interest was newly queued; the kernel then
    /// wakes a thread waiting on this instance (and, for nested epoll, the
    /// observers of this instance).
    pub fn notify(&mut self, key: SourceKey, fd: i32, ready: Events) -> bool {
        let Some(idx) = self.find(WatchKey::new(key, fd)) else {
            return false;
        };
        let e = self.entry(idx);
        if e.linked || !ready.intersects(e.mask()) {
            return false;
        }
        self.push_back(idx);
        true
    }

    /// `epoll_wait` without the blocking: appends up to `max_events` events
    /// to `out` and returns how many were appended (0 when nothing is ready;
    /// the kernel then parks the caller and retries after a wake-up).
    ///
    /// Walks only the ready list, as Linux's `ep_send_events`: each queued
    /// interest is taken off the list and re-polled with
    /// `poll_now(source, fd)`, which must return the source's current
    /// readiness. The result is masked by the interest; if empty the entry is
    /// dropped (lazy invalidation) and does not count towards `max_events`.
    /// Otherwise it is reported and then
    ///
    /// * `EPOLLONESHOT`: the interest is disarmed until `EPOLL_CTL_MOD`;
    /// * `EPOLLET`: it stays off the list until a new notification;
    /// * level-triggered: it is re-queued at the tail, so it is reported
    ///   again by the next `wait` while it stays ready.
    ///
    /// Interests left over when `max_events` is reached stay at the head of
    /// the list, ahead of the re-queued level-triggered ones: successive
    /// calls rotate through all ready interests (round-robin, no starvation).
    ///
    /// `max_events == 0` reports nothing (the system call must reject
    /// `maxevents <= 0` with `EINVAL` before getting here). `poll_now` must
    /// not block and is called once per popped entry, never for interests
    /// that are not queued.
    ///
    /// The events go to `out[..n]` (at most `out.len()` of them): waiting
    /// allocates nothing.
    pub fn wait<F>(&mut self, max_events: usize, out: &mut [EpollEvent], mut poll_now: F) -> usize
    where
        F: FnMut(SourceKey, i32) -> Events,
    {
        let max_events = max_events.min(out.len());
        let mut budget = self.ready_len;
        let mut reported = 0;
        while reported < max_events && budget > 0 {
            budget -= 1;
            let idx = self.pop_front();
            let e = self.entry_mut(idx);
            let revents = poll_now(e.key.source, e.key.fd) & e.mask();
            if revents.is_empty() {
                continue;
            }
            out[reported] = EpollEvent {
                events: revents,
                data: e.data,
            };
            reported += 1;
            if e.events.contains(Events::ONESHOT) {
                e.events &= Events::PRIVATE;
            } else if !e.events.contains(Events::ET) {
                self.push_back(idx);
            }
        }
        reported
    }

    /// The readiness of this instance as a pollable source, for nesting it in
    /// another epoll or in `poll()`: `EPOLLIN | EPOLLRDNORM` when at least
    /// one queued interest is really ready, else empty.
    ///
    /// Like Linux's `ep_read_events_proc`, it re-polls entries from the head
    /// and drops those that are no longer ready, stopping at the first ready
    /// one, so its cost is paid by stale entries it removes plus one.
    pub fn poll_self<F>(&mut self, mut poll_now: F) -> Events
    where
        F: FnMut(SourceKey, i32) -> Events,
    {
        while self.head != NIL {
            let idx = self.head;
            let e = self.entry(idx);
            if poll_now(e.key.source, e.key.fd).intersects(e.mask()) {
                return Events::IN | Events::RDNORM;
            }
            self.unlink(idx);
        }
        Events::NONE
    }

    // ----- slab and intrusive ready list -----

    #[inline]
    fn entry(&self, idx: u32) -> &Entry {
        self.slots[idx as usize]
            .as_ref()
            .expect("epoll: dangling slot index")
    }

    #[inline]
    fn entry_mut(&mut self, idx: u32) -> &mut Entry {
        self.slots[idx as usize]
            .as_mut()
            .expect("epoll: dangling slot index")
    }

    fn push_back(&mut self, idx: u32) {
        let tail = self.tail;
        {
            let e = self.entry_mut(idx);
            debug_assert!(!e.linked);
            e.linked = true;
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            self.head = idx;
        } else {
            self.entry_mut(tail).next = idx;
        }
        self.tail = idx;
        self.ready_len += 1;
    }

    fn pop_front(&mut self) -> u32 {
        let idx = self.head;
        assert!(idx != NIL, "epoll: ready list shorter than its length");
        self.unlink(idx);
        idx
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let e = self.entry_mut(idx);
            debug_assert!(e.linked);
            let pn = (e.prev, e.next);
            e.linked = false;
            e.prev = NIL;
            e.next = NIL;
            pn
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.entry_mut(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entry_mut(next).prev = prev;
        }
        self.ready_len -= 1;
    }
}
