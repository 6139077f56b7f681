//! Real `redis-server` processes for tests (feature `test-support`): one
//! node, or a three-master Redis Cluster, on 127.0.0.1 ports that were free,
//! without persistence, killed when dropped; optionally with a password or
//! a TLS port ([`ServerOptions`]). Needs `redis-server` and
//! `redis-cli` on the PATH (Debian packages `redis-server`, `redis-tools`;
//! `scripts/test.sh` installs them).

use std::{
    io::{self, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// How long a server may take to answer PING (and a cluster to agree).
const READY_WITHIN: Duration = Duration::from_secs(15);

/// How to start a standalone server ([`RedisServer::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `--requirepass`: every client must authenticate with it.
    pub password: Option<String>,
    /// Also listen for TLS (`--tls-port`, clients not asked for a
    /// certificate) with this certificate chain and key (PEM).
    pub tls: Option<ServerTls>,
}

/// A TLS server certificate chain and its key, PEM.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate chain (the server's first).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// One `redis-server` process on a 127.0.0.1 port.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    dir: PathBuf,
    cluster: bool,
    options: ServerOptions,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers.
    pub fn start() -> io::Result<Self> {
        Self::spawn(false, ServerOptions::default())
    }

    /// Starts a standalone server with a password and/or a TLS port (see
    /// [`Self::tls_url`]). With a password, [`Self::command`] gets
    /// `-NOAUTH` answers (it does not authenticate).
    pub fn start_with(options: ServerOptions) -> io::Result<Self> {
        Self::spawn(false, options)
    }

    fn spawn(cluster: bool, options: ServerOptions) -> io::Result<Self> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("flowgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let tls_port = match &options.tls {
            Some(tls) => {
                std::fs::write(dir.join("server.crt"), &tls.cert_pem)?;
                std::fs::write(dir.join("server.key"), &tls.key_pem)?;
                Some(free_port()?)
            }
            None => None,
        };
        let mut server = Self {
            port,
            tls_port,
            dir,
            cluster,
            options,
            child: None,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> io::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // DEBUG SLEEP from tests simulates a slow Redis.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        if let Some(tls_port) = self.tls_port {
            command
                .args(["--tls-port", &tls_port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .args(["--tls-auth-clients", "no"]);
        }
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        self.child = Some(command.spawn().map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot start redis-server (apt-get install redis-server): {error}"),
            )
        })?);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            // `-NOAUTH`: up, and asking for the password.
            if matches!(self.command(&["PING"]), Ok(answer) if answer.starts_with("+PONG") || answer.starts_with("-NOAUTH"))
            {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis-server on port {} did not answer PING", self.port),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `rediss://127.0.0.1:<tls port>` (started with [`ServerOptions::tls`]).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://127.0.0.1:{port}"))
    }

    /// Kills the process (an outage: every connection drops, data is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted) and
    /// waits until it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    /// Sends one inline command and returns the first reply chunk, raw
    /// (`+PONG\r\n`, `$12\r\n…`). For readiness checks and test setup.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut buffer = vec![0; 64 * 1024];
        let read = stream.read(&mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas), each its own process.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with
    /// `redis-cli --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> io::Result<Self> {
        let nodes = (0..3)
            .map(|_| RedisServer::spawn(true, ServerOptions::default()))
            .collect::<io::Result<Vec<_>>>()?;
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot run redis-cli (apt-get install redis-tools): {error}"),
                )
            })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let deadline = Instant::now() + READY_WITHIN;
        while !nodes.iter().all(|node| {
            node.command(&["CLUSTER", "INFO"])
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        }) {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the Redis Cluster did not reach cluster_state:ok",
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { nodes })
    }

    /// `redis://127.0.0.1:<port>` of every node (a seed list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// A port nobody listened on a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
