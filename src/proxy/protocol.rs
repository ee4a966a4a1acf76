//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends before
//! anything else on a connection, naming the client it accepted.
//!
//! `parse` is pure and fuzzed: complete, incomplete, or an error, on at most
//! `MAX_HEADER_BYTES`. `read_header` takes exactly the header's bytes off a socket (it peeks
//! first), so what follows (an HTTP request, a TLS ClientHello) is left for whoever reads next.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature, its first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, `\r\n` included (the specification's bound).
pub const MAX_V1_BYTES: usize = 107;
/// Most address and TLV bytes accepted in a v2 header (its own limit is 65 535; load
/// balancers send a few dozen to a few hundred).
pub const MAX_V2_PAYLOAD_BYTES: usize = 4096;
/// Longest header accepted, either version.
pub const MAX_HEADER_BYTES: usize = 16 + MAX_V2_PAYLOAD_BYTES;

/// A PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The client the proxy accepted; `None` for a v2 `LOCAL` command (the proxy's own
    /// health check), v1 `UNKNOWN`, or an address family other than IPv4 and IPv6: the
    /// connection's peer stands.
    pub source: Option<SocketAddr>,
}

/// Why a connection's PROXY header was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection does not start with a PROXY header at all.
    #[error("no proxy protocol header (the connection starts with something else)")]
    Missing,
    /// It starts like one but breaks the format.
    #[error("malformed proxy protocol header: {0}")]
    Malformed(&'static str),
    /// Longer than `MAX_HEADER_BYTES` allows.
    #[error("proxy protocol header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    /// The peer closed before the header was complete.
    #[error("connection closed inside the proxy protocol header")]
    Closed,
    /// The socket failed.
    #[error("reading the proxy protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// A complete header at the start of `buf` and its length in bytes; `Ok(None)` when `buf` is
/// a prefix of one and more bytes are needed.
///
/// # Errors
/// `Missing` as soon as `buf` cannot be the start of a header, `Malformed`, `TooLong`.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let sig = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig] == V2_SIGNATURE[..sig] && !buf.is_empty() {
        return if buf.len() < 16 { Ok(None) } else { parse_v2(buf) };
    }
    let v1 = b"PROXY ";
    let start = buf.len().min(v1.len());
    if buf[..start] == v1[..start] && !buf.is_empty() {
        return if buf.len() < v1.len() { Ok(None) } else { parse_v1(buf) };
    }
    if buf.is_empty() {
        return Ok(None);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(MAX_V1_BYTES)];
    // A line is printable ASCII; a CR may come only right before its LF. Checked on a prefix
    // too, so a prefix of a valid line is never refused.
    let printable = |bytes: &[u8]| bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    let not_printable = ProxyError::Malformed("a v1 line must be printable ASCII ended by CRLF");
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1_BYTES {
            return Err(ProxyError::TooLong);
        }
        if !printable(window.strip_suffix(b"\r").unwrap_or(window)) {
            return Err(not_printable);
        }
        return Ok(None);
    };
    if !printable(&window[..end]) {
        return Err(not_printable);
    }
    let line = std::str::from_utf8(&window[..end]).map_err(|_| not_printable)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader { version: 1, source: None },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip: IpAddr = match *family {
                "TCP4" => IpAddr::V4(src.parse::<Ipv4Addr>().map_err(|_| bad_v1_address())?),
                _ => IpAddr::V6(src.parse::<Ipv6Addr>().map_err(|_| bad_v1_address())?),
            };
            let port = parse_port(sport)?;
            let dst_ok = match *family {
                "TCP4" => dst.parse::<Ipv4Addr>().is_ok(),
                _ => dst.parse::<Ipv6Addr>().is_ok(),
            };
            if !dst_ok {
                return Err(bad_v1_address());
            }
            parse_port(dport)?;
            ProxyHeader { version: 1, source: Some(SocketAddr::new(ip.to_canonical(), port)) }
        }
        ["PROXY", "TCP4" | "TCP6", ..] => {
            return Err(ProxyError::Malformed("a v1 line needs 2 addresses and 2 ports"));
        }
        _ => return Err(ProxyError::Malformed("v1 protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some((header, end + 2)))
}

fn bad_v1_address() -> ProxyError {
    ProxyError::Malformed("a v1 address does not match its family")
}

fn parse_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let port = digits.then(|| text.parse::<u16>().ok()).flatten();
    port.ok_or(ProxyError::Malformed("a v1 port must be a number 0-65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let (version_command, family) = (buf[12], buf[13]);
    if version_command >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version must be 2"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::Malformed("v2 command must be LOCAL or PROXY")),
    };
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_V2_PAYLOAD_BYTES {
        return Err(ProxyError::TooLong);
    }
    let Some(payload) = buf.get(16..16 + len) else { return Ok(None) };
    let total = 16 + len;
    if local {
        return Ok(Some((ProxyHeader { version: 2, source: None }, total)));
    }
    let source = match family >> 4 {
        0x1 => {
            let a = payload.get(..12).ok_or(ProxyError::Malformed("v2 IPv4 block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        0x2 => {
            let a = payload.get(..36).ok_or(ProxyError::Malformed("v2 IPv6 block too short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets).to_canonical();
            Some(SocketAddr::new(ip, u16::from_be_bytes([a[32], a[33]])))
        }
        // AF_UNSPEC and AF_UNIX name no address we could count: the peer stands.
        0x0 | 0x3 => None,
        _ => return Err(ProxyError::Malformed("v2 address family unknown")),
    };
    Ok(Some((ProxyHeader { version: 2, source }, total)))
}

/// Reads a PROXY header off `socket`, taking exactly its bytes. Not cancel safe (bytes may
/// have been taken); callers bound it with a timeout and drop the connection on any error.
///
/// # Errors
/// `ProxyError` for anything but a complete, valid header.
pub async fn read_header(socket: &mut TcpStream) -> Result<ProxyHeader, ProxyError> {
    let mut taken = Vec::new();
    let mut peeked = vec![0u8; 512];
    loop {
        let room = (MAX_HEADER_BYTES - taken.len()).min(peeked.len());
        let n = socket.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let mut view = Vec::with_capacity(taken.len() + n);
        view.extend_from_slice(&taken);
        view.extend_from_slice(&peeked[..n]);
        match parse(&view)? {
            Some((header, len)) => {
                // Exactly what is left of the header: these bytes are in the socket already.
                let mut rest = vec![0u8; len - taken.len()];
                socket.read_exact(&mut rest).await?;
                return Ok(header);
            }
            None => {
                // All of it belongs to the header: take it and wait for more.
                let mut chunk = vec![0u8; n];
                socket.read_exact(&mut chunk).await?;
                taken.extend_from_slice(&chunk);
                if taken.len() >= MAX_HEADER_BYTES {
                    return Err(ProxyError::TooLong);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn source(buf: &[u8]) -> Option<SocketAddr> {
        let (header, len) = parse(buf).unwrap().unwrap();
        assert_eq!(len, buf.len(), "{header:?}");
        header.source
    }

    #[test]
    fn v1_lines_parse() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        assert_eq!(source(line), Some("192.0.2.1:56324".parse().unwrap()));
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 80\r\n";
        assert_eq!(source(line), Some("[2001:db8::1]:4711".parse().unwrap()));
        assert_eq!(source(b"PROXY UNKNOWN\r\n"), None);
        assert_eq!(source(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), None);
        let mut with_request = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET / HTTP/1.1\r\n".to_vec();
        let (_, len) = parse(&with_request).unwrap().unwrap();
        assert_eq!(&with_request.split_off(len), b"GET / HTTP/1.1\r\n", "the rest is left");
    }

    #[test]
    fn v1_errors_are_errors() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n",
            b"PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",
            b"PROXY \xff\r\n",
            // Found by fuzzing: accepted whole, while a prefix of it was refused.
            b"PROXY UNKNOWN \n\r\n",
            b"PROXY UNKNOWN \r\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(parse(&long), Err(ProxyError::TooLong)));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing)));
        assert!(matches!(parse(b"\x16\x03\x01"), Err(ProxyError::Missing)), "a TLS hello");
        assert!(matches!(parse(b"PROXX"), Err(ProxyError::Missing)));
    }

    #[test]
    fn prefixes_ask_for_more() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for end in 0..line.len() {
            assert!(parse(&line[..end]).unwrap().is_none(), "{end}");
        }
        let header = v2(1, 0x11, &[192, 0, 2, 1, 198, 51, 100, 2, 0x12, 0x34, 0, 80]);
        for end in 0..header.len() {
            assert!(parse(&header[..end]).unwrap().is_none(), "{end}");
        }
    }

    #[test]
    fn v2_headers_parse() {
        let v4 = v2(1, 0x11, &[192, 0, 2, 1, 198, 51, 100, 2, 0x12, 0x34, 0, 80]);
        assert_eq!(source(&v4), Some("192.0.2.1:4660".parse().unwrap()));
        let mut block = vec![0u8; 36];
        block[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        block[32..34].copy_from_slice(&4711u16.to_be_bytes());
        assert_eq!(source(&v2(1, 0x21, &block)), Some("[2001:db8::7]:4711".parse().unwrap()));
        // TLVs after the addresses are skipped.
        let mut tlv = vec![192, 0, 2, 9, 198, 51, 100, 2, 0, 1, 0, 80];
        tlv.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c']);
        assert_eq!(source(&v2(1, 0x11, &tlv)), Some("192.0.2.9:1".parse().unwrap()));
        // LOCAL (a health check): the peer stands, whatever the block says.
        assert_eq!(source(&v2(0, 0x11, &[1; 12])), None);
        assert_eq!(source(&v2(0, 0x00, &[])), None);
        assert_eq!(source(&v2(1, 0x31, &[0; 216])), None, "a UNIX socket");
        let mut mapped = vec![0u8; 36];
        mapped[..16].copy_from_slice(&"::ffff:192.0.2.5".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(source(&v2(1, 0x21, &mapped)), Some("192.0.2.5:0".parse().unwrap()));
    }

    #[test]
    fn v2_errors_are_errors() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert!(matches!(parse(&bad_version), Err(ProxyError::Malformed(_))));
        assert!(matches!(parse(&v2(2, 0x11, &[0; 12])), Err(ProxyError::Malformed(_))));
        assert!(matches!(parse(&v2(1, 0x11, &[0; 11])), Err(ProxyError::Malformed(_))));
        assert!(matches!(parse(&v2(1, 0x21, &[0; 35])), Err(ProxyError::Malformed(_))));
        assert!(matches!(parse(&v2(1, 0x41, &[0; 12])), Err(ProxyError::Malformed(_))));
        let mut huge = v2(1, 0x11, &[0; 12]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&huge), Err(ProxyError::TooLong)), "refused before it arrives");
    }

    #[tokio::test]
    async fn read_header_leaves_what_follows_on_the_socket() {
        use tokio::io::AsyncWriteExt;
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).await.unwrap();
        let (mut socket, _) = server.accept().await.unwrap();
        let writer = tokio::spawn(async move {
            // In pieces, as a slow network would deliver it.
            for piece in [&b"PROXY TCP4 192.0"[..], b".2.1 192.0.2.2 7 8\r", b"\nGET /"] {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            client
        });
        let header = read_header(&mut socket).await.unwrap();
        assert_eq!(
            header,
            ProxyHeader { version: 1, source: Some("192.0.2.1:7".parse().unwrap()) }
        );
        let _client = writer.await.unwrap();
        let mut rest = [0u8; 5];
        socket.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET /");
    }
}
