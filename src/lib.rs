//! onair: a live audio/video relay.
//!
//! Broadcasters push encoded frames; each stream keeps its recent past in a bounded ring; every
//! listener reads that ring at its own pace and skips forward when it falls behind, so no
//! listener ever slows the source or another listener.
//!
//! ```text
//!  source ──WebSocket──► ingest ──► SourceHandle ──► Stream ring ──► Consumer × N ──► listener ──► socket
//!                        (protocol)  (relay::stream: burst, lag, fallback)        (websocket: framed once)
//! ```
//!
//! - [`protocol`]: the wire format (frame header, JSON messages, close codes).
//! - [`server`]: accept loop, routing, handshakes, refusals, graceful drain.
//! - [`ingest`]: one task per source. [`listener`]: WebSocket listeners, served by a few
//!   driver threads (one epoll loop per core, thousands of listeners each, no task per listener).
//! - [`relay`]: the streams and their rings; all lag and burst policy.
//! - [`icecast`] / [`format`](mod@format): Icecast sources and HTTP listeners (Ogg, MP3, ICY), the
//!   admin/status API; containers parsed on ingest and written per listener.
//! - [`http`], [`metrics`], [`config`], [`websocket`]: the edges.
#![deny(missing_docs)]

pub mod access;
pub mod config;
pub mod echo;
pub mod error;
pub mod format;
pub mod http;
pub mod icecast;
pub mod ingest;
pub mod inspect;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod relay;
pub mod server;
#[cfg(feature = "source")]
pub mod source;
pub mod tls;
pub mod websocket;

pub use config::{Config, StreamConfig};
pub use error::{Error, Result};
