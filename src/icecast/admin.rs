//! The Icecast admin and status API subset: `/admin/metadata` (now playing),
//! `/admin/listclients`, `/admin/killsource` and `/status-json.xsl` in Icecast's JSON shape.
//!
//! Admin requests authenticate with HTTP Basic: the stream's key (for that stream only) or the
//! relay's `admin_password`; `listclients` (listener addresses) needs `admin_password`. Answers are Icecast's small XML documents, so existing tools
//! (libshout, butt, liquidsoap, monitoring scripts) read them unchanged.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use tracing::{debug, info};

use super::{parse_mount, REALM, SERVER_ID};
use crate::auth::{self, admin_matches};
use crate::error::Refusal;
use crate::format::Container;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::protocol::{truncate, Codec, Metadata, TrackKind, MAX_METADATA_FIELD_BYTES};
use crate::relay::{KickReason, Stream};
use crate::time::{iso8601, rfc822};

/// Answers an admin or status request. Only `/status-json.xsl` carries CORS headers: no page
/// of another site may read an `/admin` answer, and a cross-site `/admin` request is refused
/// before anything runs (a logged-in admin's browser would otherwise run it for the page).
pub fn serve(node: &Node, request: &Request, peer: SocketAddr) -> Response {
    if request.path == "/status-json.xsl" {
        let params = query_pairs(request.query.as_deref().unwrap_or(""));
        let mount = params.iter().find(|(k, _)| k == "mount").map(|(_, v)| v.as_str());
        let response = status_json(node, request, mount).with_header("Server", SERVER_ID);
        return response.with_cors(&node.config, request);
    }
    if auth::is_cross_site(request) {
        let refusal = Refusal::CrossSite;
        info!(%peer, path = %request.path, "admin request refused: sent by a page of another site");
        node.metrics.refused(&refusal.label());
        return Response::refusal(&refusal).with_header("Server", SERVER_ID);
    }
    answer(node, request, peer).with_header("Server", SERVER_ID)
}

fn answer(node: &Node, request: &Request, peer: SocketAddr) -> Response {
    let params = query_pairs(request.query.as_deref().unwrap_or(""));
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let command = request.path.trim_start_matches("/admin/");
    if !matches!(
        command,
        "metadata"
            | "metadata.xsl"
            | "listclients"
            | "listclients.xsl"
            | "killsource"
            | "killsource.xsl"
    ) {
        return Response::text(404, "unknown admin command");
    }
    let Some(stream) =
        param("mount").and_then(parse_mount).and_then(|(name, _)| node.streams.get(name))
    else {
        return xml_response(400, "Source does not exist", 0);
    };
    let presented = request.header("authorization").is_some();
    let matches = || admin_matches(&node.config, stream, request);
    let verified = match node.logins.verify(peer.ip(), presented, matches) {
        Ok(verified) => verified,
        Err(throttled) => {
            let refusal = Refusal::from(throttled);
            info!(%peer, path = %request.path, "admin request refused: too many failed logins");
            node.metrics.refused(&refusal.label());
            return Response::refusal(&refusal);
        }
    };
    if !verified {
        let refusal = Refusal::AdminCredentials;
        if request.header("authorization").is_none() {
            // libshout asks without credentials first and retries on the challenge: not a
            // refusal worth a log line or a metric.
            debug!(%peer, path = %request.path, "admin request without credentials: sending a challenge");
        } else {
            info!(%peer, path = %request.path, "admin request refused: wrong credentials");
            node.metrics.refused(&refusal.label());
        }
        return Response::refusal(&refusal)
            .with_header("WWW-Authenticate", format!("Basic realm=\"{REALM}\""));
    }
    let name = &stream.config().name;
    match command.trim_end_matches(".xsl") {
        "metadata" => {
            if param("mode").is_some_and(|m| m != "updinfo") {
                return xml_response(400, "No such action", 0);
            }
            let field = |key: &str| {
                param(key)
                    .map(|v| truncate(v.trim(), MAX_METADATA_FIELD_BYTES).to_owned())
                    .filter(|v| !v.is_empty())
            };
            let meta = match field("song") {
                Some(song) => {
                    Metadata { title: Some(song), url: field("url"), ..Metadata::default() }
                }
                None => Metadata {
                    title: field("title"),
                    artist: field("artist"),
                    url: field("url"),
                    ..Metadata::default()
                },
            };
            if meta.title.is_none() && meta.artist.is_none() {
                return xml_response(400, "No metadata given (use song=...)", 0);
            }
            let title = meta.display_title();
            // In a cluster, a stream relayed from another node gets it from its origin.
            if let Some((cluster, origin)) = node.relayed_from(stream) {
                if cluster.forward_metadata(name, &origin, meta) {
                    info!(stream = %name, %peer, %title, %origin, "now playing sent to the origin node");
                    return xml_response(200, "Metadata update successful", 1);
                }
                return xml_response(503, "Cluster unavailable", 0);
            }
            if !stream.set_metadata(meta) {
                info!(stream = %name, %peer, %title, "admin metadata refused: no source connected");
                return xml_response(400, "Source does not exist", 0);
            }
            info!(stream = %name, %peer, %title, "now playing set by admin request");
            xml_response(200, "Metadata update successful", 1)
        }
        // Listener addresses and User-Agents are personal data: for the operator only, as
        // in Icecast, not for whoever holds a stream's key.
        "listclients" if !auth::admin_password_matches(&node.config, request) => {
            let refusal = Refusal::AdminOnly;
            info!(%peer, path = %request.path, "admin request refused: listclients needs admin_password");
            node.metrics.refused(&refusal.label());
            Response::refusal(&refusal)
        }
        "listclients" => listclients(node, stream, param("mount").unwrap_or_default()),
        _ => {
            if let Some((cluster, origin)) = node.relayed_from(stream) {
                if cluster.forward_kick(name, &origin) {
                    info!(stream = %name, %peer, %origin, "source removal sent to the origin node");
                    return xml_response(200, "Source Removed", 1);
                }
                return xml_response(503, "Cluster unavailable", 0);
            }
            if stream.kick_live(KickReason::Operator) {
                info!(stream = %name, %peer, "source removal requested by admin");
                xml_response(200, "Source Removed", 1)
            } else {
                xml_response(400, "No live source on this mount", 0)
            }
        }
    }
}

fn xml_response(status: u16, message: &str, ok: u8) -> Response {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{}</message><return>{ok}</return></iceresponse>\n",
        xml_escape(message)
    );
    Response::new(status, "text/xml; charset=utf-8", body).with_header("Cache-Control", "no-cache")
}

fn xml_escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The listeners of a stream, under the mount the request named (as Icecast answers).
fn listclients(node: &Node, stream: &Stream, asked: &str) -> Response {
    let name = &stream.config().name;
    let clients = node.directory.clients(name);
    let mount = match parse_mount(asked) {
        Some((_, Some(_))) => asked.to_owned(),
        _ => format!("/{name}.{}", extension(stream)),
    };
    let mut body = format!(
        "<?xml version=\"1.0\"?>\n<icestats><source mount=\"{}\"><Listeners>{}</Listeners>",
        xml_escape(&mount),
        clients.len()
    );
    for (id, client) in clients.iter().enumerate() {
        let _ = write!(
            body,
            "<listener id=\"{id}\"><IP>{}</IP><UserAgent>{}</UserAgent><Connected>{}</Connected><ID>{id}</ID><Type>{}</Type></listener>",
            client.peer.ip(),
            xml_escape(client.user_agent.as_deref().unwrap_or("")),
            client.connected.elapsed().as_secs(),
            client.kind,
        );
    }
    body.push_str("</source></icestats>\n");
    Response::new(200, "text/xml; charset=utf-8", body).with_header("Cache-Control", "no-cache")
}

/// The mount extension listeners use for this stream's codec.
fn extension(stream: &Stream) -> &'static str {
    let info = stream.info();
    match info.tracks.iter().find(|t| t.kind == TrackKind::Audio).map(|t| t.codec) {
        Some(Codec::Mp3) => "mp3",
        _ => "ogg",
    }
}

/// `GET /status-json.xsl`: Icecast 2.4's JSON status; `source` is an object when exactly one
/// public stream is live, an array when several are, absent when none is.
fn status_json(node: &Node, request: &Request, mount: Option<&str>) -> Response {
    let host = request
        .header("host")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| node.config.listen.to_string());
    let hostname = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h).trim_matches(['[', ']']);
    let only = mount.and_then(parse_mount).map(|(name, _)| name);
    let mut sources: Vec<Value> = node
        .streams
        .iter()
        // A private stream is not listed at all, as Icecast's hidden mounts: directories
        // and scrapers read this.
        .filter(|s| s.config().listen_secret.is_none())
        .filter(|s| s.is_live() && only.is_none_or(|n| n == s.config().name))
        .map(|s| source_json(node, s, &host))
        .collect();
    let started = node.directory.started();
    let mut icestats = Map::new();
    icestats.insert("admin".into(), json!("icemaster@localhost"));
    icestats.insert("host".into(), json!(hostname));
    icestats.insert("location".into(), json!("Earth"));
    icestats.insert("server_id".into(), json!(SERVER_ID));
    icestats.insert("server_start".into(), json!(rfc822(started)));
    icestats.insert("server_start_iso8601".into(), json!(iso8601(started)));
    match sources.len() {
        0 => {}
        1 => {
            icestats.insert("source".into(), sources.remove(0));
        }
        _ => {
            icestats.insert("source".into(), Value::Array(sources));
        }
    }
    let body = serde_json::to_vec(&json!({ "icestats": icestats })).expect("JSON values serialize");
    Response::new(200, "application/json; charset=utf-8", body)
        .with_header("Cache-Control", "no-cache")
}

fn source_json(node: &Node, stream: &Arc<Stream>, host: &str) -> Value {
    let name = &stream.config().name;
    let info = stream.info();
    let icecast = node.directory.source(name);
    let ice = icecast.as_ref().map(|s| s.ice.clone()).unwrap_or_default();
    let track = info.tracks.iter().find(|t| t.kind == TrackKind::Audio);
    let container = match track.map(|t| t.codec) {
        Some(Codec::Mp3) => Container::Mp3,
        _ => Container::Ogg,
    };
    let bitrate = ice
        .bitrate
        .or_else(|| track.and_then(|t| t.bitrate).map(|b| b / 1000))
        .unwrap_or((info.bitrate_bps / 1000) as u32);
    let channels = track.and_then(|t| t.channels);
    let samplerate = track.and_then(|t| t.sample_rate);
    let audio_info = ice.audio_info.clone().unwrap_or_else(|| {
        let mut parts = Vec::new();
        if let Some(c) = channels {
            parts.push(format!("channels={c}"));
        }
        if let Some(r) = samplerate {
            parts.push(format!("samplerate={r}"));
        }
        parts.push(format!("bitrate={bitrate}"));
        parts.join(";")
    });
    let started = icecast
        .as_ref()
        .map(|s| s.started)
        .unwrap_or_else(|| SystemTime::now() - Duration::from_secs(info.uptime_s));
    let listeners = info.listeners;
    let mut source = Map::new();
    source.insert("audio_info".into(), json!(audio_info));
    source.insert("bitrate".into(), json!(bitrate));
    if let Some(c) = channels {
        source.insert("channels".into(), json!(c));
    }
    source.insert("genre".into(), json!(ice.genre.as_deref().unwrap_or("various")));
    source.insert("listener_peak".into(), json!(node.directory.listener_peak(name, listeners)));
    source.insert("listeners".into(), json!(listeners));
    // Not Icecast's: the stream's listeners on every node of a cluster.
    source.insert("cluster_listeners".into(), json!(node.cluster_listeners(stream)));
    let hls = node.cluster_hls_listeners(stream, stream.hls_listener_count());
    source.insert("cluster_hls_listeners".into(), json!(hls));
    let ext = if container == Container::Mp3 { "mp3" } else { "ogg" };
    source.insert("listenurl".into(), json!(format!("http://{host}/{name}.{ext}")));
    if let Some(r) = samplerate {
        source.insert("samplerate".into(), json!(r));
    }
    source.insert(
        "server_description".into(),
        json!(ice.description.as_deref().unwrap_or("Unspecified description")),
    );
    source.insert("server_name".into(), json!(ice.name.as_deref().unwrap_or(name)));
    source.insert("server_type".into(), json!(container.content_type()));
    if let Some(url) = &ice.url {
        source.insert("server_url".into(), json!(url));
    }
    source.insert("stream_start".into(), json!(rfc822(started)));
    source.insert("stream_start_iso8601".into(), json!(iso8601(started)));
    if let Some(meta) = &info.metadata {
        if let Some(artist) = &meta.artist {
            source.insert("artist".into(), json!(artist));
        }
        if let Some(title) = &meta.title {
            source.insert("title".into(), json!(title));
        }
    }
    source.insert("dummy".into(), Value::Null);
    Value::Object(source)
}

/// Decodes a query string. Values that are not UTF-8 are read as Latin-1, the charset older
/// Icecast clients use for `song=`.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .take(32)
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => text,
        Err(err) => err.into_bytes().iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode_as_utf8_or_latin1() {
        let pairs = query_pairs("mount=%2Fradio.ogg&mode=updinfo&song=Caf%C3%A9+Song&x");
        assert_eq!(pairs[0], ("mount".into(), "/radio.ogg".into()));
        assert_eq!(pairs[2].1, "Café Song");
        assert_eq!(pairs[3], ("x".into(), String::new()));
        assert_eq!(query_pairs("song=Caf%E9")[0].1, "Café", "Latin-1 from old clients");
        assert_eq!(query_pairs("song=100%")[0].1, "100%");
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert!(matches!(xml_escape("plain"), Cow::Borrowed(_)));
    }
}
