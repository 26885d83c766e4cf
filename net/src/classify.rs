//! Parses each received frame once, at the edge, to decide which socket (if
//! any) it belongs to, and drops what no socket could use.
//!
//! smoltcp re-parses the frame afterwards; checksums are verified only here
//! (smoltcp is told to compute them on transmit only).

use core::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Packet, IpAddress, IpProtocol, Ipv4Cidr, Ipv4Packet, TcpPacket, UdpPacket,
};

use crate::nic::{DropReason, ETH_HEADER_LEN};

/// A TCP/UDP connection key, from our side's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple {
    /// Our address.
    pub local_addr: Ipv4Addr,
    /// Our port.
    pub local_port: u16,
    /// The peer's address.
    pub remote_addr: Ipv4Addr,
    /// The peer's port.
    pub remote_port: u16,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Drop(DropReason),
    /// ARP aimed at our address; `sender` is the sender's protocol address.
    Arp {
        sender: Ipv4Addr,
    },
    /// ICMP or another IP protocol: the interface itself handles it.
    Control,
    Tcp {
        key: FourTuple,
        syn_only: bool,
    },
    Udp {
        dst_port: u16,
    },
}

/// What the classifier needs to know about us.
pub(crate) struct Us {
    pub mac: EthernetAddress,
    pub addr: Option<Ipv4Cidr>,
    pub mtu: usize,
}

fn martian_source(a: Ipv4Addr) -> bool {
    a.is_broadcast() || a.is_multicast()
}

pub(crate) fn classify(frame: &[u8], us: &Us) -> Class {
    use Class::Drop;
    if frame.len() > us.mtu + ETH_HEADER_LEN {
        return Drop(DropReason::Oversize);
    }
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Drop(DropReason::Truncated);
    };
    let dst = eth.dst_addr();
    if dst != us.mac && !dst.is_broadcast() {
        return Drop(DropReason::NotForUs);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => classify_arp(eth.payload(), us),
        EthernetProtocol::Ipv4 => classify_ipv4(eth.payload(), us),
        _ => Drop(DropReason::UnknownEthertype),
    }
}

fn classify_arp(payload: &[u8], us: &Us) -> Class {
    let Ok(pkt) = ArpPacket::new_checked(payload) else {
        return Class::Drop(DropReason::Truncated);
    };
    let Ok(repr) = ArpRepr::parse(&pkt) else {
        return Class::Drop(DropReason::Malformed);
    };
    match repr {
        ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } => {
            if matches!(operation, ArpOperation::Unknown(_))
                || !source_hardware_addr.is_unicast()
                || martian_source(source_protocol_addr)
            {
                return Class::Drop(DropReason::Malformed);
            }
            match us.addr {
                Some(cidr) if cidr.address() == target_protocol_addr => Class::Arp {
                    sender: source_protocol_addr,
                },
                _ => Class::Drop(DropReason::NotForUs),
            }
        }
        _ => Class::Drop(DropReason::Malformed),
    }
}

fn classify_ipv4(payload: &[u8], us: &Us) -> Class {
    use Class::Drop;
    if payload.len() < 20 {
        return Drop(DropReason::Truncated);
    }
    let raw = Ipv4Packet::new_unchecked(payload);
    if raw.version() != 4 || raw.header_len() < 20 || raw.total_len() < u16::from(raw.header_len())
    {
        return Drop(DropReason::Malformed);
    }
    if payload.len() < usize::from(raw.total_len()) || payload.len() < usize::from(raw.header_len())
    {
        return Drop(DropReason::Truncated);
    }
    let Ok(ip) = Ipv4Packet::new_checked(payload) else {
        return Drop(DropReason::Malformed);
    };
    if !ip.verify_checksum() {
        return Drop(DropReason::BadChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Drop(DropReason::Unsupported);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if martian_source(src) {
        return Drop(DropReason::Malformed);
    }
    let to_us = match us.addr {
        Some(cidr) => dst == cidr.address() || dst.is_broadcast() || cidr.broadcast() == Some(dst),
        // Unaddressed: only UDP (DHCP offers may be broadcast or unicast to
        // the address about to be leased).
        None => ip.next_header() == IpProtocol::Udp,
    };
    if !to_us {
        return Drop(DropReason::NotForUs);
    }
    let (s, d) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
    let body = ip.payload();
    match ip.next_header() {
        IpProtocol::Tcp => {
            let Ok(tcp) = TcpPacket::new_checked(body) else {
                return Drop(DropReason::Truncated);
            };
            if !tcp.verify_checksum(&s, &d) {
                return Drop(DropReason::BadChecksum);
            }
            if us.addr.is_none() || dst.is_broadcast() || src.is_unspecified() {
                return Drop(DropReason::NotForUs);
            }
            Class::Tcp {
                key: FourTuple {
                    local_addr: dst,
                    local_port: tcp.dst_port(),
                    remote_addr: src,
                    remote_port: tcp.src_port(),
                },
                syn_only: tcp.syn() && !tcp.ack() && !tcp.rst(),
            }
        }
        IpProtocol::Udp => {
            let Ok(udp) = UdpPacket::new_checked(body) else {
                return Drop(DropReason::Truncated);
            };
            if !udp.verify_checksum(&s, &d) {
                return Drop(DropReason::BadChecksum);
            }
            Class::Udp {
                dst_port: udp.dst_port(),
            }
        }
        IpProtocol::Icmp => {
            let Ok(icmp) = Icmpv4Packet::new_checked(body) else {
                return Drop(DropReason::Truncated);
            };
            if !icmp.verify_checksum() {
                return Drop(DropReason::BadChecksum);
            }
            Class::Control
        }
        _ => Class::Control,
    }
}
