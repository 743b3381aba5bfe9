//! Trusted peers: the networks whose word about the client Peregrine believes (forwarded
//! fields in the proxy, PROXY protocol headers on listeners). One type, so both ask the same
//! question the same way (an IPv4-mapped IPv6 peer is its IPv4 address).

use std::net::IpAddr;
use std::sync::Arc;

/// A list of trusted networks; empty trusts nobody.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trusted {
    nets: Arc<[ipnet::IpNet]>,
}

impl Trusted {
    /// Trusts the peers in `nets`.
    pub(crate) fn new(nets: Vec<ipnet::IpNet>) -> Trusted {
        Trusted { nets: nets.into() }
    }

    /// Whether `ip` is trusted.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_match_their_ipv4_networks() {
        let t = Trusted::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(!Trusted::default().contains("10.0.0.1".parse().unwrap()));
    }
}
