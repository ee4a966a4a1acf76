//! Recording and listen-again: every show of a `record = true` stream is written to
//! `recordings_dir` as it arrives, listed at `/api/recordings/{stream}` and served with range
//! requests so players can seek.
//!
//! Each recorded stream has a thread of its own (`recorder.rs`) that reads the stream's ring
//! like a listener that is never counted (`Stream::tap`) and does all the disk I/O, so a slow
//! or failing disk never holds the ring or a tokio worker. `catalog.rs` names the files, lists
//! them and picks what retention removes; `serve.rs` answers the HTTP requests. The server
//! starts `run` per recorded stream and one `sweep` task (`server/mod.rs`).

pub mod catalog;
mod recorder;
pub mod serve;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::{Metrics, RecordingMetrics};
use crate::relay::Stream;

pub use recorder::POLL;

/// How often retention runs besides after each closed file.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// A node's recordings: where they go, how they are cut and kept, which are being written.
#[derive(Debug)]
pub struct Recordings {
    /// `recordings_dir`.
    pub dir: PathBuf,
    split: Duration,
    fsync: Duration,
    keep: Option<Duration>,
    max_bytes: Option<u64>,
    /// (stream, id) of every file being written.
    open: Mutex<HashSet<(String, String)>>,
    /// Rung when a file is closed: retention may have work.
    closed: Notify,
}

impl Recordings {
    /// The recordings of `config`; `None` when it has no `recordings_dir`.
    pub fn new(config: &Config) -> Option<Arc<Self>> {
        let dir = config.recordings_dir.clone()?;
        Some(Arc::new(Self {
            dir,
            split: config.recordings_split,
            fsync: config.recordings_fsync,
            keep: config
                .recordings_keep_days
                .map(|d| Duration::from_secs(d.saturating_mul(86_400))),
            max_bytes: config.recordings_max_bytes,
            open: Mutex::default(),
            closed: Notify::new(),
        }))
    }

    fn open_files(&self) -> MutexGuard<'_, HashSet<(String, String)>> {
        self.open.lock().expect("recordings lock poisoned")
    }

    /// The IDs of `stream`'s files being written now.
    pub fn recording_now(&self, stream: &str) -> HashSet<String> {
        self.open_files().iter().filter(|(s, _)| s == stream).map(|(_, id)| id.clone()).collect()
    }

    fn opened(&self, stream: &str, id: &str) {
        self.open_files().insert((stream.to_owned(), id.to_owned()));
    }

    fn closed(&self, stream: &str, id: &str) {
        self.open_files().remove(&(stream.to_owned(), id.to_owned()));
        self.closed.notify_one();
    }

    /// Removes what retention says must go, oldest first, and logs each. Blocking (disk I/O).
    pub fn sweep(&self, metrics: &Metrics, now: SystemTime) {
        if self.keep.is_none() && self.max_bytes.is_none() {
            return;
        }
        let streams = match std::fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                warn!(dir = %self.dir.display(), %err, "retention cannot read the recordings folder");
                return;
            }
        };
        let mut entries = Vec::new();
        for item in streams.flatten() {
            let name = item.file_name();
            let Some(stream) = name.to_str().filter(|n| crate::config::valid_stream_name(n)) else {
                continue;
            };
            match catalog::scan(&item.path(), false) {
                Ok(found) => entries.extend(found.into_iter().map(|e| (stream.to_owned(), e))),
                Err(err) => warn!(stream, %err, "retention cannot read a stream's recordings"),
            }
        }
        let open = self.open_files().clone();
        for (i, why) in catalog::expired(&entries, now, self.keep, self.max_bytes, &open) {
            let (stream, entry) = &entries[i];
            let dir = catalog::stream_dir(&self.dir, stream);
            let mut removed = true;
            let sidecars = [format!("{}.json", entry.id), format!("{}.json.tmp", entry.id)];
            for name in entry.media_name().into_iter().chain(sidecars) {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        removed = false;
                        warn!(stream, file = %name, %err, "retention cannot remove a recording");
                    }
                }
            }
            if removed {
                let bytes = entry.media_bytes + entry.sidecar_bytes;
                info!(stream, id = %entry.id, bytes, reason = why.as_str(), "recording removed");
                metrics.recording(stream).removed.inc();
            }
        }
    }
}

/// Records `stream` until `cancel`: starts its recorder thread and waits for it to finish its
/// file when cancelled.
pub async fn run(
    stream: Arc<Stream>,
    recordings: Arc<Recordings>,
    metrics: RecordingMetrics,
    cancel: CancellationToken,
) {
    let name = stream.config().name.clone();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name(format!("rec-{name}")).spawn(move || {
        recorder::run(stream, recordings, metrics, stopped);
        let _ = done.send(());
    });
    if let Err(err) = thread {
        error!(stream = %name, %err, "cannot start the recorder thread: this stream is not recorded");
        return;
    }
    tokio::select! {
        biased;
        () = cancel.cancelled() => {}
        _ = &mut finished => {
            error!(stream = %name, "the recorder thread ended by itself: this stream is no longer recorded");
            return;
        }
    }
    drop(stop);
    if finished.await.is_err() {
        error!(stream = %name, "the recorder thread failed while closing its file");
    }
}

/// Applies retention now, after every closed file and every `SWEEP_INTERVAL`, until `cancel`.
pub async fn sweep(
    recordings: Arc<Recordings>,
    node: Arc<crate::node::Node>,
    cancel: CancellationToken,
) {
    if recordings.keep.is_none() && recordings.max_bytes.is_none() {
        return;
    }
    loop {
        let (r, n) = (Arc::clone(&recordings), Arc::clone(&node));
        if tokio::task::spawn_blocking(move || r.sweep(&n.metrics, SystemTime::now()))
            .await
            .is_err()
        {
            error!("retention failed");
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = recordings.closed.notified() => {}
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}
