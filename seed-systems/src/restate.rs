//! The Restate server 1.7.12 as the tests run it: one server per test on loopback
//! ports, with a fresh base directory (kept across [`Restate::restart`]) and short
//! timers, and its admin API and ingress called over HTTP/1.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::process::Service;
use crate::{Missing, free_port, install_dir};

/// restate-server's installed binary.
#[derive(Clone, Debug)]
pub struct Install {
    /// The server binary (the linux-x64 build npm installs).
    pub server: PathBuf,
}

impl Install {
    /// Finds what `cargo xtask seed-systems` installed.
    pub fn find() -> Result<Install, Missing> {
        let server = install_dir()
            .join("restate/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server");
        if !server.is_file() {
            return Err(Missing(format!(
                "restate-server 1.7.12 is not installed ({} is missing)",
                server.display()
            )));
        }
        Ok(Install { server })
    }
}

/// An HTTP/1.1 answer: status and body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// The `x-restate-id` header (ingress answers carry the invocation id).
    pub invocation_id: Option<String>,
}

impl Answer {
    /// The body as JSON (`null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a new connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    tokio::spawn(connection);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = response.status().as_u16();
    let invocation_id = response
        .headers()
        .get("x-restate-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: reading the body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        body,
        invocation_id,
    })
}

/// How one server is started: the same every time, so a restart keeps its data.
#[derive(Debug)]
struct Launch {
    install: Install,
    base_dir: PathBuf,
    logs: PathBuf,
    admin: SocketAddr,
    ingress: SocketAddr,
    node_port: u16,
}

impl Launch {
    fn spawn(&self, start: u32) -> Result<Service, String> {
        let mut command = Command::new(&self.install.server);
        command
            .args([
                "--no-logo",
                "--listen-mode",
                "tcp",
                "--bind-ip",
                "127.0.0.1",
            ])
            .args(["--bind-port", &self.node_port.to_string()])
            .arg("--base-dir")
            .arg(&self.base_dir)
            .args(["--node-name", "taskwire-test"])
            .env("RESTATE_ADMIN__BIND_ADDRESS", self.admin.to_string())
            .env("RESTATE_INGRESS__BIND_ADDRESS", self.ingress.to_string())
            .env("RESTATE_DISABLE_TELEMETRY", "true")
            .env("RESTATE_LOG_DISABLE_ANSI_CODES", "true")
            .env("RESTATE_DEFAULT_NUM_PARTITIONS", "2")
            // Short timers: an idle stream is asked to suspend after 2 s, and failed
            // attempts are retried within a second.
            .env("RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT", "2s")
            .env("RESTATE_WORKER__INVOKER__ABORT_TIMEOUT", "2s")
            .env("RESTATE_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL", "100ms")
            .env("RESTATE_DEFAULT_RETRY_POLICY__MAX_INTERVAL", "1s");
        let log = self.logs.join(format!("restate-{start}.log"));
        Service::spawn("restate-server", command, &log)
    }
}

/// A running restate-server.
#[derive(Debug)]
pub struct Restate {
    launch: Launch,
    /// The admin API.
    pub admin: SocketAddr,
    /// The ingress.
    pub ingress: SocketAddr,
    service: Service,
    starts: u32,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Restate {
    /// Starts a server with a fresh base directory under `dir` and waits until its admin
    /// API and ingress are healthy.
    pub async fn start(install: &Install, dir: &Path) -> Result<Restate, String> {
        let launch = Launch {
            install: install.clone(),
            base_dir: dir.join("restate-data"),
            logs: dir.to_path_buf(),
            admin: loopback(free_port()),
            ingress: loopback(free_port()),
            node_port: free_port(),
        };
        let restate = Restate {
            admin: launch.admin,
            ingress: launch.ingress,
            service: launch.spawn(1)?,
            launch,
            starts: 1,
        };
        restate.wait_healthy().await?;
        Ok(restate)
    }

    async fn wait_healthy(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let admin = request(self.admin, "GET", "/health", &[], None).await;
            let ingress = request(self.ingress, "GET", "/restate/health", &[], None).await;
            if matches!((&admin, &ingress), (Ok(a), Ok(i)) if a.status == 200 && i.status == 200) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "restate-server was not healthy within 30 s; its log:\n{}",
                    self.service.log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGTERM) and starts it again on the same ports and data.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.service.terminate(Duration::from_secs(20));
        self.starts += 1;
        self.service = self.launch.spawn(self.starts)?;
        self.wait_healthy().await
    }
    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.service.log_tail(lines)
    }

    /// Registers the endpoint at `uri`, over HTTP/1.1 if `http11`.
    pub async fn register(&self, uri: &str, http11: bool) -> Result<Value, String> {
        let body = json!({"uri": uri, "use_http_11": http11, "force": true}).to_string();
        let answer = request(
            self.admin,
            "POST",
            "/deployments",
            &[("content-type", "application/json")],
            Some(body.into_bytes()),
        )
        .await?;
        if answer.status / 100 != 2 {
            return Err(format!(
                "registering {uri}: {} {}",
                answer.status,
                answer.text()
            ));
        }
        Ok(answer.json())
    }

    /// Calls `path` (`/Service/handler`, `/Object/key/handler`) through the ingress with a
    /// JSON body, and waits for the answer.
    pub async fn call(&self, path: &str, body: &Value) -> Result<Answer, String> {
        request(
            self.ingress,
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// Sends to `path` without waiting; returns the invocation id.
    pub async fn send(&self, path: &str, body: &Value) -> Result<String, String> {
        let answer = request(
            self.ingress,
            "POST",
            &format!("{path}/send"),
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await?;
        answer.json()["invocationId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("send {path}: {} {}", answer.status, answer.text()))
    }

    /// Waits for the invocation's output.
    pub async fn attach(&self, invocation_id: &str) -> Result<Answer, String> {
        request(
            self.ingress,
            "GET",
            &format!("/restate/invocation/{invocation_id}/attach"),
            &[],
            None,
        )
        .await
    }

    /// Resolves an awakeable with a JSON value.
    pub async fn resolve_awakeable(&self, id: &str, value: &Value) -> Result<(), String> {
        let answer = request(
            self.ingress,
            "POST",
            &format!("/restate/awakeables/{id}/resolve"),
            &[("content-type", "application/json")],
            Some(value.to_string().into_bytes()),
        )
        .await?;
        if answer.status / 100 == 2 {
            Ok(())
        } else {
            Err(format!(
                "resolving {id}: {} {}",
                answer.status,
                answer.text()
            ))
        }
    }

    /// Runs SQL on the admin API's `/query`; one JSON object per row.
    pub async fn query(&self, sql: &str) -> Result<Vec<Value>, String> {
        let body = json!({"query": sql}).to_string();
        let answer = request(
            self.admin,
            "POST",
            "/query",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(body.into_bytes()),
        )
        .await?;
        if answer.status != 200 {
            return Err(format!(
                "query {sql:?}: {} {}",
                answer.status,
                answer.text()
            ));
        }
        Ok(answer.json()["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}
