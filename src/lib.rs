//! onair: a live audio/video relay.
//!
//! Broadcasters push encoded frames; each stream keeps its recent past in a bounded ring; every
//! listener reads that ring at its own pace and skips forward when it falls behind, so no
//! listener ever slows the source or another listener. The modules follow a frame's path:
//!
//! ```text
//!            server (accept, limits, router)
//!               │                        │
//!  source ──► ingest ──► SourceHandle ─► relay (ring) ─► Consumer × N ─► listener ──► socket
//!   (WebSocket, Icecast     (relay::source)   (relay::stream)   (relay::consumer)  (drivers, HTTP)
//!    SOURCE/PUT; format::demux)                                          (format::mux)
//! ```
//!
//! - [`server`]: listening sockets (plain and TLS), connection limits, the router, drain.
//! - [`ingest`]: sources connect here (WebSocket, Icecast); both end in a
//!   [`relay::SourceHandle`].
//! - [`relay`]: every stream's ring, sources and listener cursors; all lag and burst policy.
//! - [`listener`]: WebSocket listeners on driver threads, HTTP listeners, the outbox.
//! - [`hls`]: HLS playlists and segments, built once per stream from its ring.
//! - [`record`]: recorded shows (a thread per recorded stream reading its ring), their list
//!   and files (listen again), retention.
//! - [`format`](mod@format): containers (Ogg, Opus, Vorbis, MP3, ICY), the demuxer and the muxer. Pure.
//! - [`icecast`]: the Icecast vocabulary and admin/status API; [`directory`]: who is connected.
//! - [`protocol`], [`websocket`], [`http`], [`time`]: the wire formats and dates. [`auth`]:
//!   every credential check.
//! - [`proxy`]: the client behind a trusted reverse proxy (`Forwarded`, `X-Forwarded-For`,
//!   `X-Real-IP`, the PROXY protocol).
//! - [`conn`]: a client connection, plain or TLS; [`deadline`]: the write deadline of every
//!   connection served on tokio. [`node`], [`config`], [`metrics`], [`error`]: shared state,
//!   settings, counters, errors.
//! - [`push`] (feature `source`): `onair push` and the auto-DJ, live capture with feature `capture`;
//!   [`inspect`]: `onair listen`.
//! - `cluster` (feature `cluster`): several nodes share their streams through NATS.
#![deny(missing_docs)]

pub mod auth;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod conn;
pub mod deadline;
pub mod directory;
pub mod error;
pub mod format;
pub mod hls;
pub mod http;
pub mod icecast;
pub mod ingest;
pub mod inspect;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod proxy;
#[cfg(feature = "source")]
pub mod push;
pub mod record;
pub mod relay;
pub mod server;
pub mod time;
pub mod websocket;

pub use config::{Config, StreamConfig};
pub use error::{Error, Result};
