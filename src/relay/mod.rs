//! The relay core: every stream's ring, its sources and its listeners' cursors. No transport.
//!
//! ```text
//!  SourceHandle ──push──► Stream (ring + what is on air) ──fill──► Consumer × N
//!   (source.rs)            (stream.rs, ring.rs)                      (consumer.rs)
//! ```
//!
//! `Streams` is built once from the config and shared read-only; each `Stream` holds its own
//! lock, so streams never contend. Listener drivers register as [`Watcher`]s to be woken when
//! a stream's head moves; tasks wait on `Consumer::changed`. A cluster node feeds relayed
//! frames through a `SourceKind::Remote` handle, reads what its own sources play through a
//! [`Tap`], and refuses a second live source cluster-wide through a [`Gate`].

mod consumer;
mod ring;
mod source;
mod stats;
mod stream;
mod tap;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::StreamConfig;
use crate::metrics::Metrics;

pub use consumer::{Consumer, Fill, StreamFull, MAX_FILL_ENTRIES, SERVER_NAME};
pub use ring::{Event, Frame, Item};
pub use source::{AttachError, Gate, KickReason, SourceError, SourceHandle, SourceKind};
pub use stats::StreamInfo;
pub use stream::{Stream, Watcher, METADATA_INTERVAL};
pub use tap::{Tap, Tapped};

/// All streams of a relay, by name.
#[derive(Debug, Default)]
pub struct Streams {
    by_name: HashMap<String, Arc<Stream>>,
    order: Vec<Arc<Stream>>,
}

impl Streams {
    /// One stream per config entry, with its metrics registered.
    pub fn new(configs: &[StreamConfig], metrics: &Metrics) -> Self {
        let mut streams = Self::default();
        for config in configs {
            let stream = Stream::new(config.clone(), metrics.stream(&config.name));
            streams.by_name.insert(config.name.clone(), Arc::clone(&stream));
            streams.order.push(stream);
        }
        streams
    }

    /// The stream of this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Stream>> {
        self.by_name.get(name)
    }

    /// Every stream, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Stream>> {
        self.order.iter()
    }
}
