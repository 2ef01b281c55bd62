//! The operator binary as a separate process, its output collected as it comes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The operator binary of this crate.
pub const BIN: &str = env!("CARGO_BIN_EXE_oauth-token-operator");

/// What one run of the binary to its end printed, and its exit code.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` to its end, off the async runtime, at `RUST_LOG=trace` and
/// without `OAUTH_CLIENT_SECRET` / `OAUTH_CLIENT_ID` from the test's environment; nothing it
/// printed may hold any of `secrets` in any form (`super::logs::assert_absent`).
pub async fn run_scanned(args: Vec<String>, secrets: &[&str]) -> Ran {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("OAUTH_CLIENT_SECRET")
            .env_remove("OAUTH_CLIENT_ID")
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let ran = Ran {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    super::logs::assert_absent(
        &format!("{}{}", ran.stdout, ran.stderr),
        secrets,
        "the binary's output",
    );
    ran
}

/// The operator binary running as a separate process, its output collected as it comes.
pub struct Process {
    pub child: Child,
    output: Arc<Mutex<String>>,
}

pub fn spawn(kubeconfig: &std::path::Path, extra: &[&str]) -> Process {
    spawn_as(kubeconfig, extra, "op-0")
}

/// Starts `run` with the metrics server on an ephemeral port (read back from the log).
pub fn spawn_as(kubeconfig: &std::path::Path, extra: &[&str], pod: &str) -> Process {
    spawn_with(BIN, kubeconfig, extra, pod, &[])
}

/// Starts `binary run` with extra environment variables (which win over the defaults above).
pub fn spawn_with(
    binary: &str,
    kubeconfig: &std::path::Path,
    extra: &[&str],
    pod: &str,
    env: &[(&str, &str)],
) -> Process {
    let mut child = Command::new(binary)
        .arg("run")
        .args(extra)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", "oauth-token-operator-system")
        .env("KUBECONFIG", kubeconfig)
        .env("OAUTH_TOKEN_OPERATOR_METRICS_ADDR", "127.0.0.1:0")
        // The double reviews no tokens: plain HTTP unless the test (or the chart's arguments)
        // says otherwise (tests/real_cluster/metrics.rs scrapes the secure endpoint).
        .env("OAUTH_TOKEN_OPERATOR_METRICS_SECURE", "false")
        .env("OAUTH_TOKEN_OPERATOR_ALLOW_INSECURE_HTTP", "true")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let readers: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for reader in readers {
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
    }
    Process { child, output }
}

impl Drop for Process {
    /// A process a test did not stop (it failed first) is killed, never left running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Process {
    pub fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The metrics port, from the operator's "serving /metrics" log line.
    pub async fn metrics_port(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text();
            let port = text
                .lines()
                .filter(|l| l.contains("serving /metrics"))
                .find_map(|l| {
                    l.split("addr=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()
                });
            if let Some(port) = port {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no metrics address logged:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`; returns its exit code and output.
    pub async fn wait_exit(mut self, timeout: Duration) -> (i32, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (status.code().unwrap_or(-1), self.text());
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!(
                    "the process did not exit within {timeout:?}:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
