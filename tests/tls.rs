//! `wss://` and `https://` with a self-signed certificate, reloaded without dropping listeners.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use onair::config::TlsConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

fn make_cert(dir: &Path) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
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
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl makes a self-signed certificate");
}

fn cert_der(dir: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap()
}

/// A client that trusts exactly these certificates.
fn connector(certs: &[CertificateDer<'static>]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A relay serving plain and TLS ports, with a fresh self-signed certificate in its own dir.
struct TlsRelay {
    dir: std::path::PathBuf,
    plain: std::net::SocketAddr,
    tls: std::net::SocketAddr,
    node: Arc<onair::node::Node>,
    terminator: Arc<onair::server::tls::Terminator>,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<onair::Result<()>>,
}

impl TlsRelay {
    async fn start(name: &str, mut config: onair::Config) -> Self {
        let dir = std::env::temp_dir().join(format!("onair-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        make_cert(&dir);
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (plain_addr, tls_addr) =
            (plain.local_addr().unwrap(), tls_listener.local_addr().unwrap());
        let tls_config =
            TlsConfig { listen: tls_addr, cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        config.tls = Some(tls_config.clone());
        let relay = onair::server::Server::new(config);
        let node = Arc::clone(relay.node());
        let terminator = onair::server::tls::Terminator::new(tls_config).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let tls = Some((tls_listener, Arc::clone(&terminator)));
        let server = tokio::spawn(relay.serve(plain, tls, stop.clone().cancelled_owned()));
        Self { dir, plain: plain_addr, tls: tls_addr, node, terminator, stop, server }
    }

    /// Stops the relay (it must drain in time) and removes the certificate's dir.
    async fn shutdown(self) {
        self.stop.cancel();
        within(self.server).await.unwrap().unwrap();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[tokio::test]
async fn wss_and_https_work_and_a_reloaded_certificate_keeps_listeners() {
    let relay = TlsRelay::start("tls", config(&[("radio", "SECRET")])).await;
    let (dir, tls_addr, test_relay_addr) = (relay.dir.clone(), relay.tls, relay.plain);
    let terminator = Arc::clone(&relay.terminator);
    let first_cert = cert_der(&dir);

    // https: GET /healthz through TLS.
    let tls = connector(std::slice::from_ref(&first_cert));
    let name = ServerName::try_from("localhost").unwrap();
    let mut https = within(tls.connect(name.clone(), TcpStream::connect(tls_addr).await.unwrap()))
        .await
        .unwrap();
    https.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    within(https.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");

    // wss: a listener through TLS hears a frame from a plain source.
    let stream = within(tls.connect(name.clone(), TcpStream::connect(tls_addr).await.unwrap()))
        .await
        .unwrap();
    let (mut wss, _) =
        within(tokio_tungstenite::client_async("wss://localhost/listen/radio", stream))
            .await
            .unwrap();
    let hello = within(wss.next()).await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"type\":\"hello\""));
    let (mut src, _) =
        tokio_tungstenite::connect_async(format!("ws://{test_relay_addr}/ingest/radio?key=SECRET"))
            .await
            .unwrap();
    src.send(Message::text(OPUS_START)).await.unwrap();
    src.send(Message::binary(frame(0, b"over tls"))).await.unwrap();
    let mut next_binary = async || loop {
        match within(wss.next()).await.unwrap().unwrap() {
            Message::Binary(data) => return data.to_vec(),
            _ => continue,
        }
    };
    assert_eq!(next_binary().await, frame(0, b"over tls"));

    // A new certificate: new connections get it, the connected listener carries on.
    make_cert(&dir);
    let second_cert = cert_der(&dir);
    assert_ne!(first_cert, second_cert);
    terminator.reload().unwrap();
    let both = connector(&[first_cert.clone(), second_cert.clone()]);
    let fresh =
        within(both.connect(name, TcpStream::connect(tls_addr).await.unwrap())).await.unwrap();
    assert_eq!(fresh.get_ref().1.peer_certificates().unwrap()[0], second_cert);
    src.send(Message::binary(frame(1, b"after reload"))).await.unwrap();
    assert_eq!(next_binary().await, frame(1, b"after reload"));

    // A broken certificate file is refused and the working one stays.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    assert!(terminator.reload().is_err());
    relay.shutdown().await;
}

#[cfg(feature = "source")]
#[tokio::test]
async fn onair_push_broadcasts_over_wss() {
    let relay = TlsRelay::start("tls-push", config(&[("radio", "SECRET")])).await;
    let (dir, plain_addr, tls_addr) = (relay.dir.clone(), relay.plain, relay.tls);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{plain_addr}/listen/radio")).await.unwrap();

    // The client trusts the self-signed certificate through SSL_CERT_FILE, as a user would.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tone-1k.m4a");
    let push = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["push", "--fast", "--key", "SECRET", "--to"])
        .arg(format!("wss://localhost:{}/ingest/radio", tls_addr.port()))
        .arg(&sample)
        .env("SSL_CERT_FILE", dir.join("cert.pem"))
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(30), push).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut frames = 0;
    while frames < 100 {
        if let Message::Binary(_) = within(ws.next()).await.unwrap().unwrap() {
            frames += 1;
        }
    }
    relay.shutdown().await;
}

/// TLS is served in-process on the listener drivers: an `https://` HTTP listener decodes the
/// right tone, and TLS connections are counted once, on their real address. (TLS used to be
/// relayed over loopback to the plain port, where every TLS connection took a second place
/// in the per-address count: with three places, the second TLS listener was refused.)
#[cfg(feature = "source")]
#[tokio::test]
async fn https_listeners_hear_the_stream_and_take_one_place_each() {
    let mut config = config(&[("radio", "SECRET")]);
    // Loopback is counted here: the source, then two TLS listeners, fill the address.
    config.ip_limit_exempt = Vec::new();
    config.max_connections_per_ip = 3;
    let relay = TlsRelay::start("tls-http", config).await;
    let (dir, plain_addr, tls_addr) = (relay.dir.clone(), relay.plain, relay.tls);
    let node = Arc::clone(&relay.node);

    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tone-1k.m4a");
    let mut push = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["push", "--loop", "--key", "SECRET", "--to"])
        .arg(format!("ws://{plain_addr}/ingest/radio"))
        .arg(&sample)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stream = Arc::clone(node.streams.get("radio").unwrap());
    within_secs(10, async {
        while !stream.is_live() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(&[cert_der(&dir)]);
    let socket = TcpStream::connect(tls_addr).await.unwrap();
    let wss_stream = within(tls.connect(name.clone(), socket)).await.unwrap();
    let (mut wss, _) =
        within(tokio_tungstenite::client_async("wss://localhost/listen/radio", wss_stream))
            .await
            .unwrap();
    let hello = within(wss.next()).await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"type\":\"hello\""));

    // ffmpeg reads 3 s of https://…/radio.ogg (it does not check the self-signed certificate).
    let decode = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(format!("https://127.0.0.1:{}/radio.ogg", tls_addr.port()))
        .args(["-t", "3", "-ac", "1", "-ar", "48000", "-f", "f32le", "-"])
        .kill_on_drop(true)
        .output();
    let decode = tokio::spawn(decode);
    within_secs(10, async {
        while stream.listener_count() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // A fourth connection from this address is one too many: refused before its handshake.
    let extra = TcpStream::connect(tls_addr).await.unwrap();
    assert!(within(tls.connect(name, extra)).await.is_err(), "refused without a handshake");

    let out = within_secs(20, decode).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<f32> =
        out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!(samples.len() >= 48_000 * 2, "{} samples", samples.len());
    let share = tone_share(&samples[24_000..], 1_000.0);
    assert!(share > 0.95, "1 kHz holds {share:.3} of the power");

    // The wss listener is closed with 1001 when the relay stops.
    relay.stop.cancel();
    let code = loop {
        match within(wss.next()).await {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1001));
    push.kill().await.ok();
    relay.shutdown().await;
}

/// A client that trusts `cert` and offers only `suite` (with its protocol version).
fn connector_for(
    cert: &CertificateDer<'static>,
    suite: rustls::SupportedCipherSuite,
) -> TlsConnector {
    let version = match suite {
        rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// The relay seals and opens a TLS listener's records itself once rustls has shaken hands:
/// every version and cipher suite it offers carries frames larger than one record to a `wss://`
/// listener and its ping back; a forged record drops that listener and no one else.
#[tokio::test]
async fn every_tls_suite_carries_a_listener_and_a_forged_record_drops_only_its_sender() {
    let relay = TlsRelay::start("tls-suites", config(&[("radio", "SECRET")])).await;
    let (dir, tls_addr, plain_addr) = (relay.dir.clone(), relay.tls, relay.plain);
    let stream = Arc::clone(relay.node.streams.get("radio").unwrap());
    let cert = cert_der(&dir);
    let name = ServerName::try_from("localhost").unwrap();
    let (mut src, _) =
        tokio_tungstenite::connect_async(format!("ws://{plain_addr}/ingest/radio?key=SECRET"))
            .await
            .unwrap();
    src.send(Message::text(OPUS_START)).await.unwrap();

    // The certificate is ECDSA: the suites that name RSA cannot be chosen with it.
    let suites = rustls::crypto::ring::default_provider().cipher_suites;
    let suites: Vec<_> =
        suites.into_iter().filter(|s| !format!("{:?}", s.suite()).contains("_RSA_")).collect();
    assert_eq!(suites.len(), 6, "three TLS 1.3 and three TLS 1.2 suites");
    let mut listeners = Vec::new();
    for (n, &suite) in suites.iter().enumerate() {
        let socket = TcpStream::connect(tls_addr).await.unwrap();
        let tls = within(connector_for(&cert, suite).connect(name.clone(), socket)).await.unwrap();
        assert_eq!(tls.get_ref().1.negotiated_cipher_suite(), Some(suite));
        let (mut wss, _) =
            within(tokio_tungstenite::client_async("wss://localhost/listen/radio", tls))
                .await
                .unwrap();
        let hello = within(wss.next()).await.unwrap().unwrap();
        assert!(hello.to_text().unwrap().contains("\"type\":\"hello\""), "{suite:?}");
        wss.send(Message::Ping(vec![n as u8; 3].into())).await.unwrap();
        listeners.push((suite, wss));
    }
    // Larger than one 16 KiB record, and a small one after it.
    let big = vec![0x5Au8; 40_000];
    src.send(Message::binary(frame(0, &big))).await.unwrap();
    src.send(Message::binary(frame(1, b"after the big one"))).await.unwrap();
    for (n, (suite, wss)) in listeners.iter_mut().enumerate() {
        let mut got = Vec::new();
        let mut pong = None;
        while got.len() < 2 {
            match within(wss.next()).await.unwrap().unwrap() {
                Message::Binary(data) => got.push(data.to_vec()),
                Message::Pong(data) => pong = Some(data.to_vec()),
                _ => {}
            }
        }
        assert_eq!(got, [frame(0, &big), frame(1, b"after the big one")], "{suite:?}");
        // The pong may come before the frames or after them.
        while pong.is_none() {
            if let Message::Pong(data) = within(wss.next()).await.unwrap().unwrap() {
                pong = Some(data.to_vec());
            }
        }
        assert_eq!(pong, Some(vec![n as u8; 3]), "{suite:?}");
    }

    // An https listener whose client then writes a record with a broken tag.
    let socket = TcpStream::connect(tls_addr).await.unwrap();
    let mut forger =
        within(connector(std::slice::from_ref(&cert)).connect(name, socket)).await.unwrap();
    forger.write_all(b"GET /radio.ogg HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    within(forger.read_exact(&mut head)).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.") && head.ends_with(b" 200"), "{head:?}");
    let before = stream.listener_count();
    let mut forged = vec![23u8, 3, 3, 0, 40];
    forged.extend_from_slice(&[0xAB; 40]);
    forger.get_mut().0.write_all(&forged).await.unwrap();
    within_secs(10, async {
        while stream.listener_count() >= before {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // Its connection ends (`within` fails the test if it does not); everyone else still
    // hears the stream.
    let mut rest = Vec::new();
    let _ = within(forger.get_mut().0.read_to_end(&mut rest)).await;
    src.send(Message::binary(frame(2, b"still here"))).await.unwrap();
    for (suite, wss) in &mut listeners {
        loop {
            if let Message::Binary(data) = within(wss.next()).await.unwrap().unwrap() {
                assert_eq!(data.to_vec(), frame(2, b"still here"), "{suite:?}");
                break;
            }
        }
    }
    relay.shutdown().await;
}

/// A client limited to one protocol version.
fn connector_for_version(
    certs: &[CertificateDer<'static>],
    version: &'static rustls::SupportedProtocolVersion,
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A ClientHello that offers only `version` (no supported_versions extension, as clients
/// before TLS 1.3 send it), with suites, groups and signature schemes a TLS 1.2 server takes.
fn client_hello(version: u16) -> Vec<u8> {
    let mut hello = version.to_be_bytes().to_vec();
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    let suites: [u16; 4] = [0xc02b, 0xc02f, 0xc013, 0x002f];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // null compression
    let mut extensions = Vec::new();
    let mut extension = |kind: u16, body: &[u8]| {
        extensions.extend_from_slice(&kind.to_be_bytes());
        extensions.extend_from_slice(&(body.len() as u16).to_be_bytes());
        extensions.extend_from_slice(body);
    };
    extension(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // supported_groups: x25519, P-256
    extension(0x000b, &[1, 0]); // ec_point_formats: uncompressed
    extension(0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]); // signature_algorithms
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The first record the server answers `hello` with: (content type, first byte of its body).
async fn first_record(addr: std::net::SocketAddr, hello: &[u8]) -> Option<(u8, Vec<u8>)> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(hello).await.unwrap();
    let mut head = [0u8; 5];
    within(socket.read_exact(&mut head)).await.ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
    within(socket.read_exact(&mut body)).await.ok()?;
    Some((head[0], body))
}

/// SECURITY.md claimed "only TLS 1.2/1.3 accepted" with no test behind it.
#[tokio::test]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let dir = std::env::temp_dir().join(format!("onair-tls-versions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_cert(&dir);
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    let tls_config =
        TlsConfig { listen: tls_addr, cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    let relay = onair::server::Server::new(config(&[("radio", "SECRET")]));
    let terminator = onair::server::tls::Terminator::new(tls_config).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let tls = Some((tls_listener, terminator));
    let server = tokio::spawn(relay.serve(plain, tls, stop.clone().cancelled_owned()));
    let cert = cert_der(&dir);
    let name = ServerName::try_from("localhost").unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = connector_for_version(std::slice::from_ref(&cert), version);
        let socket = TcpStream::connect(tls_addr).await.unwrap();
        let mut tls = within(client.connect(name.clone(), socket)).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        within(tls.read_to_string(&mut answer)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // The same hand-made hello gets a ServerHello when it offers TLS 1.2, and a
    // protocol_version alert when it offers TLS 1.1 or 1.0.
    let (kind, body) = first_record(tls_addr, &client_hello(0x0303)).await.unwrap();
    assert_eq!((kind, body[0]), (0x16, 2), "a ServerHello for TLS 1.2");
    for old in [0x0302, 0x0301] {
        let answer = first_record(tls_addr, &client_hello(old)).await;
        assert_eq!(
            answer,
            Some((0x15, vec![2, 70])),
            "TLS {old:#06x}: a fatal protocol_version alert"
        );
    }
    stop.cancel();
    within(server).await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// The relay binary with a `[tls]` table, its log read line by line.
struct Served {
    child: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
    tls: std::net::SocketAddr,
}

impl Served {
    fn start(dir: &Path) -> Self {
        use std::io::BufRead;
        let config = dir.join("onair.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [[streams]]\nname = \"radio\"\nkey = \"a-long-enough-test-key\"\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        );
        std::fs::write(&config, text).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_onair"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut served = Self { child, log, tls: "0.0.0.0:0".parse().unwrap() };
        let line = served.wait_for("listening for tls");
        served.tls = line.split("addr=").nth(1).unwrap().trim().parse().unwrap();
        served
    }

    /// The first log line from now on that contains `text`.
    fn wait_for(&self, text: &str) -> String {
        loop {
            let line = self
                .log
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line with {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }

    fn hangup(&self) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) }, 0);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certificate a fresh handshake gets (trusting any of `certs`).
async fn served_certificate(
    addr: std::net::SocketAddr,
    certs: &[CertificateDer<'static>],
) -> CertificateDer<'static> {
    let name = ServerName::try_from("localhost").unwrap();
    let socket = TcpStream::connect(addr).await.unwrap();
    let tls = within(connector(certs).connect(name, socket)).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// SIGHUP reloading was only tested by calling `Terminator::reload`, never through the real
/// signal, and a failed reload was never followed by a handshake.
#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_failed_reload_keeps_the_working_one() {
    let dir = std::env::temp_dir().join(format!("onair-tls-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_cert(&dir);
    let first = cert_der(&dir);
    let served = Served::start(&dir);
    let mut trusted = vec![first.clone()];
    assert_eq!(served_certificate(served.tls, &trusted).await, first);

    make_cert(&dir);
    let second = cert_der(&dir);
    trusted.push(second.clone());
    served.hangup();
    served.wait_for("tls certificate reloaded");
    assert_eq!(served_certificate(served.tls, &trusted).await, second, "the new one");

    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    served.hangup();
    served.wait_for("tls reload failed; keeping the old certificate");
    assert_eq!(served_certificate(served.tls, &trusted).await, second, "still the working one");
    drop(served);
    std::fs::remove_dir_all(&dir).ok();
}
