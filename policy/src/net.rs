//! Protected network destinations: a CIDR and a port range.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// `10.0.0.0/8:443`, `192.0.2.7:1000-2000`, `[2001:db8::]/32:*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetPattern {
    pub addr: IpAddr,
    pub prefix: u8,
    /// Inclusive port range.
    pub ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetPatternError {
    #[error(
        "`{0}`: expected ADDR[/PREFIX]:PORTS, e.g. 10.0.0.0/8:443 or [2001:db8::]/32:1000-2000"
    )]
    Syntax(String),
    #[error("`{input}`: `{addr}` is not an IP address")]
    Addr { input: String, addr: String },
    #[error("`{input}`: prefix /{prefix} is longer than the address ({max} bits)")]
    Prefix {
        input: String,
        prefix: u32,
        max: u32,
    },
    #[error("`{input}`: host bits are set below /{prefix}; did you mean {network}/{prefix}?")]
    HostBits {
        input: String,
        prefix: u8,
        network: IpAddr,
    },
    #[error("`{input}`: `{ports}` is not a port, a range FIRST-LAST, or *")]
    Ports { input: String, ports: String },
}

impl NetPattern {
    pub fn parse(s: &str) -> Result<Self, NetPatternError> {
        let syntax = || NetPatternError::Syntax(s.to_owned());
        let (host, ports) = s.rsplit_once(':').ok_or_else(syntax)?;
        let (addr, prefix) = match host.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (host, None),
        };
        let addr_str = addr.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = addr_str.parse().map_err(|_| NetPatternError::Addr {
            input: s.to_owned(),
            addr: addr_str.to_owned(),
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u32>().map_err(|_| syntax())?,
        };
        if prefix > max {
            return Err(NetPatternError::Prefix {
                input: s.to_owned(),
                prefix,
                max,
            });
        }
        let prefix = prefix as u8;
        let network = mask(addr, prefix);
        if network != addr {
            return Err(NetPatternError::HostBits {
                input: s.to_owned(),
                prefix,
                network,
            });
        }
        let bad_ports = || NetPatternError::Ports {
            input: s.to_owned(),
            ports: ports.to_owned(),
        };
        let ports = if ports == "*" {
            (0, u16::MAX)
        } else if let Some((a, b)) = ports.split_once('-') {
            let (a, b) = (
                a.parse().map_err(|_| bad_ports())?,
                b.parse().map_err(|_| bad_ports())?,
            );
            if a > b {
                return Err(bad_ports());
            }
            (a, b)
        } else {
            let p = ports.parse().map_err(|_| bad_ports())?;
            (p, p)
        };
        Ok(NetPattern {
            addr,
            prefix,
            ports,
        })
    }

    /// The address as the kernel keys it: IPv4 mapped into IPv6.
    pub fn mapped_addr(&self) -> [u8; 16] {
        match self.addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    pub fn mapped_prefix_bits(&self) -> u32 {
        match self.addr {
            IpAddr::V4(_) => 96 + u32::from(self.prefix),
            IpAddr::V6(_) => u32::from(self.prefix),
        }
    }

    /// Whether every destination of `other` is one of this pattern's: its
    /// network inside this one and its ports inside these (IPv4 and its
    /// IPv6-mapped form are the same destinations).
    pub fn contains(&self, other: &NetPattern) -> bool {
        let (bits, inner) = (self.mapped_prefix_bits(), other.mapped_prefix_bits());
        if inner < bits || other.ports.0 < self.ports.0 || other.ports.1 > self.ports.1 {
            return false;
        }
        let shift = 128 - bits;
        let outer = u128::from_be_bytes(self.mapped_addr());
        let inner = u128::from_be_bytes(other.mapped_addr());
        shift == 128 || outer >> shift == inner >> shift
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl fmt::Display for NetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.prefix)?,
            IpAddr::V6(a) => write!(f, "[{a}]/{}", self.prefix)?,
        }
        match self.ports {
            (0, u16::MAX) => f.write_str(":*"),
            (a, b) if a == b => write!(f, ":{a}"),
            (a, b) => write!(f, ":{a}-{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_v6_ports_and_ranges() {
        let p = NetPattern::parse("10.0.0.0/8:443").unwrap();
        assert_eq!((p.prefix, p.ports), (8, (443, 443)));
        assert_eq!(p.mapped_prefix_bits(), 104);
        assert_eq!(&p.mapped_addr()[10..13], &[0xff, 0xff, 10]);
        let p = NetPattern::parse("192.0.2.7:1000-2000").unwrap();
        assert_eq!((p.prefix, p.ports), (32, (1000, 2000)));
        let p = NetPattern::parse("[2001:db8::]/32:*").unwrap();
        assert_eq!((p.prefix, p.ports), (32, (0, u16::MAX)));
        assert_eq!(p.to_string(), "[2001:db8::]/32:*");
    }

    #[test]
    fn nesting_needs_both_the_network_and_the_ports_inside() {
        let p = |s| NetPattern::parse(s).unwrap();
        assert!(p("10.20.0.0/16:*").contains(&p("10.20.0.5/32:5432")));
        assert!(p("10.20.0.0/16:*").contains(&p("10.20.0.0/16:22")));
        assert!(!p("10.20.0.5/32:5432").contains(&p("10.20.0.0/16:*")));
        assert!(
            !p("10.20.0.0/16:5432").contains(&p("10.20.0.5/32:*")),
            "ports"
        );
        assert!(!p("10.20.0.0/16:*").contains(&p("10.21.0.5/32:*")));
        assert!(p("0.0.0.0/0:*").contains(&p("192.0.2.1/32:80")));
        assert!(
            p("[::ffff:10.0.0.0]/104:*").contains(&p("10.1.2.3/32:1")),
            "mapped"
        );
        assert!(!p("10.0.0.0/8:*").contains(&p("[2001:db8::]/32:*")));
        assert!(
            p("[::]/0:*").contains(&p("10.0.0.0/8:*")),
            "v4 is inside ::/0"
        );
    }

    #[test]
    fn malformed_input_names_what_is_wrong() {
        use NetPatternError::*;
        assert!(
            matches!(NetPattern::parse("10.0.0.0/8"), Err(Syntax(_))),
            "no ports"
        );
        assert!(matches!(NetPattern::parse("10.0.0/8:1"), Err(Addr { .. })));
        assert!(matches!(
            NetPattern::parse("10.0.0.0/33:1"),
            Err(Prefix { .. })
        ));
        assert!(matches!(
            NetPattern::parse("10.0.0.1/8:1"),
            Err(HostBits { .. })
        ));
        assert!(matches!(
            NetPattern::parse("10.0.0.0/8:9-1"),
            Err(Ports { .. })
        ));
        assert!(matches!(
            NetPattern::parse("10.0.0.0/8:70000"),
            Err(Ports { .. })
        ));
        assert!(matches!(NetPattern::parse("nonsense"), Err(Syntax(_))));
    }
}
