//! `taskwire conformance`: the conformance kit's scripted sessions against a server.

use std::io::Write as _;

use taskwire_conformance::kit::{self, Check, Target, Transport};
use taskwire_quic::{QuicServer, ServerConfig};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_tcp::{TcpServer, TcpServerConfig};

use crate::error::CliError;
use crate::tls_setup::{ClientArgs, ServerAddr, server_tls};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Each check is one script of conformance/scripts/ played over one transport in one framing
(QUIC carries binary frames; TCP binary and JSON), on a connection of its own. A line per
check names the requirements of docs/protocol.md §18 it covers; the exit code is 1 if any
check failed.

Examples:
  # Against `taskwire serve --tcp 127.0.0.1:7701` in development mode:
  taskwire conformance --addr 127.0.0.1:7700 --pin <PIN>
  taskwire conformance --addr 127.0.0.1:7701 --tcp --pin <PIN>

  # Against a reference server in this process, over both transports:
  taskwire conformance --embedded

  # Only the session scripts, as a JSON report:
  taskwire conformance --embedded --only session/ --json")]
pub(crate) struct ConformanceArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Reach --addr over TCP with TLS (the same as a tcp:// address).
    #[arg(long)]
    tcp: bool,
    /// Start a reference server in this process and check it over QUIC and TCP, instead
    /// of --addr.
    #[arg(long, conflicts_with = "tcp")]
    embedded: bool,
    /// Only the scripts whose name starts with this, such as `session/` or `bad/json`.
    #[arg(long, value_name = "PREFIX")]
    only: Option<String>,
    /// Print the report as JSON instead of one line per check.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(mut args: ConformanceArgs) -> Result<(), CliError> {
    let scripts: Vec<_> = kit::scripts()
        .into_iter()
        .filter(|s| {
            args.only
                .as_ref()
                .is_none_or(|prefix| s.name.starts_with(prefix.as_str()))
        })
        .collect();
    if scripts.is_empty() {
        return Err(CliError::msg(format!(
            "no script starts with {:?}",
            args.only.unwrap_or_default()
        )));
    }
    let mut checks: Vec<Check> = Vec::new();
    let mut checked = Vec::new();
    if args.embedded {
        let tls = server_tls(None, None, &[])?;
        let reference =
            ReferenceServer::new(ReferenceConfig::default().tenants(TenantSource::ClaimedInHello));
        let loopback = "127.0.0.1:0".parse().expect("a literal address");
        let quic = QuicServer::new(ServerConfig::new(loopback, tls.config.clone()))
            .map_err(|e| CliError::msg(format!("embedded server: {e}")))?
            .serve(reference.router());
        let tcp = TcpServer::bind(TcpServerConfig::new(loopback, tls.config))
            .await
            .map_err(|e| CliError::msg(format!("embedded server: {e}")))?
            .serve(reference.router());
        args.client.pin = Some(hex::encode(tls.pin));
        args.client.ca = None;
        for (transport, addr) in [
            (Transport::Quic, quic.local_addr()),
            (Transport::Tcp, tcp.local_addr()),
        ] {
            let target = Target::new(addr, &args.client.server_name, Some(args.client.tls()?));
            checks.extend(kit::run(&target, transport, &scripts).await);
            checked.push(format!("{}://{addr}", transport.as_str()));
        }
        quic.abort();
        tcp.shutdown().await;
    } else {
        if args.tcp
            && let ServerAddr::Quic(host_port) = &args.client.addr
        {
            args.client.addr = ServerAddr::Tcp(host_port.clone());
        }
        let transport = match args.client.addr {
            ServerAddr::Quic(_) => Transport::Quic,
            ServerAddr::Tcp(_) => Transport::Tcp,
        };
        let addr = args.client.addr.resolve().await?;
        let target = Target::new(addr, &args.client.server_name, Some(args.client.tls()?));
        checks.extend(kit::run(&target, transport, &scripts).await);
        checked.push(args.client.addr.to_string());
    }
    report(&checks, &checked, args.json)?;
    match checks.iter().filter(|c| !c.passed()).count() {
        0 => Ok(()),
        failed => Err(CliError::msg(format!(
            "{failed} of {} checks failed",
            checks.len()
        ))),
    }
}

fn report(checks: &[Check], checked: &[String], json: bool) -> Result<(), CliError> {
    let passed = checks.iter().filter(|c| c.passed()).count();
    let mut out = std::io::stdout().lock();
    if json {
        let report = serde_json::json!({
            "servers": checked,
            "checks": checks,
            "passed": passed,
            "failed": checks.len() - passed,
        });
        writeln!(out, "{report}").map_err(CliError::Stdout)?;
        return Ok(());
    }
    for check in checks {
        let verdict = if check.passed() { "PASS" } else { "FAIL" };
        let framing = match check.framing {
            taskwire_conformance::vectors::Framing::Binary => "binary",
            taskwire_conformance::vectors::Framing::Json => "json",
        };
        write!(
            out,
            "{verdict} {:<4} {framing:<6} {} [{}]",
            check.transport.as_str(),
            check.script,
            check.requirements.join(" ")
        )
        .map_err(CliError::Stdout)?;
        match &check.failure {
            Some(why) => writeln!(out, "\n     {why}"),
            None => writeln!(out),
        }
        .map_err(CliError::Stdout)?;
    }
    writeln!(
        out,
        "{} checks against {}: {passed} passed, {} failed",
        checks.len(),
        checked.join(" and "),
        checks.len() - passed
    )
    .map_err(CliError::Stdout)?;
    Ok(())
}
