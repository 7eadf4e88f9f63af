//! The scripts' data model: a JSON file per scenario, read into [`Script`]s.
//!
//! ```json
//! {
//!   "name": "calls/deadline-already-passed",
//!   "requirements": ["TW-CALL-4"],
//!   "description": "What the script shows, in a sentence.",
//!   "transports": ["tcp", "quic"],
//!   "framings": ["binary", "json"],
//!   "handshake": true,
//!   "steps": [
//!     {"send": {"call": 1, "type": "taskwire.management.v1.HealthRequest", "body": {}, "end": true}},
//!     {"expect": {"call": 1, "type": "taskwire.management.v1.HealthResponse", "end": true}}
//!   ]
//! }
//! ```
//!
//! `transports` and `framings` default to all (QUIC carries binary frames only);
//! `handshake` (default `true`) has the kit send the default Hello and expect Negotiated
//! before the steps. `early_data` (default `false`; QUIC only) has the kit first make one
//! connection to get a session ticket, then resume that session and play the steps from
//! its first flight, as TLS early data (0-RTT), until the handshake completes: such a
//! script sets `handshake` to `false` and sends its Hello and calls before it expects
//! anything. Each step is an object with one action and, optionally, `"transport"`
//! and `"framing"` keys that limit it to one of them. Calls are numbered from 1 and call 0
//! is the control stream: over TCP call *n* is stream id *n*; over QUIC it is the *n*-th
//! call stream the kit opens. In every string, `$RUN` stands for a value unique to the
//! run, and in `send_json_text`, `$STREAM` for the call's stream id.
//!
//! | action | operands | what it does |
//! |---|---|---|
//! | `hello` | Hello body members | sends the default Hello with these members replaced, on call 0 |
//! | `send` | `call`, `type`, `body`, `end` | one frame of `type` with the JSON `body`, in the connection's framing |
//! | `send_frame` | `call`, `type` or `type_id`, `body` or `body_hex` (with `repeat`: that many times), `flags`, `version`, `length` | a binary frame whose header fields may be set to anything |
//! | `send_json_text` | `call`, `text`, `repeat` | a JSON frame: a length prefix and `text` as it is (`$REPEAT` expanded, see [`parse`]) |
//! | `send_raw` | `call`, `hex` | bytes as they are (over TCP onto the connection) |
//! | `finish` | `call` | QUIC: ends the call stream's sending side (FIN); TCP: nothing |
//! | `cancel` | `call` | QUIC: resets the call stream with `CANCELLED`; TCP: `CancelCall` |
//! | `expect` | `call`, `type`, `status`, `body`, `end`, `message_contains` | the next frame of the call matches |
//! | `expect_refused` | `reason` | the answer to the Hello is Refused with this reason, and the connection closes |
//! | `expect_go_away` | `reason`, `last_accepted` | the next control frame is a GoAway |
//! | `expect_closed` | `quic_code` | the server closes the connection (over QUIC with this application code) |
//! | `expect_open` | | the connection still serves: a Ping call on a new call is answered |
//! | `expect_quiet` | `call`, `ms` | nothing arrives on the call for `ms` milliseconds |
//! | `expect_stream_end` | `call` | QUIC: the server finished the call stream after its last frame; TCP: nothing |
//! | `expect_reset` | `call`, `code` | QUIC: the server reset the call stream with this code; TCP: nothing |
//! | `expect_not_stopped` | `call` | QUIC: after `finish`, the server read the stream to its end and did not stop it; TCP: nothing |
//! | `sleep` | `ms` | waits |

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::vectors::Framing;

/// A transport the kit runs scripts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// One TLS (or loopback plaintext) byte stream, calls multiplexed by stream id.
    Tcp,
    /// QUIC, one stream per call, binary frames only.
    Quic,
}

impl Transport {
    /// `tcp` or `quic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

/// One scenario.
#[derive(Clone, Debug)]
pub struct Script {
    /// `area/name`, as the file's path under `conformance/scripts/` without `.json`.
    pub name: String,
    /// The ids of the requirements it checks (`docs/protocol.md` §18).
    pub requirements: Vec<String>,
    /// What it shows.
    pub description: String,
    /// The transports it applies to.
    pub transports: Vec<Transport>,
    /// The framings it applies to.
    pub framings: Vec<Framing>,
    /// Whether the kit opens with the default Hello and expects Negotiated.
    pub handshake: bool,
    /// Whether the connection resumes a session and sends its first steps as early data
    /// (QUIC only).
    pub early_data: bool,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// One step, and where it applies.
#[derive(Clone, Debug)]
pub struct Step {
    /// Only over this transport, if set.
    pub transport: Option<Transport>,
    /// Only in this framing, if set.
    pub framing: Option<Framing>,
    /// What the step does.
    pub action: Action,
}

/// What a step does. See the [module docs](self) for each.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum Action {
    Hello(Map<String, Value>),
    Send {
        call: u32,
        type_name: String,
        body: Value,
        end: bool,
    },
    SendFrame {
        call: u32,
        version: u8,
        flags: Option<u8>,
        type_id: u16,
        body: Vec<u8>,
        length: Option<u32>,
    },
    SendJsonText {
        call: u32,
        text: String,
    },
    SendRaw {
        call: u32,
        bytes: Vec<u8>,
    },
    Finish {
        call: u32,
    },
    Cancel {
        call: u32,
    },
    Expect(Expectation),
    ExpectRefused {
        reason: String,
    },
    ExpectGoAway {
        reason: String,
        last_accepted: Option<u64>,
    },
    ExpectClosed {
        quic_code: Option<u64>,
    },
    ExpectOpen,
    ExpectQuiet {
        call: u32,
        ms: u64,
    },
    ExpectStreamEnd {
        call: u32,
    },
    ExpectReset {
        call: u32,
        code: u64,
    },
    ExpectNotStopped {
        call: u32,
    },
    Sleep {
        ms: u64,
    },
}

/// What the next frame of a call must be.
#[derive(Clone, Debug, Default)]
pub struct Expectation {
    /// The call.
    pub call: u32,
    /// Its message's full name.
    pub type_name: Option<String>,
    /// For a status frame: its code's name, such as `STATUS_CODE_OK`.
    pub status: Option<String>,
    /// Members its body must have (a member expected at its default may be absent).
    pub body: Option<Value>,
    /// Whether it carries END_STREAM.
    pub end: Option<bool>,
    /// Text the status message must contain.
    pub message_contains: Option<String>,
}

/// `"repeat": {"text": "{}", "times": 3, "separator": ","}` in `send_json_text`: `$REPEAT`
/// in the text stands for `{},{},{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Repeat {
    text: String,
    times: usize,
    #[serde(default)]
    separator: String,
}

/// Reads a script from its JSON text; `name` is its path under `scripts/`.
pub fn parse(name: &str, text: &str) -> Result<Script, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    let mut object = into_object(value, name)?;
    let script = Script {
        name: take_string(&mut object, "name", name)?,
        requirements: take(&mut object, "requirements", name)?.unwrap_or_default(),
        description: take_string(&mut object, "description", name)?,
        transports: take(&mut object, "transports", name)?
            .unwrap_or_else(|| vec![Transport::Tcp, Transport::Quic]),
        framings: take(&mut object, "framings", name)?
            .unwrap_or_else(|| vec![Framing::Binary, Framing::Json]),
        handshake: take(&mut object, "handshake", name)?.unwrap_or(true),
        early_data: take(&mut object, "early_data", name)?.unwrap_or(false),
        steps: take::<Vec<Value>>(&mut object, "steps", name)?
            .ok_or_else(|| format!("{name}: no `steps`"))?
            .into_iter()
            .enumerate()
            .map(|(i, step)| parse_step(step).map_err(|e| format!("{name}, step {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?,
    };
    no_more(&object, name)?;
    if script.name != name {
        return Err(format!("{name}: its `name` is {:?}", script.name));
    }
    if script.requirements.is_empty() {
        return Err(format!("{name}: names no requirement"));
    }
    Ok(script)
}

fn into_object(value: Value, context: &str) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(format!("{context}: expected an object, got {other}")),
    }
}

fn take<T: for<'de> Deserialize<'de>>(
    object: &mut Map<String, Value>,
    key: &str,
    context: &str,
) -> Result<Option<T>, String> {
    object
        .remove(key)
        .map(|value| serde_json::from_value(value).map_err(|e| format!("{context}: `{key}`: {e}")))
        .transpose()
}

fn take_string(
    object: &mut Map<String, Value>,
    key: &str,
    context: &str,
) -> Result<String, String> {
    take(object, key, context)?.ok_or_else(|| format!("{context}: no `{key}`"))
}

fn no_more(object: &Map<String, Value>, context: &str) -> Result<(), String> {
    match object.keys().next() {
        Some(key) => Err(format!("{context}: unknown member `{key}`")),
        None => Ok(()),
    }
}

fn call(object: &mut Map<String, Value>, action: &str) -> Result<u32, String> {
    take(object, "call", action)?.ok_or_else(|| format!("{action}: no `call`"))
}

fn hex_bytes(text: &str, context: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(digits).map_err(|e| format!("{context}: {e}"))
}

fn parse_step(value: Value) -> Result<Step, String> {
    let mut object = into_object(value, "a step")?;
    let transport = take(&mut object, "transport", "a step")?;
    let framing = take(&mut object, "framing", "a step")?;
    if object.len() != 1 {
        return Err(format!(
            "a step has exactly one action, this one has {:?}",
            object.keys().collect::<Vec<_>>()
        ));
    }
    let (name, operands) = object.into_iter().next().expect("one member");
    let mut o = into_object(operands, &name)?;
    let action = match name.as_str() {
        "hello" => Action::Hello(std::mem::take(&mut o)),
        "send" => Action::Send {
            call: call(&mut o, &name)?,
            type_name: take_string(&mut o, "type", &name)?,
            body: take(&mut o, "body", &name)?.unwrap_or_else(|| Value::Object(Map::new())),
            end: take(&mut o, "end", &name)?.unwrap_or(false),
        },
        "send_frame" => {
            let call = call(&mut o, &name)?;
            let type_name: Option<String> = take(&mut o, "type", &name)?;
            let type_id = match (take::<u16>(&mut o, "type_id", &name)?, &type_name) {
                (Some(id), _) => id,
                (None, Some(type_name)) => {
                    taskwire_proto::registry::by_name(type_name)
                        .ok_or_else(|| format!("{name}: no message {type_name}"))?
                        .type_id
                }
                (None, None) => return Err(format!("{name}: needs `type` or `type_id`")),
            };
            let body = match (
                take::<String>(&mut o, "body_hex", &name)?,
                take::<Value>(&mut o, "body", &name)?,
            ) {
                (Some(hex), _) => hex_bytes(&hex, &name)?,
                (None, Some(json)) => {
                    let type_name = type_name
                        .as_deref()
                        .ok_or_else(|| format!("{name}: a JSON `body` needs `type`"))?;
                    super::encode_body(type_name, &json)?
                }
                (None, None) => Vec::new(),
            };
            let body = body.repeat(take(&mut o, "repeat", &name)?.unwrap_or(1));
            Action::SendFrame {
                call,
                version: take(&mut o, "version", &name)?.unwrap_or(1),
                flags: take(&mut o, "flags", &name)?,
                type_id,
                body,
                length: take(&mut o, "length", &name)?,
            }
        }
        "send_json_text" => {
            let call = call(&mut o, &name)?;
            let mut text = take_string(&mut o, "text", &name)?;
            if let Some(repeat) = take::<Repeat>(&mut o, "repeat", &name)? {
                let expansion = vec![repeat.text; repeat.times].join(&repeat.separator);
                text = text.replace("$REPEAT", &expansion);
            }
            Action::SendJsonText { call, text }
        }
        "send_raw" => Action::SendRaw {
            call: call(&mut o, &name)?,
            bytes: hex_bytes(&take_string(&mut o, "hex", &name)?, &name)?,
        },
        "finish" => Action::Finish {
            call: call(&mut o, &name)?,
        },
        "cancel" => Action::Cancel {
            call: call(&mut o, &name)?,
        },
        "expect" => Action::Expect(Expectation {
            call: call(&mut o, &name)?,
            type_name: take(&mut o, "type", &name)?,
            status: take(&mut o, "status", &name)?,
            body: take(&mut o, "body", &name)?,
            end: take(&mut o, "end", &name)?,
            message_contains: take(&mut o, "message_contains", &name)?,
        }),
        "expect_refused" => Action::ExpectRefused {
            reason: take_string(&mut o, "reason", &name)?,
        },
        "expect_go_away" => Action::ExpectGoAway {
            reason: take_string(&mut o, "reason", &name)?,
            last_accepted: take(&mut o, "last_accepted", &name)?,
        },
        "expect_closed" => Action::ExpectClosed {
            quic_code: take(&mut o, "quic_code", &name)?,
        },
        "expect_open" => Action::ExpectOpen,
        "expect_quiet" => Action::ExpectQuiet {
            call: call(&mut o, &name)?,
            ms: take(&mut o, "ms", &name)?.unwrap_or(300),
        },
        "expect_stream_end" => Action::ExpectStreamEnd {
            call: call(&mut o, &name)?,
        },
        "expect_reset" => Action::ExpectReset {
            call: call(&mut o, &name)?,
            code: take(&mut o, "code", &name)?.ok_or("expect_reset: no `code`")?,
        },
        "expect_not_stopped" => Action::ExpectNotStopped {
            call: call(&mut o, &name)?,
        },
        "sleep" => Action::Sleep {
            ms: take(&mut o, "ms", &name)?.ok_or("sleep: no `ms`")?,
        },
        other => return Err(format!("unknown action `{other}`")),
    };
    no_more(&o, &name)?;
    Ok(Step {
        transport,
        framing,
        action,
    })
}
