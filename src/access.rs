//! Signed listener links: private streams that anyone with an unexpired link may hear.
//!
//! A stream with a `listen_secret` refuses listeners unless the URL carries
//! `expires=UNIX_SECONDS&sig=HEX`, where `sig` is HMAC-SHA256(secret, "{stream}\n{expires}").
//! `onair sign` mints links; `server.rs` (and every listener endpoint) calls `verify`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
}

impl Denied {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            Denied::Unsigned => 401,
            Denied::BadSignature | Denied::Expired => 403,
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

/// Checks a link's `expires` and `sig` parameters at time `now` (UNIX seconds).
///
/// # Errors
/// `Unsigned`, `BadSignature` or `Expired`.
pub fn verify(
    secret: &str,
    stream: &str,
    expires: Option<&str>,
    sig: Option<&str>,
    now: u64,
) -> Result<(), Denied> {
    let (Some(expires), Some(sig)) = (expires, sig) else { return Err(Denied::Unsigned) };
    let expires: u64 = expires.parse().map_err(|_| Denied::BadSignature)?;
    let Some(tag) = decode_hex(sig) else { return Err(Denied::BadSignature) };
    // Constant time: the comparison does not tell an attacker how much of the tag was right.
    mac(secret, stream, expires).verify_slice(&tag).map_err(|_| Denied::BadSignature)?;
    if now > expires {
        return Err(Denied::Expired);
    }
    Ok(())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_link_works_until_it_expires() {
        let sig = sign("s3cret", "radio", 1_000);
        assert_eq!(sig.len(), 64);
        assert_eq!(verify("s3cret", "radio", Some("1000"), Some(&sig), 999), Ok(()));
        assert_eq!(
            verify("s3cret", "radio", Some("1000"), Some(&sig), 1_001),
            Err(Denied::Expired)
        );
    }

    #[test]
    fn tampered_or_missing_links_are_refused() {
        let sig = sign("s3cret", "radio", 1_000);
        let now = 10;
        let not_hex = "zz".repeat(32);
        assert_eq!(verify("s3cret", "radio", None, None, now), Err(Denied::Unsigned));
        assert_eq!(verify("s3cret", "radio", Some("1000"), None, now), Err(Denied::Unsigned));
        for (stream, expires, sig) in [
            ("other", "1000", sig.as_str()),
            ("radio", "2000", sig.as_str()),
            ("radio", "1000", &sig[..62]),
            ("radio", "1000", not_hex.as_str()),
            ("radio", "x", sig.as_str()),
        ] {
            assert_eq!(
                verify("s3cret", stream, Some(expires), Some(sig), now),
                Err(Denied::BadSignature)
            );
        }
        assert_eq!(
            verify("other-secret", "radio", Some("1000"), Some(&sig), now),
            Err(Denied::BadSignature)
        );
    }
}
