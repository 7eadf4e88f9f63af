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

use serde_json::json;
use taskwire_restate::{
    Context, Endpoint, EndpointServer, HandlerError, Json, ObjectContext, ServerConfig,
    ServerHandle, Service, SharedObjectContext, TerminalError, VirtualObject,
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
                }),
        )
        .bind(
            VirtualObject::new("Counter")
                .exclusive(
                    "add",
                    |ctx: ObjectContext, Json(delta): Json<i64>| async move {
                        let count =
                            ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n) + delta;
                        ctx.set("count", &Json(count))?;
                        Ok(Json(count))
                    },
                )
                .shared("get", |ctx: SharedObjectContext, ()| async move {
                    Ok(Json(
                        ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n),
                    ))
                }),
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
    assert!(
        registered["services"]
            .as_array()
            .is_some_and(|s| s.len() == 2),
        "{registered}"
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
