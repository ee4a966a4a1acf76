//! Every credential check in one place: stream keys (a WebSocket source's `Bearer` header or
//! `?key=`, an Icecast source's Basic password), the admin password, the `Origin` of ingest
//! pages, and signed listener links.
//!
//! Keys are compared in constant time. A stream with a `listen_secret` refuses listeners
//! unless the URL carries `expires=UNIX_SECONDS&sig=HEX`, where `sig` is
//! HMAC-SHA256(secret, "{stream}\n{expires}"); `onair sign` mints such links.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{address_key, Config};
use crate::http::Request;
use crate::relay::Stream;

/// Failed logins are counted per address over windows of this length.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// How long an address that failed `max_login_failures` times in a window is refused.
pub const LOGIN_BLOCK: Duration = Duration::from_secs(60);
/// Most addresses whose failures are remembered at once (about 64 bytes each); past it,
/// addresses not yet tracked are not throttled until old entries expire.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// An address is refused for a while after too many failed logins (HTTP 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins from your address: try again in {} s", retry_after.as_secs().max(1))]
pub struct Throttled {
    /// How long until the address may try again.
    pub retry_after: Duration,
}

/// Failed logins per address, for every credential check: stream keys (Bearer, `?key=`,
/// Basic), the admin password. After `max_login_failures` failures within `LOGIN_WINDOW` the
/// address is refused for `LOGIN_BLOCK`, right credentials or not; other addresses are not
/// slowed down at all (no delays, only a count). Addresses in `ip_limit_exempt` (a reverse
/// proxy) are not counted: the proxy must throttle. IPv6 peers count per network, as for
/// the connection limits.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    ipv6_prefix: u8,
    exempt: Vec<IpAddr>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl LoginThrottle {
    /// The throttle `config` asks for.
    pub fn new(config: &Config) -> Self {
        Self {
            max_failures: config.max_login_failures,
            ipv6_prefix: config.ip_limit_ipv6_prefix,
            exempt: config.ip_limit_exempt.iter().map(IpAddr::to_canonical).collect(),
            failures: Mutex::default(),
        }
    }

    /// A credential check for a request from `ip`: `Ok(check())`, counting a failure, or
    /// `Throttled` while the address is refused. A request that `presented` no credentials
    /// is no guess: it is answered `Ok(false)` and not counted.
    ///
    /// # Errors
    /// `Throttled` while `ip` is refused.
    pub fn verify(
        &self,
        ip: IpAddr,
        presented: bool,
        check: impl FnOnce() -> bool,
    ) -> Result<bool, Throttled> {
        if !presented {
            return Ok(false);
        }
        self.verify_at(ip, Instant::now(), check)
    }

    fn verify_at(
        &self,
        ip: IpAddr,
        now: Instant,
        check: impl FnOnce() -> bool,
    ) -> Result<bool, Throttled> {
        let ip = ip.to_canonical();
        if self.exempt.contains(&ip) {
            return Ok(check());
        }
        let key = address_key(ip, self.ipv6_prefix);
        let mut failures = self.failures.lock().expect("login throttle lock poisoned");
        if let Some(until) = failures.get(&key).and_then(|f| f.blocked_until) {
            if now < until {
                return Err(Throttled { retry_after: until - now });
            }
            failures.remove(&key);
        }
        // NOTE: the check runs under the lock so that concurrent guesses from one address
        // cannot all pass the count; it is a constant-time comparison, short.
        if check() {
            return Ok(true);
        }
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&key) {
            failures.retain(|_, f| {
                f.blocked_until.map_or(now < f.window_start + LOGIN_WINDOW, |until| now < until)
            });
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                return Ok(false);
            }
        }
        let entry = failures.entry(key).or_insert(Failures {
            window_start: now,
            count: 0,
            blocked_until: None,
        });
        if now >= entry.window_start + LOGIN_WINDOW {
            *entry = Failures { window_start: now, count: 0, blocked_until: None };
        }
        entry.count += 1;
        if entry.count >= self.max_failures {
            entry.blocked_until = Some(now + LOGIN_BLOCK);
        }
        Ok(false)
    }
}

/// Why a listener was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `expires`/`sig` in the URL (HTTP 401).
    #[error("this stream needs a signed link (expires and sig parameters)")]
    Unsigned,
    /// The signature does not match (HTTP 403).
    #[error("the link's signature is not valid")]
    BadSignature,
    /// The link has expired (HTTP 403).
    #[error("the link has expired")]
    Expired,
    /// The link is valid for longer than the stream's `max_link_lifetime_hours` (HTTP 403).
    #[error("the link is valid for longer than this stream allows")]
    TooLong,
}

impl Denied {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            Denied::Unsigned => 401,
            Denied::BadSignature | Denied::Expired | Denied::TooLong => 403,
        }
    }
}

fn mac(secret: &str, stream: &str, expires: u64) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{stream}\n{expires}").as_bytes());
    mac
}

/// The `sig` for a stream and expiry time, as lowercase hex.
pub fn sign(secret: &str, stream: &str, expires: u64) -> String {
    let tag = mac(secret, stream, expires).finalize().into_bytes();
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a link's `expires` and `sig` parameters at time `now` (UNIX seconds); a link may
/// not be valid for more than `max_lifetime_s` from `now`.
///
/// # Errors
/// `Unsigned`, `BadSignature`, `Expired` or `TooLong`.
pub fn verify(
    secret: &str,
    stream: &str,
    expires: Option<&str>,
    sig: Option<&str>,
    now: u64,
    max_lifetime_s: u64,
) -> Result<(), Denied> {
    let (Some(expires), Some(sig)) = (expires, sig) else { return Err(Denied::Unsigned) };
    // Digits only: `parse` would also take a leading `+`, a second spelling of one link.
    if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Denied::BadSignature);
    }
    let expires: u64 = expires.parse().map_err(|_| Denied::BadSignature)?;
    let Some(tag) = decode_hex(sig) else { return Err(Denied::BadSignature) };
    // Constant time: the comparison does not tell an attacker how much of the tag was right.
    mac(secret, stream, expires).verify_slice(&tag).map_err(|_| Denied::BadSignature)?;
    if now > expires {
        return Err(Denied::Expired);
    }
    if expires - now > max_lifetime_s {
        return Err(Denied::TooLong);
    }
    Ok(())
}

/// 64 lowercase hex digits (what `sign` writes) into the 32-byte tag; anything else is `None`,
/// so each tag has exactly one spelling.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    bytes.chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// A stream with a `listen_secret` only admits listeners with a valid signed link.
///
/// # Errors
/// Why the link is refused.
pub fn check_listen_access(stream: &Stream, request: &Request) -> Result<(), Denied> {
    let config = stream.config();
    let Some(secret) = &config.listen_secret else { return Ok(()) };
    verify(
        secret,
        &config.name,
        request.query_param("expires").as_deref(),
        request.query_param("sig").as_deref(),
        unix_now(),
        config.max_link_lifetime.as_secs(),
    )
}

/// Constant-time key comparison (the length is not secret).
pub fn key_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// The key a WebSocket source presents: `Authorization: Bearer KEY`, else `?key=KEY`
/// (browsers cannot set headers on a WebSocket).
fn source_key(request: &Request) -> Option<String> {
    let bearer = request.header("authorization").and_then(|value| {
        let (scheme, key) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim().to_owned())
    });
    bearer.or_else(|| request.query_param("key"))
}

/// Whether the request's `Authorization: Bearer` token is `expected` (none matches `None`).
pub fn bearer_matches(expected: Option<&str>, request: &Request) -> bool {
    let bearer = request.header("authorization").and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    matches!((expected, bearer), (Some(expected), Some(token)) if key_matches(expected, token))
}

/// Whether a WebSocket source presents a key at all (a request without one is no guess).
pub fn presents_source_key(request: &Request) -> bool {
    source_key(request).is_some()
}

/// Whether a WebSocket source presents the stream's key.
pub fn source_key_matches(stream: &Stream, request: &Request) -> bool {
    match (&stream.config().key, source_key(request)) {
        (Some(expected), Some(presented)) => key_matches(expected, &presented),
        _ => false,
    }
}

/// Whether an Icecast source's Basic password (any user name) is the stream's key.
pub fn source_password_matches(stream: &Stream, request: &Request) -> bool {
    match (&stream.config().key, basic_auth(request)) {
        (Some(key), Some((_, password))) => key_matches(key, &password),
        _ => false,
    }
}

/// Whether an admin request's Basic password (any user name) is the stream's key (for that
/// stream only) or the relay's `admin_password`.
pub fn admin_matches(config: &Config, stream: &Stream, request: &Request) -> bool {
    let Some((_, password)) = basic_auth(request) else { return false };
    let key = stream.config().key.as_deref().is_some_and(|k| key_matches(k, &password));
    key | admin_password_matches(config, request)
}

/// Whether an admin request's Basic password is the relay's `admin_password` (what listener
/// addresses need: a stream key is a source's credential, not an operator's).
pub fn admin_password_matches(config: &Config, request: &Request) -> bool {
    let Some((_, password)) = basic_auth(request) else { return false };
    config.admin_password.as_deref().is_some_and(|p| key_matches(p, &password))
}

/// Whether a browser sent this request for a page of another site: `Sec-Fetch-Site` says so
/// (anything but `same-origin` or `none`, i.e. typed or bookmarked), or an `Origin` that is
/// not this relay's own (`http(s)://` + `Host`). Tools (curl, liquidsoap, butt) send neither.
/// An `<img>` on another site sends no `Origin` but does send `Sec-Fetch-Site: cross-site`.
pub fn is_cross_site(request: &Request) -> bool {
    if let Some(site) = request.header("sec-fetch-site") {
        let site = site.trim();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return true;
        }
    }
    let Some(origin) = request.header("origin").map(str::trim) else { return false };
    let own = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    let host = request.header("host").map(str::trim);
    !matches!((own, host), (Some(own), Some(host)) if own.eq_ignore_ascii_case(host))
}

/// Whether a page's `Origin` may open an ingest WebSocket (`allowed_origins`; requests
/// without an `Origin` are not from a page).
pub fn origin_allowed(config: &Config, request: &Request) -> bool {
    match (&config.allowed_origins, request.header("origin")) {
        (None, _) | (Some(_), None) => true,
        (Some(allowed), Some(origin)) => {
            allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim()))
        }
    }
}

/// Decodes `Authorization: Basic ...` into user and password.
pub fn basic_auth(request: &Request) -> Option<(String, String)> {
    let value = request.header("authorization")?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 (padding optional); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::tests::request;

    fn throttle(max_failures: u32) -> LoginThrottle {
        let config = Config {
            max_login_failures: max_failures,
            ip_limit_exempt: vec!["127.0.0.1".parse().unwrap()],
            ..Config::default()
        };
        LoginThrottle::new(&config)
    }

    /// Keys could be guessed as fast as the network allowed.
    #[test]
    fn an_address_that_keeps_failing_is_refused_for_a_while_and_only_it() {
        let throttle = throttle(10);
        let (guesser, other): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let start = Instant::now();
        for i in 0..10 {
            let at = start + Duration::from_secs(i);
            assert_eq!(throttle.verify_at(guesser, at, || false), Ok(false), "failure {i}");
        }
        let later = start + Duration::from_secs(20);
        let refused = throttle.verify_at(guesser, later, || true).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(49), "the right key too, for now");
        assert_eq!(throttle.verify_at(other, later, || true), Ok(true), "another address");
        let after = start + Duration::from_secs(9) + LOGIN_BLOCK;
        assert_eq!(throttle.verify_at(guesser, after, || true), Ok(true), "the block ends");
        // Failures spread over more than a window never add up to a block.
        for i in 0..30 {
            let at = after + Duration::from_secs(7 * i);
            assert_eq!(throttle.verify_at(other, at, || false), Ok(false));
        }
        assert!(throttle.verify(other, false, || unreachable!()).is_ok(), "no credentials");
    }

    #[test]
    fn ipv6_guessers_are_counted_per_network_and_exempt_addresses_not_at_all() {
        let throttle = throttle(3);
        let now = Instant::now();
        for host in 1..=3 {
            let ip: IpAddr = format!("2001:db8:0:1::{host}").parse().unwrap();
            let _ = throttle.verify_at(ip, now, || false);
        }
        let same_64: IpAddr = "2001:db8:0:1:ffff::1".parse().unwrap();
        assert!(throttle.verify_at(same_64, now, || true).is_err());
        let proxy: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(throttle.verify_at(proxy, now, || false), Ok(false));
        }
        assert_eq!(throttle.verify_at(proxy, now, || true), Ok(true));
    }

    #[test]
    fn cross_site_requests_are_told_from_tools_and_the_relays_own_pages() {
        let host = ("Host", "radio.example:8000");
        for same in [
            request(&[host]),
            request(&[host, ("Sec-Fetch-Site", "none")]),
            request(&[
                host,
                ("Sec-Fetch-Site", "same-origin"),
                ("Origin", "http://radio.example:8000"),
            ]),
            request(&[host, ("Origin", "https://RADIO.example:8000")]),
        ] {
            assert!(!is_cross_site(&same), "{same:?}");
        }
        for cross in [
            request(&[host, ("Sec-Fetch-Site", "cross-site")]),
            request(&[host, ("Sec-Fetch-Site", "same-site")]),
            request(&[host, ("Origin", "http://evil.example")]),
            request(&[host, ("Origin", "null")]),
            request(&[("Origin", "http://radio.example:8000")]),
        ] {
            assert!(is_cross_site(&cross), "{cross:?}");
        }
    }

    #[test]
    fn basic_credentials_decode() {
        // "source:hackme"
        let r = request(&[("Authorization", "Basic c291cmNlOmhhY2ttZQ==")]);
        assert_eq!(basic_auth(&r), Some(("source".into(), "hackme".into())));
        assert_eq!(basic_auth(&request(&[("Authorization", "Basic !!!")])), None);
        assert_eq!(basic_auth(&request(&[("Authorization", "Bearer c291cmNl")])), None);
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
    }

    /// A day, as the tests' maximum link lifetime.
    const DAY: u64 = 86_400;

    #[test]
    fn a_signed_link_works_until_it_expires() {
        let sig = sign("s3cret", "radio", 1_000);
        assert_eq!(sig.len(), 64);
        assert_eq!(verify("s3cret", "radio", Some("1000"), Some(&sig), 999, DAY), Ok(()));
        assert_eq!(
            verify("s3cret", "radio", Some("1000"), Some(&sig), 1_001, DAY),
            Err(Denied::Expired)
        );
    }

    /// A link signed to expire in ten years was accepted: a leaked link stayed good forever.
    #[test]
    fn a_link_valid_for_longer_than_the_maximum_is_refused() {
        let now = 1_000_000;
        let far = now + 10 * 365 * DAY;
        let sig = sign("s3cret", "radio", far);
        assert_eq!(
            verify("s3cret", "radio", Some(&far.to_string()), Some(&sig), now, DAY),
            Err(Denied::TooLong)
        );
        let near = now + DAY;
        let sig = sign("s3cret", "radio", near);
        assert_eq!(
            verify("s3cret", "radio", Some(&near.to_string()), Some(&sig), now, DAY),
            Ok(())
        );
    }

    /// `u8::from_str_radix` took "AB" and "+b": several spellings of one signature were valid.
    #[test]
    fn only_lowercase_hex_signatures_are_accepted() {
        let sig = sign("s3cret", "radio", 1_000);
        let upper = sig.to_ascii_uppercase();
        let plus = format!("+{}", &sig[1..]);
        for bad in [upper.as_str(), plus.as_str()] {
            assert_ne!(bad, sig);
            assert_eq!(
                verify("s3cret", "radio", Some("1000"), Some(bad), 10, DAY),
                Err(Denied::BadSignature),
                "{bad}"
            );
        }
        // Where "+x" parsed, this pair decoded to the right tag whenever sig started with '0'.
        assert_eq!(decode_hex(&format!("+f{}", "0".repeat(62))), None);
    }

    #[test]
    fn tampered_or_missing_links_are_refused() {
        let sig = sign("s3cret", "radio", 1_000);
        let now = 10;
        let not_hex = "zz".repeat(32);
        assert_eq!(verify("s3cret", "radio", None, None, now, DAY), Err(Denied::Unsigned));
        assert_eq!(verify("s3cret", "radio", Some("1000"), None, now, DAY), Err(Denied::Unsigned));
        for (stream, expires, sig) in [
            ("other", "1000", sig.as_str()),
            ("radio", "2000", sig.as_str()),
            ("radio", "1000", &sig[..62]),
            ("radio", "1000", not_hex.as_str()),
            ("radio", "x", sig.as_str()),
        ] {
            assert_eq!(
                verify("s3cret", stream, Some(expires), Some(sig), now, DAY),
                Err(Denied::BadSignature)
            );
        }
        assert_eq!(
            verify("other-secret", "radio", Some("1000"), Some(&sig), now, DAY),
            Err(Denied::BadSignature)
        );
    }
}
