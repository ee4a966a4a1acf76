//! TLS records for listeners on the driver threads.
//!
//! rustls does the handshake (on tokio, with the request head); then the session's traffic
//! keys are taken out of it (`dangerous_extract_secrets`, the hand-over kernel TLS uses) and
//! the driver seals and opens the records itself with ring's AEADs. A listener then keeps its
//! two keys, IVs and sequence numbers (about 1 KiB) instead of a whole rustls session (7.4
//! KiB, most of it a 4 KiB read buffer rustls never gives back). TLS 1.3 and 1.2 with
//! AES-GCM or ChaCha20-Poly1305, the suites of the relay's provider.

use bytes::{Buf, Bytes, BytesMut};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use tokio_rustls::rustls::{self, ConnectionTrafficSecrets, ProtocolVersion, ServerConnection};

/// Largest plaintext in one record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 16_384;
/// Largest record on the wire: the plaintext, TLS 1.3's content type byte, padding we never
/// add, the tag; RFC 8446 allows 256 bytes of expansion.
const MAX_RECORD: usize = 5 + MAX_PLAINTEXT + 256;
const HEADER: usize = 5;
const TAG: usize = 16;
/// TLS 1.2 AES-GCM records carry 8 bytes of explicit nonce.
const EXPLICIT_NONCE: usize = 8;

/// Record content types.
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// Why a TLS listener's bytes cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The session cannot be handed over (a suite or version we do not seal ourselves).
    #[error("the TLS session cannot be handed to a driver: {0}")]
    Handover(&'static str),
    /// A record that does not parse, authenticate or fit.
    #[error("bad TLS record: {0}")]
    BadRecord(&'static str),
    /// A post-handshake message (a key update) that would need the traffic secret.
    #[error("the peer renegotiated keys")]
    KeyUpdate,
    /// A fatal alert from the peer.
    #[error("the peer sent a TLS alert")]
    Alert,
}

/// One direction's key, IV and sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
    /// TLS 1.2 AES-GCM: the nonce is 4 bytes of IV and 8 explicit bytes in the record.
    explicit: bool,
}

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets, tls12: bool) -> Result<Self, TlsError> {
        let (algorithm, key, iv, explicit) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, tls12),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, tls12),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv, false)
            }
            _ => return Err(TlsError::Handover("an AEAD the driver does not know")),
        };
        let key = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| TlsError::Handover("a key of the wrong length"))?;
        let iv: [u8; NONCE_LEN] =
            iv.as_ref().try_into().map_err(|_| TlsError::Handover("an IV of the wrong length"))?;
        Ok(Self { key: LessSafeKey::new(key), iv, seq, explicit })
    }

    /// The nonce of the next record, and its explicit part for TLS 1.2 AES-GCM.
    fn nonce(&self) -> (Nonce, [u8; EXPLICIT_NONCE]) {
        let seq = self.seq.to_be_bytes();
        let mut nonce = self.iv;
        if self.explicit {
            nonce[4..].copy_from_slice(&seq);
        } else {
            for (n, s) in nonce[4..].iter_mut().zip(seq) {
                *n ^= s;
            }
        }
        (Nonce::assume_unique_for_key(nonce), seq)
    }
}

/// A TLS listener's record layer.
pub struct Records {
    tls13: bool,
    tx: Direction,
    rx: Direction,
    /// Bytes of a record not received whole yet; `None` most of the time.
    partial: Option<BytesMut>,
    /// Sealed records the socket has not taken yet, and how much of them it has.
    pending: Option<(Bytes, usize)>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("tls13", &self.tls13).finish_non_exhaustive()
    }
}

/// What the peer's records held.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data, appended to the output.
    Data,
    /// The peer closed (`close_notify`).
    Closed,
}

impl Records {
    /// Takes the keys out of a finished session. Every record it had to send must have been
    /// written (flush it first).
    ///
    /// # Errors
    /// `Handover` when the session is in a state or suite the driver cannot carry on.
    pub fn take(session: ServerConnection) -> Result<Self, TlsError> {
        let tls13 = match session.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => true,
            Some(ProtocolVersion::TLSv1_2) => false,
            _ => return Err(TlsError::Handover("not TLS 1.2 or 1.3")),
        };
        let secrets = session.dangerous_extract_secrets().map_err(|_| {
            TlsError::Handover(
                "the session keeps its secrets (handshake not done, or records not sent)",
            )
        })?;
        Ok(Self {
            tls13,
            tx: Direction::new(secrets.tx.0, secrets.tx.1, !tls13)?,
            rx: Direction::new(secrets.rx.0, secrets.rx.1, !tls13)?,
            partial: None,
            pending: None,
        })
    }

    /// Sealed bytes the socket has not taken yet (it was full).
    pub fn pending(&self) -> Option<&[u8]> {
        self.pending.as_ref().map(|(bytes, at)| &bytes[*at..])
    }

    /// The socket took `n` more of the pending bytes.
    pub fn advance(&mut self, n: usize) {
        if let Some((bytes, at)) = &mut self.pending {
            *at += n;
            if *at >= bytes.len() {
                self.pending = None;
            }
        }
    }

    /// Keeps sealed bytes the socket did not take, to be written first next time.
    pub fn keep(&mut self, unsent: &[u8]) {
        debug_assert!(self.pending.is_none());
        if !unsent.is_empty() {
            self.pending = Some((Bytes::copy_from_slice(unsent), 0));
        }
    }

    /// Appends one application data record to `wire`, its plaintext written by `fill`
    /// (which must append at most `MAX_PLAINTEXT` bytes), and returns what `fill` returned.
    /// Nothing is appended when `fill` fails or appends nothing.
    pub fn seal_data<T, E>(
        &mut self,
        wire: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.seal(APPLICATION_DATA, wire, fill)
    }

    /// Appends a `close_notify` alert to `wire`.
    pub fn seal_close(&mut self, wire: &mut Vec<u8>) {
        let sealed: Result<(), ()> = self.seal(ALERT, wire, |buf| {
            buf.extend_from_slice(&[1, 0]);
            Ok(())
        });
        debug_assert!(sealed.is_ok());
    }

    fn seal<T, E>(
        &mut self,
        content: u8,
        wire: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
    ) -> Result<T, E> {
        let start = wire.len();
        let explicit = if self.tx.explicit { EXPLICIT_NONCE } else { 0 };
        // The header's length is written once the plaintext is known.
        let outer = if self.tls13 { APPLICATION_DATA } else { content };
        wire.extend_from_slice(&[outer, 3, 3, 0, 0]);
        let (nonce, seq) = self.tx.nonce();
        if explicit > 0 {
            wire.extend_from_slice(&seq);
        }
        let body = wire.len();
        let filled = fill(wire);
        let plaintext = wire.len() - body;
        if filled.is_err() || plaintext == 0 {
            wire.truncate(start);
            return filled;
        }
        debug_assert!(plaintext <= MAX_PLAINTEXT);
        if self.tls13 {
            wire.push(content);
        }
        let length = wire.len() - body + explicit + TAG;
        let length = u16::try_from(length).expect("a record of at most 16 KiB");
        wire[start + 3..start + HEADER].copy_from_slice(&length.to_be_bytes());
        let aad = if self.tls13 {
            let mut header = [0u8; HEADER];
            header.copy_from_slice(&wire[start..start + HEADER]);
            AadBytes::Tls13(header)
        } else {
            AadBytes::Tls12(tls12_aad(seq, content, plaintext))
        };
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad.as_ref()), &mut wire[body..])
            .expect("sealing a record of at most 16 KiB cannot fail");
        wire.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
        filled
    }

    /// Takes bytes read from the socket: whole records are opened and their application data
    /// appended to `plaintext`; the start of a record stays for the next read.
    ///
    /// # Errors
    /// A record that does not authenticate or parse, a key update, a fatal alert.
    pub fn open(&mut self, input: &[u8], plaintext: &mut BytesMut) -> Result<Opened, TlsError> {
        let mut buf = self.partial.take().unwrap_or_default();
        buf.extend_from_slice(input);
        let mut closed = false;
        while buf.len() >= HEADER {
            let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if HEADER + len > MAX_RECORD {
                return Err(TlsError::BadRecord("longer than TLS allows"));
            }
            if buf.len() < HEADER + len {
                break;
            }
            let record = buf.split_to(HEADER + len);
            if self.open_record(record, plaintext)? {
                closed = true;
                break;
            }
        }
        if !buf.is_empty() && !closed {
            self.partial = Some(buf);
        }
        Ok(if closed { Opened::Closed } else { Opened::Data })
    }

    /// Whether the peer is in the middle of a record (to decide about idle memory).
    pub fn is_idle(&self) -> bool {
        self.partial.is_none() && self.pending.is_none()
    }

    /// Opens one record; `true` when it was a `close_notify`.
    fn open_record(
        &mut self,
        mut record: BytesMut,
        plaintext: &mut BytesMut,
    ) -> Result<bool, TlsError> {
        let outer = record[0];
        let header: [u8; HEADER] = record[..HEADER].try_into().expect("a whole header");
        record.advance(HEADER);
        let (nonce, seq) = if self.rx.explicit {
            if record.len() < EXPLICIT_NONCE + TAG {
                return Err(TlsError::BadRecord("too short"));
            }
            let mut nonce = self.rx.iv;
            nonce[4..].copy_from_slice(&record[..EXPLICIT_NONCE]);
            record.advance(EXPLICIT_NONCE);
            (Nonce::assume_unique_for_key(nonce), self.rx.seq.to_be_bytes())
        } else {
            self.rx.nonce()
        };
        if record.len() < TAG {
            return Err(TlsError::BadRecord("too short"));
        }
        let aad = if self.tls13 {
            AadBytes::Tls13(header)
        } else {
            AadBytes::Tls12(tls12_aad(seq, outer, record.len() - TAG))
        };
        let opened = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(aad.as_ref()), &mut record)
            .map_err(|_| TlsError::BadRecord("it does not authenticate"))?;
        self.rx.seq += 1;
        let (content, body) = if self.tls13 {
            // The inner content type is the last non-zero byte (RFC 8446 §5.2).
            let end = opened
                .iter()
                .rposition(|&b| b != 0)
                .ok_or(TlsError::BadRecord("no content type"))?;
            (opened[end], &opened[..end])
        } else {
            (outer, &opened[..])
        };
        match content {
            APPLICATION_DATA => {
                plaintext.extend_from_slice(body);
                Ok(false)
            }
            ALERT => match body {
                [_, 0] => Ok(true),
                _ => Err(TlsError::Alert),
            },
            HANDSHAKE => Err(TlsError::KeyUpdate),
            _ => Err(TlsError::BadRecord("unknown content type")),
        }
    }
}

/// TLS 1.2's additional data: sequence number, type, version, plaintext length.
fn tls12_aad(seq: [u8; 8], content: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq);
    aad[8] = content;
    aad[9..11].copy_from_slice(&[3, 3]);
    aad[11..].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    aad
}

enum AadBytes {
    Tls13([u8; HEADER]),
    Tls12([u8; 13]),
}

impl AsRef<[u8]> for AadBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            AadBytes::Tls13(a) => a,
            AadBytes::Tls12(a) => a,
        }
    }
}

/// Whether `config` lets sessions be handed to the drivers (`enable_secret_extraction`).
pub fn prepare(config: &mut rustls::ServerConfig) {
    config.enable_secret_extraction = true;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use super::*;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    /// A self-signed certificate made for one test (by `openssl`).
    fn identity(key: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        use std::sync::atomic::{AtomicU32, Ordering};
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        static MADE: AtomicU32 = AtomicU32::new(0);
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("onair-records-{}-{made}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-newkey"])
            .args(key)
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .args([
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let cert = CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        (cert, key)
    }

    const EC: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    const RSA: &[&str] = &["rsa:2048"];

    /// A finished client/server pair over memory, for `version` and `suite`.
    fn pair(
        identity: &(CertificateDer<'static>, PrivateKeyDer<'static>),
        version: &'static rustls::SupportedProtocolVersion,
        suite: rustls::SupportedCipherSuite,
    ) -> (ClientConnection, ServerConnection) {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let provider = Arc::new(provider);
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![identity.0.clone()], identity.1.clone_key())
            .unwrap();
        prepare(&mut server);
        let mut roots = RootCertStore::empty();
        roots.add(identity.0.clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut server = ServerConnection::new(Arc::new(server)).unwrap();
        let mut wire = Vec::new();
        for _ in 0..10 {
            wire.clear();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets().unwrap();
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        (client, server)
    }

    #[test]
    fn records_go_both_ways_with_every_suite_of_the_provider() {
        let (ec, rsa) = (identity(EC), identity(RSA));
        let suites = rustls::crypto::ring::default_provider().cipher_suites;
        for suite in suites {
            let version = match suite {
                rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
                rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
            };
            // TLS 1.2 suites name the certificate's key type.
            let rsa_suite = format!("{:?}", suite.suite()).contains("_RSA_");
            let (mut client, server) = pair(if rsa_suite { &rsa } else { &ec }, version, suite);
            let mut records = Records::take(server).unwrap();
            for message in [&b"hello"[..], &[7u8; MAX_PLAINTEXT][..], b"again"] {
                let mut sealed = Vec::new();
                let filled = records.seal_data(&mut sealed, |buf| {
                    buf.extend_from_slice(message);
                    Ok::<_, ()>(message.len())
                });
                assert_eq!(filled, Ok(message.len()));
                let mut socket = &sealed[..];
                while !socket.is_empty() {
                    client.read_tls(&mut socket).unwrap();
                    client.process_new_packets().unwrap();
                }
                let mut got = vec![0u8; message.len()];
                client.reader().read_exact(&mut got).unwrap();
                assert_eq!(got, message, "{suite:?}");
            }
            // The client's records, arriving in pieces.
            client.writer().write_all(b"ping from the client").unwrap();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut plaintext = BytesMut::new();
            for piece in wire.chunks(7) {
                assert_eq!(records.open(piece, &mut plaintext), Ok(Opened::Data), "{suite:?}");
            }
            assert_eq!(&plaintext[..], b"ping from the client");
            assert!(records.is_idle());
            // close_notify both ways.
            let mut sealed = Vec::new();
            records.seal_close(&mut sealed);
            client.read_tls(&mut &sealed[..]).unwrap();
            assert!(client.process_new_packets().unwrap().peer_has_closed(), "{suite:?}");
            client.send_close_notify();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            assert_eq!(records.open(&wire, &mut plaintext), Ok(Opened::Closed));
        }
    }

    #[test]
    fn what_the_socket_did_not_take_is_kept_and_nothing_is_sealed_for_nothing() {
        let identity = identity(EC);
        let suite = rustls::crypto::ring::default_provider().cipher_suites[0];
        let (mut client, server) = pair(&identity, &rustls::version::TLS13, suite);
        let mut records = Records::take(server).unwrap();
        let mut wire = Vec::new();
        assert_eq!(records.seal_data(&mut wire, |_| Ok::<_, ()>(())), Ok(()));
        assert_eq!(records.seal_data(&mut wire, |_| Err::<(), _>("failed")), Err("failed"));
        assert!(wire.is_empty());
        let first = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(b"first");
            Ok::<_, ()>(())
        };
        records.seal_data(&mut wire, first).unwrap();
        records.keep(&wire[3..]);
        assert!(!records.is_idle());
        let mut socket = wire[..3].to_vec();
        socket.extend_from_slice(records.pending().unwrap());
        records.advance(socket.len() - 3);
        assert!(records.pending().is_none() && records.is_idle());
        client.read_tls(&mut &socket[..]).unwrap();
        client.process_new_packets().unwrap();
        let mut got = [0u8; 5];
        client.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"first");
    }

    #[test]
    fn a_forged_record_is_refused() {
        let identity = identity(EC);
        let suite = rustls::crypto::ring::default_provider().cipher_suites[0];
        let (mut client, server) = pair(&identity, &rustls::version::TLS13, suite);
        let mut records = Records::take(server).unwrap();
        client.writer().write_all(b"data").unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut plaintext = BytesMut::new();
        assert_eq!(
            records.open(&wire, &mut plaintext),
            Err(TlsError::BadRecord("it does not authenticate"))
        );
        let huge = [23u8, 3, 3, 0xFF, 0xFF];
        let mut fresh = Records::take(pair(&identity, &rustls::version::TLS13, suite).1).unwrap();
        assert_eq!(
            fresh.open(&huge, &mut plaintext),
            Err(TlsError::BadRecord("longer than TLS allows"))
        );
    }
}
