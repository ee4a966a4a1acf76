//! The WebSocket client of `onair push`: connects to `/ingest/{stream}`, sends `start`, the
//! OpusHead header frame, then paced frames and metadata, and reconnects when the relay goes away.
//!
//! The only async network code of the source client. Transient failures (refused connection,
//! 409, 503, 5xx, a drop mid-stream) are retried with capped, jittered exponential backoff while
//! the playout waits; permanent ones (401, 404, protocol errors) end the push with a `PushError`.
//! An output whose send failed is kept and sent first on the next connection.

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::http::uri::{InvalidUri, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::audience::{Audience, StreamsApi};
use super::pace::Pacer;
use super::playout::{Output, Playout};
use super::status::{ConnState, Status, StatusConfig};
use super::PushError;
use crate::protocol::{self, FrameHeader, SourceMessage, FLAG_HEADER, FLAG_KEYFRAME};

/// First reconnect delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A connection that stayed up this long resets the backoff (one refused at once does not).
const STABLE_CONNECTION: Duration = Duration::from_secs(2);
/// How often the status line's retry countdown is updated.
const COUNTDOWN_STEP: Duration = Duration::from_millis(500);
/// Time allowed for TCP connect plus the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A relay that does not take a message for this long is considered gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the closing handshake at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest part of a refusal body quoted in an error.
const MAX_BODY_CHARS: usize = 200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where to push: the ingest URL and the key.
#[derive(Clone)]
pub struct Target {
    /// `ws://` or `wss://` URL, as given (with any `?key=`).
    url: String,
    /// The URL without userinfo or a `key` query parameter, for messages and logs.
    display: String,
    key: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.display).finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `--to`: `ws://`, `wss://`, or `http(s)://` mapped to them; the path must be
    /// `/ingest/{stream}`.
    ///
    /// # Errors
    /// `Usage` with an example of a valid URL.
    pub fn parse(to: &str, key: Option<String>) -> Result<Self, PushError> {
        let usage = |why: &str| {
            PushError::Usage(format!("--to {to}: {why} (expected ws://HOST:PORT/ingest/STREAM)"))
        };
        let uri: Uri = to.parse().map_err(|err: InvalidUri| usage(&err.to_string()))?;
        let scheme = match uri.scheme_str() {
            Some("ws" | "http") => "ws",
            Some("wss" | "https") => "wss",
            Some(_) => return Err(usage("the scheme must be ws, wss, http or https")),
            None => return Err(usage("not a URL")),
        };
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(usage("no host"));
        };
        let path = uri.path();
        let segments: Vec<&str> = path.split('/').collect();
        let names_stream = segments
            .iter()
            .position(|s| *s == "ingest")
            .is_some_and(|i| segments.get(i + 1).is_some_and(|name| !name.is_empty()));
        if !names_stream {
            return Err(usage("the path must name a stream"));
        }
        if let Some(key) = &key {
            if key.is_empty() || HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
                return Err(PushError::Usage("--key must be non-empty printable text".into()));
            }
        }
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{scheme}://{authority}{path}{query}");
        let host = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_owned(),
        };
        let kept = uri.query().map(|q| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k != "key"))
                .finish()
        });
        let display = match kept.filter(|q| !q.is_empty()) {
            Some(q) => format!("{scheme}://{host}{path}?{q}"),
            None => format!("{scheme}://{host}{path}"),
        };
        Ok(Target { url, display, key })
    }

    /// The URL without any `key` query parameter, for messages and logs.
    pub fn display(&self) -> String {
        self.display.clone()
    }

    fn request(&self) -> Result<tungstenite::handshake::client::Request, PushError> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|err| PushError::Usage(format!("--to {}: {err}", self.display)))?;
        if let Some(key) = &self.key {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| PushError::Usage("--key must be printable text".into()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        Ok(request)
    }
}

/// Capped exponential backoff with ±25 % jitter, so many sources do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// Starts at `MIN_BACKOFF`.
    pub fn new(seed: u64) -> Self {
        Backoff { next: MIN_BACKOFF, rng: seed | 1 }
    }

    /// The delay before the next attempt; doubles each call up to `MAX_BACKOFF`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.75 + (self.rng % 1000) as f64 / 2000.0;
        base.mul_f64(factor).min(MAX_BACKOFF)
    }

    /// Back to `MIN_BACKOFF`, after a connection that worked.
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// Why a connection attempt or session ended.
enum Failure {
    /// Worth retrying after a backoff.
    Retry(String),
    /// Another source is live on the stream (409): wait for it to leave.
    Busy(String),
    /// Retrying cannot help.
    Fatal(PushError),
}

/// How a session ended without a connection failure.
enum End {
    Finished,
    Shutdown,
    /// The playout failed (e.g. the input device went away): close, then report it.
    Failed(PushError),
}

/// How `onair push` runs besides where it pushes.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Send as fast as the relay takes it (files only; a live input is paced by its device).
    pub(crate) fast: bool,
    /// No status line.
    pub(crate) quiet: bool,
    /// Summary lines when there is no status line; zero for none.
    pub(crate) stats_every: Duration,
}

/// What carries over from one connection to the next.
struct Session {
    playout: Playout,
    pacer: Pacer,
    /// Pulled from the playout but not yet sent.
    pending: Option<Output>,
    /// The current track's metadata, re-sent after a reconnect.
    metadata: Option<protocol::Metadata>,
    next_pts: u64,
    status: Status,
}

/// Pushes `playout` to `target` until the playlist ends, `shutdown` completes or a permanent
/// error occurs.
///
/// # Errors
/// The permanent `PushError`s: `Unauthorized`, `UnknownStream`, `Refused`, `Closed`, and
/// playout errors such as `NoPlayableInput`.
pub(crate) async fn publish(
    playout: Playout,
    target: &Target,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PushError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos().into());
    let mut backoff = Backoff::new(seed);
    let status = Status::new(StatusConfig {
        quiet: options.quiet,
        stats_every: options.stats_every,
        audience: Audience::new(StreamsApi::from_ingest(&target.url)),
        #[cfg(feature = "capture")]
        input: playout.input_stats(),
    });
    // NOTE: a live input is paced by its device's clock; pacing it again by the system clock
    // would let the two drift apart until a buffer overflows.
    let live = playout.is_live();
    let mut session = Session {
        playout,
        pacer: Pacer::new(options.fast || live),
        pending: None,
        metadata: None,
        next_pts: 0,
        status,
    };
    let url = target.display();
    // Connect only once there is something to send: a playlist that cannot be decoded at all
    // fails without ever putting the stream on air.
    let first = tokio::select! {
        biased;
        () = shutdown.as_mut() => return Ok(()),
        first = session.playout.next() => first,
    };
    match first {
        Some(output) => session.pending = Some(output),
        None => return session.playout.take_error().map_or(Ok(()), Err),
    }
    loop {
        session.status.state(ConnState::Connecting);
        let attempt = tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(()),
            attempt = connect(target) => attempt,
        };
        let failure = match attempt {
            Ok(mut ws) => {
                tracing::info!(%url, "connected to the relay");
                session.status.state(ConnState::Live);
                let connected_at = Instant::now();
                let result = session.serve(&mut ws, shutdown.as_mut()).await;
                if connected_at.elapsed() >= STABLE_CONNECTION {
                    backoff.reset();
                }
                match result {
                    Ok(end) => {
                        let (reason, result) = match end {
                            End::Finished => ("playlist finished", Ok(())),
                            End::Shutdown => ("source stopped", Ok(())),
                            End::Failed(err) => ("source failed", Err(err)),
                        };
                        close(&mut ws, reason).await;
                        tracing::info!(%url, reason, "disconnected");
                        return result;
                    }
                    Err(failure) => failure,
                }
            }
            Err(failure) => failure,
        };
        match failure {
            Failure::Fatal(err) => return Err(err),
            Failure::Retry(_) | Failure::Busy(_) => {
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                match failure {
                    Failure::Busy(why) => {
                        tracing::warn!(%url, relay_says = %why, retry_in_ms, "another source is live on this stream; will try again")
                    }
                    Failure::Retry(why) => {
                        tracing::warn!(%url, err = %why, retry_in_ms, "relay unavailable; will retry")
                    }
                    Failure::Fatal(_) => {}
                }
                let retry_at = Instant::now() + delay;
                loop {
                    let left = retry_at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    session.status.state(ConnState::Retrying(left));
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => return Ok(()),
                        () = sleep(left.min(COUNTDOWN_STEP)) => {}
                    }
                }
            }
        }
    }
}

async fn connect(target: &Target) -> Result<Ws, Failure> {
    let request = target.request().map_err(Failure::Fatal)?;
    match timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, None, true),
    )
    .await
    {
        Err(_) => Err(Failure::Retry("connecting timed out".into())),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(err)) => Err(classify_connect_error(err, target)),
    }
}

/// Maps a failed connection or upgrade to retry or a permanent error.
fn classify_connect_error(err: tungstenite::Error, target: &Target) -> Failure {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().chars().take(MAX_BODY_CHARS).collect())
                .unwrap_or_default();
            let url = target.display();
            match status {
                401 => Failure::Fatal(PushError::Unauthorized { url, body }),
                404 => Failure::Fatal(PushError::UnknownStream { url, body }),
                409 => Failure::Busy(body),
                408 | 425 | 429 | 500..=599 => {
                    Failure::Retry(format!("refused with {status}: {body}"))
                }
                _ => Failure::Fatal(PushError::Refused { status, body }),
            }
        }
        tungstenite::Error::Url(err) => Failure::Fatal(PushError::Fatal(format!(
            "cannot connect to {}: {err}",
            target.display()
        ))),
        other => Failure::Retry(other.to_string()),
    }
}

/// Maps the relay's close frame to retry or a permanent error.
fn classify_close(frame: Option<CloseFrame>) -> Failure {
    let Some(frame) = frame else {
        return Failure::Retry("the relay closed the connection".into());
    };
    let code = u16::from(frame.code);
    let reason = frame.reason.to_string();
    if protocol::close::is_permanent(code) {
        // Our messages were refused: sending them again would be refused again.
        return Failure::Fatal(PushError::Closed { code, reason });
    }
    if code == protocol::close::LIVE_ELSEWHERE {
        // Another source won the stream on another node: as a 409, wait for it to leave.
        return Failure::Busy(reason);
    }
    Failure::Retry(format!("closed by the relay with {code}: {reason}"))
}

async fn close(ws: &mut Ws, reason: &str) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: reason.into() };
    let _ = timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_ok() {
            // Wait for the relay's close reply so the last frames are surely delivered.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

async fn send(ws: &mut Ws, message: Message) -> Result<(), Failure> {
    match timeout(SEND_TIMEOUT, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(Failure::Retry(format!("sending failed: {err}"))),
        Err(_) => Err(Failure::Retry("the relay stopped reading".into())),
    }
}

impl Session {
    /// One connection: announce, then stream until the end, shutdown or a failure.
    async fn serve(
        &mut self,
        ws: &mut Ws,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<End, Failure> {
        if self.playout.is_live() {
            self.skip_to_live_edge();
        }
        let start = SourceMessage::Start { tracks: self.playout.tracks() };
        send(ws, Message::text(protocol::encode_source_message(&start))).await?;
        // NOTE: the header frame carries FLAG_HEADER only: OpusHead is configuration, not audio
        // a listener could start decoding at.
        let header = FrameHeader { flags: FLAG_HEADER, track: 0, pts: self.next_pts };
        send(ws, Message::Binary(protocol::encode_frame(header, &self.playout.header()))).await?;
        if let Some(meta) = &self.metadata {
            let text = protocol::encode_source_message(&SourceMessage::Metadata(meta.clone()));
            send(ws, Message::text(text)).await?;
        }
        self.pacer.reanchor();
        loop {
            if self.pending.is_none() {
                let next = tokio::select! {
                    biased;
                    () = shutdown.as_mut() => return Ok(End::Shutdown),
                    msg = ws.next() => {
                        incoming(ws, msg).await?;
                        continue;
                    }
                    next = self.playout.next() => next,
                };
                match next {
                    Some(output) => self.pending = Some(output),
                    None => {
                        return match self.playout.take_error() {
                            Some(err) => Ok(End::Failed(err)),
                            None => Ok(End::Finished),
                        };
                    }
                }
            }
            if let Some(Output::Frame { pts, .. }) = &self.pending {
                if let Some(due) = self.pacer.deadline(*pts) {
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => return Ok(End::Shutdown),
                        msg = ws.next() => {
                            incoming(ws, msg).await?;
                            continue;
                        }
                        () = sleep_until(due) => {}
                    }
                }
            }
            let Some(output) = &self.pending else { continue };
            match output {
                Output::Frame { pts, data } => {
                    let header = FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts: *pts };
                    send(ws, Message::Binary(protocol::encode_frame(header, data))).await?;
                    self.next_pts = pts + super::FRAME_DURATION_US;
                    self.status.frame(*pts, data.len());
                }
                Output::Metadata(meta) => {
                    let text =
                        protocol::encode_source_message(&SourceMessage::Metadata(meta.clone()));
                    send(ws, Message::text(text)).await?;
                    tracing::info!(title = %meta.display_title(), pts = meta.pts, "now playing");
                    self.status.track(meta);
                    self.metadata = Some(meta.clone());
                }
            }
            self.pending = None;
        }
    }
}

impl Session {
    /// Drops the audio a live input queued while nobody sent it (before the first connection,
    /// or while the relay was away): it is stale, and sending it would delay the stream for
    /// good. The newest title is kept.
    fn skip_to_live_edge(&mut self) {
        let mut dropped = 0u64;
        let queued = std::iter::from_fn(|| self.playout.try_next());
        for output in self.pending.take().into_iter().chain(queued.collect::<Vec<_>>()) {
            match output {
                Output::Metadata(meta) => self.metadata = Some(meta),
                Output::Frame { pts, .. } => {
                    dropped += 1;
                    self.next_pts = pts + super::FRAME_DURATION_US;
                }
            }
        }
        if let Some(meta) = &self.metadata {
            self.status.track(meta);
        }
        #[cfg(feature = "capture")]
        if let Some(stats) = self.playout.input_stats() {
            stats.count_dropped_packets(dropped);
        }
        tracing::debug!(dropped, "live input: skipped to the live edge");
    }
}

/// Handles a message from the relay while streaming.
async fn incoming(
    ws: &mut Ws,
    msg: Option<Result<Message, tungstenite::Error>>,
) -> Result<(), Failure> {
    match msg {
        None => Err(Failure::Retry("the relay closed the connection".into())),
        Some(Err(err)) => Err(Failure::Retry(err.to_string())),
        Some(Ok(Message::Close(frame))) => Err(classify_close(frame)),
        // tungstenite queued the pong; flush it now, as the source may be idle (stdin).
        Some(Ok(Message::Ping(_))) => match timeout(SEND_TIMEOUT, ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Failure::Retry(err.to_string())),
            Err(_) => Err(Failure::Retry("the relay stopped reading".into())),
        },
        Some(Ok(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::Response;

    #[test]
    fn urls_are_mapped_to_websocket_schemes() {
        let t = Target::parse("http://127.0.0.1:8000/ingest/radio", None).unwrap();
        assert_eq!(t.url, "ws://127.0.0.1:8000/ingest/radio");
        let t = Target::parse("https://relay.example/ingest/radio?key=s3cret&x=1", None).unwrap();
        assert!(t.url.starts_with("wss://"), "{}", t.url);
        assert_eq!(t.display(), "wss://relay.example/ingest/radio?x=1", "the key is never shown");
        let t = Target::parse("ws://h:1/base/ingest/talk", Some("k".into())).unwrap();
        assert_eq!(t.request().unwrap().headers()[AUTHORIZATION], "Bearer k");
    }

    #[test]
    fn urls_without_a_stream_are_usage_errors() {
        for bad in [
            "ws://h:1/listen/radio",
            "ws://h:1/ingest/",
            "ftp://h/ingest/a",
            "radio",
            "ws:///ingest/a",
        ] {
            let err = Target::parse(bad, None).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
        let err = Target::parse("ws://h/ingest/a", Some("bad\nkey".into())).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    fn refused(status: u16) -> Failure {
        let response = Response::builder().status(status).body(Some(b"why\n".to_vec())).unwrap();
        let target = Target::parse("ws://h/ingest/a?key=x", None).unwrap();
        classify_connect_error(tungstenite::Error::Http(Box::new(response)), &target)
    }

    #[test]
    fn refusals_map_to_exit_codes_or_retries() {
        let Failure::Fatal(err) = refused(401) else { panic!("401 is permanent") };
        assert_eq!(err.exit_code(), 3);
        assert_eq!(err.to_string(), "the relay refused the key for ws://h/ingest/a (401): why");
        let Failure::Fatal(err) = refused(404) else { panic!("404 is permanent") };
        assert_eq!(err.exit_code(), 4);
        let Failure::Fatal(err) = refused(403) else { panic!("403 is permanent") };
        assert_eq!(err.exit_code(), 1);
        for status in [503, 500, 502] {
            assert!(matches!(refused(status), Failure::Retry(_)), "{status}");
        }
        // Another source is live: wait for it, and say so.
        assert!(matches!(refused(409), Failure::Busy(body) if body == "why"));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let target = Target::parse("ws://h/ingest/a", None).unwrap();
        assert!(matches!(classify_connect_error(io.into(), &target), Failure::Retry(_)));
    }

    #[test]
    fn close_codes_map_to_retry_or_fatal() {
        let frame =
            |code: u16| Some(CloseFrame { code: CloseCode::from(code), reason: "r".into() });
        assert!(matches!(classify_close(frame(1001)), Failure::Retry(_)));
        assert!(matches!(classify_close(frame(4009)), Failure::Retry(_)));
        assert!(matches!(classify_close(frame(4006)), Failure::Retry(_)));
        assert!(matches!(classify_close(None), Failure::Retry(_)));
        assert!(matches!(
            classify_close(frame(4000)),
            Failure::Fatal(PushError::Closed { code: 4000, .. })
        ));
        assert!(matches!(classify_close(frame(4010)), Failure::Fatal(_)));
        assert!(matches!(classify_close(frame(4011)), Failure::Busy(_)), "as a 409");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new(7);
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        for (i, delay) in delays.iter().enumerate() {
            let base = (MIN_BACKOFF * 2u32.pow(i as u32)).min(MAX_BACKOFF);
            assert!(
                *delay >= base.mul_f64(0.75) && *delay <= base.mul_f64(1.25).min(MAX_BACKOFF),
                "{i}: {delay:?}"
            );
        }
        assert!(delays[9] >= MAX_BACKOFF.mul_f64(0.75));
        backoff.reset();
        assert!(backoff.next_delay() <= MIN_BACKOFF.mul_f64(1.25));
    }
}
