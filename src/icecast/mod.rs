//! Icecast compatibility: broadcaster tools push with the Icecast source protocol, ordinary
//! players listen over plain HTTP, and the admin/status API answers like Icecast's.
//!
//! This module holds the vocabulary both sides share (mount names, the `Server` header, the
//! Basic realm) and the admin/status API (`admin.rs`). The sessions live with their kind:
//! Icecast sources in `ingest::icecast`, HTTP listeners in `listener::http`; the server's
//! router sends each request to the right one.

pub mod admin;

use crate::config::valid_stream_name;
use crate::http::Request;

/// `Server` header and `server_id` of Icecast-style answers.
pub const SERVER_ID: &str =
    concat!("Icecast 2.4.4 compatible (onair/", env!("CARGO_PKG_VERSION"), ")");
/// Realm in `WWW-Authenticate` challenges (libshout retries with credentials after a 401).
pub const REALM: &str = "Icecast2 Server";

/// Extensions a mount may carry; they all name the same stream.
const MOUNT_EXTENSIONS: [&str; 6] = ["ogg", "opus", "oga", "mp3", "mpeg", "webm"];

/// Splits `/radio.ogg` into the stream name `radio` and the extension `ogg`.
pub fn parse_mount(path: &str) -> Option<(&str, Option<&str>)> {
    let mount = path.strip_prefix('/')?;
    let (name, ext) = match mount.rsplit_once('.') {
        Some((name, ext)) if MOUNT_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)) => {
            (name, Some(ext))
        }
        Some(_) => return None,
        None => (mount, None),
    };
    valid_stream_name(name).then_some((name, ext))
}

/// Whether a request is for the admin or status API.
pub fn is_admin(request: &Request) -> bool {
    request.path.starts_with("/admin/") || request.path == "/status-json.xsl"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::IceInfo;

    use crate::http::tests::request;

    #[test]
    fn mounts_map_to_stream_names() {
        assert_eq!(parse_mount("/radio.ogg"), Some(("radio", Some("ogg"))));
        assert_eq!(parse_mount("/radio.MP3"), Some(("radio", Some("MP3"))));
        assert_eq!(parse_mount("/radio"), Some(("radio", None)));
        assert_eq!(parse_mount("/radio.opus"), Some(("radio", Some("opus"))));
        assert_eq!(parse_mount("/player.js"), None);
        assert_eq!(parse_mount("/a/b.ogg"), None);
        assert_eq!(parse_mount("/"), None);
    }

    #[test]
    fn ice_headers_are_read_with_fallbacks() {
        let r = request(&[
            ("ice-name", "My Radio"),
            ("icy-genre", "Jazz"),
            ("ice-public", "1"),
            ("ice-audio-info", "ice-samplerate=48000;ice-bitrate=128;ice-channels=2"),
        ]);
        let info = IceInfo::from_request(&r);
        assert_eq!(info.name.as_deref(), Some("My Radio"));
        assert_eq!(info.genre.as_deref(), Some("Jazz"));
        assert_eq!(info.public, Some(true));
        assert_eq!(info.bitrate, Some(128));
    }
}
