//! The Rust orchestrator against the Python reference runner (examples/python-runner),
//! over plaintext loopback and over TLS, with JSON frames: every outcome end to end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskwire_proto::runner::v1::execution_outcome::Outcome;
use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
use taskwire_proto::session::v1::Codec;
use taskwire_proto::wkt;
use taskwire_tcp::runner::Orchestrator;
use taskwire_tcp::{TcpClient, TcpClientConfig, TcpConnection};
use taskwire_tls::{CaParams, CertificateAuthority, ClientConfigBuilder, ServerCertParams};

/// The Python runner as a child process, killed on drop.
struct Runner {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python 3 is on every machine this project builds on; its absence is a failure, not a
/// reason to skip.
fn python() -> &'static str {
    ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .expect("python3 is needed to run the reference runner")
}

fn start_runner(tls: Option<(&std::path::Path, &std::path::Path)>) -> Runner {
    let python = python();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python-runner/runner.py"
    );
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg("--port")
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((cert, key)) = tls {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let mut child = command.spawn().expect("start the Python runner");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("runner output");
    let port: u16 = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("runner said {line:?}"));
    Runner {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn job(function: &str, params: serde_json::Value) -> ExecutionRequest {
    let params: wkt::Struct = serde_json::from_value(params).expect("params are an object");
    ExecutionRequest {
        request_id: format!("req-{function}"),
        job_id: format!("job-{function}"),
        function_name: function.into(),
        params: Some(params),
        ..Default::default()
    }
}

async fn check_every_outcome(orchestrator: Orchestrator<TcpConnection>) {
    let deadline = Duration::from_secs(10);
    let outcome = orchestrator
        .execute(job("add", serde_json::json!({"a": 2, "b": 3})), deadline)
        .await
        .unwrap();
    assert_eq!(
        (outcome.job_id.as_str(), outcome.request_id.as_str()),
        ("job-add", "req-add")
    );
    match outcome.outcome {
        Some(Outcome::Success(success)) => {
            assert_eq!(
                serde_json::to_value(success.result.unwrap()).unwrap(),
                serde_json::json!(5.0)
            );
        }
        other => panic!("add: {other:?}"),
    }

    match orchestrator
        .execute(
            job("fail", serde_json::json!({"message": "smtp down"})),
            deadline,
        )
        .await
        .unwrap()
        .outcome
    {
        Some(Outcome::Failure(failure)) => {
            assert_eq!(failure.message, "smtp down");
            assert_eq!(failure.r#type, "RuntimeError");
        }
        other => panic!("fail: {other:?}"),
    }

    match orchestrator
        .execute(job("rate_limited", serde_json::json!({})), deadline)
        .await
        .unwrap()
        .outcome
    {
        Some(Outcome::RetryAfter(retry)) => assert_eq!(
            retry.delay,
            Some(wkt::Duration {
                seconds: 30,
                nanos: 0
            })
        ),
        other => panic!("rate_limited: {other:?}"),
    }

    match orchestrator
        .execute(job("no_such_function", serde_json::json!({})), deadline)
        .await
        .unwrap()
        .outcome
    {
        Some(Outcome::HandlerNotFound(missing)) => {
            assert_eq!(missing.function_name, "no_such_function");
        }
        other => panic!("no_such_function: {other:?}"),
    }

    // A runner slower than the deadline: the orchestrator reports a timeout promptly.
    let started = Instant::now();
    let outcome = orchestrator
        .execute(
            job("sleep", serde_json::json!({"seconds": 5})),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome.outcome, Some(Outcome::Timeout(_))),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout took {:?}",
        started.elapsed()
    );

    // Cancel a job in flight: the runner confirms and the job ends cancelled.
    let sleeper = {
        let orchestrator = orchestrator.clone();
        tokio::spawn(async move {
            let mut request = job("sleep", serde_json::json!({"seconds": 10}));
            request.job_id = "job-to-cancel".into();
            request.request_id = "req-to-cancel".into();
            orchestrator.execute(request, Duration::from_secs(20)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = orchestrator
        .cancel("job-to-cancel", "req-to-cancel", false)
        .await
        .unwrap();
    assert!(response.found, "the runner did not find the job to cancel");
    let outcome: ExecutionOutcome = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome.outcome, Some(Outcome::Cancelled(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_python_runner_serves_every_outcome_over_plaintext_loopback() {
    let runner = start_runner(None);
    let mut config = TcpClientConfig::plaintext_loopback(runner.addr);
    config.codec = Codec::Json;
    let connection =
        tokio::time::timeout(Duration::from_secs(10), TcpClient::new(config).connect())
            .await
            .unwrap()
            .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        check_every_outcome(Orchestrator::new(connection)),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_python_runner_serves_every_outcome_over_tls() {
    let dir = std::env::temp_dir().join(format!("taskwire-runner-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = CertificateAuthority::generate(&CaParams::new("runner test CA")).unwrap();
    let leaf = ca
        .issue_server(
            &ServerCertParams::new(["localhost"]).ip_addresses(["127.0.0.1".parse().unwrap()]),
        )
        .unwrap();
    let (cert, key) = (dir.join("runner.pem"), dir.join("runner.key"));
    std::fs::write(&cert, leaf.cert_pem()).unwrap();
    std::fs::write(&key, leaf.key_pem()).unwrap();
    let runner = start_runner(Some((&cert, &key)));
    let tls = ClientConfigBuilder::new(ca.ca_bundle().unwrap())
        .alpn_protocols([b"taskwire/1"])
        .build()
        .unwrap();
    let mut config = TcpClientConfig::new(runner.addr, "localhost", Arc::new(tls));
    config.codec = Codec::Json;
    let connection =
        tokio::time::timeout(Duration::from_secs(10), TcpClient::new(config).connect())
            .await
            .unwrap()
            .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        check_every_outcome(Orchestrator::new(connection)),
    )
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
