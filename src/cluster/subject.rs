//! The subject layout: where each kind of cluster message goes. Pure.
//!
//! ```text
//! {prefix}.s.{stream}.{node}.f    a frame: the source's message, byte for byte
//! {prefix}.s.{stream}.{node}.p    a part of a frame larger than the server's max_payload
//! {prefix}.s.{stream}.{node}.c    control (JSON): session, metadata, end
//! {prefix}.n.{node}.stats         a node's listener counts (JSON)
//! {prefix}.n.{node}.admin         an admin command for the node a stream's source is on (JSON)
//! KV bucket {prefix}_leases       keys {stream}.live and {stream}.autodj, value: the node
//! ```
//!
//! Stream and node names are single subject tokens (the config allows only letters, digits,
//! `-` and `_`). No subject carries a key or a secret.

/// What a stream message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole frame.
    Frame,
    /// A part of a frame too large for one NATS message.
    Part,
    /// A control message.
    Control,
}

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Kind::Frame => "f",
            Kind::Part => "p",
            Kind::Control => "c",
        }
    }
}

/// A subject onair reads, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A stream's frame, part or control message from a node.
    Stream {
        /// Stream name.
        stream: &'a str,
        /// Publishing node.
        node: &'a str,
        /// What it carries.
        kind: Kind,
    },
    /// A node's listener counts.
    Stats {
        /// Publishing node.
        node: &'a str,
    },
}

/// Which lease of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The one live source of a stream.
    Live,
    /// The one auto-DJ of a stream.
    AutoDj,
}

/// The subjects of one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The layout under `prefix` (validated by the config: tokens joined by `.`).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// Where `node` publishes `kind` messages of `stream`.
    pub fn stream(&self, stream: &str, node: &str, kind: Kind) -> String {
        format!("{}.s.{stream}.{node}.{}", self.prefix, kind.token())
    }

    /// Every stream message of every node (one subscription keeps each node's order).
    pub fn all_streams(&self) -> String {
        format!("{}.s.>", self.prefix)
    }

    /// Where `node` publishes its listener counts.
    pub fn stats(&self, node: &str) -> String {
        format!("{}.n.{node}.stats", self.prefix)
    }

    /// Where admin commands for `node` go.
    pub fn admin(&self, node: &str) -> String {
        format!("{}.n.{node}.admin", self.prefix)
    }

    /// Every node's listener counts.
    pub fn all_stats(&self) -> String {
        format!("{}.n.*.stats", self.prefix)
    }

    /// The JetStream KV bucket holding the leases.
    pub fn bucket(&self) -> String {
        format!("{}_leases", self.prefix.replace('.', "_"))
    }

    /// The key of a stream's lease.
    pub fn lease_key(stream: &str, lease: Lease) -> String {
        match lease {
            Lease::Live => format!("{stream}.live"),
            Lease::AutoDj => format!("{stream}.autodj"),
        }
    }

    /// Takes a subject apart; `None` for anything onair does not publish.
    pub fn parse<'a>(&self, subject: &'a str) -> Option<Parsed<'a>> {
        let rest = subject.strip_prefix(self.prefix.as_str())?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        let parsed = match (tokens.next()?, tokens.next()?, tokens.next()?) {
            ("s", stream, node) => {
                let kind = match tokens.next()? {
                    "f" => Kind::Frame,
                    "p" => Kind::Part,
                    "c" => Kind::Control,
                    _ => return None,
                };
                Parsed::Stream { stream, node, kind }
            }
            ("n", node, "stats") => Parsed::Stats { node },
            _ => return None,
        };
        let valid = |t: &str| crate::config::valid_stream_name(t);
        let names_valid = match parsed {
            Parsed::Stream { stream, node, .. } => valid(stream) && valid(node),
            Parsed::Stats { node } => valid(node),
        };
        (tokens.next().is_none() && names_valid).then_some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_nothing_else_parses() {
        let subjects = Subjects::new("radio.eu");
        let frame = subjects.stream("jazz", "edge-1", Kind::Frame);
        assert_eq!(frame, "radio.eu.s.jazz.edge-1.f");
        assert_eq!(
            subjects.parse(&frame),
            Some(Parsed::Stream { stream: "jazz", node: "edge-1", kind: Kind::Frame })
        );
        let control = subjects.stream("jazz", "edge-1", Kind::Control);
        assert!(matches!(
            subjects.parse(&control),
            Some(Parsed::Stream { kind: Kind::Control, .. })
        ));
        let part = subjects.stream("jazz", "edge-1", Kind::Part);
        assert!(matches!(subjects.parse(&part), Some(Parsed::Stream { kind: Kind::Part, .. })));
        assert_eq!(subjects.parse(&subjects.stats("b")), Some(Parsed::Stats { node: "b" }));
        for bad in [
            "radio.eu.s.jazz.edge-1",
            "radio.eu.s.jazz.edge-1.f.extra",
            "radio.eu.s.jazz.edge-1.x",
            "radio.eu.n.b.other",
            "radio.s.jazz.a.f",
            "radio.euro.s.jazz.a.f",
            "radio.eu.s..a.f",
            "radio.eu.s.j*z.a.f",
            "",
        ] {
            assert_eq!(subjects.parse(bad), None, "{bad}");
        }
        assert_eq!(subjects.all_streams(), "radio.eu.s.>");
        assert_eq!(subjects.all_stats(), "radio.eu.n.*.stats");
        assert_eq!(subjects.bucket(), "radio_eu_leases");
        assert_eq!(Subjects::lease_key("jazz", Lease::AutoDj), "jazz.autodj");
    }
}
