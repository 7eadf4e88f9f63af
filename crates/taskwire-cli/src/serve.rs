//! `taskwire serve`: the reference server over QUIC, and over TCP+TLS when asked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use taskwire_quic::{QuicServer, ServerConfig};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_tcp::{TcpServer, TcpServerConfig};
use taskwire_tls::ReloadableCertResolver;

use crate::error::{CliError, print_line};
use crate::tls_setup::server_tls;

/// Serve the in-memory reference server (every conversation) until Ctrl-C.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  # Development: certificates generated in memory; prints the pin for `taskwire call`
  taskwire serve

  # Production-like: server certificate from files, mutual TLS with client certificates
  taskwire serve --cert server.pem --key server.key.pem --ca ca.pem --tcp 127.0.0.1:7701

Logs go to stderr through tracing; set RUST_LOG (e.g. RUST_LOG=debug) for more.")]
pub(crate) struct ServeArgs {
    /// UDP address for QUIC.
    #[arg(long, default_value = "127.0.0.1:7700")]
    quic: SocketAddr,
    /// TCP address for taskwire over TCP+TLS; without it, QUIC only.
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// Server certificate chain (PEM). Without it, development certificates are generated
    /// in memory for localhost.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates. Giving one turns mutual TLS on: every
    /// client needs a certificate, and its tenant comes from it. Without one, tenants are
    /// taken from the Hello, which proves nothing (development only).
    #[arg(long)]
    ca: Option<PathBuf>,
}

pub(crate) async fn run(args: ServeArgs) -> Result<(), CliError> {
    let cert = args.cert.clone().zip(args.key.clone());
    let tls = server_tls(cert.as_ref(), args.ca.as_ref())?;
    let tenants = if tls.mutual {
        TenantSource::Certificate
    } else {
        TenantSource::ClaimedInHello
    };
    let reference = ReferenceServer::new(ReferenceConfig::default().tenants(tenants));

    let quic = QuicServer::new(ServerConfig::new(args.quic, tls.config.clone()))
        .map_err(|e| CliError::msg(format!("--quic {}: {e}", args.quic)))?
        .serve(reference.router());
    let tcp = match args.tcp {
        Some(addr) => Some(
            TcpServer::bind(TcpServerConfig::new(addr, tls.config.clone()))
                .await
                .map_err(|e| CliError::msg(format!("--tcp {addr}: {e}")))?
                .serve(reference.router()),
        ),
        None => None,
    };

    for note in &tls.notes {
        print_line(format_args!("{note}"))?;
    }
    print_line(format_args!(
        "server key pin: {}   (taskwire call --pin ...)",
        hex::encode(tls.pin)
    ))?;
    if tls.mutual {
        print_line(format_args!(
            "mutual TLS: on; each client's tenant comes from its certificate"
        ))?;
    } else {
        print_line(format_args!(
            "mutual TLS: off (no --ca); tenants are taken from the Hello, which proves nothing"
        ))?;
    }
    let tcp_addr = tcp.as_ref().map(|t| t.local_addr().to_string());
    print_line(format_args!(
        "LISTENING quic={} tcp={}",
        quic.local_addr(),
        tcp_addr.as_deref().unwrap_or("-")
    ))?;
    tracing::info!(quic = %quic.local_addr(), tcp = ?tcp_addr, mutual_tls = tls.mutual, "serving");

    if let (Some(resolver), Some((cert, key))) = (tls.reload.clone(), cert) {
        reload_on_hangup(resolver, cert, key);
    }
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| CliError::msg(format!("waiting for Ctrl-C: {e}")))?;
    tracing::info!("shutting down: draining calls");
    // Both at once: each sends its GoAways and drains, and each returns once its accepted
    // calls are answered, so the process may exit then.
    let tcp_drained = async {
        match tcp {
            Some(tcp) => Some(tcp.shutdown().await),
            None => None,
        }
    };
    let (report, tcp_drained) = tokio::join!(quic.shutdown(), tcp_drained);
    tracing::info!(?report, ?tcp_drained, "stopped");
    Ok(())
}

/// Reloads the server certificate from its files on each SIGHUP. A pair that does not
/// load (missing file, key not matching) is logged and the current one keeps serving.
#[cfg(unix)]
fn reload_on_hangup(resolver: Arc<ReloadableCertResolver>, cert: PathBuf, key: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; certificates will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match resolver.reload_from_files(&cert, &key) {
                Ok(()) => tracing::info!(
                    pin = %hex::encode(resolver.spki_sha256()),
                    "reloaded the server certificate"
                ),
                Err(error) => tracing::warn!(%error, "kept the current server certificate"),
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_hangup(_: Arc<ReloadableCertResolver>, _: PathBuf, _: PathBuf) {}
