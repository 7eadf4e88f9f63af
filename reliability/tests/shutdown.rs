//! Graceful shutdown under load, many times over, on both transports: every call a server
//! accepted is answered, even when the server's process ends the moment `shutdown`
//! returns (its runtime is dropped right after, as `taskwire serve` exits).
//!
//! Each round starts a server in a runtime of its own, loads it from four connections with
//! eight calls in flight on each (handlers take 0–14 ms), shuts it down after 10–59 ms,
//! drops its runtime, and then compares the calls whose handler ran with the answers the
//! clients received. The figures go to `target/reliability/shutdown.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use taskwire_proto::session::v1::{Ping, Pong};
use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
use taskwire_reliability::fixture::Pki;
use taskwire_rpc::{CallError, Router, StatusCode};
use taskwire_tcp::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};

/// Rounds per transport.
const ROUNDS: u64 = 120;
const CONNECTIONS: usize = 4;
const CALLS_IN_FLIGHT: usize = 8;

#[derive(Clone, Copy)]
enum Transport {
    Tcp,
    Quic,
}

/// What one round, or all of them, counted.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Calls whose handler ran: accepted by the server.
    accepted: u64,
    /// Answers the clients received.
    answered: u64,
    /// Calls refused as the server drained (`UNAVAILABLE`, or a refused connection).
    refused: u64,
    /// Calls that failed otherwise: never sent, or on a connection already closed.
    failed: u64,
}

/// Handlers that count themselves and take `nonce % 15` ms.
fn router(accepted: Arc<AtomicU64>) -> Router {
    let mut router = Router::new();
    router.unary(move |_ctx, ping: Ping| {
        let accepted = Arc::clone(&accepted);
        async move {
            accepted.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(ping.nonce % 15)).await;
            Ok(Pong {
                nonce: ping.nonce,
                sent_at: None,
            })
        }
    });
    router
}

/// A server in a thread and runtime of its own, until told to shut down; the runtime is
/// dropped the moment `shutdown` returns.
fn spawn_server(
    transport: Transport,
    pki: &Pki,
    accepted: Arc<AtomicU64>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tls = Arc::clone(&pki.server);
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
            match transport {
                Transport::Tcp => {
                    let server = TcpServer::bind(TcpServerConfig::new(loopback, tls))
                        .await
                        .unwrap()
                        .serve(router(accepted));
                    addr_tx.send(server.local_addr()).unwrap();
                    let _ = stop_rx.await;
                    assert!(server.shutdown().await, "calls drained in time");
                }
                Transport::Quic => {
                    let server = QuicServer::new(ServerConfig::new(loopback, tls))
                        .unwrap()
                        .serve(router(accepted));
                    addr_tx.send(server.local_addr()).unwrap();
                    let _ = stop_rx.await;
                    assert!(server.shutdown().await.drained, "calls drained in time");
                }
            }
        });
        // The runtime, and every task still in it, goes here: as if the process exited.
        drop(runtime);
    });
    (addr_rx.recv().unwrap(), stop_tx, thread)
}

/// Makes calls on one connection until told to stop or the connection is gone.
async fn load<F, Fut>(call: F, stop: Arc<AtomicBool>, first_nonce: u64) -> Tally
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<Pong, CallError>>,
{
    let mut tally = Tally::default();
    let mut nonce = first_nonce;
    while !stop.load(Ordering::Relaxed) {
        nonce += 7;
        match call(nonce).await {
            Ok(pong) => {
                assert_eq!(pong.nonce, nonce, "the answer to this call");
                tally.answered += 1;
            }
            Err(CallError::Status(status)) if status.code() == StatusCode::Unavailable => {
                tally.refused += 1;
                return tally;
            }
            Err(CallError::Unavailable(_) | CallError::Refused { .. }) => {
                tally.refused += 1;
                return tally;
            }
            Err(_) => {
                tally.failed += 1;
                return tally;
            }
        }
    }
    tally
}

async fn round(transport: Transport, pki: &Pki, seed: u64) -> Tally {
    let accepted = Arc::new(AtomicU64::new(0));
    let (addr, stop_server, server) = spawn_server(transport, pki, Arc::clone(&accepted));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for c in 0..CONNECTIONS {
        let first = (seed * 1_000 + c as u64) * 1_000_000;
        match transport {
            Transport::Tcp => {
                let config = TcpClientConfig::new(addr, "localhost", Arc::clone(&pki.client));
                let connection = TcpClient::new(config).connect().await.unwrap();
                for w in 0..CALLS_IN_FLIGHT {
                    let (connection, stop) = (connection.clone(), Arc::clone(&stop));
                    workers.push(tokio::spawn(async move {
                        let call = |nonce| {
                            let connection = connection.clone();
                            async move {
                                connection
                                    .call(Ping {
                                        nonce,
                                        sent_at: None,
                                    })
                                    .await
                            }
                        };
                        load(call, stop, first + w as u64 * 10_000).await
                    }));
                }
            }
            Transport::Quic => {
                let client = QuicClient::new(ClientConfig::new(
                    addr,
                    "localhost",
                    Arc::clone(&pki.client),
                ))
                .unwrap();
                let connection = client.connect().await.unwrap();
                for w in 0..CALLS_IN_FLIGHT {
                    let (connection, stop) = (connection.clone(), Arc::clone(&stop));
                    workers.push(tokio::spawn(async move {
                        let call = |nonce| {
                            let connection = connection.clone();
                            async move {
                                connection
                                    .call(Ping {
                                        nonce,
                                        sent_at: None,
                                    })
                                    .await
                            }
                        };
                        load(call, stop, first + w as u64 * 10_000).await
                    }));
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(10 + seed * 7 % 50)).await;
    let _ = stop_server.send(());
    tokio::task::spawn_blocking(move || server.join().expect("the server thread"))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally {
        accepted: accepted.load(Ordering::Relaxed),
        ..Tally::default()
    };
    for worker in workers {
        let t = tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .expect("a client call neither answered nor failed")
            .unwrap();
        tally.answered += t.answered;
        tally.refused += t.refused;
        tally.failed += t.failed;
    }
    tally
}

async fn rounds(transport: Transport, name: &str) -> String {
    let pki = Pki::generate();
    let started = Instant::now();
    let mut total = Tally::default();
    for seed in 0..ROUNDS {
        let tally = round(transport, &pki, seed).await;
        assert_eq!(
            tally.answered, tally.accepted,
            "{name} round {seed}: {} calls were accepted, {} answered: {tally:?}",
            tally.accepted, tally.answered
        );
        total.accepted += tally.accepted;
        total.answered += tally.answered;
        total.refused += tally.refused;
        total.failed += tally.failed;
    }
    format!(
        "| {name} | {ROUNDS} | {} | {} | {} | {} | {:.1} s |",
        total.accepted,
        total.answered,
        total.accepted - total.answered,
        total.refused + total.failed,
        started.elapsed().as_secs_f64()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_call_is_answered_through_hundreds_of_shutdowns_under_load() {
    let tcp = rounds(Transport::Tcp, "TCP+TLS").await;
    let quic = rounds(Transport::Quic, "QUIC").await;
    let table = format!(
        "| transport | rounds | calls accepted | answered | lost | calls refused or failed unaccepted |  time |\n|---|---|---|---|---|---|---|\n{tcp}\n{quic}\n"
    );
    #[allow(clippy::print_stdout)] // the table is the report, shown with --nocapture
    {
        println!("{table}");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("shutdown.md"), table);
}

/// Answers still queued when the last call ends (their client reads slowly, so the socket
/// is full) are written before `shutdown` returns: a process that exits then loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_queued_behind_a_slow_reader_are_delivered_before_shutdown_returns() {
    use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};
    use taskwire_proto::WireMessage as _;
    use taskwire_proto::instance::v1::{Checkpoint, GetCheckpointRequest, GetCheckpointResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const STATE: usize = 8 << 20;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut router = Router::new();
            router.unary(|_ctx, _request: GetCheckpointRequest| async move {
                Ok(GetCheckpointResponse {
                    checkpoint: Some(Checkpoint {
                        summary: None,
                        state: vec![7u8; STATE].into(),
                    }),
                })
            });
            let config = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse().unwrap());
            let server = TcpServer::bind(config).await.unwrap().serve(router);
            addr_tx.send(server.local_addr()).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
        drop(runtime);
    });
    let addr = addr_rx.recv().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut wire = bytes::BytesMut::new();
    let mut codec = taskwire_codec::Builder::new().new_binary_codec();
    let hello = taskwire_rpc::session::ClientSession::default()
        .hello(taskwire_proto::session::v1::Codec::Protobuf);
    codec
        .encode(taskwire_codec::Frame::new(hello), &mut wire)
        .unwrap();
    for stream_id in [1, 3] {
        codec
            .encode(
                taskwire_codec::Frame::new(GetCheckpointRequest::default())
                    .with_stream_id(stream_id)
                    .end_stream(),
                &mut wire,
            )
            .unwrap();
    }
    stream.write_all(&wire).await.unwrap();
    // The handlers answer at once; 16 MiB of answers wait behind a socket nobody reads.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection")
        .expect("a clean close");
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();

    let mut buffer = bytes::BytesMut::from(&received[..]);
    let mut decoder = taskwire_codec::Builder::new()
        .max_frame_length(u32::MAX)
        .new_binary_codec();
    let mut answered = Vec::new();
    while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
        if frame.type_id == GetCheckpointResponse::TYPE_ID {
            assert_eq!(frame.body.len(), STATE + 10, "a whole answer");
            answered.push(frame.stream_id);
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [1, 3], "both answers arrived whole");
    assert!(buffer.is_empty(), "no frame was cut short");
}
