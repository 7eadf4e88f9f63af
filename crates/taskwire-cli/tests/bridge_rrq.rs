//! `taskwire bridge rrq`, run as its `--help` says, between the real RRQ orchestrator and
//! RRQ's real Python runner: certificates from `taskwire cert`, the mirror in front of
//! `rrq-runner`, the bridge where `rrq.toml` expects its runner, over QUIC and over TCP.
//! Skipped loudly without `cargo xtask seed-systems` (a failure in CI).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use taskwire_seed_systems::require;
use taskwire_seed_systems::rrq::{self, Config, Driver, Install, Redis};

/// A bridge process; SIGTERM stops it after the jobs in flight.
struct Bridge {
    child: Child,
    listening: String,
}

impl Bridge {
    fn start(args: &[&str]) -> Bridge {
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
            .args(["bridge", "rrq"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Warnings and errors only: the test's output stays readable.
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("taskwire bridge starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the bridge says where it listens");
        assert!(line.starts_with("LISTENING "), "{args:?}: {line:?}");
        Bridge {
            child,
            listening: line.trim().to_owned(),
        }
    }

    /// The address after `name=` in the LISTENING line.
    fn addr(&self, name: &str) -> String {
        self.listening
            .split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {:?}", self.listening))
            .to_owned()
    }

    /// Stops it with SIGTERM and returns whether it exited cleanly.
    fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..500 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn taskwire(dir: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_help_examples_bridge_rrq_jobs_over_quic_and_tcp() {
    let install = require!(Install::find());
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    // The help's certificate commands, as written.
    taskwire(here, &["cert", "ca", "--out", "certs"]);
    taskwire(
        here,
        &[
            "cert",
            "server",
            "--ca",
            "certs",
            "--out",
            "certs",
            "--dns",
            "runners.internal",
            "--ip",
            "127.0.0.1",
        ],
    );
    taskwire(
        here,
        &[
            "cert",
            "client",
            "--ca",
            "certs",
            "--out",
            "certs",
            "--tenant",
            "jobs",
            "--id",
            "orchestrator-1",
        ],
    );
    let certs = here.join("certs");
    let file = |name: &str| certs.join(name).display().to_string();

    let redis = Redis::start(&install, here).unwrap();
    let python_port = taskwire_seed_systems::free_port();
    let _python = rrq::start_python_runner(
        &install,
        python_port,
        &redis.url(),
        &here.join("runner.log"),
    )
    .unwrap();
    let runner = format!("127.0.0.1:{python_port}");

    for scheme in ["quic", "tcp"] {
        let mirror = Bridge::start(&[
            "--mirror",
            "--listen",
            &format!("{scheme}://127.0.0.1:0"),
            "--runner",
            &runner,
            "--cert",
            &file("server.pem"),
            "--key",
            &file("server.key.pem"),
            "--ca",
            &file("ca.pem"),
        ]);
        let remote = mirror.addr(scheme);
        let bridge = Bridge::start(&[
            "--listen",
            "127.0.0.1:0",
            "--to",
            &format!("{scheme}://{remote}"),
            "--ca",
            &file("ca.pem"),
            "--cert",
            &file("client.pem"),
            "--key",
            &file("client.key.pem"),
        ]);
        let bridge_port: u16 = bridge
            .addr("rrq")
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap();

        let run = here.join(scheme);
        std::fs::create_dir_all(&run).unwrap();
        let config = Config::new(redis.port, bridge_port).write(&run).unwrap();
        let _orchestrator =
            rrq::start_orchestrator(&install, &config, &run.join("orchestrator.log")).unwrap();
        let mut driver = Driver::start(&install, &config, &redis.url())
            .await
            .unwrap();
        let echo = driver
            .enqueue("echo", json!({"over": scheme}), json!({}))
            .await
            .unwrap();
        let flaky = driver
            .enqueue("flaky", json!({"retry_after": 0.1}), json!({}))
            .await
            .unwrap();
        let states = driver
            .wait(&[echo, flaky], Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            states[0].status.as_deref(),
            Some("COMPLETED"),
            "{scheme}: {:?}",
            states[0]
        );
        assert_eq!(
            states[0].result,
            json!({"echo": {"over": scheme}, "attempt": 1})
        );
        assert_eq!(
            states[1].status.as_deref(),
            Some("COMPLETED"),
            "{scheme}: {:?}",
            states[1]
        );
        assert_eq!(states[1].result, json!({"ok": true, "attempt": 2}));

        assert!(
            bridge.terminate(),
            "{scheme}: the bridge stops cleanly on SIGTERM"
        );
        assert!(
            mirror.terminate(),
            "{scheme}: the mirror stops cleanly on SIGTERM"
        );
    }
}

#[test]
fn a_mirror_without_client_certificates_or_a_transport_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args([
            "bridge",
            "rrq",
            "--mirror",
            "--listen",
            "127.0.0.1:0",
            "--runner",
            "127.0.0.1:9",
            "--ca",
            "x",
            "--cert",
            "y",
            "--key",
            "z",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("quic://HOST:PORT or tcp://HOST:PORT"),
        "{stderr}"
    );
    let missing_ca = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args([
            "bridge",
            "rrq",
            "--mirror",
            "--listen",
            "quic://127.0.0.1:0",
            "--runner",
            "127.0.0.1:9",
            "--cert",
            "y",
            "--key",
            "z",
        ])
        .output()
        .unwrap();
    assert_eq!(
        missing_ca.status.code(),
        Some(2),
        "mutual TLS is not optional: --ca is required"
    );
}
