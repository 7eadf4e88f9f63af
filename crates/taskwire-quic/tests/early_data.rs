//! 0-RTT: a resumed connection sends its Hello and replay-safe calls as early data; a
//! call that is not replay-safe never runs from early data, and early data replayed by an
//! on-path attacker runs nothing a second time; rejected early data falls back to a full
//! handshake without the caller noticing (`docs/protocol.md` §13, `TW-QUIC-8`).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Pki, frame_bytes, localhost, pki, read_raw_frame, send_hello, start, within};
use prost::Message as _;
use taskwire_proto::WireMessage;
use taskwire_proto::instance::v1::{
    CheckpointRequest, CheckpointResponse, GetCheckpointRequest, GetCheckpointResponse,
};
use taskwire_proto::session::v1::{Negotiated, Status as StatusMessage};
use taskwire_quic::relay::{Relay, RelayConfig};
use taskwire_quic::{EarlyData, Limits, ServerConfig};
use taskwire_rpc::{Router, StatusCode};
use tokio::net::UdpSocket;

/// How many times each rpc ran, and how many of those runs came from early data.
#[derive(Default)]
struct Runs {
    checkpoint: AtomicUsize,
    get_checkpoint: AtomicUsize,
    from_early_data: AtomicUsize,
}

/// `Checkpoint` (a write, not replay-safe) and `GetCheckpoint` (a read, replay-safe),
/// each counting its runs.
fn counting_router(runs: &Arc<Runs>) -> Router {
    let mut router = Router::new();
    let counted = Arc::clone(runs);
    router.unary(move |ctx, _: CheckpointRequest| {
        counted.checkpoint.fetch_add(1, Ordering::SeqCst);
        if ctx.early_data {
            counted.from_early_data.fetch_add(1, Ordering::SeqCst);
        }
        async { Ok(CheckpointResponse::default()) }
    });
    let counted = Arc::clone(runs);
    router.unary(move |ctx, _: GetCheckpointRequest| {
        counted.get_checkpoint.fetch_add(1, Ordering::SeqCst);
        if ctx.early_data {
            counted.from_early_data.fetch_add(1, Ordering::SeqCst);
        }
        async { Ok(GetCheckpointResponse::default()) }
    });
    router
}

/// A relay that delays every datagram by 20 ms, in order, in front of `server`. On
/// loopback a handshake completes in well under a millisecond, and a server that has
/// completed it no longer counts what it reads as early data (it cannot be a replay): a
/// test of early data needs the round trip a real network has.
async fn slow_path(server: SocketAddr) -> Relay {
    Relay::start(
        server,
        RelayConfig {
            delay: Duration::from_millis(20),
            ..RelayConfig::default()
        },
    )
    .await
    .unwrap()
}

/// Makes one full connection with `client`, waiting long enough for the session tickets
/// the server sends after the handshake: the next connection can resume.
async fn connect_for_a_ticket(client: &taskwire_quic::QuicClient) {
    let connection = within(10, client.connect()).await.unwrap();
    assert_eq!(connection.early_data(), EarlyData::NotSent);
    within(10, connection.ping()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.close();
}

#[tokio::test]
async fn a_resumed_connection_sends_replay_safe_calls_as_early_data_and_holds_the_rest() {
    let pki = pki();
    let runs = Arc::new(Runs::default());
    let server = start(&pki, Limits::default(), counting_router(&runs));
    connect_for_a_ticket(&common::client(&pki, server.local_addr())).await;

    let slow = slow_path(server.local_addr()).await;
    let client = common::client(&pki, slow.local_addr());
    let (connection, negotiation) = within(10, client.connect_pipelined()).await.unwrap();
    assert_eq!(connection.early_data(), EarlyData::Pending);
    within(10, connection.call(GetCheckpointRequest::default()))
        .await
        .unwrap();
    assert_eq!(
        runs.from_early_data.load(Ordering::SeqCst),
        1,
        "the replay-safe read ran from early data"
    );
    within(10, connection.call(CheckpointRequest::default()))
        .await
        .unwrap();
    within(10, negotiation).await.unwrap();
    assert_eq!(connection.early_data(), EarlyData::Accepted);
    assert_eq!(runs.checkpoint.load(Ordering::SeqCst), 1);
    assert_eq!(
        runs.from_early_data.load(Ordering::SeqCst),
        1,
        "the write waited for the handshake"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn early_data_off_sends_none_on_a_resumed_connection() {
    let pki = pki();
    let runs = Arc::new(Runs::default());
    let server = start(&pki, Limits::default(), counting_router(&runs));
    let mut limits = Limits::default();
    limits.early_data(false);
    let client = common::client_with(&pki, server.local_addr(), limits);
    connect_for_a_ticket(&client).await;
    let connection = within(10, client.connect()).await.unwrap();
    assert_eq!(connection.early_data(), EarlyData::NotSent);
    within(10, connection.call(GetCheckpointRequest::default()))
        .await
        .unwrap();
    assert_eq!(runs.from_early_data.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn rejected_early_data_falls_back_to_a_full_handshake_unseen_by_the_caller() {
    let pki = pki();
    let runs = Arc::new(Runs::default());
    let first = start(&pki, Limits::default(), counting_router(&runs));
    let addr = first.local_addr();
    let client = common::client(&pki, addr);
    connect_for_a_ticket(&client).await;
    first.abort();
    // Time for the endpoint's task to end and free the port.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The same address and certificate, but a server that never issued the client's
    // ticket (its session store is new), as after a restart: it rejects the early data.
    let mut restarted_tls = (*pki.server).clone();
    restarted_tls.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
    let config = ServerConfig::new(addr, Arc::new(restarted_tls));
    let second = taskwire_quic::QuicServer::new(config)
        .unwrap()
        .serve(counting_router(&runs));

    let slow = slow_path(addr).await;
    let client = common::client(&pki, slow.local_addr());
    let (connection, negotiation) = within(10, client.connect_pipelined()).await.unwrap();
    assert_eq!(connection.early_data(), EarlyData::Pending);
    // Sent as early data, lost with it, and sent again after the handshake.
    within(10, connection.call(GetCheckpointRequest::default()))
        .await
        .expect("the call succeeds despite the rejected early data");
    within(10, negotiation)
        .await
        .expect("the Hello was sent again");
    assert_eq!(connection.early_data(), EarlyData::Rejected);
    within(10, connection.call(CheckpointRequest::default()))
        .await
        .unwrap();
    within(10, connection.ping()).await.unwrap();
    assert_eq!(runs.get_checkpoint.load(Ordering::SeqCst), 1, "run once");
    assert_eq!(runs.checkpoint.load(Ordering::SeqCst), 1);
    assert_eq!(runs.from_early_data.load(Ordering::SeqCst), 0);
    second.shutdown().await;
}

#[tokio::test]
async fn a_call_the_server_does_not_hold_replay_safe_is_sent_again_after_the_handshake() {
    let pki = pki();
    let ran = Arc::new(AtomicUsize::new(0));
    let from_early_data = Arc::new(AtomicUsize::new(0));
    // Routed without its schema's mark (as an older or stricter server might): the server
    // refuses it as early data, the client sends it again once the handshake is done.
    let mut router = Router::new();
    let (count, early) = (Arc::clone(&ran), Arc::clone(&from_early_data));
    router.route_unary(move |ctx, _: GetCheckpointRequest| {
        count.fetch_add(1, Ordering::SeqCst);
        if ctx.early_data {
            early.fetch_add(1, Ordering::SeqCst);
        }
        async { Ok(GetCheckpointResponse::default()) }
    });
    assert!(!router.is_replay_safe(GetCheckpointRequest::TYPE_ID));
    let server = start(&pki, Limits::default(), router);
    connect_for_a_ticket(&common::client(&pki, server.local_addr())).await;

    let slow = slow_path(server.local_addr()).await;
    let client = common::client(&pki, slow.local_addr());
    let (connection, _negotiation) = within(10, client.connect_pipelined()).await.unwrap();
    assert_eq!(connection.early_data(), EarlyData::Pending);
    within(10, connection.call(GetCheckpointRequest::default()))
        .await
        .expect("answered on the second try");
    assert_eq!(connection.early_data(), EarlyData::Accepted);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "ran once, after the handshake"
    );
    assert_eq!(from_early_data.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

/// A UDP relay that forwards one client's datagrams to the server and back, keeping a
/// copy of each datagram the client sent, as an on-path attacker would.
struct Recorder {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(server: SocketAddr) -> Recorder {
        let front = UdpSocket::bind(localhost()).await.unwrap();
        let back = UdpSocket::bind(localhost()).await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&sent);
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        record.lock().unwrap().push(up[..n].to_vec());
                        let _ = back.send(&up[..n]).await;
                    }
                    Ok(n) = back.recv(&mut down) => {
                        if let Some(client) = client {
                            let _ = front.send_to(&down[..n], client).await;
                        }
                    }
                }
            }
        });
        Recorder { addr, sent, task }
    }

    /// Sends every recorded datagram to `server` again, in order, from a new address,
    /// and counts the datagrams the server answers with in the next half second.
    async fn replay(&self, server: SocketAddr) -> usize {
        let attacker = UdpSocket::bind(localhost()).await.unwrap();
        attacker.connect(server).await.unwrap();
        let recorded = self.sent.lock().unwrap().clone();
        assert!(!recorded.is_empty(), "nothing was recorded");
        for datagram in &recorded {
            attacker.send(datagram).await.unwrap();
        }
        let mut answers = 0;
        let mut buf = vec![0u8; 65_536];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), attacker.recv(&mut buf)).await
        {
            answers += 1;
        }
        answers
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bare quinn client endpoint with the test PKI and early data on: it sends whatever
/// it is told to as early data, as a client that ignores the replay-safe marks would.
fn early_endpoint(pki: &Pki) -> quinn::Endpoint {
    let mut tls = (*pki.client).clone();
    tls.enable_early_data = true;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// A full connection, its session negotiated, kept open long enough for the tickets.
async fn raw_connect_for_a_ticket(endpoint: &quinn::Endpoint, addr: SocketAddr) {
    let connection = within(10, endpoint.connect(addr, "localhost").unwrap())
        .await
        .unwrap();
    let (_send, mut recv) = send_hello(&connection).await;
    let (type_id, _) = within(10, read_raw_frame(&mut recv)).await;
    assert_eq!(type_id, Negotiated::TYPE_ID);
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.close(0u32.into(), b"done");
}

/// Resumes a session through `addr` and sends a Hello and `request` as early data; the
/// answer to the call: its type id and body.
async fn early_call<M: WireMessage>(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    request: M,
) -> (u16, Vec<u8>) {
    let (connection, _accepted) = endpoint
        .connect(addr, "localhost")
        .unwrap()
        .into_0rtt()
        .unwrap_or_else(|_| panic!("the client holds a ticket that allows early data"));
    let (_control, _control_recv) = send_hello(&connection).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame_bytes(request)).await.unwrap();
    send.finish().unwrap();
    let answer = within(10, read_raw_frame(&mut recv)).await;
    // Time for the rest of the handshake to cross the relay before the connection goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.close(0u32.into(), b"done");
    // Until the server has forgotten the connection (three probe timeouts after the
    // close), a replayed Initial would reach it and be dropped as a stray: wait, so that
    // the replay is read as the new connection attempt an attacker means it to be.
    tokio::time::sleep(Duration::from_secs(1)).await;
    answer
}

/// An attack scene: a server counting its runs, a raw early-data client that already
/// holds a ticket from it, and a recording relay in front of it.
struct Scene {
    runs: Arc<Runs>,
    server: taskwire_quic::ServerHandle,
    endpoint: quinn::Endpoint,
    recorder: Recorder,
    _slow: Relay,
}

impl Scene {
    /// The scene around a server with `server_tls`.
    async fn new(pki: &Pki, server_tls: Arc<rustls::ServerConfig>) -> Scene {
        let runs = Arc::new(Runs::default());
        let server = taskwire_quic::QuicServer::new(ServerConfig::new(localhost(), server_tls))
            .unwrap()
            .serve(counting_router(&runs));
        let endpoint = early_endpoint(pki);
        raw_connect_for_a_ticket(&endpoint, server.local_addr()).await;
        // client → recorder → a slow path → server
        let slow = slow_path(server.local_addr()).await;
        let recorder = Recorder::start(slow.local_addr()).await;
        Scene {
            runs,
            server,
            endpoint,
            recorder,
            _slow: slow,
        }
    }

    /// Resumes through the relay with `request` as early data; the answer.
    async fn early_call<M: WireMessage>(&self, request: M) -> (u16, Vec<u8>) {
        early_call(&self.endpoint, self.recorder.addr, request).await
    }

    /// Replays what the relay recorded; the number of datagrams the server answered with.
    async fn replay(&self) -> usize {
        self.recorder.replay(self.server.local_addr()).await
    }
}

#[tokio::test]
async fn a_call_not_replay_safe_in_early_data_is_refused_and_its_replay_runs_nothing() {
    let pki = pki();
    let scene = Scene::new(&pki, Arc::clone(&pki.server)).await;
    let (type_id, body) = scene.early_call(CheckpointRequest::default()).await;
    assert_eq!(type_id, StatusMessage::TYPE_ID);
    let status = StatusMessage::decode(&body[..]).unwrap();
    assert_eq!(status.code, StatusCode::Unavailable as i32, "{status:?}");
    assert!(status.message.contains("early data"), "{}", status.message);
    assert_eq!(scene.runs.checkpoint.load(Ordering::SeqCst), 0, "never ran");

    assert!(
        scene.replay().await > 0,
        "the server read the replayed flight"
    );
    assert_eq!(
        scene.runs.checkpoint.load(Ordering::SeqCst),
        0,
        "not from the replay either"
    );
    scene.server.shutdown().await;
}

#[tokio::test]
async fn replayed_early_data_runs_a_replay_safe_call_only_once() {
    let pki = pki();
    let scene = Scene::new(&pki, Arc::clone(&pki.server)).await;
    let (type_id, _) = scene.early_call(GetCheckpointRequest::default()).await;
    assert_eq!(type_id, GetCheckpointResponse::TYPE_ID);
    assert_eq!(scene.runs.get_checkpoint.load(Ordering::SeqCst), 1);
    assert_eq!(scene.runs.from_early_data.load(Ordering::SeqCst), 1);

    // The ticket was single-use: the replayed ClientHello gets a full handshake, which the
    // attacker cannot finish, and its early data is discarded unread.
    for _ in 0..2 {
        assert!(
            scene.replay().await > 0,
            "the server read the replayed flight"
        );
    }
    assert_eq!(
        scene.runs.get_checkpoint.load(Ordering::SeqCst),
        1,
        "ran once"
    );
    scene.server.shutdown().await;
}

/// A session store whose tickets can be used again: what the single-use rule prevents.
#[derive(Debug)]
struct ReusableTickets(Arc<dyn rustls::server::StoresServerSessions>);

impl rustls::server::StoresServerSessions for ReusableTickets {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }
    fn can_cache(&self) -> bool {
        true
    }
}

/// The control for the test above: with tickets that can be used twice, the same replay
/// does run the call a second time, so the replay reaches the call when the rule is
/// broken.
#[tokio::test]
async fn with_reusable_tickets_the_same_replay_would_run_the_call_again() {
    let pki = pki();
    let mut tls = (*pki.server).clone();
    tls.session_storage = Arc::new(ReusableTickets(
        rustls::server::ServerSessionMemoryCache::new(256),
    ));
    let scene = Scene::new(&pki, Arc::new(tls)).await;
    scene.early_call(GetCheckpointRequest::default()).await;
    assert_eq!(scene.runs.get_checkpoint.load(Ordering::SeqCst), 1);
    scene.replay().await;
    within(5, async {
        while scene.runs.get_checkpoint.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    scene.server.shutdown().await;
}
