//! taskwire's Restate endpoint against the real restate-server 1.7.12: registered over
//! HTTP/2 and HTTP/1.1, invoked through Restate's ingress, journaled, suspended, replayed,
//! retried, killed and restarted. Results are read through the ingress and the admin
//! API's SQL.
//!
//! `cargo xtask seed-systems` installs the server; without it these tests are skipped
//! loudly, and with `TASKWIRE_REQUIRE_SEED_SYSTEMS=1` (CI) a skip is a failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use taskwire_restate::{
    Context, Endpoint, EndpointServer, HandlerError, Json, ObjectContext, ServerConfig,
    ServerHandle, Service, SharedObjectContext, SharedWorkflowContext, Target, TerminalError,
    VirtualObject, Workflow, WorkflowContext,
};
use taskwire_seed_systems::require;
use taskwire_seed_systems::restate::{Install, Restate};

/// One test at a time: each runs a Restate server, and two cores are shared.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn run_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = taskwire_seed_systems::install_dir()
        .join("runs")
        .join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the handlers did, by name: counted in the test process, across endpoint restarts.
#[derive(Debug, Default)]
struct Log {
    counts: Mutex<HashMap<String, u32>>,
    awakeables: Mutex<Vec<String>>,
}

impl Log {
    fn count(&self, what: &str) -> u32 {
        let mut counts = self.counts.lock().unwrap();
        let count = counts.entry(what.to_owned()).or_default();
        *count += 1;
        *count
    }

    fn get(&self, what: &str) -> u32 {
        self.counts.lock().unwrap().get(what).copied().unwrap_or(0)
    }
}

fn endpoint(log: &Arc<Log>) -> Endpoint {
    let greet_log = Arc::clone(log);
    let flaky_log = Arc::clone(log);
    let steps_log = Arc::clone(log);
    let awake_log = Arc::clone(log);
    Endpoint::builder()
        .bind(
            Service::new("Greeter")
                .handler("greet", move |ctx: Context, Json(name): Json<String>| {
                    let log = Arc::clone(&greet_log);
                    async move {
                        log.count("greet.attempts");
                        let Json(stamp): Json<String> = ctx
                            .run("stamp", move || async move {
                                log.count("greet.stamp");
                                Ok(Json("side-effect-ok".to_owned()))
                            })
                            .await?;
                        ctx.sleep(Duration::from_millis(500)).await?;
                        Ok(Json(format!("hello {name} ({stamp})")))
                    }
                })
                .handler("flaky", move |ctx: Context, Json(fail_times): Json<u32>| {
                    let log = Arc::clone(&flaky_log);
                    async move {
                        let Json(n): Json<u32> = ctx
                            .run("flaky step", move || async move {
                                let attempt = log.count("flaky.attempts");
                                if attempt <= fail_times {
                                    return Err(HandlerError::retryable(format!(
                                        "failure {attempt}"
                                    )));
                                }
                                log.count("flaky.successes");
                                Ok(Json(attempt))
                            })
                            .await?;
                        Ok(Json(n))
                    }
                })
                .handler("terminal", |_ctx: Context, ()| async move {
                    Err::<(), _>(TerminalError::with_code(409, "no such order").into())
                })
                .handler(
                    "greet_and_count",
                    |ctx: Context, Json(name): Json<String>| async move {
                        // A call waits for the callee's answer; a send does not.
                        let Json(greeting): Json<String> = ctx
                            .call(&Target::service("Greeter", "greet"), &Json(name))
                            .await?;
                        ctx.send(
                            &Target::keyed("Counter", "greetings", "add"),
                            &Json(1_i64),
                            None,
                        )?;
                        Ok(Json(greeting))
                    },
                )
                .handler("steps", move |ctx: Context, Json(sleep_ms): Json<u64>| {
                    let log = Arc::clone(&steps_log);
                    async move {
                        let first = Arc::clone(&log);
                        let Json(a): Json<u32> = ctx
                            .run("first", move || async move {
                                Ok(Json(first.count("steps.first")))
                            })
                            .await?;
                        let second = Arc::clone(&log);
                        let Json(b): Json<u32> = ctx
                            .run("second", move || async move {
                                Ok(Json(second.count("steps.second")))
                            })
                            .await?;
                        log.count("steps.sleeping");
                        ctx.sleep(Duration::from_millis(sleep_ms)).await?;
                        Ok(Json(format!("{a}+{b}")))
                    }
                })
                .handler("wait_awakeable", move |ctx: Context, ()| {
                    let log = Arc::clone(&awake_log);
                    async move {
                        let (id, value) = ctx.awakeable::<Json<String>>();
                        // Hand the id out of the invocation: a step, so it happens once.
                        let published = Arc::clone(&log);
                        ctx.run("publish", move || async move {
                            published.awakeables.lock().unwrap().push(id);
                            Ok(())
                        })
                        .await?;
                        let Json(value) = value.await?;
                        Ok(Json(format!("woken with {value}")))
                    }
                }),
        )
        .bind(
            VirtualObject::new("Counter")
                .exclusive(
                    "add",
                    |ctx: ObjectContext, Json(delta): Json<i64>| async move {
                        let before = ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n);
                        // Between the read and the write: concurrent adds to one key would
                        // lose updates if Restate did not run them one at a time.
                        ctx.sleep(Duration::from_millis(150)).await?;
                        ctx.set("count", &Json(before + delta))?;
                        Ok(Json(before + delta))
                    },
                )
                .shared("get", |ctx: SharedObjectContext, ()| async move {
                    Ok(Json(
                        ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n),
                    ))
                }),
        )
        .bind(
            Workflow::new("Signup")
                .run(
                    "run",
                    |ctx: WorkflowContext, Json(email): Json<String>| async move {
                        ctx.set("email", &Json(email.clone()))?;
                        // Waits, durably, until `verify` resolves the promise.
                        let Json(code): Json<String> = ctx.promise("verified").await?;
                        Ok(Json(format!("{email} verified with {code}")))
                    },
                )
                .shared("email", |ctx: SharedWorkflowContext, ()| async move {
                    Ok(Json(
                        ctx.get::<Json<String>>("email").await?.map(|Json(e)| e),
                    ))
                })
                .shared(
                    "verify",
                    |ctx: SharedWorkflowContext, Json(code): Json<String>| async move {
                        ctx.resolve_promise("verified", &Json(code)).await?;
                        Ok(())
                    },
                ),
        )
        .build()
        .unwrap()
}

async fn serve(endpoint: Endpoint, port: u16) -> ServerHandle {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..50 {
        if let Ok(server) = EndpointServer::bind(endpoint.clone(), ServerConfig::new(addr)).await {
            return server.serve();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not listen on {addr}");
}

/// The greeter over one HTTP version: a step, a durable sleep (over HTTP/1.1 the
/// invocation suspends and Restate replays it), and the answer.
async fn greeter_over(http11: bool) {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let dir = run_dir(if http11 {
        "restate-greeter-http1"
    } else {
        "restate-greeter-h2"
    });
    let restate = Restate::start(&install, &dir).await.unwrap();
    let log = Arc::new(Log::default());
    let server = serve(endpoint(&log), 0).await;
    let registered = restate
        .register(&format!("http://{}", server.local_addr()), http11)
        .await
        .unwrap();
    let mut services: Vec<&str> = registered["services"]
        .as_array()
        .map(|services| services.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    services.sort_unstable();
    assert_eq!(
        services,
        ["Counter", "Greeter", "Signup"],
        "Restate discovered every service: {registered}"
    );

    let started = Instant::now();
    let answer = restate
        .call("/Greeter/greet", &json!("taskwire"))
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.text(),
        restate.log_tail(20)
    );
    assert_eq!(answer.json(), json!("hello taskwire (side-effect-ok)"));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the sleep was waited for"
    );
    assert_eq!(
        log.get("greet.stamp"),
        1,
        "the step ran once, replays included"
    );
    // Over HTTP/1.1 Restate sends the journal, then reads the answer: the invocation
    // suspends after proposing the step's result and again on the timer, and is
    // replayed twice. Over HTTP/2 both results arrive on the open stream.
    let attempts = if http11 { 3 } else { 1 };
    assert_eq!(
        log.get("greet.attempts"),
        attempts,
        "attempts of the handler"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greeter_runs_a_step_sleeps_and_answers_over_http2() {
    greeter_over(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greeter_suspends_and_is_replayed_over_http1() {
    greeter_over(true).await;
}

/// Restate and the endpoint, registered over HTTP/2.
struct Rig {
    restate: Restate,
    server: Option<ServerHandle>,
    port: u16,
    log: Arc<Log>,
}

impl Rig {
    async fn start(name: &str, install: &Install) -> Rig {
        let restate = Restate::start(install, &run_dir(name)).await.unwrap();
        let log = Arc::new(Log::default());
        let server = serve(endpoint(&log), 0).await;
        let port = server.local_addr().port();
        restate
            .register(&format!("http://{}", server.local_addr()), false)
            .await
            .unwrap();
        Rig {
            restate,
            server: Some(server),
            port,
            log,
        }
    }

    async fn call(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self.restate.call(path, &body).await.unwrap();
        (
            answer.status,
            if answer.status == 200 {
                answer.json()
            } else {
                json!(answer.text())
            },
        )
    }

    /// Waits until `what` was counted `n` times.
    async fn counted(&self, what: &str, n: u32) {
        let started = Instant::now();
        while self.log.get(what) < n {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what} never reached {n}\n{}",
                self.restate.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_keeps_state_serializes_one_key_and_runs_keys_in_parallel() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("restate-counter", &install).await;
    assert_eq!(rig.call("/Counter/a/add", json!(5)).await, (200, json!(5)));
    assert_eq!(
        rig.call("/Counter/a/add", json!(2)).await,
        (200, json!(7)),
        "state kept across invocations"
    );
    assert_eq!(
        rig.call("/Counter/a/get", json!(null)).await,
        (200, json!(7)),
        "a shared handler reads it"
    );

    // Ten adds to one key at once: each reads, sleeps 150 ms, writes. Run together they
    // would lose updates; Restate runs them one after another.
    let started = Instant::now();
    let adds = (0..10).map(|_| rig.call("/Counter/b/add", json!(1)));
    let answers = futures::future::join_all(adds).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let mut seen: Vec<i64> = answers.iter().map(|(_, v)| v.as_i64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=10).collect::<Vec<_>>(),
        "each add saw the one before it"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "one key's adds ran one at a time: {:?}",
        started.elapsed()
    );
    assert_eq!(
        rig.call("/Counter/b/get", json!(null)).await,
        (200, json!(10))
    );

    // One add to each of ten keys at once: they run side by side.
    let started = Instant::now();
    let paths: Vec<String> = (0..10).map(|i| format!("/Counter/key-{i}/add")).collect();
    let adds = paths
        .iter()
        .enumerate()
        .map(|(i, path)| rig.call(path, json!(i)));
    let answers = futures::future::join_all(adds).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(*answer, (200, json!(i)));
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "different keys ran in parallel: {:?}",
        started.elapsed()
    );
    rig.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_retried_until_it_succeeds_once_and_a_terminal_error_reaches_the_caller()
{
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("restate-retries", &install).await;
    // The step fails twice (retryable): Restate retries the invocation, the replay runs
    // the step again, and its third run succeeds.
    assert_eq!(rig.call("/Greeter/flaky", json!(2)).await, (200, json!(3)));
    assert_eq!(
        (
            rig.log.get("flaky.attempts"),
            rig.log.get("flaky.successes")
        ),
        (3, 1)
    );
    let rows = rig
        .restate
        .query("SELECT status, retry_count FROM sys_invocation WHERE target_handler_name = 'flaky'")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "completed");

    // A terminal error ends the invocation at once with its code and message.
    let (status, body) = rig.call("/Greeter/terminal", json!(null)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.as_str().unwrap_or_default().contains("no such order"),
        "{body}"
    );
    rig.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_calls_another_and_sends_one_way() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("restate-calls", &install).await;
    assert_eq!(
        rig.call("/Greeter/greet_and_count", json!("caller")).await,
        (200, json!("hello caller (side-effect-ok)"))
    );
    // The one-way send ran on its own.
    let started = Instant::now();
    loop {
        let (_, count) = rig.call("/Counter/greetings/get", json!(null)).await;
        if count == json!(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sent add never ran: {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awakeable_is_resolved_from_outside() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("restate-awakeable", &install).await;
    let invocation = rig
        .restate
        .send("/Greeter/wait_awakeable", &json!(null))
        .await
        .unwrap();
    let started = Instant::now();
    let id = loop {
        if let Some(id) = rig.log.awakeables.lock().unwrap().first().cloned() {
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no awakeable id was published"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(id.starts_with("sign_1"), "{id}");
    rig.restate
        .resolve_awakeable(&id, &json!("the outside"))
        .await
        .unwrap();
    let answer = rig.restate.attach(&invocation).await.unwrap();
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!("woken with the outside"))
    );
    rig.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_mid_invocation_and_restarted_completes_it_without_rerunning_steps() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::start("restate-endpoint-killed", &install).await;
    let invocation = rig
        .restate
        .send("/Greeter/steps", &json!(1000))
        .await
        .unwrap();
    rig.counted("steps.sleeping", 1).await;
    // Killed with both steps done and the timer running.
    rig.server.take().unwrap().abort().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = serve(endpoint(&rig.log), rig.port).await;
    let answer = rig.restate.attach(&invocation).await.unwrap();
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!("1+1")),
        "{}",
        rig.restate.log_tail(20)
    );
    assert_eq!(
        (rig.log.get("steps.first"), rig.log.get("steps.second")),
        (1, 1),
        "completed steps were replayed, not run"
    );
    assert!(
        rig.log.get("steps.sleeping") >= 2,
        "the invocation ran again after the kill"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restate_server_restarted_mid_invocation_completes_it() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::start("restate-server-restarted", &install).await;
    let invocation = rig
        .restate
        .send("/Greeter/steps", &json!(1500))
        .await
        .unwrap();
    rig.counted("steps.sleeping", 1).await;
    rig.restate.restart().await.unwrap();
    let answer = rig.restate.attach(&invocation).await.unwrap();
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!("1+1")),
        "{}",
        rig.restate.log_tail(20)
    );
    assert_eq!(
        (rig.log.get("steps.first"), rig.log.get("steps.second")),
        (1, 1),
        "completed steps were replayed, not run"
    );
    rig.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_waits_on_a_promise_its_shared_handler_resolves() {
    let install = require!(Install::find());
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("restate-workflow", &install).await;
    let invocation = rig
        .restate
        .send("/Signup/user-1/run", &json!("ada@example.com"))
        .await
        .unwrap();
    // The run handler wrote its state and now waits on the promise.
    let started = Instant::now();
    loop {
        let (status, email) = rig.call("/Signup/user-1/email", json!(null)).await;
        assert_eq!(status, 200, "{email}");
        if email == json!("ada@example.com") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run never stored its state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.call("/Signup/user-1/verify", json!("code-42")).await.0,
        200
    );
    let (status, again) = rig.call("/Signup/user-1/verify", json!("code-43")).await;
    assert_eq!(status, 409, "a promise completes once: {again}");
    let answer = rig.restate.attach(&invocation).await.unwrap();
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!("ada@example.com verified with code-42"))
    );
    rig.server.unwrap().shutdown().await;
}
