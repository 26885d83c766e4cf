//! POSIX `poll()` readiness evaluation.

use alloc::vec::Vec;

use crate::epoll::SourceKey;
use crate::events::Events;

/// What one `struct pollfd` entry refers to, as resolved by the kernel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PollTarget {
    /// A negative descriptor: ignored, `revents` is 0.
    Ignored,
    /// A descriptor that is not open: `revents` is `POLLNVAL`.
    Invalid,
    /// An open descriptor referring to this source.
    Source(SourceKey),
}

/// Computes `revents` for each `(target, requested)` entry of a `poll()`
/// call, in order, as Linux's `do_pollfd`: `poll_now(source) & (requested |
/// POLLERR | POLLHUP)`, where only the low 16 bits of `requested` count
/// (`pollfd.events` is a `short`). The number of non-empty results is the
/// value `poll()` returns.
///
/// Unlike `epoll_wait` this is inherently O(n): `poll()` names every
/// descriptor on each call. A blocking `poll()` registers a temporary
/// observer on each source and calls this again after a wake-up.
pub fn poll_fds<F>(fds: &[(PollTarget, Events)], mut poll_now: F) -> Vec<Events>
where
    F: FnMut(SourceKey) -> Events,
{
    fds.iter()
        .map(|&(target, requested)| match target {
            PollTarget::Ignored => Events::NONE,
            PollTarget::Invalid => Events::NVAL,
            PollTarget::Source(key) => {
                let filter = Events(requested.bits() & 0xffff) | Events::ALWAYS;
                poll_now(key) & filter
            }
        })
        .collect()
}

/// The return value of `poll()` for a `poll_fds` result: the number of
/// entries with non-empty `revents`.
pub fn count_ready(revents: &[Events]) -> usize {
    revents.iter().filter(|r| !r.is_empty()).count()
}
