//! The RRQ runner and client against each other, in process over real TCP sockets on
//! loopback: taskwire's reference runner handlers served over RRQ's protocol, and
//! taskwire's orchestrator driving them. (`real_rrq.rs` runs the same pieces against the
//! real RRQ orchestrator and Python runner.)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use futures::StreamExt as _;
use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _, FramedRead};
use taskwire_proto::runner::v1::execution_outcome::Outcome;
use taskwire_proto::runner::v1::execution_request::ExecutionContext;
use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
use taskwire_proto::wkt::{self, Struct, Value, value::Kind};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_rpc::runner::{Orchestrator, RunnerChannel as _};
use taskwire_rpc::{CallError, Router};
use taskwire_rrq::{
    Cancel, ClientConfig, Context, Message, Request, RrqClient, RrqCodec, RrqRunner, RunnerConfig,
    RunnerHandle, Status,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn reference_router() -> Router {
    ReferenceServer::new(ReferenceConfig::default().tenants(TenantSource::ClaimedInHello)).router()
}

async fn start(router: Router) -> RunnerHandle {
    let mut config = RunnerConfig::new("127.0.0.1:0".parse().unwrap());
    config.tenant = "acme".into();
    RrqRunner::bind(config).await.unwrap().serve(router)
}

fn params(pairs: &[(&str, Kind)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect(),
    }
}

fn job(id: &str, function: &str, params: Struct) -> ExecutionRequest {
    ExecutionRequest {
        request_id: format!("{id}-r1"),
        job_id: id.to_owned(),
        function_name: function.to_owned(),
        params: Some(params),
        context: Some(ExecutionContext {
            attempt: 1,
            enqueue_time: Some(wkt::Timestamp::from(SystemTime::now())),
            queue_name: "rrq:queue:default".into(),
            ..Default::default()
        }),
    }
}

/// An RRQ request as the real orchestrator writes it, with a deadline `timeout` away.
fn rrq_request(id: &str, function: &str, params: &str, timeout: Duration) -> Request {
    let now = SystemTime::now();
    Request {
        protocol_version: "2".into(),
        request_id: format!("{id}-r1"),
        job_id: id.to_owned(),
        function_name: function.to_owned(),
        params: serde_json::from_str(params).unwrap(),
        context: Context {
            job_id: id.to_owned(),
            attempt: 1,
            enqueue_time: wkt::Timestamp::from(now),
            queue_name: "rrq:queue:default".into(),
            deadline: Some(wkt::Timestamp::from(now + timeout)),
            trace_context: None,
            correlation_context: None,
            worker_id: Some("rrq_worker_test".into()),
        },
    }
}

/// A raw orchestrator connection: frames out, frames in.
struct Raw {
    stream: TcpStream,
    codec: RrqCodec,
    buffer: BytesMut,
}

impl Raw {
    async fn connect(runner: &RunnerHandle) -> Raw {
        Raw {
            stream: TcpStream::connect(runner.local_addr()).await.unwrap(),
            codec: RrqCodec::new(),
            buffer: BytesMut::new(),
        }
    }

    async fn send(&mut self, message: impl Into<Message>) {
        let mut wire = BytesMut::new();
        self.codec.encode(&message.into(), &mut wire).unwrap();
        self.stream.write_all(&wire).await.unwrap();
    }

    /// The next frame, or `None` when the runner closed the connection.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.codec.decode(&mut self.buffer).unwrap() {
                return Some(message);
            }
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                self.stream.read_buf(&mut self.buffer),
            )
            .await
            .expect("the runner answers within 10 s")
            .unwrap_or(0);
            if read == 0 {
                return None;
            }
        }
    }

    async fn response(&mut self) -> taskwire_rrq::Response {
        match self.next().await {
            Some(Message::Response(response)) => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn reference_handlers_answer_every_outcome_through_taskwires_orchestrator() {
    let runner = start(reference_router()).await;
    let orchestrator = Orchestrator::new(RrqClient::new(ClientConfig::new(runner.local_addr())));
    let deadline = Duration::from_secs(5);

    let nested = params(&[
        ("to", Kind::StringValue("a@example.com".into())),
        ("n", Kind::NumberValue(7.0)),
        (
            "tags",
            Kind::ListValue(wkt::ListValue {
                values: vec![Value {
                    kind: Some(Kind::BoolValue(true)),
                }],
            }),
        ),
    ]);
    let echo = orchestrator
        .execute(job("j-echo", "echo", nested.clone()), deadline)
        .await
        .unwrap();
    match echo.outcome {
        Some(Outcome::Success(success)) => {
            assert_eq!(
                success.result.unwrap().kind,
                Some(Kind::StructValue(nested))
            );
        }
        other => panic!("echo: {other:?}"),
    }
    assert_eq!(
        (echo.job_id.as_str(), echo.request_id.as_str()),
        ("j-echo", "j-echo-r1")
    );

    let fail = orchestrator
        .execute(
            job(
                "j-fail",
                "fail",
                params(&[("message", Kind::StringValue("kaboom".into()))]),
            ),
            deadline,
        )
        .await
        .unwrap();
    match fail.outcome {
        Some(Outcome::Failure(failure)) => {
            assert_eq!(
                (
                    failure.message.as_str(),
                    failure.r#type.as_str(),
                    failure.code.as_str()
                ),
                ("kaboom", "RuntimeError", "handler.failed")
            );
        }
        other => panic!("fail: {other:?}"),
    }

    let retry = orchestrator
        .execute(
            job(
                "j-retry",
                "rate_limited",
                params(&[("delay_seconds", Kind::NumberValue(1.5))]),
            ),
            deadline,
        )
        .await
        .unwrap();
    match retry.outcome {
        Some(Outcome::RetryAfter(retry)) => {
            assert_eq!(
                retry.delay,
                Some(wkt::Duration {
                    seconds: 1,
                    nanos: 500_000_000
                })
            );
        }
        other => panic!("rate_limited: {other:?}"),
    }

    let missing = orchestrator
        .execute(
            job("j-missing", "no_such_handler", Struct::default()),
            deadline,
        )
        .await
        .unwrap();
    match missing.outcome {
        Some(Outcome::HandlerNotFound(missing)) => {
            assert_eq!(missing.function_name, "no_such_handler");
        }
        other => panic!("missing: {other:?}"),
    }

    // The runner enforces the job's deadline itself and answers `timeout`.
    let slow = orchestrator
        .execute(
            job(
                "j-slow",
                "sleep",
                params(&[("seconds", Kind::NumberValue(30.0))]),
            ),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(
        matches!(slow.outcome, Some(Outcome::Timeout(_))),
        "sleep past its deadline: {slow:?}"
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn sixty_four_jobs_share_one_connection_and_are_answered_out_of_order() {
    let runner = start(reference_router()).await;
    let client = RrqClient::new(ClientConfig::new(runner.local_addr()));
    let orchestrator = Arc::new(Orchestrator::new(client));
    let mut calls = Vec::new();
    for i in 0..64_u32 {
        let orchestrator = Arc::clone(&orchestrator);
        // Later jobs sleep less, so they finish first.
        let seconds = f64::from(64 - i) * 0.004;
        calls.push(tokio::spawn(async move {
            let outcome = orchestrator
                .execute(
                    job(
                        &format!("j{i}"),
                        "sleep",
                        params(&[("seconds", Kind::NumberValue(seconds))]),
                    ),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            (i, outcome, std::time::Instant::now())
        }));
    }
    let mut finished = Vec::new();
    for call in calls {
        let (i, outcome, at) = call.await.unwrap();
        assert!(
            matches!(outcome.outcome, Some(Outcome::Success(_))),
            "job {i}: {outcome:?}"
        );
        assert_eq!(outcome.job_id, format!("j{i}"));
        finished.push((at, i));
    }
    finished.sort();
    assert!(
        finished.first().unwrap().1 > finished.last().unwrap().1,
        "answers came back in completion order"
    );
    assert_eq!(
        runner
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn the_sixty_fifth_job_on_a_connection_is_answered_busy() {
    let runner = start(reference_router()).await;
    let mut raw = Raw::connect(&runner).await;
    for i in 0..65 {
        raw.send(rrq_request(
            &format!("j{i}"),
            "sleep",
            r#"{"seconds": 5}"#,
            Duration::from_secs(10),
        ))
        .await;
    }
    let busy = raw.response().await;
    assert_eq!(busy.job_id.as_deref(), Some("j64"));
    assert_eq!(busy.status, Status::Error);
    assert_eq!(
        busy.error.unwrap().message,
        "Runner busy: too many in-flight requests"
    );
    runner.abort().await;
}

#[tokio::test]
async fn a_job_past_its_deadline_on_arrival_is_answered_timeout_without_running() {
    let runner = start(reference_router()).await;
    let mut raw = Raw::connect(&runner).await;
    let mut late = rrq_request("late", "echo", "{}", Duration::ZERO);
    late.context.deadline = Some(wkt::Timestamp::from(
        SystemTime::now() - Duration::from_secs(60),
    ));
    raw.send(late).await;
    let answer = raw.response().await;
    assert_eq!(answer.status, Status::Timeout);
    let error = answer.error.unwrap();
    assert_eq!(
        (error.message.as_str(), error.r#type.as_deref()),
        ("Job deadline exceeded", Some("timeout"))
    );
    assert_eq!(
        runner
            .stats()
            .jobs_started
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let mut other_version = rrq_request("v3", "echo", "{}", Duration::from_secs(5));
    other_version.protocol_version = "3".into();
    raw.send(other_version).await;
    let refused = raw.response().await;
    assert_eq!(refused.status, Status::Error);
    assert_eq!(
        refused.error.unwrap().message,
        "Unsupported protocol version"
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn a_cancel_on_a_new_connection_reaches_the_handler_by_job_id_or_request_id() {
    let runner = start(reference_router()).await;
    let mut raw = Raw::connect(&runner).await;
    raw.send(rrq_request(
        "by-request",
        "sleep",
        r#"{"seconds": 30}"#,
        Duration::from_secs(60),
    ))
    .await;
    raw.send(rrq_request(
        "by-job",
        "sleep",
        r#"{"seconds": 30}"#,
        Duration::from_secs(60),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // As RRQ does: a connection of its own per cancel, closed at once.
    for cancel in [
        Cancel {
            protocol_version: "2".into(),
            job_id: "by-request".into(),
            request_id: Some("by-request-r1".into()),
            hard_kill: false,
        },
        Cancel {
            protocol_version: "2".into(),
            job_id: "by-job".into(),
            request_id: None,
            hard_kill: false,
        },
    ] {
        let mut canceller = Raw::connect(&runner).await;
        canceller.send(cancel).await;
        drop(canceller);
    }
    let mut cancelled = Vec::new();
    for _ in 0..2 {
        let answer = raw.response().await;
        assert_eq!(answer.status, Status::Error);
        let error = answer.error.unwrap();
        // The reference handler saw the cancel and the reason the runner gave it.
        assert_eq!(error.r#type.as_deref(), Some("cancelled"), "{error:?}");
        cancelled.push(answer.job_id.unwrap());
    }
    cancelled.sort();
    assert_eq!(cancelled, ["by-job", "by-request"]);
    runner.shutdown().await;
}

#[tokio::test]
async fn a_hard_cancel_stops_a_handler_that_ignores_cancellation() {
    let mut router = Router::new();
    router.unary(|_ctx, request: ExecutionRequest| async move {
        // Deaf to its CallContext::cancel.
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(ExecutionOutcome {
            job_id: request.job_id,
            request_id: request.request_id,
            ..Default::default()
        })
    });
    let runner = start(router).await;
    let mut raw = Raw::connect(&runner).await;
    raw.send(rrq_request(
        "deaf",
        "anything",
        "{}",
        Duration::from_secs(60),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut canceller = Raw::connect(&runner).await;
    canceller
        .send(Cancel {
            protocol_version: "2".into(),
            job_id: "deaf".into(),
            request_id: None,
            hard_kill: false,
        })
        .await;
    // A soft cancel leaves the handler be...
    let nothing = tokio::time::timeout(Duration::from_millis(300), raw.next()).await;
    assert!(
        nothing.is_err(),
        "a soft cancel answered a deaf handler: {nothing:?}"
    );
    // ...a hard one stops it.
    canceller
        .send(Cancel {
            protocol_version: "2".into(),
            job_id: "deaf".into(),
            request_id: None,
            hard_kill: true,
        })
        .await;
    let answer = raw.response().await;
    let error = answer.error.unwrap();
    assert_eq!(
        (answer.status, error.r#type.as_deref()),
        (Status::Error, Some("cancelled"))
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn bad_input_closes_the_connection_and_stops_its_jobs_but_not_others() {
    let runner = start(reference_router()).await;
    let mut doomed = Raw::connect(&runner).await;
    doomed
        .send(rrq_request(
            "doomed",
            "sleep",
            r#"{"seconds": 30}"#,
            Duration::from_secs(60),
        ))
        .await;
    let mut healthy = Raw::connect(&runner).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // An empty frame: refused, and the connection closes.
    doomed.stream.write_all(&[0, 0, 0, 0]).await.unwrap();
    assert!(
        doomed.next().await.is_none(),
        "the runner kept a connection that sent an empty frame"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = runner.stats();
    assert_eq!(
        stats
            .connections_closed_for_cause
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    healthy
        .send(rrq_request(
            "fine",
            "echo",
            r#"{"a": 1}"#,
            Duration::from_secs(5),
        ))
        .await;
    let answer = healthy.response().await;
    assert_eq!(answer.status, Status::Success);
    assert_eq!(answer.result, serde_json::json!({"a": 1}));
    runner.shutdown().await;
}

#[tokio::test]
async fn the_client_cancels_a_job_whose_deadline_passed_and_fails_jobs_on_a_lost_connection() {
    let runner = start(reference_router()).await;
    let client = RrqClient::new(ClientConfig::new(runner.local_addr()));
    let mut slow = job(
        "abandoned",
        "sleep",
        params(&[("seconds", Kind::NumberValue(30.0))]),
    );
    // No context deadline: only the call's own timeout stops it.
    slow.context.as_mut().unwrap().deadline = None;
    let error = client
        .execute(slow, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::DeadlineExceeded(_)), "{error:?}");
    // The cancel went out on a connection of its own and stopped the job.
    let cancelled = async {
        while runner
            .stats()
            .cancels
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), cancelled)
        .await
        .expect("the runner got a cancel");

    let running = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .execute(
                    job(
                        "orphan",
                        "sleep",
                        params(&[("seconds", Kind::NumberValue(30.0))]),
                    ),
                    Duration::from_secs(30),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    runner.abort().await;
    let lost = running.await.unwrap().unwrap_err();
    assert!(matches!(lost, CallError::Unavailable(_)), "{lost:?}");
}

#[tokio::test]
async fn the_runner_refuses_to_listen_beyond_loopback() {
    let error = RrqRunner::bind(RunnerConfig::new("0.0.0.0:0".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("loopback"), "{error}");
}

#[tokio::test]
async fn frames_read_from_a_socket_in_pieces_decode_whole() {
    let runner = start(reference_router()).await;
    let mut stream = TcpStream::connect(runner.local_addr()).await.unwrap();
    let mut wire = BytesMut::new();
    RrqCodec::new()
        .encode(
            &Message::Request(rrq_request(
                "pieces",
                "echo",
                r#"{"x": "y"}"#,
                Duration::from_secs(5),
            )),
            &mut wire,
        )
        .unwrap();
    for piece in wire.chunks(7) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut frames = FramedRead::new(stream, RrqCodec::new());
    match frames.next().await {
        Some(Ok(Message::Response(answer))) => {
            assert_eq!(answer.result, serde_json::json!({"x": "y"}));
        }
        other => panic!("{other:?}"),
    }
    runner.shutdown().await;
}

/// A handler whose own call ran out of time (a bridge forwarding the job) answers with its
/// call's `DEADLINE_EXCEEDED`; RRQ hears the timeout in its own runner's words, whichever
/// of the two noticed the deadline first.
#[tokio::test]
async fn a_handler_past_its_deadline_is_answered_in_rrqs_timeout_words() {
    let mut router = Router::new();
    router.unary(|_ctx, _: ExecutionRequest| async {
        Err::<ExecutionOutcome, _>(taskwire_rpc::Status::deadline_exceeded(
            "after 998.965943ms",
        ))
    });
    let runner = start(router).await;
    let mut raw = Raw::connect(&runner).await;
    raw.send(rrq_request(
        "bridged",
        "echo",
        "{}",
        Duration::from_secs(30),
    ))
    .await;
    let answer = raw.response().await;
    assert_eq!(answer.status, Status::Timeout);
    let error = answer.error.unwrap();
    assert_eq!(
        (error.message.as_str(), error.r#type.as_deref()),
        ("Job execution timed out.", Some("timeout"))
    );
    runner.abort().await;
}
