//! A seeded, in-process UDP relay that drops, duplicates, reorders and delays datagrams,
//! for testing QUIC under loss where the kernel's netem is not available.
//!
//! The relay listens on one socket; each client address gets its own upstream socket to
//! the target, so the server sees one peer per client. Fault decisions come from one
//! random generator seeded by [`RelayConfig::seed`], so a failing run can be replayed.
//!
//! ```no_run
//! # async fn run(server: std::net::SocketAddr) -> std::io::Result<()> {
//! use taskwire_quic::relay::{Relay, RelayConfig};
//!
//! let relay = Relay::start(server, RelayConfig { seed: 7, loss: 0.05, reorder: 0.25, ..RelayConfig::default() }).await?;
//! // Point clients at relay.local_addr() instead of the server.
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the relay does to each datagram, in each direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelayConfig {
    /// Seed of the fault generator.
    pub seed: u64,
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// Probability of sending a datagram twice.
    pub duplicate: f64,
    /// Probability of holding a datagram back by up to `reorder_delay`, so later ones
    /// overtake it.
    pub reorder: f64,
    /// The most a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Delay added to every datagram. A delay alone keeps the datagrams of each direction
    /// in order.
    pub delay: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            seed: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            delay: Duration::ZERO,
        }
    }
}

/// Counts of what the relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams dropped by `loss` or the blackhole.
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams held back to reorder them.
    pub reordered: AtomicU64,
}

struct State {
    config: RelayConfig,
    rng: Mutex<StdRng>,
    blackhole: AtomicBool,
    stats: RelayStats,
}

/// A running relay. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config", &self.config)
            .finish()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to do with one datagram.
struct Fate {
    copies: u8,
    delay: Duration,
    /// Held back past the others, to be overtaken.
    reordered: bool,
}

impl State {
    fn fate(&self) -> Fate {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if self.blackhole.load(Ordering::Acquire) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Fate {
                copies: 0,
                delay: Duration::ZERO,
                reordered: false,
            };
        }
        let mut rng = self.rng.lock().expect("relay rng");
        if rng.random_bool(self.config.loss.clamp(0.0, 1.0)) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Fate {
                copies: 0,
                delay: Duration::ZERO,
                reordered: false,
            };
        }
        let copies = if rng.random_bool(self.config.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let mut delay = self.config.delay;
        let reordered = rng.random_bool(self.config.reorder.clamp(0.0, 1.0));
        if reordered {
            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
            delay += self
                .config
                .reorder_delay
                .mul_f64(rng.random_range(0.2..1.0));
        }
        Fate {
            copies,
            delay,
            reordered,
        }
    }
}

/// A socket and the queue of datagrams it sends after the configured delay, in the order
/// they came: a delay alone never reorders, as on a real path.
struct Outlet {
    socket: Arc<UdpSocket>,
    delayed: mpsc::UnboundedSender<(Instant, Vec<u8>, SocketAddr, u8)>,
}

impl Outlet {
    fn new(socket: Arc<UdpSocket>) -> Outlet {
        let (delayed, mut queue) = mpsc::unbounded_channel::<(Instant, Vec<u8>, SocketAddr, u8)>();
        let sender = Arc::clone(&socket);
        tokio::spawn(async move {
            while let Some((due, datagram, to, copies)) = queue.recv().await {
                tokio::time::sleep_until(due).await;
                for _ in 0..copies {
                    let _ = sender.send_to(&datagram, to).await;
                }
            }
        });
        Outlet { socket, delayed }
    }
}

fn forward(state: &State, outlet: &Outlet, datagram: Vec<u8>, to: SocketAddr) {
    let fate = state.fate();
    if fate.copies == 0 {
        return;
    }
    if fate.delay.is_zero() {
        for _ in 0..fate.copies {
            let _ = outlet.socket.try_send_to(&datagram, to);
        }
        return;
    }
    if !fate.reordered {
        let due = Instant::now() + fate.delay;
        let _ = outlet.delayed.send((due, datagram, to, fate.copies));
        return;
    }
    let socket = Arc::clone(&outlet.socket);
    tokio::spawn(async move {
        tokio::time::sleep(fate.delay).await;
        for _ in 0..fate.copies {
            let _ = socket.send_to(&datagram, to).await;
        }
    });
}

impl Relay {
    /// Starts a relay on `127.0.0.1` in front of `target`.
    pub async fn start(target: SocketAddr, config: RelayConfig) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let local_addr = front.local_addr()?;
        let state = Arc::new(State {
            config,
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            blackhole: AtomicBool::new(false),
            stats: RelayStats::default(),
        });
        let task_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let back_to_clients = Arc::new(Outlet::new(Arc::clone(&front)));
            let mut upstreams: HashMap<SocketAddr, Arc<Outlet>> = HashMap::new();
            let mut buffer = vec![0u8; 65_536];
            loop {
                let Ok((len, client)) = front.recv_from(&mut buffer).await else {
                    return;
                };
                let upstream = match upstreams.get(&client) {
                    Some(upstream) => Arc::clone(upstream),
                    None => {
                        let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        let upstream = Arc::new(Outlet::new(Arc::new(socket)));
                        // Replies from the target go back to this client through the front.
                        let (reply, back, state) = (
                            Arc::clone(&upstream.socket),
                            Arc::clone(&back_to_clients),
                            Arc::clone(&task_state),
                        );
                        tokio::spawn(async move {
                            let mut buffer = vec![0u8; 65_536];
                            while let Ok((len, _)) = reply.recv_from(&mut buffer).await {
                                forward(&state, &back, buffer[..len].to_vec(), client);
                            }
                        });
                        upstreams.insert(client, Arc::clone(&upstream));
                        upstream
                    }
                };
                forward(&task_state, &upstream, buffer[..len].to_vec(), target);
            }
        });
        Ok(Relay {
            local_addr,
            state,
            task,
        })
    }

    /// The address clients should send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Drops every datagram both ways while `on`, like a network partition.
    pub fn set_blackhole(&self, on: bool) {
        self.state.blackhole.store(on, Ordering::Release);
    }

    /// What the relay has done so far.
    pub fn stats(&self) -> &RelayStats {
        &self.state.stats
    }
}
