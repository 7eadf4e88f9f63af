//! Load against the reference server over QUIC: 1,000 connections from 127.0.0.1 (the
//! default per-IP limit) holding 10,000 calls open at once. Every call is answered without
//! an error. The server runs in its own process (`load-server`), so its resident memory is
//! measured alone: idle, with the connections open, and at the peak of the calls. The
//! figures go to `target/reliability/load.md`.
//!
//! `TASKWIRE_LOAD_CONNECTIONS` and `TASKWIRE_LOAD_STREAMS` change the shape (the soak
//! mode runs larger ones).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskwire_proto::instance::v1::{PollSignalsRequest, RegisterInstanceRequest};
use taskwire_quic::{ClientConfig, QuicClient};
use taskwire_tls::{CaBundle, ClientConfigBuilder, Credentials};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in bytes, from /proc.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn a_thousand_connections_hold_ten_thousand_calls_without_an_error() {
    let connections = setting("TASKWIRE_LOAD_CONNECTIONS", 1_000);
    let per_connection = setting("TASKWIRE_LOAD_STREAMS", 10);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_load-server"))
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("load-server starts");
    let pid = server.id();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .expect("LISTENING ADDR")
        .parse()
        .unwrap();
    let tls = ClientConfigBuilder::new(CaBundle::from_pem_file(dir.path().join("ca.pem")).unwrap())
        .client_credentials(
            Credentials::from_pem_files(
                dir.path().join("client.pem"),
                dir.path().join("client.key.pem"),
            )
            .unwrap(),
        )
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .unwrap();
    let tls = Arc::new(tls);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let idle_rss = rss(pid);
    let report = runtime.block_on(async move {
        let started = Instant::now();
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let client = QuicClient::new(ClientConfig::new(addr, "localhost", Arc::clone(&tls))).unwrap();
            let connection = client.connect().await.expect("a connection within the limits");
            clients.push((client, connection));
        }
        let connected = started.elapsed();
        clients[0]
            .1
            .call(RegisterInstanceRequest {
                instance_id: "load".into(),
                image_id: "img".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let connected_rss = rss(pid);

        // Every call waits 4 s for a signal that never comes, so all are open at once.
        let mut calls = Vec::with_capacity(connections * per_connection);
        for (_, connection) in &clients {
            for _ in 0..per_connection {
                let connection = connection.clone();
                calls.push(tokio::spawn(async move {
                    connection
                        .call(PollSignalsRequest {
                            instance_id: "load".into(),
                            max_signals: 0,
                            wait: Some(Duration::from_secs(4).into()),
                        })
                        .await
                }));
            }
        }
        let mut peak_rss = 0;
        let sampling = Instant::now();
        while sampling.elapsed() < Duration::from_millis(3_500) {
            peak_rss = peak_rss.max(rss(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut errors = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(answer) => assert!(answer.signals.is_empty()),
                Err(error) => errors.push(error.to_string()),
            }
        }
        assert!(errors.is_empty(), "{} of the calls failed, first: {}", errors.len(), errors[0]);
        for (client, connection) in &clients {
            connection.close();
            client.close().await;
        }
        let mib = |bytes: usize| bytes as f64 / f64::from(1 << 20);
        let per_connection_kib = connected_rss.saturating_sub(idle_rss) as f64 / 1024.0 / connections as f64;
        let per_call_kib = peak_rss.saturating_sub(connected_rss) as f64 / 1024.0 / (connections * per_connection) as f64;
        // Stated bounds, with room for a noisy machine over the measured ~59 KiB and ~9 KiB:
        // 96 KiB of server memory per idle connection, 32 KiB per open call.
        assert!(per_connection_kib <= 96.0, "{per_connection_kib:.1} KiB per idle connection");
        assert!(per_call_kib <= 32.0, "{per_call_kib:.1} KiB per open call");
        format!(
            "| connections | calls open at once | connect time | server RSS idle | with the connections | per connection | at the peak of the calls | per open call |\n|---|---|---|---|---|---|---|---|\n| {connections} | {} | {:.1} s | {:.1} MiB | {:.1} MiB | {per_connection_kib:.1} KiB | {:.1} MiB | {per_call_kib:.1} KiB |\n",
            connections * per_connection,
            connected.as_secs_f64(),
            mib(idle_rss),
            mib(connected_rss),
            mib(peak_rss),
        )
    });
    drop(server.stdin.take());
    let _ = server.wait();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reliability");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("load.md"), report);
}
