//! Hardware-independent network stack of the unikernel.
//!
//! Upstream smoltcp does the protocol work; this crate adds what a server
//! needs on top of it (see `STYLE.md`, "Known traps in our own dependencies"):
//!
//! - a device boundary ([`Nic`]) for the kernel's virtio-net driver, with
//!   counters and an edge classifier that drops malformed or foreign frames;
//! - a socket table keyed by 4-tuple / local port, so a frame is handed to
//!   exactly one smoltcp socket instead of smoltcp walking all of them;
//! - a TCP listen backlog (smoltcp's listening socket accepts one connection);
//! - a non-blocking, errno-shaped socket API ([`NetStack`]) with epoll
//!   readiness bits, on which the kernel builds blocking `std::net` calls.
//!
//! Nothing here reads a clock or blocks: the kernel passes the time to
//! [`NetStack::poll`] and calls it on interrupts and at the returned deadline.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod classify;
mod error;
mod nic;
mod stack;
pub mod testing;

pub use classify::FourTuple;
pub use error::{ErrorKind, NetError, Result};
pub use nic::{DropReason, ETH_HEADER_LEN, Nic, NicCounters, RxDrops};
pub use smoltcp::wire::Ipv4Cidr;
pub use stack::{
    CopyStats, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, IpInfo, NetConfig, NetStack,
    PollResult, SocketId, SocketOptions, StackOptions, StackStats, TIME_WAIT_RECORD_BYTES,
    TcpPayload,
};
