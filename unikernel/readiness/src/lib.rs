//! Hardware-independent readiness logic: epoll interest and ready lists
//!
//! Linux-compatible `epoll` whose `epoll_wait` costs O(ready), not
//! O(registered): readiness is *pushed* by event sources (the network stack
//! marks a socket ready when its state changes) instead of being discovered
//! by scanning every registered descriptor.
//!
//! * [`Events`]: Linux event bits, values identical to Linux (`EPOLLIN` =
//!   0x001 ... `EPOLLET` = 1 << 31).
//! * [`EpollInstance`]: one epoll descriptor: `ctl_add`/`ctl_mod`/`ctl_del`,
//!   [`notify`](EpollInstance::notify) from sources, and
//!   [`wait`](EpollInstance::wait), which walks only the ready list.
//! * [`SourceState`]: the helper a source embeds to keep its readiness and
//!   fan notifications out to the epoll interests watching it.
//! * [`poll_fds`]: `revents` evaluation for POSIX `poll()`.
//!
//! This crate is the data structure and its semantics; the kernel adds
//! locking, blocking and wake-ups.
//!
//! # Readiness contract
//!
//! A source (socket, pipe, eventfd, timerfd, nested epoll ...) must expose
//! its *current* readiness through `poll_now`, which is cheap, never blocks
//! and never calls back into the instance being waited on. **Whenever a new
//! event arrives** — the source becomes readable, writable or gets
//! priority data, hang-up, error or read-hang-up, *and also when more of an
//! event arrives while its bit is already set* (more data, more buffer
//! space) — the source must **first** update the state `poll_now` returns and
//! **then** call [`EpollInstance::notify`]`(key, fd, arriving_events)` on
//! every interest observing it (as returned in the [`Fanout`] of
//! [`SourceState::set`] / [`SourceState::raise`]), outside the source's own
//! lock. Notifying before the state is visible can lose the event: `wait`
//! may re-poll in between, see nothing and drop the entry.
//!
//! A source need **not** notify when an event disappears (data consumed,
//! buffer full): invalidation is lazy. [`EpollInstance::wait`] (and
//! [`EpollInstance::poll_self`]) re-poll every entry they take off the ready
//! list and drop the ones that no longer show a requested event, so a stale
//! entry costs one `poll_now` call, once. (This is Asterinas' contract —
//! notify whenever a new event arrives, invalidate whenever an old one
//! disappears — with the invalidation performed by the reader.)
//!
//! On `EPOLL_CTL_ADD`/`EPOLL_CTL_MOD` the kernel attaches the observer to
//! the source **before** sampling the readiness it passes as `current`
//! (Linux calls `f_op->poll` at that point), so that no event can fall
//! between the sample and the registration; a notification racing in
//! between is harmless because the ready list never holds an interest
//! twice. The instance then guarantees: every armed interest whose source
//! shows a requested event (or `EPOLLERR`/`EPOLLHUP`) is on the ready list,
//! or has been reported since its last notification if it is
//! edge-triggered; so `wait` never misses a ready level-triggered interest
//! while touching only queued ones. The kernel wakes a thread blocked in
//! `epoll_wait` when `notify` returns `true` (the interest was newly queued)
//! or [`EpollInstance::is_ready`] turns true after a `ctl` call.
//!
//! # Example
//!
//! ```
//! use uk_readiness::{EpollEvent, EpollInstance, Events, Observer, SourceState};
//!
//! let mut ep = EpollInstance::new();
//! let mut sock = SourceState::new(Events::OUT);
//! // EPOLL_CTL_ADD: attach the observer first, then sample readiness.
//! sock.add_observer(Observer { instance: 0, key: 7, fd: 3 });
//! ep.ctl_add(7, 3, Events::IN, 0xabc, sock.events()).unwrap();
//! assert!(!ep.is_ready());
//!
//! // The network stack receives data: update state, then fan out.
//! let fanout = sock.raise(Events::IN | Events::RDNORM);
//! for o in &fanout.observers {
//!     ep.notify(o.key, o.fd, fanout.events);
//! }
//!
//! let mut out = [EpollEvent::default(); 16];
//! let n = ep.wait(16, &mut out, |_key, _fd| sock.events());
//! assert_eq!(n, 1);
//! assert_eq!(out[0], EpollEvent { events: Events::IN, data: 0xabc });
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod epoll;
mod events;
mod poll;
mod source;

pub use epoll::{
    CtlOp, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EpollError, EpollEvent, EpollInstance,
    Interest, InterestState, SourceKey, WatchKey,
};
pub use events::*;
pub use poll::{PollTarget, count_ready, poll_fds};
pub use source::{Fanout, InstanceId, Observer, SourceState};
