//! A real nats-server (Debian's, JetStream on) on a free port with a temporary store, stopped
//! and its store removed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server this test started.
pub struct Nats {
    /// Its client port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl Nats {
    /// Starts nats-server with JetStream on a free port; waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A free port and a store for a server that is not running yet: `restart` starts it
    /// (nodes configured with `url` meanwhile find nothing listening there).
    pub fn unstarted() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("onair-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { port, dir, config: None, child: None }
    }

    /// Like `start`, with these lines of nats-server configuration (e.g. `max_payload: 4096`).
    pub fn start_with(config: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("onair-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = (!config.is_empty()).then(|| {
            let path = dir.join("nats.conf");
            std::fs::write(&path, config).unwrap();
            path
        });
        let mut nats = Self { port, dir, config, child: None };
        nats.spawn();
        nats
    }

    fn spawn(&mut self) {
        let mut command = Command::new("nats-server");
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (make test installs Debian's nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (if it runs) and starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
