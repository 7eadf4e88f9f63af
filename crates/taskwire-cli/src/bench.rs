//! `taskwire bench`: the load generator of `taskwire-load`, aimed at any taskwire server
//! over QUIC or TCP: closed-loop unary calls at a fixed concurrency, reported as calls per
//! second and latency percentiles.

use std::time::{Duration, Instant};

use taskwire_load::{Report, Scenario};
use taskwire_proto::MessageSet;
use taskwire_proto::registry::{self, AnyMessage, CallShape};
use taskwire_quic::{QuicServer, ServerConfig};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_rpc::CallOptions;

use crate::error::{CliError, print_line};
use crate::tls_setup::{Client, ClientArgs, ServerAddr, server_tls};

/// Load a taskwire server with unary calls and report calls/s and latency percentiles.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  # Against an embedded reference server (no setup):
  taskwire bench --embedded --concurrency 64 --duration 5 --runs 3

  # Against your own server, with the request of your choice:
  taskwire bench taskwire.instance.v1.GetInstanceStatusRequest --body '{\"instanceId\":\"order-7\"}' \\
      --addr 10.0.0.5:7700 --ca ca.pem --cert client.pem --key client.key.pem --concurrency 256

  # Over TCP with TLS:
  taskwire bench --addr tcp://10.0.0.5:7701 --ca ca.pem --cert client.pem --key client.key.pem

The table shows the median of each figure over --runs, with the calls/s range; --json
prints the same as JSON. Failed calls are counted, not retried.")]
pub(crate) struct BenchArgs {
    /// The request to send (any unary rpc's request).
    #[arg(default_value = "taskwire.management.v1.HealthRequest")]
    message: String,
    /// The request body in canonical proto3 JSON.
    #[arg(long, default_value = "{}")]
    body: String,
    /// Calls in flight at once, spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Connections the calls share.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds measured per run, after a short warm-up.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Runs; the report gives the median of each figure.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Start a reference server in this process and load it, instead of --addr.
    #[arg(long)]
    embedded: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(mut args: BenchArgs) -> Result<(), CliError> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3_600.0) {
        return Err(CliError::msg(format!(
            "--duration {} is not between 0 and 3600 seconds",
            args.duration
        )));
    }
    if args.concurrency == 0 || args.connections == 0 || args.runs == 0 {
        return Err(CliError::msg(
            "--concurrency, --connections and --runs must be at least 1",
        ));
    }
    let request = crate::call::parse_request(&args.message, &args.body)?;
    if registry::rpc_by_request(request.type_id()).map(|rpc| rpc.shape) != Some(CallShape::Unary) {
        return Err(CliError::msg(format!(
            "{} is not the request of a unary rpc",
            request.name()
        )));
    }
    let embedded = if args.embedded {
        let tls = server_tls(None, None, &[])?;
        let reference =
            ReferenceServer::new(ReferenceConfig::default().tenants(TenantSource::ClaimedInHello));
        let server = QuicServer::new(ServerConfig::new(
            "127.0.0.1:0".parse().expect("a literal address"),
            tls.config,
        ))
        .map_err(|e| CliError::msg(format!("embedded server: {e}")))?
        .serve(reference.router());
        args.client.addr = ServerAddr::Quic(server.local_addr().to_string());
        args.client.pin = Some(hex::encode(tls.pin));
        args.client.ca = None;
        Some(server)
    } else {
        None
    };

    let mut connections: Vec<Client> = Vec::new();
    for _ in 0..args.connections {
        connections.push(args.client.connect().await?);
    }
    let transport = connections[0].transport();
    // One call first, so a request the server refuses fails here with its status rather
    // than as a run full of errors.
    connections[0]
        .call(request.clone(), CallOptions::default())
        .await
        .map_err(|e| CliError::msg(format!("the first {} failed: {e}", request.name())))?;

    let scenario = Scenario {
        concurrency: args.concurrency,
        connections: args.connections,
        request_bytes: request.body_len(),
        response_bytes: 0,
        duration: Duration::from_secs_f64(args.duration),
    };
    let mut reports: Vec<Report> = Vec::new();
    let bar = progress_bar(&args);
    for run in 0..args.runs {
        bar.set_message(format!("run {}/{}", run + 1, args.runs));
        bar.set_position(0);
        let ticker = tokio::spawn(advance(bar.clone(), scenario.duration));
        let connections = connections.clone();
        let request = request.clone();
        let report = taskwire_load::drive(scenario, transport, move |worker| {
            let connection: Client = connections[worker % connections.len()].clone();
            let request: AnyMessage = request.clone();
            async move {
                connection
                    .call(request, CallOptions::default())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        ticker.abort();
        reports.push(report);
    }
    bar.finish_and_clear();
    for connection in &connections {
        connection.close().await;
    }
    if let Some(server) = embedded {
        server.shutdown().await;
    }
    let summary = taskwire_load::summarize(&reports);
    if args.json {
        print_line(serde_json::to_string(&summary).map_err(|e| CliError::msg(e.to_string()))?)?;
    } else {
        print_line(format_args!(
            "{} run(s) of {} s: unary {} ({} B) against {}",
            args.runs,
            args.duration,
            request.name(),
            request.body_len(),
            args.client.addr
        ))?;
        print_line(taskwire_load::load_table(&[summary]).trim_end())?;
    }
    Ok(())
}

/// The run's progress on stderr; hidden when stderr is not a terminal, with `--json`, and
/// for runs of a second or less.
fn progress_bar(args: &BenchArgs) -> indicatif::ProgressBar {
    let shown =
        !args.json && args.duration > 1.0 && std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {percent:>3}% {elapsed_precise}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Moves the bar along the run's duration until aborted.
async fn advance(bar: indicatif::ProgressBar, duration: Duration) {
    let started = Instant::now();
    loop {
        let done = (started.elapsed().as_secs_f64() / duration.as_secs_f64()).min(1.0);
        // Within 0..=1000.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        bar.set_position((done * 1000.0) as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
