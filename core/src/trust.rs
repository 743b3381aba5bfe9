//! Trusted peers: the networks whose word about the client Peregrine believes (forwarded
//! fields in the proxy, PROXY protocol headers on listeners). One type, so both ask the same
//! question the same way (an IPv4-mapped IPv6 peer is its IPv4 address).

use std::net::IpAddr;
use std::sync::Arc;

pub(crate) use crate::proxy::X_FORWARDED_FOR;

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

/// The client of a request whose connection comes from `peer`: `peer` itself, unless it is
/// trusted and the request carries `X-Forwarded-For`, where each hop appended the address it
/// saw; then the rightmost address there that is not itself trusted (a client can write
/// anything on the left, only trusted hops appended on the right). As ASP.NET Core's
/// ForwardedHeaders middleware and nginx's realip module do.
/// `forwarded_for`: the request's `X-Forwarded-For` values, in the order sent.
pub(crate) fn real_client<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a [u8]>,
    trusted: &Trusted,
) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    // From the right: the first hop we do not trust is the client.
    let values: Vec<&[u8]> = forwarded_for.collect();
    for value in values.iter().rev() {
        let Ok(value) = std::str::from_utf8(value) else { return client };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if trusted.contains(ip) => client = canonical(ip),
                Ok(ip) => return canonical(ip),
                Err(_) => return client, // garbage: believe nothing past it
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map's `X-Forwarded-For` values, as [`real_client`] takes them.
    fn forwarded_for(headers: &http::HeaderMap) -> impl Iterator<Item = &[u8]> {
        headers.get_all(&X_FORWARDED_FOR).iter().map(|v| v.as_bytes())
    }

    #[test]
    fn the_real_client_is_the_rightmost_untrusted_hop() {
        let t =
            Trusted::new(vec!["10.0.0.0/8".parse().unwrap(), "192.168.0.0/16".parse().unwrap()]);
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 192.168.1.1".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(real_client(ip("10.1.1.1"), forwarded_for(&h), &t), ip("203.0.113.9"));
        assert_eq!(
            real_client(ip("8.8.8.8"), forwarded_for(&h), &t),
            ip("8.8.8.8"),
            "an untrusted peer"
        );
        assert_eq!(real_client(ip("10.1.1.1"), std::iter::empty(), &t), ip("10.1.1.1"));
        h.insert("x-forwarded-for", "junk, 192.168.1.1".parse().unwrap());
        assert_eq!(
            real_client(ip("10.1.1.1"), forwarded_for(&h), &t),
            ip("192.168.1.1"),
            "stops at garbage"
        );
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_networks() {
        let t = Trusted::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(!Trusted::default().contains("10.0.0.1".parse().unwrap()));
    }
}
