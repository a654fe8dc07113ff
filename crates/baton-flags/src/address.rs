//! IP ranges for the `remoteAddress` strategy and the `IN_CIDR` operator.
//! This module owns reading `a.b.c.d`, `a.b.c.d/len` and their IPv6 forms,
//! and the containment test. It must never resolve host names or touch the
//! network: an entry that is not an address is simply not a range.
//!
//! Read exactly as Unleash's engine (yggdrasil, behind the Python, Node and
//! other SDKs) reads them: neither a range nor the context's address is
//! trimmed (a stray space makes it unreadable), and an IPv4 range holds only
//! IPv4 addresses: `::ffff:10.1.2.3` is an IPv6 address, outside
//! `10.0.0.0/8`, as in `ipnetwork`'s `IpNetwork::contains`.

use std::net::IpAddr;

/// An address with a prefix length; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Reads `text` as it is: callers that split a list trim its entries
    /// themselves (the `remoteAddress` strategy does, `IN_CIDR` does not).
    pub(crate) fn parse(text: &str) -> Option<IpRange> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max_prefix = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= max_prefix)?,
            None => max_prefix,
        };
        Some(IpRange { network, prefix })
    }

    /// Whether `address` is in the range; an address of the other family
    /// never is (Unleash does not map `::ffff:a.b.c.d` to IPv4).
    pub(crate) fn contains(&self, address: IpAddr) -> bool {
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

/// Whether `address` (as the context carries it, untrimmed) is in any of
/// `ranges`.
pub(crate) fn in_any(ranges: &[IpRange], address: &str) -> bool {
    match address.parse::<IpAddr>() {
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
    }

    // Each checked against UnleashClient 6.9.1 (yggdrasil-engine 2.0.0).
    #[test]
    fn addresses_and_ranges_are_read_untrimmed_and_never_mapped_between_families() {
        let list = ranges(&["10.0.0.0/8"]);
        assert!(in_any(&list, "10.1.2.3"));
        assert!(!in_any(&list, " 10.1.2.3"), "a leading space");
        assert!(!in_any(&list, "10.1.2.3 "), "a trailing space");
        assert!(
            !in_any(&list, "::ffff:10.1.2.3"),
            "an IPv4-mapped IPv6 address is IPv6"
        );
        assert_eq!(IpRange::parse(" 10.0.0.0/8"), None);
        assert_eq!(IpRange::parse("10.0.0.0/8 "), None);
        assert_eq!(IpRange::parse("10.0.0.0/ 8"), None);
        let mapped = ranges(&["::ffff:10.0.0.0/104"]);
        assert!(in_any(&mapped, "::ffff:10.1.2.3"));
        assert!(!in_any(&mapped, "10.1.2.3"));
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
