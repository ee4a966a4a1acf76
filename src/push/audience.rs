//! The listener count of the stream `onair push` feeds, read from the relay's `/api/streams`
//! every few seconds for the status line and the summary lines.
//!
//! Best effort and read only: one small HTTP(S) GET per poll on a connection of its own; a relay
//! that does not answer leaves the count unknown and nothing here ever affects the push. The
//! polling task stops when the `Audience` is dropped.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::http::Uri;

/// How often the count is refreshed.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Time allowed for one poll, connection included.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/api/streams` answer read.
const MAX_RESPONSE_BYTES: u64 = 4 << 20;

/// Where the relay's stream list is and which stream is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamsApi {
    tls: bool,
    host: String,
    port: u16,
    /// `/api/streams`, under the same prefix as the ingest path (a relay behind a proxy).
    path: String,
    stream: String,
}

impl StreamsApi {
    /// From the ingest URL: `ws://h:p/pre/ingest/radio` gives `http://h:p/pre/api/streams`,
    /// stream `radio`.
    pub(crate) fn from_ingest(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let tls = matches!(uri.scheme_str()?, "wss" | "https");
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let (prefix, rest) = uri.path().rsplit_once("/ingest/")?;
        let stream = rest.split('/').next().filter(|s| !s.is_empty())?.to_owned();
        Some(StreamsApi { tls, host, port, path: format!("{prefix}/api/streams"), stream })
    }
}

/// The latest listener count, kept fresh by a background task once `start`ed.
#[derive(Debug)]
pub(crate) struct Audience {
    api: Option<StreamsApi>,
    count: Arc<AtomicI64>,
    task: Option<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Audience {
    /// A count of `api`'s stream, unknown until `start`; `None` never polls.
    pub(crate) fn new(api: Option<StreamsApi>) -> Self {
        Audience { api, count: Arc::new(AtomicI64::new(-1)), task: None }
    }

    /// Starts polling, once the source is on air (a relay that is down is not asked); does
    /// nothing if it already polls. Needs a tokio runtime.
    pub(crate) fn start(&mut self) {
        if self.task.is_some() {
            return;
        }
        let Some(api) = self.api.clone() else { return };
        let count = self.count.clone();
        self.task = Some(AbortOnDrop(tokio::spawn(async move {
            let tls = api.tls.then(tls_connector).flatten();
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = match timeout(POLL_TIMEOUT, poll(&api, tls.as_ref())).await {
                    Ok(Ok(n)) => n,
                    Ok(Err(why)) => {
                        tracing::debug!(%why, "listener count unavailable");
                        -1
                    }
                    Err(_) => -1,
                };
                count.store(now, Ordering::Relaxed);
            }
        })));
    }

    /// Listeners of the stream (WebSocket, HTTP and HLS), if the relay said.
    pub(crate) fn listeners(&self) -> Option<u64> {
        u64::try_from(self.count.load(Ordering::Relaxed)).ok()
    }
}

fn tls_connector() -> Option<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn poll(api: &StreamsApi, tls: Option<&tokio_rustls::TlsConnector>) -> Result<i64, String> {
    let tcp = TcpStream::connect((api.host.as_str(), api.port)).await.map_err(|e| e.to_string())?;
    let body = match (api.tls, tls) {
        (false, _) => get(tcp, api).await?,
        (true, Some(connector)) => {
            let name = rustls::pki_types::ServerName::try_from(api.host.clone())
                .map_err(|e| e.to_string())?;
            let stream = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            get(stream, api).await?
        }
        (true, None) => return Err("no TLS configuration".into()),
    };
    listeners_in(&body, &api.stream)
        .ok_or_else(|| format!("no stream {} in the answer", api.stream))
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    api: &StreamsApi,
) -> Result<Vec<u8>, String> {
    let host = if api.host.contains(':') { format!("[{}]", api.host) } else { api.host.clone() };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: onair-push\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        api.path, api.port
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A TLS peer that closes without close_notify still gave us the whole body.
    let _ = (&mut stream).take(MAX_RESPONSE_BYTES).read_to_end(&mut response).await;
    body_of(&response)
}

/// The body of a complete `200` response, de-chunked if need be.
fn body_of(response: &[u8]) -> Result<Vec<u8>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(response).map_err(|e| e.to_string())? else {
        return Err("incomplete answer".into());
    };
    if head.code != Some(200) {
        return Err(format!("answered {}", head.code.unwrap_or(0)));
    }
    let chunked = head.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value).to_ascii_lowercase().contains("chunked")
    });
    let body = &response[len..];
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// `listeners + hls_listeners` of `stream` in an `/api/streams` answer; in a cluster,
/// `cluster_listeners` and `cluster_hls_listeners` (every node's) in their place (this node's).
fn listeners_in(body: &[u8], stream: &str) -> Option<i64> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let entry = json["streams"].as_array()?.iter().find(|s| s["name"] == stream)?;
    let listeners = entry["cluster_listeners"].as_i64().or_else(|| entry["listeners"].as_i64())?;
    let hls = entry["cluster_hls_listeners"].as_i64().or_else(|| entry["hls_listeners"].as_i64());
    Some(listeners + hls.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_url_follows_the_ingest_url() {
        let api = StreamsApi::from_ingest("ws://127.0.0.1:8000/ingest/radio").unwrap();
        assert_eq!(
            api,
            StreamsApi {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8000,
                path: "/api/streams".into(),
                stream: "radio".into()
            }
        );
        let api = StreamsApi::from_ingest("wss://relay.example/base/ingest/talk?key=x").unwrap();
        assert_eq!((api.tls, api.port, api.path.as_str()), (true, 443, "/base/api/streams"));
        assert_eq!(api.stream, "talk");
        assert!(StreamsApi::from_ingest("ws://h/listen/radio").is_none());
    }

    #[test]
    fn listeners_count_websocket_http_and_hls() {
        let body = br#"{"streams":[{"name":"a","listeners":1},{"name":"radio","listeners":3,"hls_listeners":2}]}"#;
        assert_eq!(listeners_in(body, "radio"), Some(5));
        assert_eq!(listeners_in(body, "a"), Some(1));
        assert_eq!(listeners_in(body, "b"), None);
        let cluster = br#"{"streams":[{"name":"radio","listeners":3,"cluster_listeners":7,"hls_listeners":2}]}"#;
        assert_eq!(listeners_in(cluster, "radio"), Some(9), "every node's listeners in a cluster");
        let hls = br#"{"streams":[{"name":"radio","listeners":3,"cluster_listeners":7,"hls_listeners":2,"cluster_hls_listeners":5}]}"#;
        assert_eq!(listeners_in(hls, "radio"), Some(12), "and every node's HLS clients");
    }

    #[test]
    fn plain_and_chunked_answers_are_read() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(body_of(plain).unwrap(), b"{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"s\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(body_of(chunked).unwrap(), b"{\"s\":1}");
        assert!(body_of(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
