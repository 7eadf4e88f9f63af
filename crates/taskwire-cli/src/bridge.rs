//! `taskwire bridge rrq`: RRQ's jobs carried between machines over QUIC or TCP with
//! mutual TLS.
//!
//! RRQ's orchestrator talks to its runners in plaintext, and RRQ's runners listen on
//! loopback only. The two modes put taskwire's authenticated transports in between:
//!
//! ```text
//! orchestrator ──RRQ──▶ bridge rrq ══QUIC/TCP, mTLS══▶ bridge rrq --mirror ──RRQ──▶ rrq-runner
//!  (machine A, loopback)                                   (machine B, loopback)
//! ```
//!
//! The first listens on loopback as an RRQ runner and relays each job to a taskwire runner
//! endpoint; the mirror is such an endpoint, relaying each job to a local RRQ runner. Both
//! are `taskwire_rpc::runner::relay_router` over the matching channel: a job is sent once,
//! and a lost connection ends its attempt with an error that RRQ retries, never with a
//! second run by the bridge.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use taskwire_quic::{ClientConfig, QuicClient, QuicServer, ServerConfig};
use taskwire_rpc::runner::relay_router;
use taskwire_rrq::{ClientConfig as RrqClientConfig, RrqClient, RrqRunner, RunnerConfig};
use taskwire_tcp::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use taskwire_tls::{CaBundle, ClientConfigBuilder, Credentials};

use crate::error::{CliError, print_line};
use crate::tls_setup::server_tls;

const BRIDGE_HELP: &str = "\
Examples:
  # Certificates: one CA, a server certificate for the runners' machine, a client
  # certificate for the orchestrator's.
  taskwire cert ca --out certs
  taskwire cert server --ca certs --out certs --dns runners.internal --ip 127.0.0.1
  taskwire cert client --ca certs --out certs --tenant jobs --id orchestrator-1

  # On the runners' machine: RRQ's runner on loopback, and the mirror in front of it.
  rrq-runner --settings app.runner.settings --tcp-socket 127.0.0.1:9001 &
  taskwire bridge rrq --mirror --listen quic://0.0.0.0:7443 --runner 127.0.0.1:9001 \\
      --cert certs/server.pem --key certs/server.key.pem --ca certs/ca.pem

  # On the orchestrator's machine: the bridge where rrq.toml expects its runner
  # ([rrq.runners.python] tcp_port = 9000), then RRQ's orchestrator.
  taskwire bridge rrq --listen 127.0.0.1:9000 --to quic://runners.internal:7443 \\
      --ca certs/ca.pem --cert certs/client.pem --key certs/client.key.pem
  rrq worker run --config rrq.toml --runner-mode external

  # Where UDP cannot go, the same over TCP: tcp:// on both sides.

Logs go to stderr through tracing; set RUST_LOG (e.g. RUST_LOG=debug) for more.
Ctrl-C or SIGTERM stops a bridge after the jobs in flight are answered.";

/// `taskwire bridge`.
#[derive(clap::Args, Debug)]
pub(crate) struct BridgeArgs {
    #[command(subcommand)]
    dialect: Dialect,
}

#[derive(clap::Subcommand, Debug)]
enum Dialect {
    /// Carry RRQ's runner protocol over QUIC or TCP with mutual TLS.
    Rrq(RrqArgs),
}

/// `taskwire bridge rrq`.
#[derive(clap::Args, Debug)]
#[command(after_help = BRIDGE_HELP)]
struct RrqArgs {
    /// Be the runners' side: accept taskwire runner calls on --listen (quic://ADDR or
    /// tcp://ADDR) and hand each job to the RRQ runner at --runner.
    #[arg(long, requires = "runner", conflicts_with = "to")]
    mirror: bool,
    /// Where to listen: a loopback ADDR for RRQ's orchestrator, or with --mirror a
    /// quic://ADDR or tcp://ADDR for remote bridges.
    #[arg(long, value_name = "ADDR|URL")]
    listen: String,
    /// The remote taskwire runner endpoint (a mirror): quic://HOST:PORT or tcp://HOST:PORT.
    #[arg(long, value_name = "URL", required_unless_present = "mirror")]
    to: Option<String>,
    /// With --mirror: the local RRQ runner's address (`rrq-runner --tcp-socket`).
    #[arg(long, value_name = "ADDR")]
    runner: Option<SocketAddr>,
    /// CA (PEM): the one that signed the remote endpoint's certificate, or with --mirror
    /// the one that signs the connecting bridges' client certificates.
    #[arg(long)]
    ca: PathBuf,
    /// Certificate (PEM): a client certificate, or with --mirror the server's.
    #[arg(long)]
    cert: PathBuf,
    /// Private key (PEM) of --cert.
    #[arg(long)]
    key: PathBuf,
    /// The name the remote endpoint's certificate must carry. Default: the host of --to.
    #[arg(long)]
    server_name: Option<String>,
}

/// A transport and an address, from `quic://ADDR` or `tcp://ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Endpoint {
    Quic(String),
    Tcp(String),
}

impl Endpoint {
    fn parse(url: &str, flag: &str) -> Result<Endpoint, CliError> {
        if let Some(rest) = url.strip_prefix("quic://") {
            Ok(Endpoint::Quic(rest.to_owned()))
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            Ok(Endpoint::Tcp(rest.to_owned()))
        } else {
            Err(CliError::msg(format!(
                "{flag} {url:?}: expected quic://HOST:PORT or tcp://HOST:PORT"
            )))
        }
    }

    fn host_port(&self) -> &str {
        match self {
            Endpoint::Quic(hp) | Endpoint::Tcp(hp) => hp,
        }
    }

    /// The address, resolving a host name.
    async fn resolve(&self, flag: &str) -> Result<SocketAddr, CliError> {
        let host_port = self.host_port();
        tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| CliError::msg(format!("{flag} {host_port}: {e}")))?
            .next()
            .ok_or_else(|| CliError::msg(format!("{flag} {host_port}: no address")))
    }
}

pub(crate) async fn run(args: BridgeArgs) -> Result<(), CliError> {
    match args.dialect {
        Dialect::Rrq(args) if args.mirror => mirror(args).await,
        Dialect::Rrq(args) => forward(args).await,
    }
}

/// The orchestrator's side: an RRQ runner on loopback relaying to `--to`.
async fn forward(args: RrqArgs) -> Result<(), CliError> {
    let to = Endpoint::parse(args.to.as_deref().unwrap_or_default(), "--to")?;
    let listen: SocketAddr = args
        .listen
        .parse()
        .map_err(|e| CliError::msg(format!("--listen {:?}: {e}", args.listen)))?;
    let remote = to.resolve("--to").await?;
    let server_name = match &args.server_name {
        Some(name) => name.clone(),
        None => to
            .host_port()
            .rsplit_once(':')
            .map_or(to.host_port(), |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned(),
    };
    let tls = Arc::new(
        ClientConfigBuilder::new(
            CaBundle::from_pem_file(&args.ca)
                .map_err(|e| CliError::msg(format!("--ca {}: {e}", args.ca.display())))?,
        )
        .client_credentials(
            Credentials::from_pem_files(&args.cert, &args.key)
                .map_err(|e| CliError::msg(format!("--cert {}: {e}", args.cert.display())))?,
        )
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .map_err(|e| CliError::msg(format!("client TLS: {e}")))?,
    );
    let runner = RrqRunner::bind(RunnerConfig::new(listen))
        .await
        .map_err(|e| CliError::msg(format!("--listen {listen}: {e}")))?;
    // Connect before the first job: a handshake that needs retransmissions can take
    // longer than a short job's whole timeout. A remote that is not up yet is dialled
    // again for each job.
    let router = match &to {
        Endpoint::Quic(_) => {
            let mut config = ClientConfig::new(remote, server_name, tls);
            config.session.name = "taskwire-bridge-rrq".into();
            let client =
                QuicClient::new(config).map_err(|e| CliError::msg(format!("QUIC client: {e}")))?;
            if let Err(error) = client.connection().await {
                tracing::warn!(%error, %remote, "the remote endpoint is not reachable yet");
            }
            relay_router(Arc::new(client))
        }
        Endpoint::Tcp(_) => {
            let mut config = TcpClientConfig::new(remote, server_name, tls);
            config.session.name = "taskwire-bridge-rrq".into();
            let client = TcpClient::new(config);
            if let Err(error) = client.connection().await {
                tracing::warn!(%error, %remote, "the remote endpoint is not reachable yet");
            }
            relay_router(Arc::new(client))
        }
    };
    let runner = runner.serve(router);
    print_line(format_args!(
        "LISTENING rrq={} to={}",
        runner.local_addr(),
        args.to.as_deref().unwrap_or_default()
    ))?;
    tracing::info!(rrq = %runner.local_addr(), to = ?to, "bridging RRQ jobs");
    shutdown_signal().await?;
    tracing::info!("shutting down: answering the jobs in flight");
    runner.shutdown().await;
    Ok(())
}

/// The runners' side: a taskwire runner endpoint relaying to a local RRQ runner.
async fn mirror(args: RrqArgs) -> Result<(), CliError> {
    let listen = Endpoint::parse(&args.listen, "--listen")?;
    let addr = listen.resolve("--listen").await?;
    let runner = args
        .runner
        .ok_or_else(|| CliError::msg("--mirror needs --runner"))?;
    let tls = server_tls(
        Some(&(args.cert.clone(), args.key.clone())),
        Some(&args.ca),
        &[],
    )?;
    let router = relay_router(Arc::new(RrqClient::new(RrqClientConfig::new(runner))));
    let (local, stop): (SocketAddr, Stop) = match listen {
        Endpoint::Quic(_) => {
            let server = QuicServer::new(ServerConfig::new(addr, tls.config))
                .map_err(|e| CliError::msg(format!("--listen {addr}: {e}")))?
                .serve(router);
            (server.local_addr(), Stop::Quic(server))
        }
        Endpoint::Tcp(_) => {
            let server = TcpServer::bind(TcpServerConfig::new(addr, tls.config))
                .await
                .map_err(|e| CliError::msg(format!("--listen {addr}: {e}")))?
                .serve(router);
            (server.local_addr(), Stop::Tcp(server))
        }
    };
    let scheme = match stop {
        Stop::Quic(_) => "quic",
        Stop::Tcp(_) => "tcp",
    };
    print_line(format_args!("LISTENING {scheme}={local} runner={runner}"))?;
    tracing::info!(%local, %runner, "bridging taskwire runner calls to an RRQ runner");
    shutdown_signal().await?;
    tracing::info!("shutting down: answering the calls in flight");
    match stop {
        Stop::Quic(server) => {
            server.shutdown().await;
        }
        Stop::Tcp(server) => {
            server.shutdown().await;
        }
    }
    Ok(())
}

enum Stop {
    Quic(taskwire_quic::ServerHandle),
    Tcp(taskwire_tcp::TcpServerHandle),
}

/// Ctrl-C, or SIGTERM where there is one.
async fn shutdown_signal() -> Result<(), CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| CliError::msg(format!("listening for SIGTERM: {e}")))?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => {
                interrupted.map_err(|e| CliError::msg(format!("waiting for Ctrl-C: {e}")))
            }
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| CliError::msg(format!("waiting for Ctrl-C: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn endpoints_name_their_transport() {
        assert_eq!(
            Endpoint::parse("quic://h:1", "--to").unwrap(),
            Endpoint::Quic("h:1".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:2", "--to").unwrap(),
            Endpoint::Tcp("[::1]:2".into())
        );
        let error = Endpoint::parse("h:1", "--to").unwrap_err();
        assert!(
            error.line().contains("quic://HOST:PORT"),
            "{}",
            error.line()
        );
    }
}
