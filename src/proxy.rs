//! Real client addresses behind reverse proxies: `--trusted-proxy CIDR` lists the
//! peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
//!
//! From a trusted peer the client is the rightmost address in `X-Forwarded-For` that
//! is not itself a trusted proxy (everything left of it could have been written by
//! the client); without that header, `X-Real-IP`. From any other peer both headers
//! are ignored.
//!
//! Also the one rule for where a request's body ends ([`framing`]): natter must read
//! every request exactly as a proxy in front of it does, or the two disagree about
//! where the next request starts (request smuggling). Pure functions: no sockets, no
//! state.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Most `X-Forwarded-For` hops examined, from the right: a header with thousands of
/// entries costs no more than this.
const MAX_HOPS: usize = 32;

/// An address block, `10.0.0.0/8` or `::1/128` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let net: IpAddr = addr.trim().parse().map_err(|_| format!("`{s}` is not an address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("bad prefix in `{s}`"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.net.is_ipv4() => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(u32::from(n).into(), u32::from(a).into(), self.prefix, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.prefix, 128),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let shift = bits - u32::from(prefix);
    shift >= bits || (a >> shift) == (b >> shift)
}

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port or in brackets.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// The client's address: `peer` itself unless `peer` is a trusted proxy and the
/// headers name someone else. Unparsable entries end the walk: the last trusted hop
/// seen is then the client as far as anyone can tell.
pub fn client_ip(peer: IpAddr, trusted: &[Cidr], xff: Option<&str>, x_real_ip: Option<&str>) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let Some(xff) = xff.filter(|v| !v.trim().is_empty()) else {
        return x_real_ip.and_then(parse_hop).unwrap_or(peer);
    };
    let mut client = peer;
    for hop in xff.rsplit(',').take(MAX_HOPS) {
        let Some(ip) = parse_hop(hop) else { return client };
        client = ip;
        if !is_trusted(trusted, ip) {
            return ip;
        }
    }
    client
}

/// How a request's body is delimited (RFC 9112 §6.3), once [`framing`] accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (no header: 0).
    Length(u64),
    /// `Transfer-Encoding` without `Content-Length`: natter never reads such a body.
    Chunked,
}

/// A request whose end cannot be told for sure: a front proxy may read it one way and
/// natter another (request smuggling), so it gets a 400 and its connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("more than one Content-Length")]
    RepeatedLength,
    #[error("Content-Length is not a whole number")]
    BadLength,
    #[error("both Transfer-Encoding and Content-Length")]
    LengthAndEncoding,
}

/// The body framing of a parsed head; every HTTP listener applies it (the page port,
/// the admin listener and its API, `/sse` and `/send` on the WebSocket port).
/// Repeated `Content-Length` headers are refused even when equal (and so is a list
/// such as `5, 5`): no client of natter sends them.
pub fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, FramingError> {
    let mut lengths = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(FramingError::RepeatedLength);
    }
    let encoded = headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    match (length, encoded) {
        (Some(_), true) => Err(FramingError::LengthAndEncoding),
        (None, true) => Ok(Framing::Chunked),
        (None, false) => Ok(Framing::Length(0)),
        (Some(h), false) => {
            let value = h.value.trim_ascii();
            // Digits only: `parse` would also take `+5`, which a proxy may read otherwise.
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::BadLength);
            }
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Framing::Length)
                .ok_or(FramingError::BadLength)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.1.2.3")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")), "v4-mapped v6");
        assert!("::1".parse::<Cidr>().unwrap().contains(ip("::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let trusted = cidrs(&["127.0.0.1", "10.0.0.0/8"]);
        let spoof = Some("6.6.6.6");
        assert_eq!(client_ip(ip("203.0.113.9"), &trusted, spoof, spoof), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &trusted, Some("6.6.6.6, 198.51.100.7, 10.0.0.2"), None),
            ip("198.51.100.7")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, None, Some("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, Some("[2001:db8::1]:443"), None), ip("2001:db8::1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &[], Some("6.6.6.6"), None), ip("127.0.0.1"));
    }

    #[test]
    fn huge_and_garbage_headers_are_handled() {
        let trusted = cidrs(&["127.0.0.1"]);
        let huge = vec!["1.2.3.4"; 1000].join(", ");
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, Some(&huge), None), ip("1.2.3.4"));
        let all_trusted = vec!["127.0.0.1"; 1000].join(",");
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, Some(&all_trusted), None), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, Some("<script>, , unknown"), None), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, Some("1.2.3.4, garbage"), None), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, None, Some("not an ip")), ip("127.0.0.1"));
    }
}
