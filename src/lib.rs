//! onair: a live audio/video relay.
#![deny(missing_docs)]

pub mod protocol;
#[cfg(feature = "source")]
pub mod source;
