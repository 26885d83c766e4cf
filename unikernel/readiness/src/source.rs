//! Source-side helper: current readiness plus the epoll interests watching it.

use alloc::vec::Vec;

use crate::epoll::SourceKey;
use crate::events::Events;

/// Kernel-chosen identity of an [`EpollInstance`](crate::EpollInstance)
/// (for example the address or table index of its open-file object).
pub type InstanceId = u64;

/// One epoll interest watching a source: the instance and the
/// `(key, fd)` under which the source is registered there. The source
/// notifies it with
/// [`EpollInstance::notify(key, fd, events)`](crate::EpollInstance::notify).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Observer {
    /// The watching epoll instance.
    pub instance: InstanceId,
    /// The source's key in that instance.
    pub key: SourceKey,
    /// The descriptor number under which it was added.
    pub fd: i32,
}

/// What a source must deliver after a readiness change: call
/// `notify(o.key, o.fd, events)` on the instance of every observer `o`.
/// Empty when no notification is needed.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Fanout {
    /// The arriving events to pass to `notify`.
    pub events: Events,
    /// The interests to notify.
    pub observers: Vec<Observer>,
}

impl Fanout {
    /// True when there is nobody to notify.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() || self.observers.is_empty()
    }
}

/// Readiness state embedded in an event source (Asterinas' `Pollee`, Linux's
/// wait queue plus `f_op->poll`): the current [`Events`] and the small list of
/// epoll interests observing the source.
///
/// The kernel keeps it under the source's lock, answers `poll_now` from
/// [`events`](SourceState::events), and delivers the returned [`Fanout`]
/// after releasing that lock (the instance lock must not be taken inside the
/// source lock, since `wait` takes them in the other order).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SourceState {
    events: Events,
    observers: Vec<Observer>,
}

impl SourceState {
    /// A source whose initial readiness is `events`, with no observers.
    pub fn new(events: Events) -> SourceState {
        SourceState {
            events,
            observers: Vec::new(),
        }
    }

    /// The current readiness: what `poll_now` must return for this source.
    #[inline]
    pub fn events(&self) -> Events {
        self.events
    }

    /// Replaces the readiness with `events` (a level change). Bits that
    /// became set are new events: they are returned with every observer to
    /// notify. Bits that were cleared need no notification; instances drop
    /// stale entries when they re-poll.
    pub fn set(&mut self, events: Events) -> Fanout {
        let new = events - self.events;
        self.events = events;
        self.fanout(new)
    }

    /// Records that `events` arrived (ORed into the readiness) and returns
    /// every observer to notify, even if the bits were already set: more data
    /// on an already readable socket is a new edge for `EPOLLET` interests,
    /// as in Linux where every `sk_data_ready` wakes the wait queue.
    pub fn raise(&mut self, events: Events) -> Fanout {
        self.events |= events;
        self.fanout(events)
    }

    /// Clears `events` from the readiness (data consumed, buffer full ...).
    /// Never needs a notification.
    #[inline]
    pub fn clear(&mut self, events: Events) {
        self.events -= events;
    }

    /// Makes room for one more observer, so that the next
    /// [`add_observer`](Self::add_observer) does not allocate; false when
    /// memory is short.
    pub fn reserve_observer(&mut self) -> bool {
        self.observers.try_reserve(1).is_ok()
    }

    /// Adds an observer (on `EPOLL_CTL_ADD`, before sampling the readiness
    /// passed as `current`). Returns `false` if it was already present.
    pub fn add_observer(&mut self, observer: Observer) -> bool {
        if self.observers.contains(&observer) {
            return false;
        }
        self.observers.push(observer);
        true
    }

    /// Removes an observer (on `EPOLL_CTL_DEL`). Returns `false` if absent.
    pub fn remove_observer(&mut self, observer: &Observer) -> bool {
        match self.observers.iter().position(|o| o == observer) {
            Some(i) => {
                self.observers.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes every observer belonging to `instance` (when that epoll
    /// instance is closed). Returns how many were removed.
    pub fn remove_instance(&mut self, instance: InstanceId) -> usize {
        let before = self.observers.len();
        self.observers.retain(|o| o.instance != instance);
        before - self.observers.len()
    }

    /// The current observers.
    #[inline]
    pub fn observers(&self) -> &[Observer] {
        &self.observers
    }

    fn fanout(&self, events: Events) -> Fanout {
        if events.is_empty() || self.observers.is_empty() {
            return Fanout::default();
        }
        Fanout {
            events,
            observers: self.observers.clone(),
        }
    }
}
