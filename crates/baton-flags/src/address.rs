//! IP ranges for the `remoteAddress` strategy and the `IN_CIDR` operator.
//! This module owns reading `a.b.c.d`, `a.b.c.d/len` and their IPv6 forms,
//! and the containment test. It must never resolve host names or touch the
//! network: an entry that is not an address is simply not a range.

use std::net::IpAddr;

/// An address with a prefix length; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub(crate) fn parse(text: &str) -> Option<IpRange> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max_prefix = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max_prefix)?,
            None => max_prefix,
        };
        Some(IpRange { network, prefix })
    }

    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket arrives as ::ffff:a.b.c.d.
        let address = match (self.network, address) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => address,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => same_prefix(
                u32::from(network).into(),
                u32::from(address).into(),
                self.prefix,
                32,
            ),
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                same_prefix(u128::from(network), u128::from(address), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn same_prefix(network: u128, address: u128, prefix: u8, width: u32) -> bool {
    let host_bits = width - u32::from(prefix);
    // A shift by the full width would overflow: /0 matches everything.
    if host_bits >= width {
        return true;
    }
    (network >> host_bits) == (address >> host_bits)
}

/// Whether `address` (as the context carries it) is in any of `ranges`.
pub(crate) fn in_any(ranges: &[IpRange], address: &str) -> bool {
    match address.trim().parse::<IpAddr>() {
        Ok(address) => ranges.iter().any(|range| range.contains(address)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter()
            .filter_map(|text| IpRange::parse(text))
            .collect()
    }

    #[test]
    fn single_addresses_and_ranges() {
        let list = ranges(&["127.0.0.1", "160.33.0.0/16", "2001:db8::/32", "10.1.2.3/8"]);
        assert!(in_any(&list, "127.0.0.1"));
        assert!(!in_any(&list, "127.0.0.2"));
        assert!(in_any(&list, "160.33.255.1"));
        assert!(!in_any(&list, "160.34.0.1"));
        assert!(in_any(&list, "2001:db8:0:1::42"));
        assert!(!in_any(&list, "2001:db9::1"));
        assert!(
            in_any(&list, "10.200.0.1"),
            "host bits in the network are ignored"
        );
        assert!(in_any(&list, "::ffff:160.33.1.1"), "IPv4-mapped IPv6");
    }

    #[test]
    fn junk_is_not_a_range_and_matches_nothing() {
        assert_eq!(
            ranges(&[
                "127.invalid",
                "bad::cidr",
                "1.2.3.4/33",
                "::/129",
                "1.2.3.4/"
            ]),
            vec![]
        );
        let list = ranges(&["0.0.0.0/0"]);
        assert!(in_any(&list, "8.8.8.8"));
        assert!(!in_any(&list, "not an address"));
        assert!(!in_any(&list, "::1"));
    }
}
