//! Who is connected to this node: the sources' announcements (`Ice-*` headers), every
//! listener (for `/admin/listclients`) and each stream's listener peak.
//!
//! What Icecast reports that the ring does not know. Sessions register here and get a
//! [`Registration`] that removes their entry when dropped, so the directory never lists a
//! connection that is gone.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

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

/// A listener as the directory keeps it: 64 bytes, with the stream's name and the user agent
/// shared with every other listener that has the same (a directory of 10 000 listeners is
/// about 0.6 MiB, not the 1.2 MiB plus two strings each of a map of `Client`s).
#[derive(Debug)]
struct Listed {
    stream: Arc<str>,
    agent: Option<Arc<str>>,
    /// Milliseconds from `Registry::base` to its connection.
    since_ms: u64,
    ip: IpAddr,
    port: u16,
    /// Index in `Registry::kinds`.
    kind: u8,
}

#[derive(Debug)]
struct Registry {
    sources: HashMap<String, SourceInfo>,
    /// Listeners by slot; a `Registration` owns its slot until it drops.
    clients: Vec<Option<Listed>>,
    free: Vec<u32>,
    /// Stream names and user agents, each kept once; an agent goes with its last listener.
    names: HashSet<Arc<str>>,
    agents: HashSet<Arc<str>>,
    kinds: Vec<&'static str>,
    base: Instant,
    peaks: HashMap<String, usize>,
}

impl Registry {
    fn new() -> Self {
        Self {
            sources: HashMap::new(),
            clients: Vec::new(),
            free: Vec::new(),
            names: HashSet::new(),
            agents: HashSet::new(),
            kinds: Vec::new(),
            base: Instant::now(),
            peaks: HashMap::new(),
        }
    }

    /// The shared copy of `text` in `set`, made on first use.
    fn intern(set: &mut HashSet<Arc<str>>, text: &str) -> Arc<str> {
        if let Some(shared) = set.get(text) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(text);
        set.insert(Arc::clone(&shared));
        shared
    }

    fn insert(&mut self, client: &Client) -> u32 {
        let kind = match self.kinds.iter().position(|k| *k == client.kind) {
            Some(at) => at,
            None => {
                self.kinds.push(client.kind);
                self.kinds.len() - 1
            }
        };
        let listed = Listed {
            stream: Self::intern(&mut self.names, &client.stream),
            agent: client.user_agent.as_deref().map(|agent| Self::intern(&mut self.agents, agent)),
            since_ms: u64::try_from(
                client.connected.saturating_duration_since(self.base).as_millis(),
            )
            .unwrap_or(u64::MAX),
            ip: client.peer.ip(),
            port: client.peer.port(),
            kind: u8::try_from(kind).unwrap_or(u8::MAX),
        };
        match self.free.pop() {
            Some(slot) => {
                self.clients[slot as usize] = Some(listed);
                slot
            }
            None => {
                self.clients.push(Some(listed));
                // Slots are bounded by the connection limit, far below u32::MAX.
                u32::try_from(self.clients.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    fn remove(&mut self, slot: u32) {
        let Some(listed) = self.clients.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        // Held by the set and by this listener only: it was the last with this agent.
        if let Some(agent) = listed.agent.filter(|agent| Arc::strong_count(agent) == 2) {
            self.agents.remove(&agent);
        }
    }

    fn client(&self, listed: &Listed) -> Client {
        Client {
            stream: listed.stream.to_string(),
            peer: SocketAddr::new(listed.ip, listed.port),
            user_agent: listed.agent.as_deref().map(str::to_owned),
            connected: self.base + Duration::from_millis(listed.since_ms),
            kind: self.kinds.get(usize::from(listed.kind)).copied().unwrap_or("unknown"),
        }
    }
}

/// Who is connected to this node, as the Icecast status and `/admin/listclients` list them.
#[derive(Debug)]
pub struct Directory {
    started: SystemTime,
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
        Self { started: SystemTime::now(), registry: Arc::new(Mutex::new(Registry::new())) }
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
        let mut registry = self.lock();
        match registry.peaks.get_mut(client.stream.as_str()) {
            Some(peak) => *peak = (*peak).max(listeners_now),
            None => {
                registry.peaks.insert(client.stream.clone(), listeners_now);
            }
        }
        let slot = registry.insert(&client);
        drop(registry);
        Registration { registry: Arc::clone(&self.registry), entry: Entry::Client(slot) }
    }

    /// The listeners of `stream`, oldest first.
    pub fn clients(&self, stream: &str) -> Vec<Client> {
        let registry = self.lock();
        let mut clients: Vec<Client> = registry
            .clients
            .iter()
            .flatten()
            .filter(|listed| &*listed.stream == stream)
            .map(|listed| registry.client(listed))
            .collect();
        drop(registry);
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
    Client(u32),
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.registry.lock() {
            match &self.entry {
                Entry::Source(stream) => {
                    registry.sources.remove(stream);
                }
                Entry::Client(slot) => registry.remove(*slot),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(stream: &str, port: u16, agent: Option<&str>, kind: &'static str) -> Client {
        Client {
            stream: stream.to_owned(),
            peer: SocketAddr::from(([192, 0, 2, 1], port)),
            user_agent: agent.map(str::to_owned),
            connected: Instant::now(),
            kind,
        }
    }

    #[test]
    fn listeners_are_listed_per_stream_until_their_registration_drops() {
        let directory = Directory::new();
        let a = directory.add_client(client("radio", 1, Some("VLC/3.0"), "http"), 1);
        let b = directory.add_client(client("radio", 2, Some("VLC/3.0"), "websocket"), 2);
        let c = directory.add_client(client("jazz", 3, None, "http"), 1);
        let radio = directory.clients("radio");
        assert_eq!(radio.iter().map(|c| c.peer.port()).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(radio[1].kind, "websocket");
        assert_eq!(radio[0].user_agent.as_deref(), Some("VLC/3.0"));
        assert_eq!(directory.clients("jazz")[0].user_agent, None);
        assert_eq!(directory.listener_peak("radio", 0), 2);

        drop(a);
        assert_eq!(directory.clients("radio").len(), 1);
        assert_eq!(directory.lock().agents.len(), 1, "b still shares the agent");
        drop(b);
        assert!(directory.clients("radio").is_empty());
        assert!(directory.lock().agents.is_empty(), "an agent goes with its last listener");

        // Slots are used again: the table does not grow with every connection.
        let d = directory.add_client(client("radio", 4, Some("mpv"), "http"), 1);
        let e = directory.add_client(client("radio", 5, Some("mpv"), "http"), 2);
        assert_eq!(directory.lock().clients.len(), 3);
        drop((c, d, e));
        assert!(directory.lock().clients.iter().all(Option::is_none));
    }

    #[test]
    fn a_listener_entry_stays_small() {
        assert!(std::mem::size_of::<Option<Listed>>() <= 64);
    }
}
