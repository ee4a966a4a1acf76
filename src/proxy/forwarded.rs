//! The client's address from a trusted proxy's request headers. Pure; fuzzed.
//!
//! Preference: `Forwarded` (RFC 7239 `for=`), then `X-Forwarded-For`, then `X-Real-IP`; the
//! first of them the request carries decides. In a chain (several headers of a kind are read
//! in order, as one list) the right-most address that is not itself a trusted proxy is the
//! client: everything left of it was written by the client or a proxy we do not know. An
//! `unknown` or obfuscated (`_hidden`) node, or one that does not parse, means "ask the peer".

use std::net::{IpAddr, SocketAddr};

use crate::http::Request;

/// Which header gave the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Forwarded` (RFC 7239).
    Forwarded,
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// `X-Real-IP`.
    XRealIp,
}

impl Via {
    /// The header's name.
    pub fn header(self) -> &'static str {
        match self {
            Via::Forwarded => "Forwarded",
            Via::XForwardedFor => "X-Forwarded-For",
            Via::XRealIp => "X-Real-IP",
        }
    }
}

/// Most hops of a chain looked at, from the right: the nearest are the ones that matter.
const MAX_HOPS: usize = 64;

/// The client's address (port 0 when the header gives none) and the header it came from;
/// `None` when no header gives a usable one, so the peer's address stands. `trusted` says
/// whether an address is a trusted proxy.
pub fn client_address(
    request: &Request,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<(SocketAddr, Via)> {
    let values = |name: &'static str| {
        request.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    };
    if values("forwarded").next().is_some() {
        let hops: Vec<Option<SocketAddr>> =
            values("forwarded").flat_map(|value| forwarded_hops(value)).collect();
        return pick(hops, &trusted).map(|addr| (addr, Via::Forwarded));
    }
    if values("x-forwarded-for").next().is_some() {
        let hops: Vec<Option<SocketAddr>> =
            values("x-forwarded-for").flat_map(|v| v.split(',')).map(parse_address).collect();
        return pick(hops, &trusted).map(|addr| (addr, Via::XForwardedFor));
    }
    // One address by definition; if a chain of proxies each set one, the last is the nearest.
    let real = values("x-real-ip").next_back()?;
    parse_address(real).map(|addr| (addr, Via::XRealIp))
}

/// The right-most hop that is not a trusted proxy; the left-most one when all of them are.
fn pick(hops: Vec<Option<SocketAddr>>, trusted: &impl Fn(IpAddr) -> bool) -> Option<SocketAddr> {
    let mut nearest_trusted = None;
    for hop in hops.into_iter().rev().take(MAX_HOPS) {
        match hop {
            Some(addr) if trusted(addr.ip()) => nearest_trusted = Some(addr),
            Some(addr) => return Some(addr),
            None => return None,
        }
    }
    nearest_trusted
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`; anything else (`unknown`) is `None`.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), 0));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(|ip| SocketAddr::new(IpAddr::V6(ip), 0))
}

/// A `for=` node (RFC 7239 §6): an address, `"[v6]:port"`, `unknown` or `_obfuscated`; a
/// port may be obfuscated too (`"192.0.2.1:_p"`), which keeps the address.
fn parse_node(node: &str) -> Option<SocketAddr> {
    if node.eq_ignore_ascii_case("unknown") || node.starts_with('_') {
        return None;
    }
    if let Some(addr) = parse_address(node) {
        return Some(addr);
    }
    let (host, port) = node.rsplit_once(':')?;
    if !port.starts_with('_') {
        return None;
    }
    parse_address(host)
}

/// The `for=` of each element of one `Forwarded` header value, in order; an element that is
/// malformed or has no `for=` (or two) is `None`. Quotes are honoured: a comma or semicolon
/// inside a quoted string separates nothing.
fn forwarded_hops(value: &str) -> Vec<Option<SocketAddr>> {
    let mut hops = Vec::new();
    for element in split_outside_quotes(value, b',') {
        let mut node = None;
        let mut bad = false;
        for pair in split_outside_quotes(element, b';') {
            let pair = pair.trim_matches([' ', '\t']);
            if pair.is_empty() {
                continue;
            }
            let Some((key, raw)) = pair.split_once('=') else {
                bad = true;
                break;
            };
            if key.is_empty() || !key.bytes().all(is_tchar) {
                bad = true;
                break;
            }
            let Some(value) = unquote(raw) else {
                bad = true;
                break;
            };
            if key.eq_ignore_ascii_case("for") {
                if node.is_some() {
                    bad = true;
                    break;
                }
                node = Some(value);
            }
        }
        hops.push(if bad { None } else { node.and_then(|n| parse_node(&n)) });
        if hops.len() > 4 * MAX_HOPS {
            break;
        }
    }
    hops
}

/// `text` cut at each `sep` that is not inside a quoted string (a backslash escapes the next
/// byte inside quotes); an unterminated quote runs to the end.
fn split_outside_quotes(text: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if byte == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A token, or a quoted string with its escapes resolved; `None` when it is neither.
fn unquote(raw: &str) -> Option<String> {
    let Some(inner) = raw.strip_prefix('"') else {
        return (!raw.is_empty() && raw.bytes().all(is_tchar)).then(|| raw.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            version: 1,
        }
    }

    /// 10.0.0.0/8 and 127.0.0.1 are our proxies.
    fn trusted(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.octets()[0] == 10 || v4 == std::net::Ipv4Addr::LOCALHOST,
            IpAddr::V6(_) => false,
        }
    }

    fn client(headers: &[(&str, &str)]) -> Option<(String, Via)> {
        client_address(&request(headers), trusted).map(|(addr, via)| (addr.to_string(), via))
    }

    fn xff(addr: &str) -> Option<(String, Via)> {
        Some((addr.to_owned(), Via::XForwardedFor))
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_address_that_is_not_a_proxy() {
        assert_eq!(client(&[("X-Forwarded-For", "198.51.100.7")]), xff("198.51.100.7:0"));
        // The client wrote the first entry; our proxies the others.
        let chain = "6.6.6.6, 198.51.100.7, 10.0.0.2,10.1.1.1";
        assert_eq!(client(&[("x-forwarded-for", chain)]), xff("198.51.100.7:0"));
        // Several headers are one list, in order.
        let two = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.5, 10.0.0.9")];
        assert_eq!(client(&two), xff("203.0.113.5:0"));
        assert_eq!(client(&[("X-Forwarded-For", "10.0.0.3, 10.0.0.2")]), xff("10.0.0.3:0"));
        assert_eq!(client(&[("X-Forwarded-For", "[2001:db8::1]:4711")]), xff("[2001:db8::1]:4711"));
        assert_eq!(client(&[("X-Forwarded-For", "2001:db8::1")]), xff("[2001:db8::1]:0"));
        assert_eq!(client(&[("X-Forwarded-For", "192.0.2.1:8080")]), xff("192.0.2.1:8080"));
        assert_eq!(client(&[("X-Forwarded-For", "::ffff:192.0.2.1")]), xff("192.0.2.1:0"));
        // Unknown or garbage where the client should be: the peer stands.
        assert_eq!(client(&[("X-Forwarded-For", "198.51.100.7, unknown")]), None);
        assert_eq!(client(&[("X-Forwarded-For", "")]), None);
        // Garbage left of the real client does not matter.
        assert_eq!(client(&[("X-Forwarded-For", "nonsense, 198.51.100.7")]), xff("198.51.100.7:0"));
    }

    #[test]
    fn forwarded_is_preferred_and_parsed_as_rfc_7239_says() {
        let fwd = |addr: &str| Some((addr.to_owned(), Via::Forwarded));
        let both = [("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=192.0.2.60;proto=http")];
        assert_eq!(client(&both), fwd("192.0.2.60:0"));
        let v6 = r#"for="[2001:db8:cafe::17]:4711""#;
        assert_eq!(client(&[("Forwarded", v6)]), fwd("[2001:db8:cafe::17]:4711"));
        let chain = r#"for=6.6.6.6, For="192.0.2.43:47011";by=10.0.0.1, for=10.0.0.2;proto=https"#;
        assert_eq!(client(&[("Forwarded", chain)]), fwd("192.0.2.43:47011"));
        assert_eq!(client(&[("Forwarded", r#"for="192.0.2.1:_port""#)]), fwd("192.0.2.1:0"));
        // Quoted commas and semicolons separate nothing.
        let quoted = r#"for=192.0.2.2;ext="a,b;c", for=198.51.100.1"#;
        assert_eq!(client(&[("Forwarded", quoted)]), fwd("198.51.100.1:0"));
        // Unknown, obfuscated, missing or doubled `for`, bad syntax: the peer stands.
        for value in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=192.0.2.1;for=192.0.2.2",
            "for=192.0.2.1;junk",
            r#"for="192.0.2.1"#,
            "for=[2001:db8::1]",
            "=1.2.3.4",
        ] {
            assert_eq!(client(&[("Forwarded", value)]), None, "{value}");
        }
        // A malformed element left of a good one (from the client) does not matter.
        let left = [("Forwarded", r#"for="oops"#), ("Forwarded", "for=198.51.100.4")];
        assert_eq!(client(&left), fwd("198.51.100.4:0"));
    }

    #[test]
    fn x_real_ip_is_the_last_resort() {
        let real = |addr: &str| Some((addr.to_owned(), Via::XRealIp));
        assert_eq!(client(&[("X-Real-IP", " 198.51.100.8 ")]), real("198.51.100.8:0"));
        let both = [("X-Real-IP", "198.51.100.8"), ("X-Forwarded-For", "203.0.113.1")];
        assert_eq!(client(&both), xff("203.0.113.1:0"));
        assert_eq!(
            client(&[("X-Real-IP", "198.51.100.8"), ("X-Real-IP", "10.0.0.1")]),
            real("10.0.0.1:0")
        );
        assert_eq!(client(&[("X-Real-IP", "not an address")]), None);
        assert_eq!(client(&[("Host", "x")]), None);
    }

    #[test]
    fn long_chains_are_bounded() {
        let chain = vec!["10.0.0.1"; 10_000].join(",");
        assert_eq!(client(&[("X-Forwarded-For", &chain)]), xff("10.0.0.1:0"));
        let hops = vec!["for=10.0.0.1"; 10_000].join(",");
        assert!(forwarded_hops(&hops).len() <= 4 * MAX_HOPS + 1);
    }
}
