//! `taskwire demo`: an embedded reference server and a worker in one process, running a
//! whole instance lifecycle, a runner job and a journal session over real QUIC with
//! mutual TLS on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use taskwire_proto::environment::v1 as env;
use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_proto::instance::v1 as inst;
use taskwire_proto::instance::v1::{InstanceState, SignalKind};
use taskwire_proto::journal::v1 as journal;
use taskwire_proto::management::v1 as mgmt;
use taskwire_proto::registry::JournalMessage;
use taskwire_proto::runner::v1::execution_outcome::Outcome;
use taskwire_proto::runner::v1::{CancelRequest, ExecutionRequest};
use taskwire_proto::wkt::{Struct, Value, value::Kind};
use taskwire_quic::{ClientConfig, Connection, QuicClient, QuicServer, ServerConfig};
use taskwire_reference::{GREETER_SLEEP, ReferenceConfig, ReferenceServer, greeting};
use taskwire_rpc::CallOptions;
use taskwire_tls::{
    CaParams, CertificateAuthority, ClientAuth, ClientCertParams, ClientConfigBuilder,
    ServerCertParams, ServerConfigBuilder,
};

use crate::error::{CliError, print_line};

/// Run an embedded reference server and a worker through every conversation.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  taskwire demo
  taskwire demo --json | jq .summary

The demo generates a CA, a server certificate and a client certificate for tenant \"demo\"
in memory, serves the reference server over QUIC on 127.0.0.1 with mutual TLS, and runs:
an image upload and an instance lifecycle (register, checkpoints, pause and resume
signals, a durable sleep, completion); runner jobs that succeed, are retried and are
cancelled; and a journal session that suspends on a timer and finishes on replay.
It exits non-zero if any step fails.")]
pub(crate) struct DemoArgs {
    /// Print the transcript as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One step of the transcript.
struct Step {
    section: &'static str,
    what: String,
    detail: String,
    elapsed: Duration,
    ok: bool,
}

struct Transcript {
    started: Instant,
    steps: Vec<Step>,
    json: bool,
}

impl Transcript {
    /// Runs one step: `check` turns its result into a detail line, or a failure.
    async fn step<T>(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        run: impl Future<Output = Result<T, CliError>>,
        check: impl FnOnce(&T) -> Result<String, String>,
    ) -> Result<T, CliError> {
        let what = what.into();
        let started = Instant::now();
        let result = run.await;
        let elapsed = started.elapsed();
        let (ok, detail, out) = match result {
            Ok(value) => match check(&value) {
                Ok(detail) => (true, detail, Ok(value)),
                Err(problem) => (false, problem.clone(), Err(CliError::msg(problem))),
            },
            Err(failure) => (false, failure.line(), Err(failure)),
        };
        if !self.json {
            let mark = if ok { "ok  " } else { "FAIL" };
            // A closed stdout only loses the transcript; the steps still run and count.
            let _ = print_line(format_args!(
                "{mark} {:>8.1} ms  {section:<11} {what:<44} {detail}",
                elapsed.as_secs_f64() * 1e3
            ));
        }
        self.steps.push(Step {
            section,
            what,
            detail,
            elapsed,
            ok,
        });
        out
    }

    fn heading(&self, text: &str) {
        if !self.json {
            let _ = print_line(format_args!("\n== {text}"));
        }
    }
}

fn call_failure(error: taskwire_rpc::CallError) -> CliError {
    CliError::msg(error.to_string())
}

pub(crate) async fn run(args: DemoArgs) -> Result<(), CliError> {
    let mut t = Transcript {
        started: Instant::now(),
        steps: Vec::new(),
        json: args.json,
    };
    let (reference, server, connection) = start(&mut t).await?;
    let sections = [
        instance_lifecycle(&mut t, &connection).await,
        runner_jobs(&mut t, &connection).await,
        journal_session(&mut t, &connection).await,
    ];
    connection.close();
    let report = server.shutdown().await;
    let failed = t.steps.iter().filter(|s| !s.ok).count();
    let total = t.started.elapsed();
    let sizes = reference.sizes();
    if args.json {
        let steps: Vec<_> = t
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "section": s.section,
                    "step": s.what,
                    "ok": s.ok,
                    "detail": s.detail,
                    "ms": s.elapsed.as_secs_f64() * 1e3,
                })
            })
            .collect();
        print_line(serde_json::json!({
                "steps": steps,
                "summary": {
                    "steps": t.steps.len(),
                    "failed": failed,
                    "total_ms": total.as_secs_f64() * 1e3,
                    "instances": sizes.instances,
                    "checkpoints": sizes.checkpoints,
                    "images": sizes.images,
                },
        }))?;
    } else {
        print_line(format_args!(
            "\nsummary: {} steps, {} failed, {:.0} ms in all; the server held {} instance(s), {} checkpoint(s), {} image(s); shutdown {}",
            t.steps.len(),
            failed,
            total.as_secs_f64() * 1e3,
            sizes.instances,
            sizes.checkpoints,
            sizes.images,
            if report.drained {
                "drained every call"
            } else {
                "cut calls short"
            },
        ))?;
    }
    for result in sections {
        result?;
    }
    if failed > 0 {
        return Err(CliError::msg(format!("{failed} demo step(s) failed")));
    }
    Ok(())
}

async fn start(
    t: &mut Transcript,
) -> Result<(ReferenceServer, taskwire_quic::ServerHandle, Connection), CliError> {
    t.heading("setup: certificates, server and worker connection");
    let (server_tls, client_tls) = t
        .step(
            "setup",
            "generate CA, server and client certificates",
            async { certificates() },
            |_| Ok("tenant \"demo\", identity taskwire://demo/worker-1".into()),
        )
        .await?;
    let reference = ReferenceServer::new(ReferenceConfig::default());
    let server = t
        .step(
            "setup",
            "serve the reference server over QUIC",
            async {
                Ok(QuicServer::new(ServerConfig::new(
                    "127.0.0.1:0".parse().expect("a literal address"),
                    server_tls,
                ))
                .map_err(|e| CliError::msg(e.to_string()))?
                .serve(reference.router()))
            },
            |server| Ok(format!("listening on {} (mutual TLS)", server.local_addr())),
        )
        .await?;
    let addr = server.local_addr();
    let connection = t
        .step(
            "setup",
            "connect the worker (TLS 1.3 + Hello)",
            async {
                let mut config = ClientConfig::new(addr, "localhost", client_tls);
                config.session.name = "taskwire-demo-worker".into();
                let client = QuicClient::new(config).map_err(|e| CliError::msg(e.to_string()))?;
                client.connect().await.map_err(call_failure)
            },
            |c| {
                Ok(format!(
                    "negotiated protocol version {}",
                    c.agreed().version
                ))
            },
        )
        .await?;
    Ok((reference, server, connection))
}

type Tls = (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>);

fn certificates() -> Result<Tls, CliError> {
    let fail = |e: taskwire_tls::TlsError| CliError::msg(e.to_string());
    let ca = CertificateAuthority::generate(&CaParams::new("taskwire demo CA")).map_err(fail)?;
    let server = ca
        .issue_server(
            &ServerCertParams::new(["localhost"])
                .ip_addresses(["127.0.0.1".parse().expect("a literal address")]),
        )
        .map_err(fail)?;
    let client = ca
        .issue_client(&ClientCertParams::new("demo", "worker-1"))
        .map_err(fail)?;
    let server = ServerConfigBuilder::new(server.credentials().map_err(fail)?)
        .client_auth(ClientAuth::Required(ca.ca_bundle().map_err(fail)?))
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .map_err(fail)?;
    let client = ClientConfigBuilder::new(ca.ca_bundle().map_err(fail)?)
        .client_credentials(client.credentials().map_err(fail)?)
        .alpn_protocols([taskwire_quic::ALPN])
        .tls13_only(true)
        .build()
        .map_err(fail)?;
    Ok((Arc::new(server), Arc::new(client)))
}

async fn status_of(c: &Connection, id: &str) -> Result<inst::InstanceStatus, CliError> {
    c.call(mgmt::GetInstanceStatusRequest {
        instance_id: id.into(),
    })
    .await
    .map_err(call_failure)?
    .status
    .ok_or_else(|| CliError::msg("GetInstanceStatus answered without a status"))
}

fn expect_state(status: &inst::InstanceStatus, want: InstanceState) -> Result<String, String> {
    if status.state() == want {
        Ok(format!("state {}", want.as_str_name()))
    } else {
        Err(format!(
            "state {}, expected {}",
            status.state().as_str_name(),
            want.as_str_name()
        ))
    }
}

/// Polls, acknowledges and applies the next signal, which must be of `kind`.
async fn take_signal(c: &Connection, id: &str, kind: SignalKind) -> Result<String, CliError> {
    let polled = c
        .call(inst::PollSignalsRequest {
            instance_id: id.into(),
            max_signals: 1,
            wait: Some(Duration::from_secs(5).into()),
        })
        .await
        .map_err(call_failure)?;
    let signal = polled
        .signals
        .into_iter()
        .next()
        .ok_or_else(|| CliError::msg("no signal arrived within 5 s"))?;
    if signal.kind() != kind {
        return Err(CliError::msg(format!(
            "got {}, expected {}",
            signal.kind().as_str_name(),
            kind.as_str_name()
        )));
    }
    c.call(inst::SignalAckRequest {
        instance_id: id.into(),
        signal_id: signal.signal_id.clone(),
        ..Default::default()
    })
    .await
    .map_err(call_failure)?;
    Ok(signal.signal_id)
}

async fn instance_lifecycle(t: &mut Transcript, c: &Connection) -> Result<(), CliError> {
    t.heading("instance lifecycle (environment, instance and management conversations)");
    let content =
        Bytes::from_static(b"#!/bin/sh\n# the order-fulfilment workflow\nexec ./orders\n");
    let image = t
        .step(
            "environment",
            "RegisterImage (manifest + 2 chunks)",
            async {
                let manifest = env::ImageUpload {
                    part: Some(Part::Manifest(ImageManifest {
                        name: "order-fulfilment".into(),
                        version: "1.4.0".into(),
                        size_bytes: content.len() as u64,
                        sha256: Bytes::copy_from_slice(&Sha256::digest(&content)),
                        ..Default::default()
                    })),
                };
                let mut upload = c
                    .client_stream(manifest, CallOptions::default())
                    .await
                    .map_err(call_failure)?;
                for chunk in [content.slice(..20), content.slice(20..)] {
                    upload
                        .send(env::ImageUpload {
                            part: Some(Part::Chunk(chunk)),
                        })
                        .await
                        .map_err(call_failure)?;
                }
                upload.finish().await.map_err(call_failure)
            },
            |r| match &r.image {
                Some(image) => Ok(format!(
                    "{} ({} bytes, SHA-256 checked)",
                    image.id, image.size_bytes
                )),
                None => Err("no image in the answer".into()),
            },
        )
        .await?
        .image
        .unwrap_or_default();
    let id = "order-7";
    t.step(
        "environment",
        "StartInstance",
        async {
            c.call(env::StartInstanceRequest {
                image_id: image.id.clone(),
                instance_id: id.into(),
                input: Bytes::from_static(br#"{"order":7}"#),
                ..Default::default()
            })
            .await
            .map_err(call_failure)
        },
        |r| {
            (r.state() == InstanceState::Pending)
                .then(|| format!("{} is PENDING", r.instance_id))
                .ok_or_else(|| format!("state {}", r.state().as_str_name()))
        },
    )
    .await?;
    t.step(
        "instance",
        "RegisterInstance",
        async {
            c.call(inst::RegisterInstanceRequest {
                instance_id: id.into(),
                image_id: image.id.clone(),
                ..Default::default()
            })
            .await
            .map_err(call_failure)
        },
        |r| {
            r.accepted
                .then(|| "accepted; fresh start".to_owned())
                .ok_or_else(|| r.rejection_reason.clone())
        },
    )
    .await?;
    for sequence in 1..=3u64 {
        t.step(
            "instance",
            format!("Checkpoint step-{sequence}"),
            async {
                c.call(inst::CheckpointRequest {
                    instance_id: id.into(),
                    checkpoint_id: format!("step-{sequence}"),
                    sequence,
                    state: Bytes::from(format!("{{\"step\":{sequence}}}")),
                })
                .await
                .map_err(call_failure)
            },
            |r| {
                (!r.duplicate)
                    .then(|| format!("stored, sequence {sequence}"))
                    .ok_or_else(|| "reported as a duplicate".into())
            },
        )
        .await?;
    }
    t.step(
        "instance",
        "Checkpoint step-3 again (a retry)",
        async {
            c.call(inst::CheckpointRequest {
                instance_id: id.into(),
                checkpoint_id: "step-3".into(),
                sequence: 3,
                state: Bytes::new(),
            })
            .await
            .map_err(call_failure)
        },
        |r| {
            r.duplicate
                .then(|| "duplicate: applied once".to_owned())
                .ok_or_else(|| "a retried checkpoint was stored twice".into())
        },
    )
    .await?;

    for (kind, state) in [
        (SignalKind::Pause, InstanceState::Paused),
        (SignalKind::Resume, InstanceState::Running),
    ] {
        t.step(
            "management",
            format!("SendSignal {}", kind.as_str_name()),
            async {
                c.call(mgmt::SendSignalRequest {
                    instance_id: id.into(),
                    kind: kind as i32,
                    signal_id: String::new(),
                })
                .await
                .map_err(call_failure)
            },
            |r| Ok(format!("signal {}", r.signal_id)),
        )
        .await?;
        t.step(
            "instance",
            "PollSignals + SignalAck",
            take_signal(c, id, kind),
            |signal| Ok(format!("{signal} applied")),
        )
        .await?;
        t.step("management", "GetInstanceStatus", status_of(c, id), |s| {
            expect_state(s, state)
        })
        .await?;
    }

    t.step(
        "instance",
        format!("Sleep {} ms (durable)", GREETER_SLEEP.as_millis()),
        async {
            c.call(inst::SleepRequest {
                instance_id: id.into(),
                wake: Some(inst::sleep_request::Wake::Duration(GREETER_SLEEP.into())),
                checkpoint_id: "step-3".into(),
            })
            .await
            .map_err(call_failure)
        },
        |_| Ok("wake-up recorded; the process may exit".into()),
    )
    .await?;
    t.step("management", "GetInstanceStatus", status_of(c, id), |s| {
        expect_state(s, InstanceState::Sleeping)
    })
    .await?;
    t.step(
        "instance",
        "wait for the wake-up, then RegisterInstance",
        async {
            tokio::time::sleep(GREETER_SLEEP + Duration::from_millis(20)).await;
            c.call(inst::RegisterInstanceRequest {
                instance_id: id.into(),
                image_id: image.id.clone(),
                ..Default::default()
            })
            .await
            .map_err(call_failure)
        },
        |r| match r.checkpoint.as_ref().and_then(|c| c.summary.as_ref()) {
            Some(summary) if r.accepted => Ok(format!("resumed from {}", summary.checkpoint_id)),
            _ => Err(format!("not resumed from a checkpoint: {r:?}")),
        },
    )
    .await?;
    t.step(
        "instance",
        "SendEvent COMPLETED (one-way)",
        async {
            c.send_event(inst::InstanceEvent {
                instance_id: id.into(),
                event_type: inst::instance_event::EventType::Completed as i32,
                output: Bytes::from_static(br#"{"shipped":true}"#),
                ..Default::default()
            })
            .await
            .map_err(call_failure)?;
            // A one-way call has no answer: watch the status until the event is applied.
            let give_up = Instant::now() + Duration::from_secs(5);
            loop {
                let status = status_of(c, id).await?;
                if status.state() == InstanceState::Completed || Instant::now() > give_up {
                    return Ok(status);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
        |s| {
            expect_state(s, InstanceState::Completed)
                .map(|state| format!("{state}, output {}", String::from_utf8_lossy(&s.output)))
        },
    )
    .await?;
    Ok(())
}

fn job(job_id: &str, function: &str, params: &[(&str, f64)], attempt: u32) -> ExecutionRequest {
    ExecutionRequest {
        request_id: format!("{job_id}/{attempt}"),
        job_id: job_id.into(),
        function_name: function.into(),
        params: Some(Struct {
            fields: params
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        Value {
                            kind: Some(Kind::NumberValue(*v)),
                        },
                    )
                })
                .collect(),
        }),
        context: Some(
            taskwire_proto::runner::v1::execution_request::ExecutionContext {
                attempt,
                queue_name: "demo".into(),
                ..Default::default()
            },
        ),
    }
}

fn describe(outcome: &Option<Outcome>) -> String {
    match outcome {
        Some(Outcome::Success(s)) => format!(
            "success: {}",
            s.result
                .as_ref()
                .and_then(|v| serde_json::to_string(v).ok())
                .unwrap_or_default()
        ),
        Some(Outcome::RetryAfter(r)) => format!(
            "retry after {:?}: {}",
            r.delay
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default(),
            r.message
        ),
        Some(Outcome::Cancelled(c)) => format!("cancelled: {}", c.reason),
        other => format!("{other:?}"),
    }
}

async fn runner_jobs(t: &mut Transcript, c: &Connection) -> Result<(), CliError> {
    t.heading("runner jobs (runner conversation)");
    t.step(
        "runner",
        "Execute add(2, 40)",
        async {
            c.call(job("job-1", "add", &[("a", 2.0), ("b", 40.0)], 1))
                .await
                .map_err(call_failure)
        },
        |o| match &o.outcome {
            Some(Outcome::Success(_)) => Ok(describe(&o.outcome)),
            other => Err(describe(other)),
        },
    )
    .await?;
    t.step(
        "runner",
        "Execute rate_limited (attempt 1)",
        async {
            c.call(job("job-2", "rate_limited", &[("delay_seconds", 0.05)], 1))
                .await
                .map_err(call_failure)
        },
        |o| match &o.outcome {
            Some(Outcome::RetryAfter(_)) => Ok(describe(&o.outcome)),
            other => Err(describe(other)),
        },
    )
    .await?;
    t.step(
        "runner",
        "retry: Execute add (attempt 2)",
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.call(job("job-2", "add", &[("a", 1.0), ("b", 1.0)], 2))
                .await
                .map_err(call_failure)
        },
        |o| match &o.outcome {
            Some(Outcome::Success(_)) => Ok(describe(&o.outcome)),
            other => Err(describe(other)),
        },
    )
    .await?;
    t.step(
        "runner",
        "Execute sleep(30 s), then Cancel it",
        async {
            let worker = c.clone();
            let running = tokio::spawn(async move {
                worker
                    .call(job("job-3", "sleep", &[("seconds", 30.0)], 1))
                    .await
            });
            let give_up = Instant::now() + Duration::from_secs(5);
            loop {
                let cancel = c
                    .call(CancelRequest {
                        job_id: "job-3".into(),
                        reason: "the order was withdrawn".into(),
                        ..Default::default()
                    })
                    .await
                    .map_err(call_failure)?;
                if cancel.found {
                    break;
                }
                if Instant::now() > give_up {
                    return Err(CliError::msg("the job never started"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            running
                .await
                .map_err(|e| CliError::msg(e.to_string()))?
                .map_err(call_failure)
        },
        |o| match &o.outcome {
            Some(Outcome::Cancelled(_)) => Ok(describe(&o.outcome)),
            other => Err(describe(other)),
        },
    )
    .await?;
    Ok(())
}

fn start_message(known_entries: u32) -> journal::Start {
    journal::Start {
        invocation_id: Bytes::from_static(b"invocation-1"),
        debug_id: "greeter/invocation-1".into(),
        known_entries,
        ..Default::default()
    }
}

async fn next(
    stream: &mut taskwire_quic::BidiStream<JournalMessage>,
) -> Result<JournalMessage, CliError> {
    stream
        .message()
        .await
        .map_err(call_failure)?
        .ok_or_else(|| CliError::msg("the journal stream ended early"))
}

async fn journal_session(t: &mut Transcript, c: &Connection) -> Result<(), CliError> {
    t.heading("journal session (journal conversation, the server runs the greeter)");
    let input = journal::InputEntry {
        value: Bytes::from_static(b"demo"),
        ..Default::default()
    };
    let (run, sleep) = t
        .step(
            "journal",
            "attempt 1: Start + InputEntry",
            async {
                let mut stream = c
                    .bidi::<JournalMessage>(start_message(0).into(), CallOptions::default())
                    .await
                    .map_err(call_failure)?;
                stream
                    .send(input.clone(), false)
                    .await
                    .map_err(call_failure)?;
                let JournalMessage::RunEntry(run) = next(&mut stream).await? else {
                    return Err(CliError::msg("expected a RunEntry"));
                };
                stream
                    .send(journal::EntryAck { entry_index: 1 }, false)
                    .await
                    .map_err(call_failure)?;
                let JournalMessage::SleepEntry(sleep) = next(&mut stream).await? else {
                    return Err(CliError::msg("expected a SleepEntry"));
                };
                let JournalMessage::Suspension(suspension) = next(&mut stream).await? else {
                    return Err(CliError::msg("expected a Suspension"));
                };
                if suspension.entry_indexes != [2] {
                    return Err(CliError::msg(format!(
                        "suspended on {:?}, expected [2]",
                        suspension.entry_indexes
                    )));
                }
                Ok((run, sleep))
            },
            |_| Ok("RunEntry acked, SleepEntry journaled, Suspension on entry 2".into()),
        )
        .await?;
    t.step(
        "journal",
        "attempt 2: replay 3 entries, timer fired",
        async {
            if let Some(wake) = sleep
                .wake_up_time
                .and_then(|at| std::time::SystemTime::try_from(at).ok())
                && let Ok(wait) = wake.duration_since(std::time::SystemTime::now())
            {
                tokio::time::sleep(wait).await;
            }
            let mut stream = c
                .bidi::<JournalMessage>(start_message(3).into(), CallOptions::default())
                .await
                .map_err(call_failure)?;
            let fired = journal::SleepEntry {
                result: Some(journal::sleep_entry::Result::Empty(Default::default())),
                ..sleep.clone()
            };
            for entry in [
                JournalMessage::from(input.clone()),
                run.clone().into(),
                fired.into(),
            ] {
                stream.send(entry, false).await.map_err(call_failure)?;
            }
            let JournalMessage::OutputEntry(output) = next(&mut stream).await? else {
                return Err(CliError::msg("expected an OutputEntry"));
            };
            let JournalMessage::End(_) = next(&mut stream).await? else {
                return Err(CliError::msg("expected End"));
            };
            Ok(output)
        },
        |output| match &output.result {
            Some(journal::output_entry::Result::Value(v)) if *v == greeting(b"demo") => {
                Ok(format!("OutputEntry {:?}, End", String::from_utf8_lossy(v)))
            }
            other => Err(format!("unexpected output {other:?}")),
        },
    )
    .await?;
    Ok(())
}
