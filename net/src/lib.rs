//! Hardware-independent network stack of the unikernel.
//!
//! Upstream smoltcp does ARP, IPv4, ICMP, DHCP and UDP; TCP is the `uk-tcp`
//! engine (`net/tcp`). This crate adds what a server needs around them:
//!
//! - a device boundary ([`Nic`]) for the kernel's virtio-net driver, with
//!   counters and an edge classifier that drops malformed or foreign frames;
//! - TCP egress: Ethernet and IPv4 headers in front of the engine's
//!   segments, a neighbour table, scatter-gather transmit of payload
//!   references ([`TcpPayload`]: owned buffers or pinned pages, never
//!   copied on a scatter-gather NIC), segmentation offload or software split;
//! - a UDP socket table keyed by port, so a frame is handed to exactly one
//!   smoltcp socket instead of smoltcp walking all of them;
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
mod payload;
mod stack;
mod steer;
pub mod testing;

pub use classify::FourTuple;
pub use error::{ErrorKind, NetError, Result};
pub use nic::{DropReason, ETH_HEADER_LEN, Nic, NicCounters, RxDrops};
pub use payload::{SharedBytes, TcpPayload};
pub use smoltcp::wire::Ipv4Cidr;
pub use stack::{
    EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, IpInfo, NetConfig, NetStack, PollResult,
    SocketId, SocketOptions, StackOptions, StackStats, TIME_WAIT_RECORD_BYTES,
};
pub use steer::{Steer, shard_of, steer};
pub use uk_core::copy::{CopyCounters, CopyStats, Stage as CopyStage};
pub use uk_tcp::Fragment;
