//! Who is connected to this node: the sources' announcements (`Ice-*` headers), every
//! listener (for `/admin/listclients`) and each stream's listener peak.
//!
//! What Icecast reports that the ring does not know. Sessions register here and get a
//! [`Registration`] that removes their entry when dropped, so the directory never lists a
//! connection that is gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::format::Container;
use crate::http::Request;

/// Longest `Ice-*` header value kept.
const MAX_ICE_VALUE_BYTES: usize = 1024;

/// What a source announced about itself in `Ice-*` (or `icy-*`) headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceInfo {
    /// Station name.
    pub name: Option<String>,
    /// Station description.
    pub description: Option<String>,
    /// Genre.
    pub genre: Option<String>,
    /// Station web site.
    pub url: Option<String>,
    /// Whether the station may be listed in directories.
    pub public: Option<bool>,
    /// Nominal bitrate in kbit/s.
    pub bitrate: Option<u32>,
    /// `ice-audio-info`, e.g. `channels=2;samplerate=48000;bitrate=128`.
    pub audio_info: Option<String>,
}

impl IceInfo {
    /// Reads the `Ice-*` headers of a source request (`icy-*` as a fallback).
    pub fn from_request(request: &Request) -> Self {
        let get = |name: &str| {
            let value = request
                .header(&format!("ice-{name}"))
                .or_else(|| request.header(&format!("icy-{name}")))?
                .trim();
            (!value.is_empty())
                .then(|| crate::protocol::truncate(value, MAX_ICE_VALUE_BYTES).to_owned())
        };
        let audio_info = get("audio-info");
        let bitrate =
            get("bitrate").or_else(|| get("br")).and_then(|b| b.parse().ok()).or_else(|| {
                audio_info.as_deref().and_then(|info| {
                    info.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| matches!(k.trim(), "bitrate" | "ice-bitrate"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                })
            });
        Self {
            name: get("name"),
            description: get("description"),
            genre: get("genre"),
            url: get("url"),
            public: get("public")
                .or_else(|| get("pub"))
                .map(|p| p == "1" || p.eq_ignore_ascii_case("true")),
            bitrate,
            audio_info,
        }
    }
}

/// An Icecast source on air: its announcement and a way to remove it.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// `Ice-*` headers.
    pub ice: IceInfo,
    /// The container it sends.
    pub container: Container,
    /// When it connected.
    pub started: SystemTime,
    /// Its address.
    pub peer: SocketAddr,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
}

/// One connected listener, for `/admin/listclients`.
#[derive(Debug, Clone)]
pub struct Client {
    /// Stream it listens to.
    pub stream: String,
    /// Its address.
    pub peer: SocketAddr,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// When it connected.
    pub connected: Instant,
    /// `http` or `websocket`.
    pub kind: &'static str,
}

#[derive(Debug, Default)]
struct Registry {
    sources: HashMap<String, SourceInfo>,
    clients: HashMap<u64, Client>,
    peaks: HashMap<String, usize>,
}

/// Who is connected to this node, as the Icecast status and `/admin/listclients` list them.
#[derive(Debug)]
pub struct Directory {
    started: SystemTime,
    next_id: AtomicU64,
    registry: Arc<Mutex<Registry>>,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    /// Empty; the node's start time is now.
    pub fn new() -> Self {
        Self { started: SystemTime::now(), next_id: AtomicU64::new(1), registry: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // NOTE: nothing panics while holding this lock; poisoning would mean a bug.
        self.registry.lock().expect("directory lock poisoned")
    }

    /// Records an Icecast source on `stream` until the registration drops.
    pub fn add_source(&self, stream: &str, info: SourceInfo) -> Registration {
        self.lock().sources.insert(stream.to_owned(), info);
        Registration {
            registry: Arc::clone(&self.registry),
            entry: Entry::Source(stream.to_owned()),
        }
    }

    /// The Icecast source on `stream`, if one is connected.
    pub fn source(&self, stream: &str) -> Option<SourceInfo> {
        self.lock().sources.get(stream).cloned()
    }

    /// Records a listener until the registration drops, and updates the stream's peak.
    pub fn add_client(&self, client: Client, listeners_now: usize) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.lock();
        let peak = registry.peaks.entry(client.stream.clone()).or_default();
        *peak = (*peak).max(listeners_now);
        registry.clients.insert(id, client);
        drop(registry);
        Registration { registry: Arc::clone(&self.registry), entry: Entry::Client(id) }
    }

    /// The listeners of `stream`, oldest first.
    pub fn clients(&self, stream: &str) -> Vec<Client> {
        let mut clients: Vec<Client> =
            self.lock().clients.values().filter(|c| c.stream == stream).cloned().collect();
        clients.sort_by_key(|c| c.connected);
        clients
    }

    /// Most listeners seen at once on `stream` (at least `now`).
    pub fn listener_peak(&self, stream: &str, now: usize) -> usize {
        let mut registry = self.lock();
        let peak = registry.peaks.entry(stream.to_owned()).or_default();
        *peak = (*peak).max(now);
        *peak
    }

    /// When the node started.
    pub fn started(&self) -> SystemTime {
        self.started
    }
}

/// A source or listener listed in the directory; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Mutex<Registry>>,
    entry: Entry,
}

#[derive(Debug)]
enum Entry {
    Source(String),
    Client(u64),
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.registry.lock() {
            match &self.entry {
                Entry::Source(stream) => {
                    registry.sources.remove(stream);
                }
                Entry::Client(id) => {
                    registry.clients.remove(id);
                }
            }
        }
    }
}
