//! Real `flowgate serve` processes on 127.0.0.1: the configuration written
//! to a file of its own, the environment cleared down to the test keys, the
//! output kept in a log file (shown when a test fails), killed when dropped.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flowgate::pb::workflow_gateway_client::WorkflowGatewayClient;
use tonic::transport::{Channel, Endpoint};

use super::temp_dir::TempDir;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long a gateway process may take to answer Health.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A loopback address nobody listened on a moment ago (bound, then
/// released, so a process can be told its port before it starts).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One `flowgate serve` process.
pub struct GatewayProcess {
    /// A short name for messages (`A`, `B`, …).
    pub name: String,
    /// Its gRPC address (`server.listen` of its configuration).
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Its configuration and output; removed after the process is killed.
    dir: TempDir,
}

impl GatewayProcess {
    /// Writes `config` (which must listen on `addr`) and starts `flowgate
    /// serve` on it with the test keys ([`super::test_keys`]) as its only
    /// environment. Does not wait: see [`GatewayProcess::ready`].
    pub fn spawn(name: &str, addr: SocketAddr, config: &str) -> Self {
        let dir = TempDir::new(&format!("process-{name}-{}", addr.port()));
        let config_path = dir.write("flowgate.toml", config);
        let log = File::create(dir.0.join("output.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .envs(super::test_keys())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            name: name.to_owned(),
            addr,
            child: Some(child),
            dir,
        }
    }

    /// Waits (bounded) until the process answers Health with SERVING;
    /// panics with its output if it exits or never does.
    pub async fn ready(&mut self) {
        if let Err(exited) = self.serving_or_exited().await {
            panic!("{exited}");
        }
    }

    /// Like [`GatewayProcess::ready`], but a process that exits before
    /// serving (its port taken by someone else meanwhile, see
    /// [`free_addr`]) is `Err` with its output, for the caller to retry.
    pub async fn serving_or_exited(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().unwrap()
            {
                return Err(format!(
                    "gateway {} exited before serving ({status}):\n{}",
                    self.name,
                    self.output()
                ));
            }
            if let Ok(channel) = self.try_channel().await
                && matches!(health(channel).await, Ok(ServingStatus::Serving))
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "gateway {} did not serve within {READY_WITHIN:?}:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
    }

    /// A fresh channel to the process.
    pub async fn channel(&self) -> Channel {
        self.try_channel().await.unwrap()
    }

    /// A WorkflowGateway client on a fresh channel.
    pub async fn client(&self) -> WorkflowGatewayClient<Channel> {
        WorkflowGatewayClient::new(self.channel().await)
    }

    /// Kills the process at once (SIGKILL: no shutdown, no cleanup), as a
    /// crashed replica or a lost node would stop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop, as Kubernetes asks for one) and
    /// waits, at most `within`, for the process to exit; `None` when it
    /// was still running then (it is killed when dropped).
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// What the process wrote so far (its log lines).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("output.log")).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // The last lines of every process help explain a failure.
            let output = self.output();
            let tail: Vec<&str> = output.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- gateway {} (last lines) ---\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }
}

/// The Health answer of the server behind `channel` (the empty service name:
/// the whole server).
pub async fn health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    Ok(response.into_inner().status())
}
