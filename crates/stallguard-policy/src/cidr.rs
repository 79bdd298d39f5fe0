//! `STALLGUARD_EXEMPT`: peer address ranges never touched (trusted load balancers, health
//! checks). IPv4 addresses are matched as such and also in their IPv4-mapped IPv6 form
//! (`::ffff:a.b.c.d`), which is how a dual-stack listener reports them.

use std::net::IpAddr;

/// One address range, kept as an IPv6 prefix (IPv4 ranges are stored IPv4-mapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: [u8; 16],
    prefix: u8,
}

/// `10.0.0.0/24`, `192.168.1.5/32`, `2001:db8::/32` (IPv4 ranges in their IPv4 form).
impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.prefix >= 96 => write!(f, "{v4}/{}", self.prefix - 96),
            _ => write!(f, "{v6}/{}", self.prefix),
        }
    }
}

pub const CIDR_ACCEPTS: &str =
    "a comma-separated list of addresses or CIDR ranges, e.g. 10.0.0.0/8,192.168.1.5,::1,2001:db8::/32";

impl Cidr {
    /// Parses `10.0.0.0/8`, `192.168.1.5`, `::1`, `2001:db8::/32`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let t = text.trim();
        let (ip, prefix) = match t.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (t, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("'{t}' is not an IP address or CIDR range"))?;
        let (addr, max, offset) = match ip {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 32u8, 96u8),
            IpAddr::V6(v6) => (v6.octets(), 128u8, 0u8),
        };
        let bits = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("'{t}': prefix length must be 0-{max}"))?,
        };
        Ok(Cidr {
            addr,
            prefix: bits + offset,
        })
    }

    /// Parses a comma-separated list; an empty value is an empty list.
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect()
    }

    /// Whether `peer` (16 bytes: IPv6, or IPv4 in the first 4 bytes when `v4`) is inside.
    pub fn contains(&self, peer: &[u8; 16], v4: bool) -> bool {
        let addr = if v4 {
            std::net::Ipv4Addr::new(peer[0], peer[1], peer[2], peer[3])
                .to_ipv6_mapped()
                .octets()
        } else {
            *peer
        };
        let full = (self.prefix / 8) as usize;
        if addr[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.prefix % 8;
        rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            addr[full] & mask == self.addr[full] & mask
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&[a, b, c, d]);
        x
    }

    #[test]
    fn displayed_as_written() {
        let shown: Vec<String> = Cidr::parse_list("10.0.0.0/24,192.168.1.5,::1,2001:db8::/32")
            .unwrap()
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(
            shown,
            ["10.0.0.0/24", "192.168.1.5/32", "::1/128", "2001:db8::/32"]
        );
    }

    #[test]
    fn ipv4_ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(&v4(10, 1, 2, 3), true));
        assert!(!c.contains(&v4(11, 0, 0, 1), true));
        // The same client seen through a dual-stack listener.
        let mapped = "::ffff:10.9.9.9".parse::<Ipv6Addr>().unwrap().octets();
        assert!(c.contains(&mapped, false));
        let one = Cidr::parse("192.168.1.5").unwrap();
        assert!(one.contains(&v4(192, 168, 1, 5), true));
        assert!(!one.contains(&v4(192, 168, 1, 6), true));
        let odd = Cidr::parse("127.0.0.0/9").unwrap();
        assert!(odd.contains(&v4(127, 127, 0, 1), true));
        assert!(!odd.contains(&v4(127, 128, 0, 1), true));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(&v4(1, 2, 3, 4), true));
    }

    #[test]
    fn ipv6_ranges() {
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains(
            &"2001:db8:1::5".parse::<Ipv6Addr>().unwrap().octets(),
            false
        ));
        assert!(!c.contains(&"2001:db9::5".parse::<Ipv6Addr>().unwrap().octets(), false));
        assert!(Cidr::parse("::1")
            .unwrap()
            .contains(&Ipv6Addr::LOCALHOST.octets(), false));
        assert!(!Cidr::parse("::1").unwrap().contains(&v4(0, 0, 0, 1), true));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::1/129",
            "10.0.0/8",
            "host.example",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Cidr::parse_list("10.0.0.0/8, ::1").unwrap().len(), 2);
        assert!(Cidr::parse_list("10.0.0.0/8,bogus").is_err());
    }
}
