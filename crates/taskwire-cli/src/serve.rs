//! `taskwire serve`: the reference server over QUIC, and over TCP+TLS when asked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use taskwire_quic::{QuicServer, ServerConfig};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_tcp::{TcpServer, TcpServerConfig};
use taskwire_tls::{ClientVerifier, ReloadableCertResolver};

use crate::error::{CliError, print_line};
use crate::tls_setup::{load_client_trust, server_tls};

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
    /// A revocation list (PEM, from `taskwire cert revoke`) of the --ca. Repeatable. The
    /// CA bundle and the lists are read again on SIGHUP, with the server certificate.
    #[arg(long, value_name = "FILE", requires = "ca")]
    crl: Vec<PathBuf>,
    /// Serve without --ca on an address other than loopback. Without client certificates
    /// any client may claim any tenant in its Hello, so this is refused unless asked for.
    #[arg(long)]
    insecure_claimed_tenants: bool,
}

/// Refuses an address off loopback when tenants would come from the Hello.
fn check_claimed_tenants(args: &ServeArgs) -> Result<(), CliError> {
    if args.ca.is_some() || args.insecure_claimed_tenants {
        return Ok(());
    }
    let addresses =
        std::iter::once(("--quic", args.quic)).chain(args.tcp.map(|tcp| ("--tcp", tcp)));
    for (flag, addr) in addresses {
        if !addr.ip().is_loopback() {
            return Err(CliError::msg(format!(
                "{flag} {addr} is not a loopback address, and without --ca any client can claim \
                 any tenant; give --ca (mutual TLS) or, knowingly, --insecure-claimed-tenants"
            )));
        }
    }
    Ok(())
}

pub(crate) async fn run(args: ServeArgs) -> Result<(), CliError> {
    check_claimed_tenants(&args)?;
    let cert = args.cert.clone().zip(args.key.clone());
    let tls = server_tls(cert.as_ref(), args.ca.as_ref(), &args.crl)?;
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
        tracing::warn!(
            "mutual TLS is off (no --ca): clients are not asked for certificates and any \
             client can claim any tenant in its Hello; for development only"
        );
    }
    let tcp_addr = tcp.as_ref().map(|t| t.local_addr().to_string());
    print_line(format_args!(
        "LISTENING quic={} tcp={}",
        quic.local_addr(),
        tcp_addr.as_deref().unwrap_or("-")
    ))?;
    tracing::info!(quic = %quic.local_addr(), tcp = ?tcp_addr, mutual_tls = tls.mutual, "serving");

    reload_on_hangup(Reloads {
        server: tls.reload.clone().zip(cert),
        clients: tls
            .client_verifier
            .clone()
            .zip(args.ca.clone())
            .map(|(verifier, ca)| (verifier, ca, args.crl.clone())),
    });
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

/// What SIGHUP reloads: the server certificate and key, and the client CA bundle with its
/// revocation lists.
struct Reloads {
    server: Option<(Arc<ReloadableCertResolver>, (PathBuf, PathBuf))>,
    clients: Option<(Arc<ClientVerifier>, PathBuf, Vec<PathBuf>)>,
}

impl Reloads {
    fn reload(&self) {
        if let Some((resolver, (cert, key))) = &self.server {
            match resolver.reload_from_files(cert, key) {
                Ok(()) => tracing::info!(
                    pin = %hex::encode(resolver.spki_sha256()),
                    "reloaded the server certificate"
                ),
                Err(error) => tracing::warn!(%error, "kept the current server certificate"),
            }
        }
        if let Some((verifier, ca, crls)) = &self.clients {
            let reloaded = load_client_trust(ca, crls)
                .and_then(|(bundle, lists)| Ok(verifier.reload(bundle, lists)?));
            match reloaded {
                Ok(()) => tracing::info!(
                    generation = verifier.generation(),
                    revocation_lists = verifier.revocation_list_count(),
                    "reloaded the client CA bundle and revocation lists"
                ),
                Err(error) => {
                    tracing::warn!(error = %error.line(), "kept the current client CA bundle and revocation lists");
                }
            }
        }
    }
}

/// Reloads on each SIGHUP. What does not load (a missing file, a key not matching, a list
/// that does not parse) is logged and what is in force keeps serving.
#[cfg(unix)]
fn reload_on_hangup(reloads: Reloads) {
    use tokio::signal::unix::{SignalKind, signal};
    if reloads.server.is_none() && reloads.clients.is_none() {
        return;
    }
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; certificates will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            reloads.reload();
        }
    });
}

#[cfg(not(unix))]
fn reload_on_hangup(_: Reloads) {}
