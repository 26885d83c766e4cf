//! Software flow steering: which stack shard a received frame belongs to,
//! when the kernel runs one [`crate::NetStack`] per CPU (each over its own
//! device queue pair).
//!
//! A TCP connection lives in exactly one shard, chosen by a keyed hash of
//! the peer's address and port, whatever queue the device delivered its
//! frames to (a multiqueue device's own steering usually agrees after the
//! first segment: QEMU's tap learns a flow's queue from the queue our
//! replies leave on). Connections we open ourselves use an ephemeral local
//! port and live in shard 0, as do UDP, ICMP and DHCP; ARP goes to every
//! shard (each keeps its own neighbour table).

/// Where a received frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// To this shard only.
    Shard(usize),
    /// To every shard (ARP).
    All,
}

/// The shard of the frame `frame` (Ethernet header first) among `shards`,
/// with the hash key `key` (random per boot, so a client cannot aim
/// connections at one shard).
pub fn steer(frame: &[u8], shards: usize, key: u64) -> Steer {
    if shards <= 1 {
        return Steer::Shard(0);
    }
    let at = |i: usize| frame.get(i).copied().unwrap_or(0);
    match [at(12), at(13)] {
        [0x08, 0x06] => return Steer::All,
        [0x08, 0x00] => {}
        _ => return Steer::Shard(0),
    }
    let ip = 14;
    let ihl = usize::from(at(ip) & 0x0f) * 4;
    let first_fragment = (u16::from(at(ip + 6) & 0x1f) << 8 | u16::from(at(ip + 7))) == 0;
    if at(ip + 9) != 6 || !first_fragment || ihl < 20 || frame.len() < ip + ihl + 4 {
        return Steer::Shard(0);
    }
    let src = u32::from_be_bytes([at(ip + 12), at(ip + 13), at(ip + 14), at(ip + 15)]);
    let tcp = ip + ihl;
    let sport = u16::from_be_bytes([at(tcp), at(tcp + 1)]);
    let dport = u16::from_be_bytes([at(tcp + 2), at(tcp + 3)]);
    if dport >= crate::stack::EPHEMERAL_FIRST {
        return Steer::Shard(0);
    }
    Steer::Shard(shard_of(src, sport, shards, key))
}

/// The shard of a connection from `addr`:`port` (multiply-shift hashing).
pub fn shard_of(addr: u32, port: u16, shards: usize, key: u64) -> usize {
    let x = (u64::from(addr) << 16 | u64::from(port)) ^ key;
    let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    ((h * shards as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn tcp_frame(src: [u8; 4], sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 6..14 + 8].copy_from_slice(&frag.to_be_bytes());
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn one_shard_takes_everything() {
        assert_eq!(steer(&[], 1, 7), Steer::Shard(0));
        assert_eq!(
            steer(&tcp_frame([10, 0, 0, 1], 40000, 80, 0), 1, 7),
            Steer::Shard(0)
        );
    }

    #[test]
    fn arp_goes_everywhere_and_other_traffic_to_shard_0() {
        let mut arp = alloc::vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(steer(&arp, 4, 1), Steer::All);
        let mut udp = tcp_frame([10, 0, 0, 1], 68, 67, 0);
        udp[14 + 9] = 17;
        assert_eq!(steer(&udp, 4, 1), Steer::Shard(0));
        // Our own connections (ephemeral local port), fragments, short or
        // foreign frames.
        assert_eq!(
            steer(&tcp_frame([10, 0, 0, 1], 80, 50000, 0), 4, 1),
            Steer::Shard(0)
        );
        assert_eq!(
            steer(&tcp_frame([10, 0, 0, 1], 9, 80, 0x0010), 4, 1),
            Steer::Shard(0)
        );
        assert_eq!(
            steer(&tcp_frame([10, 0, 0, 1], 9, 80, 0)[..36], 4, 1),
            Steer::Shard(0)
        );
        assert_eq!(steer(&[0u8; 60], 4, 1), Steer::Shard(0));
    }

    #[test]
    fn a_connection_stays_on_one_shard_and_clients_spread() {
        let mut seen = [0usize; 4];
        for port in 1024..3072u16 {
            let f = tcp_frame([10, 0, 0, 1], port, 80, 0);
            let Steer::Shard(s) = steer(&f, 4, 0x1234) else {
                panic!("not one shard")
            };
            assert_eq!(steer(&f, 4, 0x1234), Steer::Shard(s));
            assert_eq!(
                s,
                shard_of(u32::from_be_bytes([10, 0, 0, 1]), port, 4, 0x1234)
            );
            seen[s] += 1;
        }
        // 2048 ports over 4 shards: each gets a fair share.
        assert!(seen.iter().all(|&n| (384..=640).contains(&n)), "{seen:?}");
        // Another key moves some connections elsewhere.
        let moved = (1024..1100u16)
            .filter(|&p| shard_of(1, p, 4, 1) != shard_of(1, p, 4, 2))
            .count();
        assert!(moved > 20, "{moved}");
    }
}
