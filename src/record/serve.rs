//! `GET /api/recordings/{stream}` (the list, JSON, newest first) and
//! `GET /recordings/{stream}/{id}.{ogg|mp3}` (a file, with byte ranges so players can seek).
//!
//! Files are streamed from disk in `CHUNK_BYTES` pieces, each written within `WRITE_TIMEOUT`,
//! so a download holds one chunk of memory and a stalled client is dropped. A private stream's
//! recordings need the stream's signed link, on the list and on each file; the list's URLs
//! carry the link it was asked with.

use std::collections::HashSet;
use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::catalog::{self, State, Title};
use super::Recordings;
use crate::error::Refusal;
use crate::http::{self, Request, Response};
use crate::node::Node;

/// Bytes read from disk and written to the client at a time.
pub const CHUNK_BYTES: usize = 64 << 10;
/// Longest a client may take to accept one chunk.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most ranges of one `Range` header looked at (more, and the header is ignored).
const MAX_RANGES: usize = 16;

/// Whether `path` is one of the recordings' endpoints.
pub fn claims(path: &str) -> bool {
    path.starts_with("/api/recordings/") || path.starts_with("/recordings/")
}

/// Answers a request `claims` took.
///
/// # Errors
/// Socket errors while answering.
pub async fn serve<S: AsyncWrite + Unpin>(
    socket: &mut S,
    node: &Node,
    recordings: Option<&Arc<Recordings>>,
    request: &Request,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let head_only = request.method == "HEAD";
    let answer = |response: Response| response.with_cors(&node.config, request);
    let Some(recordings) = recordings else {
        let off = Response::text(404, "recordings are off on this relay (no recordings_dir)");
        return answer(off).send(socket, head_only).await;
    };
    if let Some(name) = request.path.strip_prefix("/api/recordings/") {
        let response = match authorize(node, request, name) {
            Ok(()) => list(recordings, request, name).await,
            Err(response) => response,
        };
        return answer(response).send(socket, head_only).await;
    }
    let rest = request.path.strip_prefix("/recordings/").unwrap_or_default();
    let Some((name, file)) = rest.split_once('/') else {
        return answer(Response::text(404, "no such recording")).send(socket, head_only).await;
    };
    if let Err(response) = authorize(node, request, name) {
        return answer(response).send(socket, head_only).await;
    }
    let Some((id, ext)) = catalog::parse_name(file).filter(|(_, ext)| *ext != "json") else {
        return answer(Response::text(404, "no such recording")).send(socket, head_only).await;
    };
    let path = catalog::stream_dir(&recordings.dir, name).join(format!("{id}.{ext}"));
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => {
            return answer(Response::text(404, "no such recording")).send(socket, head_only).await;
        }
    };
    let meta = file.metadata().await?;
    let len = meta.len();
    let etag = format!("\"{:x}-{:x}-{:x}\"", meta.ino(), len, meta.mtime_nsec() ^ meta.mtime());
    let private = node.streams.get(name).is_some_and(|s| s.config().listen_secret.is_some());
    let mut headers: Vec<(&str, String)> = vec![
        ("Content-Type", content_type(ext).to_owned()),
        ("Accept-Ranges", "bytes".to_owned()),
        ("ETag", etag.clone()),
        ("Cache-Control", if private { "private, no-cache" } else { "no-cache" }.to_owned()),
        ("Content-Disposition", format!("inline; filename=\"{name}-{id}.{ext}\"")),
        ("X-Content-Type-Options", "nosniff".to_owned()),
    ];
    headers.extend(http::cors_headers(&node.config, request));
    if request.header("if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return write_head(socket, 304, &headers, None).await;
    }
    // A range of another version of the file (it grows while recorded) is no range at all.
    let fresh = request.header("if-range").is_none_or(|v| v.trim() == etag);
    let range = match request.header("range") {
        Some(value) if fresh => parse_range(value, len),
        _ => Range::Full,
    };
    let (status, start, count) = match range {
        Range::Full => (200, 0, len),
        Range::Part(first, last) => {
            headers.push(("Content-Range", format!("bytes {first}-{last}/{len}")));
            (206, first, last - first + 1)
        }
        Range::Unsatisfiable => {
            headers.push(("Content-Range", format!("bytes */{len}")));
            let body = "range not satisfiable\n";
            headers[0].1 = "text/plain; charset=utf-8".to_owned();
            write_head(socket, 416, &headers, Some(body.len() as u64)).await?;
            if !head_only {
                socket.write_all(body.as_bytes()).await?;
            }
            return socket.shutdown().await;
        }
    };
    write_head(socket, status, &headers, Some(count)).await?;
    if head_only || count == 0 {
        return socket.shutdown().await;
    }
    file.seek(SeekFrom::Start(start)).await?;
    let mut left = count;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK_BYTES);
        let n = file.read(&mut chunk[..want]).await?;
        if n == 0 {
            // The file shrank (retention removed it, or it was truncated): the client sees a
            // short body and may ask again.
            debug!(path = %path.display(), left, "recording ended before its length");
            break;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            written = timeout(WRITE_TIMEOUT, socket.write_all(&chunk[..n])) => {
                written.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            }
        }
        left -= n as u64;
    }
    socket.shutdown().await
}

/// The stream exists and, if private, the request carries its signed link.
fn authorize(node: &Node, request: &Request, name: &str) -> Result<(), Response> {
    let stream = node.streams.get(name).ok_or_else(|| Response::refusal(&Refusal::NoSuchStream))?;
    crate::auth::check_listen_access(stream, request).map_err(|denied| {
        let refusal = Refusal::from(denied);
        node.metrics.refused(&refusal.label());
        debug!(path = %request.path, reason = %refusal, "recordings request refused");
        Response::refusal(&refusal)
    })
}

/// One recording as the list shows it.
#[derive(Debug, Serialize)]
struct Listed {
    id: String,
    started: String,
    duration_s: Option<f64>,
    bytes: u64,
    titles: Vec<Title>,
    url: String,
    content_type: &'static str,
    state: State,
    source: Option<String>,
    show: Option<String>,
    part: Option<u32>,
}

async fn list(recordings: &Arc<Recordings>, request: &Request, name: &str) -> Response {
    let dir = catalog::stream_dir(&recordings.dir, name);
    let open = recordings.recording_now(name);
    let scanned = tokio::task::spawn_blocking(move || catalog::scan(&dir, true)).await;
    let entries = match scanned {
        Ok(Ok(entries)) => entries,
        Ok(Err(err)) => {
            debug!(stream = name, %err, "cannot list recordings");
            return Response::text(500, "cannot read the recordings folder");
        }
        Err(_) => return Response::text(500, "cannot read the recordings folder"),
    };
    let query = signed_query(request);
    let listed: Vec<Listed> = entries
        .into_iter()
        .filter(|e| e.ext.is_some())
        .take(catalog::MAX_LISTED)
        .map(|e| to_listed(e, name, &query, &open))
        .collect();
    #[derive(Serialize)]
    struct Body {
        stream: String,
        recordings: Vec<Listed>,
    }
    let body = Body { stream: name.to_owned(), recordings: listed };
    let json = serde_json::to_vec(&body).expect("a recording list always serializes");
    Response::new(200, "application/json", json).with_header("Cache-Control", "no-store")
}

fn to_listed(entry: catalog::Entry, name: &str, query: &str, open: &HashSet<String>) -> Listed {
    let state = entry.state(open);
    let ext = entry.ext.unwrap_or("ogg");
    let url = format!("/recordings/{name}/{}.{ext}{query}", entry.id);
    let sidecar = entry.sidecar;
    Listed {
        started: sidecar
            .as_ref()
            .map_or_else(|| crate::time::rfc3339(entry.started), |s| s.started.clone()),
        duration_s: sidecar.as_ref().map(|s| s.duration_s),
        bytes: entry.media_bytes,
        titles: sidecar.as_ref().map(|s| s.titles.clone()).unwrap_or_default(),
        url,
        content_type: content_type(ext),
        state,
        source: sidecar.as_ref().map(|s| s.source.clone()),
        show: sidecar.as_ref().map(|s| s.show.clone()),
        part: sidecar.as_ref().map(|s| s.part),
        id: entry.id,
    }
}

/// A private stream's link parameters, carried on to the file URLs.
fn signed_query(request: &Request) -> String {
    match (request.query_param("expires"), request.query_param("sig")) {
        (Some(expires), Some(sig)) => {
            let clean = |v: &str| v.chars().filter(char::is_ascii_alphanumeric).collect::<String>();
            format!("?expires={}&sig={}", clean(&expires), clean(&sig))
        }
        _ => String::new(),
    }
}

fn content_type(ext: &str) -> &'static str {
    match ext {
        "mp3" => "audio/mpeg",
        _ => "audio/ogg",
    }
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The whole file (no usable range: RFC 9110 lets a server ignore a bad one).
    Full,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// No byte of the file is asked for (416).
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`. Several ranges are answered as one that
/// covers them all (RFC 9110 §14.2 allows coalescing); a header that does not parse is
/// ignored.
pub fn parse_range(value: &str, len: u64) -> Range {
    let Some(set) = value.trim().strip_prefix("bytes=") else { return Range::Full };
    let mut covered: Option<(u64, u64)> = None;
    let mut any = false;
    for (i, spec) in set.split(',').enumerate() {
        if i == MAX_RANGES {
            return Range::Full;
        }
        let Some((a, b)) = spec.trim().split_once('-') else { return Range::Full };
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
        };
        let part = match (a.trim(), b.trim()) {
            ("", suffix) => {
                let Some(n) = number(suffix) else { return Range::Full };
                (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1))
            }
            (first, "") => {
                let Some(first) = number(first) else { return Range::Full };
                (first < len).then(|| (first, len - 1))
            }
            (first, last) => {
                let (Some(first), Some(last)) = (number(first), number(last)) else {
                    return Range::Full;
                };
                if last < first {
                    return Range::Full;
                }
                (first < len).then(|| (first, last.min(len - 1)))
            }
        };
        any = true;
        if let Some((first, last)) = part {
            covered = Some(match covered {
                Some((f, l)) => (f.min(first), l.max(last)),
                None => (first, last),
            });
        }
    }
    match covered {
        Some((first, last)) => Range::Part(first, last),
        None if any => Range::Unsatisfiable,
        None => Range::Full,
    }
}

async fn write_head<S: AsyncWrite + Unpin>(
    socket: &mut S,
    status: u16,
    headers: &[(&str, String)],
    length: Option<u64>,
) -> std::io::Result<()> {
    let reason = match status {
        206 => "Partial Content",
        304 => "Not Modified",
        416 => "Range Not Satisfiable",
        other => http::reason_phrase(other),
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    timeout(WRITE_TIMEOUT, socket.write_all(head.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if status == 304 {
        socket.shutdown().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-99", 1000), Range::Part(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Range::Part(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Range::Part(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Range::Part(0, 999));
        assert_eq!(parse_range("bytes=990-2000", 1000), Range::Part(990, 999));
        assert_eq!(parse_range("bytes=0-0, 10-20", 1000), Range::Part(0, 20), "coalesced");
        assert_eq!(parse_range(" bytes = 0-1", 1000), Range::Full, "not the syntax: ignored");
        assert_eq!(parse_range("bytes=1000-", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=2000-3000", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Range::Full);
        assert_eq!(parse_range("bytes=a-b", 1000), Range::Full);
        assert_eq!(parse_range("bytes=+1-2", 1000), Range::Full);
        assert_eq!(parse_range("items=0-1", 1000), Range::Full);
        assert_eq!(parse_range("bytes=99999999999999999999-", 1000), Range::Full);
        let many = format!("bytes={}", vec!["0-1"; 17].join(","));
        assert_eq!(parse_range(&many, 1000), Range::Full);
    }

    #[test]
    fn signed_links_are_carried_cleaned() {
        let mut request = crate::http::tests::request(&[]);
        request.query = Some("expires=123&sig=ab%22cd".into());
        assert_eq!(signed_query(&request), "?expires=123&sig=abcd");
        request.query = None;
        assert_eq!(signed_query(&request), "");
    }
}
