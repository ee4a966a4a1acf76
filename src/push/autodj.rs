//! The built-in auto-DJ: a stream's playlist played in-process straight into its ring.
//!
//! The same playout and pacing as `onair push`, attached with `SourceKind::AutoDj` instead of
//! published over a WebSocket. It plays for ever (looping); while a live source is on air it
//! keeps running, muted, so it resumes at once when the live source leaves.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Output, Paced, Playout, PlayoutConfig};
use crate::protocol::{encode_frame, FrameHeader, FLAG_HEADER, FLAG_KEYFRAME};
use crate::relay::{SourceKind, Stream};

/// Plays `playlist` (a file, a folder or an .m3u) into `stream` until `cancel`.
pub async fn run(stream: Arc<Stream>, playlist: PathBuf, cancel: CancellationToken) {
    let name = stream.config().name.clone();
    let config =
        PlayoutConfig { inputs: vec![playlist.clone()], looping: true, ..PlayoutConfig::default() };
    let playout = match Playout::spawn(config) {
        Ok(playout) => playout,
        Err(err) => {
            return error!(stream = %name, playlist = %playlist.display(), %err, "auto-DJ cannot start");
        }
    };
    let mut source = match stream.attach(SourceKind::AutoDj) {
        Ok(source) => source,
        Err(err) => return error!(stream = %name, %err, "auto-DJ cannot attach"),
    };
    let (tracks, head) = (playout.tracks(), playout.header());
    if let Err(err) = source.start(tracks) {
        return error!(stream = %name, %err, "auto-DJ cannot start the stream");
    }
    let header = FrameHeader { flags: FLAG_HEADER, track: 0, pts: 0 };
    if let Err(err) = source.frame(header, encode_frame(header, &head)) {
        return error!(stream = %name, %err, "auto-DJ header refused");
    }
    info!(stream = %name, playlist = %playlist.display(), "auto-DJ on air");
    let mut paced = Paced::new(playout, false);
    loop {
        let output = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            output = paced.next() => output,
        };
        let result = match output {
            Some(Output::Frame { pts, data }) => {
                let header = FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts };
                source.frame(header, encode_frame(header, &data)).map(|_| ())
            }
            Some(Output::Metadata(meta)) => source.metadata(meta),
            None => {
                let why = paced.source_mut().take_error();
                let why = why.map_or_else(|| "playlist ended".to_owned(), |err| err.to_string());
                return warn!(stream = %name, %why, "auto-DJ stopped");
            }
        };
        if let Err(err) = result {
            return error!(stream = %name, %err, "auto-DJ frame refused");
        }
    }
}
