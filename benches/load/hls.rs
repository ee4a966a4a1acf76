//! An LL-HLS listener as the load tool runs it: one keep-alive connection, a blocking playlist
//! reload (`_HLS_msn`/`_HLS_part` of the playlist's preload hint), then a GET of each part the
//! playlist lists that it has not fetched, then the next reload: one playlist and one part per
//! 200 ms, as hls.js does in low-latency mode. Parts are fragmented MP4; each sample is one of
//! the source's stamped payloads, so frames are counted and timed as the other listeners'.

use std::collections::VecDeque;

use crate::wire::{read_stamp, Event};

/// Longest response kept (a playlist of 300 segments is about 40 KiB).
const MAX_RESPONSE: usize = 1 << 20;

/// One HLS listener's protocol state: a few dozen bytes between responses.
pub struct HlsConn {
    /// The response being read (head and body); empty between responses.
    response: Vec<u8>,
    /// (head length, body length) once the head is read.
    framing: Option<(usize, usize)>,
    /// Whether the answer awaited is a playlist (else a part).
    awaiting_playlist: bool,
    /// The newest part fetched or queued: (msn, part).
    last: Option<(u64, u32)>,
    /// Parts listed but not fetched yet, oldest first: (msn, part, URI).
    queue: VecDeque<(u64, u32, String)>,
    /// The preload hint of the newest playlist: what the next reload blocks on.
    hint: Option<(u64, u32)>,
    /// The `?session=` that makes the relay count each listener once.
    session: String,
}

/// What a listener does after a response.
pub enum Next {
    /// Write this request.
    Request(Vec<u8>),
    /// Wait for more bytes of the response.
    More,
}

impl HlsConn {
    /// A listener that will identify itself to the relay as `session`.
    pub fn new(session: String) -> Self {
        Self {
            response: Vec::new(),
            framing: None,
            awaiting_playlist: true,
            last: None,
            queue: VecDeque::new(),
            hint: None,
            session,
        }
    }

    /// The request for the playlist at `path`: blocking on the hint once there is one.
    pub fn playlist_request(&mut self, path: &str, host: &str) -> Vec<u8> {
        self.awaiting_playlist = true;
        let block = match self.hint {
            Some((msn, part)) => format!("&_HLS_msn={msn}&_HLS_part={part}"),
            None => String::new(),
        };
        request(&format!("{path}?session={}{block}", self.session), host)
    }

    /// Takes bytes of the current response. When it is complete: a playlist queues the parts
    /// it lists after the last one fetched (only the newest, the first time); a part's frames
    /// go to `on`. Then the next request: the oldest queued part, else the blocking reload.
    ///
    /// # Errors
    /// A status other than 200, a malformed response or part, bytes after the response.
    pub fn feed(
        &mut self,
        data: &[u8],
        path: &str,
        host: &str,
        on: &mut impl FnMut(Event),
    ) -> Result<Next, String> {
        self.response.extend_from_slice(data);
        if self.response.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
        let (head_len, body_len) = match self.framing {
            Some(framing) => framing,
            None => {
                let Some(end) = self.response.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return Ok(Next::More);
                };
                let head = std::str::from_utf8(&self.response[..end]).map_err(|e| e.to_string())?;
                let status = head.split_whitespace().nth(1).unwrap_or("");
                if status != "200" {
                    return Err(format!("status {status}"));
                }
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.trim().eq_ignore_ascii_case("content-length").then_some(value)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("no Content-Length")?;
                let framing = (end + 4, length);
                self.framing = Some(framing);
                framing
            }
        };
        match self.response.len().cmp(&(head_len + body_len)) {
            std::cmp::Ordering::Less => return Ok(Next::More),
            std::cmp::Ordering::Greater => return Err("bytes after the response".into()),
            std::cmp::Ordering::Equal => {}
        }
        let response = std::mem::take(&mut self.response);
        self.framing = None;
        let body = &response[head_len..];
        if self.awaiting_playlist {
            self.on_playlist(std::str::from_utf8(body).map_err(|e| e.to_string())?)?;
        } else {
            part_frames(body, on)?;
        }
        Ok(Next::Request(match self.queue.pop_front() {
            Some((_, _, uri)) => {
                self.awaiting_playlist = false;
                request(&uri, host)
            }
            None => self.playlist_request(path, host),
        }))
    }

    fn on_playlist(&mut self, text: &str) -> Result<(), String> {
        let mut listed = Vec::new();
        self.hint = None;
        for line in text.lines() {
            let hint = line.starts_with("#EXT-X-PRELOAD-HINT:");
            if !hint && !line.starts_with("#EXT-X-PART:") {
                continue;
            }
            let uri = line.split("URI=\"").nth(1).and_then(|r| r.split('"').next());
            let uri = uri.ok_or_else(|| format!("no URI in {line}"))?;
            let id = part_id(uri).ok_or_else(|| format!("not a part: {uri}"))?;
            if hint {
                self.hint = Some(id);
            } else {
                listed.push((id, uri));
            }
        }
        if self.hint.is_none() {
            return Err("no preload hint".into());
        }
        // The first time, the newest part only (hls.js starts near the live edge too).
        let from = match self.last {
            Some(last) => listed.iter().position(|(id, _)| *id > last).unwrap_or(listed.len()),
            None => listed.len().saturating_sub(1),
        };
        for &(id, uri) in &listed[from..] {
            self.queue.push_back((id.0, id.1, uri.to_owned()));
            self.last = Some(id);
        }
        Ok(())
    }
}

/// A GET on a kept-alive connection.
fn request(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: onair-load-hls\r\n\r\n")
        .into_bytes()
}

/// `(msn, part)` of a part's URI: `.../{msn}.{part}.m4s`, a query allowed.
fn part_id(uri: &str) -> Option<(u64, u32)> {
    let name = uri.split('?').next()?.rsplit('/').next()?;
    let mut fields = name.split('.');
    let msn = fields.next()?.parse().ok()?;
    let part = fields.next()?.parse().ok()?;
    Some((msn, part))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Calls `on` with a `Frame` for each stamped sample of a part (`moof` + `mdat`): the sample
/// sizes and data offset come from the `trun` box.
///
/// # Errors
/// A part that is not one `moof` whose samples lie in its `mdat`.
pub fn part_frames(part: &[u8], on: &mut impl FnMut(Event)) -> Result<(), String> {
    let bad = |what: &str| format!("malformed part: {what}");
    let child = |data: &[u8], kind: &[u8; 4], skip: usize| -> Option<(usize, usize)> {
        let mut at = skip;
        while at + 8 <= data.len() {
            let size = be32(data, at)? as usize;
            if size < 8 || at + size > data.len() {
                return None;
            }
            if &data[at + 4..at + 8] == kind {
                return Some((at + 8, at + size));
            }
            at += size;
        }
        None
    };
    let (moof, moof_end) = child(part, b"moof", 0).ok_or_else(|| bad("no moof"))?;
    let moof_start = moof - 8;
    let (traf, traf_end) = child(&part[..moof_end], b"traf", moof).ok_or_else(|| bad("no traf"))?;
    let (trun, _) = child(&part[..traf_end], b"trun", traf).ok_or_else(|| bad("no trun"))?;
    let flags = be32(part, trun).ok_or_else(|| bad("trun"))? & 0x00FF_FFFF;
    let count = be32(part, trun + 4).ok_or_else(|| bad("trun"))? as usize;
    let mut at = trun + 8;
    let mut data = moof_end + 8;
    if flags & 0x1 != 0 {
        data = moof_start + be32(part, at).ok_or_else(|| bad("data offset"))? as usize;
        at += 4;
    }
    if flags & 0x4 != 0 {
        at += 4;
    }
    let fields = [0x100, 0x200, 0x400, 0x800].iter().filter(|&&f| flags & f != 0).count();
    if flags & 0x200 == 0 {
        return Err(bad("no sample sizes"));
    }
    let size_field = usize::from(flags & 0x100 != 0);
    for i in 0..count.min(4096) {
        let size = be32(part, at + (i * fields + size_field) * 4).ok_or_else(|| bad("sample"))?;
        let sample = part.get(data..data + size as usize).ok_or_else(|| bad("sample past end"))?;
        if let Some((seq, sent_ns)) = read_stamp(sample) {
            on(Event::Frame { seq, sent_ns });
        }
        data += size as usize;
    }
    Ok(())
}

/// Checks of this parser against what the relay writes.
pub mod selftest {
    use super::*;
    use crate::wire::{payload, stamp};

    /// onair's own fragments, and a listener's walk through playlists and parts.
    pub fn parts_and_playlists_parse() {
        let samples: Vec<(bytes::Bytes, u32)> = (0..10u64)
            .map(|seq| {
                let mut p = payload(320);
                stamp(&mut p, seq, 1000 + seq);
                (bytes::Bytes::from(p), 960)
            })
            .collect();
        let part = onair::format::mp4::fragment(3, 9600, &samples);
        let mut seen = Vec::new();
        part_frames(&part, &mut |e| {
            if let Event::Frame { seq, sent_ns } = e {
                seen.push((seq, sent_ns));
            }
        })
        .expect("onair's fragment parses");
        assert_eq!(seen, (0..10).map(|s| (s, 1000 + s)).collect::<Vec<_>>());
        assert!(part_frames(&part[..part.len() - 1], &mut |_| {}).is_err(), "a short part");

        let playlist = |parts: &[(u64, u32)], hint: (u64, u32)| {
            let mut text = "#EXTM3U\n#EXT-X-MAP:URI=\"/hls/b/init-1.mp4\"\n".to_owned();
            for (m, p) in parts {
                text += &format!("#EXT-X-PART:DURATION=0.2,URI=\"/hls/b/{m}.{p}.m4s\"\n");
            }
            text += &format!(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/hls/b/{}.{}.m4s\"\n",
                hint.0, hint.1
            );
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len());
            format!("{head}{text}").into_bytes()
        };
        let mut conn = HlsConn::new("s1".into());
        let first = String::from_utf8_lossy(&conn.playlist_request("/b.m3u8", "h")).into_owned();
        assert!(first.starts_with("GET /b.m3u8?session=s1 HTTP/1.1\r\n"), "{first}");
        let answer = playlist(&[(4, 8), (4, 9)], (5, 0));
        let next = |conn: &mut HlsConn, bytes: &[u8]| {
            let mut frames = 0;
            // Split in two: responses arrive in pieces.
            let (a, b) = bytes.split_at(bytes.len() / 2);
            assert!(matches!(conn.feed(a, "/b.m3u8", "h", &mut |_| frames += 1), Ok(Next::More)));
            match conn.feed(b, "/b.m3u8", "h", &mut |_| frames += 1) {
                Ok(Next::Request(r)) => (String::from_utf8_lossy(&r).into_owned(), frames),
                Ok(Next::More) => panic!("incomplete"),
                Err(err) => panic!("{err}"),
            }
        };
        let (req, _) = next(&mut conn, &answer);
        assert!(req.starts_with("GET /hls/b/4.9.m4s HTTP/1.1"), "the newest part first: {req}");
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", part.len()).into_bytes();
        response.extend_from_slice(&part);
        let (req, frames) = next(&mut conn, &response);
        assert_eq!(frames, 10);
        assert!(req.starts_with("GET /b.m3u8?session=s1&_HLS_msn=5&_HLS_part=0 "), "{req}");
        let (req, _) = next(&mut conn, &playlist(&[(4, 9), (5, 0), (5, 1)], (5, 2)));
        assert!(req.starts_with("GET /hls/b/5.0.m4s "), "every part after the last: {req}");
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(conn.feed(missing, "/b.m3u8", "h", &mut |_| {}).is_err(), "a refusal ends it");
    }
}
