//! The conformance kit: scripted sessions that check what a server does, over TCP and
//! QUIC, in both framings.
//!
//! Each scenario is a language-neutral JSON file under `conformance/scripts/` (its format
//! is in [`script`]): frames to send, and the frames or reactions (a status, a GoAway, a
//! closed connection, a stream's end) to expect. [`run`] plays every script against a
//! server and reports one [`Check`] per script, transport and framing, with the
//! requirement ids of `docs/protocol.md` §18 it checks. `taskwire conformance` runs it
//! against any server; this crate's tests run it against the reference server.
//!
//! The scripts assume a server that serves every conversation the way the reference
//! server does (`crates/taskwire-reference`), with the default limits.

mod quic;
pub mod script;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde_json::{Map, Value, json};
use taskwire_codec::{Builder, Flags, Frame};
use taskwire_proto::MessageSet;
use taskwire_proto::registry::AnyMessage;
use tokio_util::codec::Encoder as _;

pub use script::{Action, Expectation, Script, Step, Transport};

use crate::vectors::Framing;

/// Every script, as `(name, JSON text)`: the files under `conformance/scripts/`, built
/// into the crate so that the kit runs anywhere.
pub const SCRIPTS: &[(&str, &str)] = &include!("scripts.list");

/// The scripts, parsed. Panics on a script that does not parse, which a test of this
/// crate rules out.
pub fn scripts() -> Vec<Script> {
    SCRIPTS
        .iter()
        .map(|(name, text)| script::parse(name, text).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The server to check.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    /// The name its certificate must carry.
    pub server_name: String,
    /// TLS for both transports (ALPN is set by the kit). `None` runs TCP in plaintext,
    /// which a server allows only on loopback; QUIC then cannot run.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How long an expectation waits for its frame. Default 10 s.
    pub patience: Duration,
}

impl Target {
    /// A target with the default patience.
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Target {
        Target {
            addr,
            server_name: server_name.to_owned(),
            tls,
            patience: Duration::from_secs(10),
        }
    }
}

/// The result of one script over one transport in one framing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// The script's name.
    pub script: String,
    /// The transport.
    pub transport: Transport,
    /// The framing.
    pub framing: Framing,
    /// The requirement ids the script checks.
    pub requirements: Vec<String>,
    /// `None` if it passed, else why not: the step (from 1) and what was wrong.
    pub failure: Option<String>,
}

impl Check {
    /// Whether the server did what the script expects.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Runs `scripts` against the server over `transport`, in every framing the transport
/// carries and each script applies to, one script after another on a fresh connection.
pub async fn run(target: &Target, transport: Transport, scripts: &[Script]) -> Vec<Check> {
    let mut checks = Vec::new();
    for script in scripts {
        if !script.transports.contains(&transport) {
            continue;
        }
        for framing in [Framing::Binary, Framing::Json] {
            if !script.framings.contains(&framing) || !carries(transport, framing) {
                continue;
            }
            let failure = run_one(target, transport, framing, script).await.err();
            checks.push(Check {
                script: script.name.clone(),
                transport,
                framing,
                requirements: script.requirements.clone(),
                failure,
            });
        }
    }
    checks
}

/// Whether `transport` carries `framing`: QUIC carries binary frames only.
pub fn carries(transport: Transport, framing: Framing) -> bool {
    transport == Transport::Tcp || framing == Framing::Binary
}

/// A frame the server sent, in language-neutral form.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) stream: u32,
    pub(crate) flags: Flags,
    pub(crate) type_name: String,
    /// The body's canonical JSON, or `{"undecodable": "<hex>"}`.
    pub(crate) body: Value,
}

impl Received {
    pub(crate) fn from_message(stream: u32, flags: Flags, message: &AnyMessage) -> Received {
        Received {
            stream,
            flags,
            type_name: message.name().to_owned(),
            body: body_json(message),
        }
    }

    fn describe(&self) -> String {
        let end = if self.flags.is_end_stream() {
            " END_STREAM"
        } else {
            ""
        };
        format!("{}{end} {}", self.type_name, self.body)
    }
}

/// What a call's stream (or the connection) did next.
#[derive(Debug)]
pub(crate) enum Event {
    Frame(Received),
    /// QUIC: the server finished the stream.
    End,
    /// QUIC: the server reset the stream with this code.
    Reset(u64),
    /// The connection closed: over QUIC with the application code, if any.
    Closed {
        code: Option<u64>,
        reason: String,
    },
}

/// One connection to the server, over either transport.
pub(crate) enum Session {
    Tcp(tcp::TcpSession),
    /// Boxed: a QUIC session holds far more than a TCP one.
    Quic(Box<quic::QuicSession>),
}

impl Session {
    async fn connect(
        target: &Target,
        transport: Transport,
        framing: Framing,
        early_data: bool,
    ) -> Result<Session, String> {
        match transport {
            Transport::Tcp if early_data => fail("early data is a QUIC script's option"),
            Transport::Tcp => Ok(Session::Tcp(
                tcp::TcpSession::connect(target, framing).await?,
            )),
            Transport::Quic => Ok(Session::Quic(Box::new(
                quic::QuicSession::connect(target, early_data).await?,
            ))),
        }
    }

    fn stream_id(&self, call: u32) -> u32 {
        match self {
            Session::Tcp(_) => call,
            Session::Quic(_) => 0,
        }
    }

    async fn send(&mut self, call: u32, bytes: &[u8], end: bool) -> Result<(), String> {
        match self {
            Session::Tcp(s) => s.send(bytes).await,
            Session::Quic(s) => s.send(call, bytes, end).await,
        }
    }

    async fn next(&mut self, call: u32, patience: Duration) -> Result<Event, String> {
        match self {
            Session::Tcp(s) => s.next(call, patience).await,
            Session::Quic(s) => s.next(call, patience).await,
        }
    }
}

fn fail<T>(reason: impl Into<String>) -> Result<T, String> {
    Err(reason.into())
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// A value unique to one run of one script.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{}",
        nanos % (1 << 48),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replaces `$RUN` in every string of `value`.
fn substitute(value: &Value, run: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("$RUN", run)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, run)).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, run)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The Hello the kit sends: every conversation, the framing's codec.
fn default_hello(framing: Framing, run: &str) -> Map<String, Value> {
    let codec = match framing {
        Framing::Binary => "CODEC_PROTOBUF",
        Framing::Json => "CODEC_JSON",
    };
    let hello = json!({
        "minVersion": 1,
        "maxVersion": 1,
        "conversations": [
            "CONVERSATION_SESSION", "CONVERSATION_INSTANCE", "CONVERSATION_ENVIRONMENT",
            "CONVERSATION_MANAGEMENT", "CONVERSATION_RUNNER", "CONVERSATION_JOURNAL"
        ],
        "codecs": [codec],
        "maxFrameLength": 16_777_216,
        "peerName": "taskwire-conformance",
        "tenant": format!("conformance-{run}"),
    });
    match hello {
        Value::Object(members) => members,
        _ => unreachable!("a literal object"),
    }
}

/// The message `type_name` with the JSON body `body`.
fn message(type_name: &str, body: &Value) -> Result<AnyMessage, String> {
    let type_id =
        AnyMessage::type_id_of(type_name).ok_or_else(|| format!("no message {type_name}"))?;
    AnyMessage::deserialize_json_body(type_id, body).map_err(|e| format!("{type_name} {body}: {e}"))
}

/// The protobuf body of `type_name` given as JSON.
pub(crate) fn encode_body(type_name: &str, body: &Value) -> Result<Vec<u8>, String> {
    let message = message(type_name, body)?;
    let mut out = BytesMut::new();
    message.encode_body(&mut out);
    Ok(out.to_vec())
}

/// One frame in `framing`.
fn encode_frame(
    framing: Framing,
    stream: u32,
    message: AnyMessage,
    end: bool,
) -> Result<Vec<u8>, String> {
    let mut frame = Frame::new(message).with_stream_id(stream);
    if end {
        frame = frame.end_stream();
    }
    let mut builder = Builder::new();
    builder.first_frame_done(true).max_frame_length(u32::MAX);
    let mut out = BytesMut::new();
    match framing {
        Framing::Binary => builder.new_binary_codec().encode(&frame, &mut out),
        Framing::Json => builder.new_any_json_codec().encode(&frame, &mut out),
    }
    .map_err(|e| format!("encoding: {e}"))?;
    Ok(out.to_vec())
}

struct Body<'a>(&'a AnyMessage);

impl serde::Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_json_body(serializer)
    }
}

fn body_json(message: &AnyMessage) -> Value {
    serde_json::to_value(Body(message))
        .unwrap_or_else(|e| json!({ "unrepresentable": e.to_string() }))
}

/// Whether `actual` has every member of `expected`: objects by member (a member expected at
/// its JSON default may be absent, as canonical JSON leaves defaults out), arrays element
/// by element, anything else by value.
fn matches(expected: &Value, actual: Option<&Value>) -> bool {
    match (expected, actual) {
        (expected, None) => is_default(expected),
        (Value::Object(want), Some(Value::Object(have))) => want
            .iter()
            .all(|(key, value)| matches(value, have.get(key))),
        (Value::Array(want), Some(Value::Array(have))) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| matches(w, Some(h)))
        }
        (expected, Some(actual)) => expected == actual,
    }
}

fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(items) => items.is_empty(),
        Value::Object(members) => members.is_empty(),
    }
}

/// Checks `frame` against `expected`.
fn check(expected: &Expectation, frame: &Received) -> Result<(), String> {
    let wrong = |what: &str| Err(format!("{what}; got {}", frame.describe()));
    if let Some(type_name) = &expected.type_name
        && &frame.type_name != type_name
    {
        return wrong(&format!("expected {type_name}"));
    }
    if let Some(code) = &expected.status {
        if frame.type_name != "taskwire.session.v1.Status" || !frame.flags.is_status() {
            return wrong(&format!("expected a status frame {code}"));
        }
        let actual = frame
            .body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("STATUS_CODE_OK");
        if actual != code {
            return wrong(&format!("expected {code}"));
        }
    }
    let end = expected.end.or(expected.status.as_ref().map(|_| true));
    if let Some(end) = end
        && frame.flags.is_end_stream() != end
    {
        return wrong(&format!(
            "expected END_STREAM {}",
            if end { "set" } else { "clear" }
        ));
    }
    if let Some(body) = &expected.body
        && !matches(body, Some(&frame.body))
    {
        return wrong(&format!("expected a body with {body}"));
    }
    if let Some(text) = &expected.message_contains {
        let message = frame
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !message.contains(text.as_str()) {
            return wrong(&format!("expected a message containing {text:?}"));
        }
    }
    Ok(())
}

/// Plays `script` over a fresh connection; the failing step and why, if any.
async fn run_one(
    target: &Target,
    transport: Transport,
    framing: Framing,
    script: &Script,
) -> Result<(), String> {
    let run = run_id();
    let mut session = Session::connect(target, transport, framing, script.early_data)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let mut player = Player {
        target,
        framing,
        run,
        highest_call: 0,
    };
    if script.handshake {
        let hello = Action::Hello(Map::new());
        player
            .act(&mut session, &hello)
            .await
            .map_err(|e| format!("the handshake: {e}"))?;
        let negotiated = Expectation {
            call: 0,
            type_name: Some("taskwire.session.v1.Negotiated".into()),
            ..Default::default()
        };
        player
            .act(&mut session, &Action::Expect(negotiated))
            .await
            .map_err(|e| format!("the handshake: {e}"))?;
    }
    for (i, step) in script.steps.iter().enumerate() {
        if step.transport.is_some_and(|t| t != transport)
            || step.framing.is_some_and(|f| f != framing)
        {
            continue;
        }
        player
            .act(&mut session, &step.action)
            .await
            .map_err(|e| format!("step {}: {e}", i + 1))?;
    }
    Ok(())
}

/// Plays one script's steps on a session.
struct Player<'a> {
    target: &'a Target,
    framing: Framing,
    run: String,
    highest_call: u32,
}

impl Player<'_> {
    async fn act(&mut self, session: &mut Session, action: &Action) -> Result<(), String> {
        let patience = self.target.patience;
        match action {
            Action::Hello(overrides) => {
                let mut hello = default_hello(self.framing, &self.run);
                for (key, value) in overrides {
                    hello.insert(key.clone(), substitute(value, &self.run));
                }
                let message = message("taskwire.session.v1.Hello", &Value::Object(hello))?;
                let bytes = encode_frame(self.framing, 0, message, false)?;
                session.send(0, &bytes, false).await
            }
            Action::Send {
                call,
                type_name,
                body,
                end,
            } => {
                self.highest_call = self.highest_call.max(*call);
                let message = message(type_name, &substitute(body, &self.run))?;
                let bytes = encode_frame(self.framing, session.stream_id(*call), message, *end)?;
                session.send(*call, &bytes, *end && *call != 0).await
            }
            Action::SendFrame {
                call,
                version,
                flags,
                type_id,
                body,
                length,
            } => {
                self.highest_call = self.highest_call.max(*call);
                let flags = flags.unwrap_or(if *type_id == 0x0005 { 0x03 } else { 0x01 });
                let mut bytes = vec![*version, flags];
                bytes.extend_from_slice(&type_id.to_be_bytes());
                bytes.extend_from_slice(&session.stream_id(*call).to_be_bytes());
                let len = length.unwrap_or(u32::try_from(body.len()).unwrap_or(u32::MAX));
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(body);
                session.send(*call, &bytes, false).await
            }
            Action::SendJsonText { call, text } => {
                self.highest_call = self.highest_call.max(*call);
                let text = text
                    .replace("$RUN", &self.run)
                    .replace("$STREAM", &session.stream_id(*call).to_string());
                let mut bytes = u32::try_from(text.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes()
                    .to_vec();
                bytes.extend_from_slice(text.as_bytes());
                session.send(*call, &bytes, false).await
            }
            Action::SendRaw { call, bytes } => {
                self.highest_call = self.highest_call.max(*call);
                session.send(*call, bytes, false).await
            }
            Action::Finish { call } => match session {
                Session::Quic(s) => s.finish(*call),
                Session::Tcp(_) => Ok(()),
            },
            Action::Cancel { call } => match session {
                Session::Quic(s) => s.cancel(*call),
                Session::Tcp(_) => {
                    let cancel = message(
                        "taskwire.session.v1.CancelCall",
                        &json!({ "requestId": call.to_string() }),
                    )?;
                    let bytes = encode_frame(self.framing, 0, cancel, false)?;
                    session.send(0, &bytes, false).await
                }
            },
            Action::Expect(expected) => match session.next(expected.call, patience).await? {
                Event::Frame(frame) => {
                    let expected = Expectation {
                        body: expected
                            .body
                            .as_ref()
                            .map(|body| substitute(body, &self.run)),
                        ..expected.clone()
                    };
                    check(&expected, &frame)
                }
                other => fail(format!(
                    "expected a frame on call {}, got {other:?}",
                    expected.call
                )),
            },
            Action::ExpectRefused { reason } => {
                let refused = Expectation {
                    call: 0,
                    type_name: Some("taskwire.session.v1.Refused".into()),
                    body: Some(json!({ "reason": reason })),
                    ..Default::default()
                };
                match session.next(0, patience).await? {
                    Event::Frame(frame) => check(&refused, &frame)?,
                    other => return fail(format!("expected Refused, got {other:?}")),
                }
                self.closed(session, None).await
            }
            Action::ExpectGoAway {
                reason,
                last_accepted,
            } => {
                let mut body = json!({ "reason": reason });
                if let Some(last) = last_accepted {
                    body["lastAcceptedRequestId"] = Value::String(last.to_string());
                }
                let go_away = Expectation {
                    call: 0,
                    type_name: Some("taskwire.session.v1.GoAway".into()),
                    body: Some(body),
                    ..Default::default()
                };
                match session.next(0, patience).await? {
                    Event::Frame(frame) => check(&go_away, &frame),
                    other => fail(format!("expected a GoAway, got {other:?}")),
                }
            }
            Action::ExpectClosed { quic_code } => self.closed(session, *quic_code).await,
            Action::ExpectOpen => {
                let call = self.highest_call + 1;
                self.highest_call = call;
                let ping = message("taskwire.session.v1.Ping", &json!({ "nonce": "77" }))?;
                let bytes = encode_frame(self.framing, session.stream_id(call), ping, true)?;
                session.send(call, &bytes, true).await?;
                let pong = Expectation {
                    call,
                    type_name: Some("taskwire.session.v1.Pong".into()),
                    body: Some(json!({ "nonce": "77" })),
                    end: Some(true),
                    ..Default::default()
                };
                match session.next(call, patience).await? {
                    Event::Frame(frame) => check(&pong, &frame)
                        .map_err(|e| format!("the connection no longer serves: {e}")),
                    other => fail(format!("the connection no longer serves: {other:?}")),
                }
            }
            // No frame: over QUIC the stream may end without one.
            Action::ExpectQuiet { call, ms } => {
                match session.next(*call, Duration::from_millis(*ms)).await {
                    Err(timeout) if timeout.starts_with("nothing") => Ok(()),
                    Err(e) => Err(e),
                    Ok(Event::End) => Ok(()),
                    Ok(event) => fail(format!("expected nothing on call {call}, got {event:?}")),
                }
            }
            Action::ExpectStreamEnd { call } => match session {
                Session::Tcp(_) => Ok(()),
                Session::Quic(_) => match session.next(*call, patience).await? {
                    Event::End => Ok(()),
                    other => fail(format!("expected the stream's end (FIN), got {other:?}")),
                },
            },
            Action::ExpectReset { call, code } => match session {
                Session::Tcp(_) => Ok(()),
                Session::Quic(_) => match session.next(*call, patience).await? {
                    Event::Reset(got) if got == *code => Ok(()),
                    other => fail(format!(
                        "expected a reset with code {code:#x}, got {other:?}"
                    )),
                },
            },
            Action::ExpectNotStopped { call } => match session {
                Session::Tcp(_) => Ok(()),
                Session::Quic(s) => s.not_stopped(*call, patience).await,
            },
            Action::Sleep { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(())
            }
        }
    }

    /// Expects the connection to close, skipping what the server sent before.
    async fn closed(
        &mut self,
        session: &mut Session,
        quic_code: Option<u64>,
    ) -> Result<(), String> {
        let patience = self.target.patience;
        loop {
            match session.next(u32::MAX, patience).await? {
                Event::Closed { code, reason } => {
                    return match (quic_code, code, &session) {
                        (Some(want), got, Session::Quic(_)) if got != Some(want) => fail(format!(
                            "the connection closed with code {got:?} ({reason}), not {want:#x}"
                        )),
                        _ => Ok(()),
                    };
                }
                Event::Frame(frame) if frame.type_name == "taskwire.session.v1.GoAway" => {}
                Event::Frame(frame) => {
                    return fail(format!(
                        "expected the connection to close, got {}",
                        frame.describe()
                    ));
                }
                Event::End | Event::Reset(_) => {}
            }
        }
    }
}
