//! What is on disk: recording IDs and file names, the JSON sidecar beside each file, the
//! listing of a stream's recordings, and which ones retention removes.
//!
//! A recording is `{recordings_dir}/{stream}/{id}.ogg` (or `.mp3`) and `{id}.json`. The relay
//! makes every ID itself from the file's start time (`20260301T180000Z`, then `-2`, `-3` when
//! two start in the same second) and accepts no other shape in a URL, so an ID can never name
//! a path outside the stream's folder. Listing and retention only look at such names.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Most recordings one listing returns (the newest).
pub const MAX_LISTED: usize = 1_000;
/// Highest `-N` suffix tried for recordings that start in the same second.
pub const MAX_SUFFIX: u32 = 999;

/// The media file extensions the recorder writes.
pub const EXTENSIONS: [&str; 2] = ["ogg", "mp3"];

/// `20260301T180000Z` for `time`, with `-n` after it when `n > 1`.
pub fn make_id(time: SystemTime, n: u32) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let base = format!("{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60);
    if n > 1 {
        format!("{base}-{n}")
    } else {
        base
    }
}

/// Whether `id` has exactly the shape `make_id` writes.
pub fn valid_id(id: &str) -> bool {
    id_time(id).is_some()
}

/// The start time an ID was made from; `None` when `id` is not one.
pub fn id_time(id: &str) -> Option<SystemTime> {
    let b = id.as_bytes();
    let (stamp, suffix) = (b.get(..16)?, b.get(16..)?);
    let digits = |r: std::ops::Range<usize>| {
        stamp[r]
            .iter()
            .try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
    };
    if stamp[8] != b'T' || stamp[15] != b'Z' {
        return None;
    }
    let valid_suffix = match suffix {
        [] => true,
        [b'-', rest @ ..] => {
            (1..=3).contains(&rest.len())
                && rest[0] != b'0'
                && rest.iter().all(u8::is_ascii_digit)
                && rest != b"1"
        }
        _ => false,
    };
    let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, mi, s) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !valid_suffix
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    // A day that does not exist (31 February) comes back as another date.
    (make_id(time, 1).as_bytes() == stamp).then_some(time)
}

/// Howard Hinnant's days-from-civil (the inverse of `time`'s days-to-civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A title change during a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Title {
    /// Seconds into the file.
    pub offset_s: f64,
    /// When it was heard live (RFC 3339).
    pub at: String,
    /// `Artist - Title`, as listeners saw it.
    pub title: String,
}

/// The JSON beside each recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The recording's ID (the file's name without extension).
    pub id: String,
    /// The stream it was recorded from.
    pub stream: String,
    /// `live` or `autodj`.
    pub source: String,
    /// `ogg` or `mp3`: the file's extension.
    pub container: String,
    /// `opus`, `vorbis` or `mp3`.
    pub codec: String,
    /// When its first frame was written (RFC 3339).
    pub started: String,
    /// When it was closed (RFC 3339); `null` while it is written, or after a crash.
    pub ended: Option<String>,
    /// Media seconds written so far (from the container's sample counts).
    pub duration_s: f64,
    /// The ID of the show's first file (a long show is split into several).
    pub show: String,
    /// 1 for the show's first file, 2 for the next and so on.
    pub part: u32,
    /// Now playing at the start and every change after it.
    pub titles: Vec<Title>,
    /// Media frames missing from the file (the recorder fell behind or the disk failed).
    pub frames_lost: u64,
}

/// Where a recording stands, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being written now.
    Recording,
    /// Closed normally.
    Complete,
    /// Never closed (the relay stopped abruptly): playable up to its last flush.
    Interrupted,
}

/// One recording found on disk.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its ID.
    pub id: String,
    /// Its media file's extension (`ogg`, `mp3`); `None` when only the sidecar is left.
    pub ext: Option<&'static str>,
    /// Bytes of the media file.
    pub media_bytes: u64,
    /// Bytes of the sidecar.
    pub sidecar_bytes: u64,
    /// Start time, from the ID.
    pub started: SystemTime,
    /// The sidecar, when it exists and parses.
    pub sidecar: Option<Sidecar>,
}

impl Entry {
    /// Its media file's name.
    pub fn media_name(&self) -> Option<String> {
        self.ext.map(|ext| format!("{}.{ext}", self.id))
    }

    /// Where it stands, given the IDs being recorded now.
    pub fn state(&self, open: &HashSet<String>) -> State {
        match &self.sidecar {
            _ if open.contains(&self.id) => State::Recording,
            Some(sidecar) if sidecar.ended.is_some() => State::Complete,
            _ => State::Interrupted,
        }
    }
}

/// The folder of a stream's recordings.
pub fn stream_dir(root: &Path, stream: &str) -> PathBuf {
    root.join(stream)
}

/// Splits `{id}.{ext}` into a valid ID and one of our extensions (`json` included).
pub fn parse_name(name: &str) -> Option<(&str, &'static str)> {
    let (id, ext) = name.rsplit_once('.')?;
    let ext = EXTENSIONS.into_iter().chain(["json"]).find(|e| *e == ext)?;
    valid_id(id).then_some((id, ext))
}

/// The recordings of one stream folder, newest first; `read_sidecars` parses the JSON
/// (listing) or not (retention needs only names and sizes). A missing folder has none.
///
/// # Errors
/// When the folder exists but cannot be read.
pub fn scan(dir: &Path, read_sidecars: bool) -> std::io::Result<Vec<Entry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found: HashMap<String, Entry> = HashMap::new();
    for item in read {
        let item = item?;
        let name = item.file_name();
        let Some((id, ext)) = name.to_str().and_then(parse_name) else { continue };
        let Some(started) = id_time(id) else { continue };
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let entry = found.entry(id.to_owned()).or_insert_with(|| Entry {
            id: id.to_owned(),
            ext: None,
            media_bytes: 0,
            sidecar_bytes: 0,
            started,
            sidecar: None,
        });
        if ext == "json" {
            entry.sidecar_bytes = meta.len();
            if read_sidecars {
                entry.sidecar = std::fs::read(item.path())
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            }
        } else {
            entry.ext = Some(ext);
            entry.media_bytes = meta.len();
        }
    }
    let mut entries: Vec<Entry> = found.into_values().collect();
    entries
        .sort_by(|a, b| b.started.cmp(&a.started).then_with(|| suffix(&b.id).cmp(&suffix(&a.id))));
    Ok(entries)
}

/// The `-N` of an ID (1 without one), to order recordings that started in the same second.
fn suffix(id: &str) -> u32 {
    id.get(17..).and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// Writes `sidecar` next to its recording, atomically (a temporary file renamed over it), so a
/// crash leaves the old or the new one, never half of one.
///
/// # Errors
/// Disk errors.
pub fn write_sidecar(dir: &Path, sidecar: &Sidecar) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(sidecar).map_err(std::io::Error::other)?;
    let path = dir.join(format!("{}.json", sidecar.id));
    let tmp = dir.join(format!("{}.json.tmp", sidecar.id));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&json)?;
    drop(file);
    std::fs::rename(&tmp, &path)
}

/// Why retention removes a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// It started more than `recordings_keep_days` ago.
    TooOld,
    /// All recordings together take more than `recordings_max_bytes`.
    OverBudget,
}

impl Expiry {
    /// For the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::TooOld => "older than recordings_keep_days",
            Expiry::OverBudget => "over recordings_max_bytes",
        }
    }
}

/// Which of `entries` (every stream's, as (stream, entry)) retention removes, oldest first:
/// those older than `keep`, then the oldest until the rest fit in `max_bytes`. Recordings
/// being written (`open`: (stream, id)) are never removed, but count toward the budget.
pub fn expired(
    entries: &[(String, Entry)],
    now: SystemTime,
    keep: Option<Duration>,
    max_bytes: Option<u64>,
    open: &HashSet<(String, String)>,
) -> Vec<(usize, Expiry)> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].1.started, suffix(&entries[i].1.id)));
    let size = |e: &Entry| e.media_bytes + e.sidecar_bytes;
    let mut total: u64 = entries.iter().map(|(_, e)| size(e)).sum();
    let mut out = Vec::new();
    for i in order {
        let (stream, entry) = &entries[i];
        if open.contains(&(stream.clone(), entry.id.clone())) {
            continue;
        }
        let old =
            keep.is_some_and(|keep| now.duration_since(entry.started).is_ok_and(|age| age > keep));
        let over = max_bytes.is_some_and(|max| total > max);
        let why = match (old, over) {
            (true, _) => Expiry::TooOld,
            (false, true) => Expiry::OverBudget,
            (false, false) => continue,
        };
        total -= size(entry);
        out.push((i, why));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_nothing_else_is_one() {
        let t = UNIX_EPOCH + Duration::from_secs(1_709_632_800); // 2024-03-05 10:00:00 UTC
        assert_eq!(make_id(t, 1), "20240305T100000Z");
        assert_eq!(make_id(t, 12), "20240305T100000Z-12");
        assert_eq!(id_time("20240305T100000Z"), Some(t));
        assert_eq!(id_time("20240305T100000Z-12"), Some(t));
        assert_eq!(id_time(&make_id(UNIX_EPOCH, 1)), Some(UNIX_EPOCH));
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399); // 2000-02-29 23:59:59
        assert_eq!(id_time(&make_id(leap, 1)), Some(leap));
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            "20240305T100000",
            "20240305T100000Z-",
            "20240305T100000Z-0",
            "20240305T100000Z-1",
            "20240305T100000Z-01",
            "20240305T100000Z-1000",
            "20240305T100000Z/..",
            "20240231T100000Z",
            "20241305T100000Z",
            "20240305T240000Z",
            "20240305t100000Z",
            "2024030５T100000Z",
            "20240305T100000Z.ogg",
            "+2024305T100000Z",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        assert_eq!(parse_name("20240305T100000Z-2.ogg"), Some(("20240305T100000Z-2", "ogg")));
        assert_eq!(parse_name("20240305T100000Z.json"), Some(("20240305T100000Z", "json")));
        assert_eq!(parse_name("20240305T100000Z.json.tmp"), None);
        assert_eq!(parse_name("20240305T100000Z.wav"), None);
    }

    fn entry(stream: &str, id: &str, bytes: u64) -> (String, Entry) {
        let entry = Entry {
            id: id.to_owned(),
            ext: Some("ogg"),
            media_bytes: bytes,
            sidecar_bytes: 0,
            started: id_time(id).unwrap(),
            sidecar: None,
        };
        (stream.to_owned(), entry)
    }

    #[test]
    fn retention_removes_the_oldest_first_but_never_an_open_file() {
        let now = id_time("20240310T000000Z").unwrap();
        let entries = vec![
            entry("a", "20240309T000000Z", 100),
            entry("b", "20240301T000000Z", 100),
            entry("a", "20240305T000000Z", 100),
            entry("a", "20240305T000000Z-2", 100),
            entry("b", "20240309T120000Z", 100),
        ];
        let none = HashSet::new();
        let day = Duration::from_secs(86_400);
        let ids = |out: Vec<(usize, Expiry)>| {
            out.into_iter().map(|(i, why)| (entries[i].1.id.clone(), why)).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(expired(&entries, now, Some(day * 7), None, &none)),
            [("20240301T000000Z".to_owned(), Expiry::TooOld)]
        );
        assert_eq!(
            ids(expired(&entries, now, Some(day * 7), Some(250), &none)),
            [
                ("20240301T000000Z".to_owned(), Expiry::TooOld),
                ("20240305T000000Z".to_owned(), Expiry::OverBudget),
                ("20240305T000000Z-2".to_owned(), Expiry::OverBudget),
            ]
        );
        assert!(expired(&entries, now, None, None, &none).is_empty());
        let open = HashSet::from([("b".to_owned(), "20240301T000000Z".to_owned())]);
        assert_eq!(
            ids(expired(&entries, now, None, Some(300), &open)),
            [
                ("20240305T000000Z".to_owned(), Expiry::OverBudget),
                ("20240305T000000Z-2".to_owned(), Expiry::OverBudget),
            ],
            "the open file counts but stays"
        );
    }

    #[test]
    fn a_folder_lists_newest_first_with_sidecars_and_ignores_strangers() {
        let dir = std::env::temp_dir().join(format!("onair-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "20240305T100000Z.ogg",
            "20240305T100000Z-2.ogg",
            "20240306T100000Z.mp3",
            "notes.txt",
            "20240307T100000Z.json.tmp",
        ] {
            std::fs::write(dir.join(name), b"12345").unwrap();
        }
        std::fs::create_dir_all(dir.join("20240308T100000Z.ogg")).unwrap();
        let sidecar = Sidecar {
            id: "20240306T100000Z".into(),
            stream: "radio".into(),
            source: "live".into(),
            container: "mp3".into(),
            codec: "mp3".into(),
            started: "2024-03-06T10:00:00.000Z".into(),
            ended: None,
            duration_s: 1.5,
            show: "20240306T100000Z".into(),
            part: 1,
            titles: vec![],
            frames_lost: 0,
        };
        write_sidecar(&dir, &sidecar).unwrap();
        let entries = scan(&dir, true).unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["20240306T100000Z", "20240305T100000Z-2", "20240305T100000Z"]);
        assert_eq!(entries[0].sidecar.as_ref(), Some(&sidecar));
        assert_eq!((entries[0].ext, entries[0].media_bytes), (Some("mp3"), 5));
        assert_eq!(entries[0].state(&HashSet::new()), State::Interrupted);
        assert_eq!(entries[1].media_name().as_deref(), Some("20240305T100000Z-2.ogg"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(scan(&dir, true).unwrap().is_empty(), "a missing folder has none");
    }
}
