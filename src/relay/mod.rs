//! The streams registry: every configured stream by name.
//!
//! Built once from the config at startup and shared (read-only) by every connection; each
//! `Stream` holds its own ring and lock, so streams never contend with each other.

pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::StreamConfig;
use crate::metrics::Metrics;

pub use stream::{
    AttachError, Consumer, Fill, SourceError, SourceHandle, SourceKind, Stream, StreamFull,
    StreamInfo,
};

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
