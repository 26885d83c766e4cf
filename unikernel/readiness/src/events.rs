//! Linux event bits (`EPOLL*` / `POLL*`) and the [`Events`] bit set.

use core::fmt;
use core::ops::{
    BitAnd, BitAndAssign, BitOr, BitOrAssign, BitXor, BitXorAssign, Not, Sub, SubAssign,
};

/// `EPOLLIN` / `POLLIN`: there is data to read.
pub const EPOLLIN: u32 = 0x0000_0001;
/// `EPOLLPRI` / `POLLPRI`: there is urgent (out-of-band) data to read.
pub const EPOLLPRI: u32 = 0x0000_0002;
/// `EPOLLOUT` / `POLLOUT`: writing now will not block.
pub const EPOLLOUT: u32 = 0x0000_0004;
/// `EPOLLERR` / `POLLERR`: error condition; always reported, never needs requesting.
pub const EPOLLERR: u32 = 0x0000_0008;
/// `EPOLLHUP` / `POLLHUP`: hang-up; always reported, never needs requesting.
pub const EPOLLHUP: u32 = 0x0000_0010;
/// `EPOLLNVAL` / `POLLNVAL`: invalid file descriptor (meaningful for `poll()` only).
pub const EPOLLNVAL: u32 = 0x0000_0020;
/// `EPOLLRDNORM` / `POLLRDNORM`: normal data may be read.
pub const EPOLLRDNORM: u32 = 0x0000_0040;
/// `EPOLLRDBAND` / `POLLRDBAND`: priority-band data may be read.
pub const EPOLLRDBAND: u32 = 0x0000_0080;
/// `EPOLLWRNORM` / `POLLWRNORM`: normal data may be written.
pub const EPOLLWRNORM: u32 = 0x0000_0100;
/// `EPOLLWRBAND` / `POLLWRBAND`: priority-band data may be written.
pub const EPOLLWRBAND: u32 = 0x0000_0200;
/// `EPOLLMSG` / `POLLMSG`: unused by Linux, defined for completeness.
pub const EPOLLMSG: u32 = 0x0000_0400;
/// `EPOLLRDHUP` / `POLLRDHUP`: the peer closed its writing half.
pub const EPOLLRDHUP: u32 = 0x0000_2000;
/// `EPOLLEXCLUSIVE`: exclusive wake-up mode (input flag, `EPOLL_CTL_ADD` only).
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
/// `EPOLLWAKEUP`: keep the system awake while the event is pending (input flag).
pub const EPOLLWAKEUP: u32 = 1 << 29;
/// `EPOLLONESHOT`: disarm the interest after one reported event (input flag).
pub const EPOLLONESHOT: u32 = 1 << 30;
/// `EPOLLET`: edge-triggered reporting (input flag).
pub const EPOLLET: u32 = 1 << 31;

/// A set of Linux event bits, bit-for-bit identical to the `events` field of
/// `struct epoll_event` and (for the low 16 bits) to `struct pollfd`'s
/// `events` / `revents`.
///
/// Unknown bits are preserved, exactly as Linux stores them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Events(pub u32);

impl Events {
    /// No events.
    pub const NONE: Events = Events(0);
    /// `EPOLLIN` (0x001).
    pub const IN: Events = Events(EPOLLIN);
    /// `EPOLLPRI` (0x002).
    pub const PRI: Events = Events(EPOLLPRI);
    /// `EPOLLOUT` (0x004).
    pub const OUT: Events = Events(EPOLLOUT);
    /// `EPOLLERR` (0x008), always reported.
    pub const ERR: Events = Events(EPOLLERR);
    /// `EPOLLHUP` (0x010), always reported.
    pub const HUP: Events = Events(EPOLLHUP);
    /// `EPOLLNVAL` / `POLLNVAL` (0x020).
    pub const NVAL: Events = Events(EPOLLNVAL);
    /// `EPOLLRDNORM` (0x040).
    pub const RDNORM: Events = Events(EPOLLRDNORM);
    /// `EPOLLRDBAND` (0x080).
    pub const RDBAND: Events = Events(EPOLLRDBAND);
    /// `EPOLLWRNORM` (0x100).
    pub const WRNORM: Events = Events(EPOLLWRNORM);
    /// `EPOLLWRBAND` (0x200).
    pub const WRBAND: Events = Events(EPOLLWRBAND);
    /// `EPOLLMSG` (0x400).
    pub const MSG: Events = Events(EPOLLMSG);
    /// `EPOLLRDHUP` (0x2000).
    pub const RDHUP: Events = Events(EPOLLRDHUP);
    /// `EPOLLEXCLUSIVE` (1 << 28), input flag.
    pub const EXCLUSIVE: Events = Events(EPOLLEXCLUSIVE);
    /// `EPOLLWAKEUP` (1 << 29), input flag.
    pub const WAKEUP: Events = Events(EPOLLWAKEUP);
    /// `EPOLLONESHOT` (1 << 30), input flag.
    pub const ONESHOT: Events = Events(EPOLLONESHOT);
    /// `EPOLLET` (1 << 31), input flag.
    pub const ET: Events = Events(EPOLLET);

    /// Bits that are always reported whether requested or not
    /// (`EPOLLERR | EPOLLHUP`; Linux ORs them into every interest).
    pub const ALWAYS: Events = Events(EPOLLERR | EPOLLHUP);
    /// Input-only flags that modify behaviour rather than name an event
    /// (Linux's `EP_PRIVATE_BITS`): `EPOLLWAKEUP | EPOLLONESHOT | EPOLLET |
    /// EPOLLEXCLUSIVE`. A oneshot interest is disarmed by clearing every
    /// other bit.
    pub const PRIVATE: Events = Events(EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE);
    /// Bits allowed together with `EPOLLEXCLUSIVE` on `EPOLL_CTL_ADD`
    /// (Linux's `EPOLLEXCLUSIVE_OK_BITS`).
    pub const EXCLUSIVE_OK: Events =
        Events(EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE);

    /// Wraps raw bits (unknown bits are kept).
    #[inline]
    pub const fn from_bits(bits: u32) -> Events {
        Events(bits)
    }

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The empty set.
    #[inline]
    pub const fn empty() -> Events {
        Events(0)
    }

    /// True when no bit is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when `self` and `other` share at least one bit.
    #[inline]
    pub const fn intersects(self, other: Events) -> bool {
        self.0 & other.0 != 0
    }

    /// Bitwise union.
    #[inline]
    pub const fn union(self, other: Events) -> Events {
        Events(self.0 | other.0)
    }

    /// Bitwise intersection.
    #[inline]
    pub const fn intersection(self, other: Events) -> Events {
        Events(self.0 & other.0)
    }

    /// The bits of `self` that are not in `other`.
    #[inline]
    pub const fn difference(self, other: Events) -> Events {
        Events(self.0 & !other.0)
    }

    /// `self` without the input-only flags ([`Events::PRIVATE`]): the event
    /// bits that can actually be reported.
    #[inline]
    pub const fn reportable(self) -> Events {
        self.difference(Events::PRIVATE)
    }
}

impl From<u32> for Events {
    #[inline]
    fn from(bits: u32) -> Events {
        Events(bits)
    }
}

impl From<Events> for u32 {
    #[inline]
    fn from(e: Events) -> u32 {
        e.0
    }
}

impl BitOr for Events {
    type Output = Events;
    #[inline]
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}

impl BitOrAssign for Events {
    #[inline]
    fn bitor_assign(&mut self, rhs: Events) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Events {
    type Output = Events;
    #[inline]
    fn bitand(self, rhs: Events) -> Events {
        Events(self.0 & rhs.0)
    }
}

impl BitAndAssign for Events {
    #[inline]
    fn bitand_assign(&mut self, rhs: Events) {
        self.0 &= rhs.0;
    }
}

impl BitXor for Events {
    type Output = Events;
    #[inline]
    fn bitxor(self, rhs: Events) -> Events {
        Events(self.0 ^ rhs.0)
    }
}

impl BitXorAssign for Events {
    #[inline]
    fn bitxor_assign(&mut self, rhs: Events) {
        self.0 ^= rhs.0;
    }
}

impl Sub for Events {
    type Output = Events;
    #[inline]
    fn sub(self, rhs: Events) -> Events {
        self.difference(rhs)
    }
}

impl SubAssign for Events {
    #[inline]
    fn sub_assign(&mut self, rhs: Events) {
        self.0 &= !rhs.0;
    }
}

impl Not for Events {
    type Output = Events;
    #[inline]
    fn not(self) -> Events {
        Events(!self.0)
    }
}

const NAMES: [(u32, &str); 16] = [
    (EPOLLIN, "IN"),
    (EPOLLPRI, "PRI"),
    (EPOLLOUT, "OUT"),
    (EPOLLERR, "ERR"),
    (EPOLLHUP, "HUP"),
    (EPOLLNVAL, "NVAL"),
    (EPOLLRDNORM, "RDNORM"),
    (EPOLLRDBAND, "RDBAND"),
    (EPOLLWRNORM, "WRNORM"),
    (EPOLLWRBAND, "WRBAND"),
    (EPOLLMSG, "MSG"),
    (EPOLLRDHUP, "RDHUP"),
    (EPOLLEXCLUSIVE, "EXCLUSIVE"),
    (EPOLLWAKEUP, "WAKEUP"),
    (EPOLLONESHOT, "ONESHOT"),
    (EPOLLET, "ET"),
];

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("Events(NONE)");
        }
        f.write_str("Events(")?;
        let mut rest = self.0;
        let mut first = true;
        for &(bit, name) in &NAMES {
            if rest & bit != 0 {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !bit;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{rest:#x}")?;
        }
        f.write_str(")")
    }
}
