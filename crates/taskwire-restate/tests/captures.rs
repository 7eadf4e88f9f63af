//! A real restate-server 1.7.12 talking to Restate's Python SDK, recorded
//! (`tests/captures/{h2,http1}/`: both directions of each connection, and the messages
//! decoded by hand in `decoded.jsonl`): every message stream decodes and re-encodes byte
//! for byte, and taskwire's endpoint, given the requests the server sent, answers with
//! the SDK's bytes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};
use taskwire_restate::capture::{read_h1, read_h2};
use taskwire_restate::{
    Context, Endpoint, Frame, HandlerResult, Json, Message, MessageType, ObjectContext,
    RestateCodec, Service, VirtualObject,
};

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/captures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The hand-decoded message counts of `decoded.jsonl`, in order of appearance.
fn recorded_counts(dir: &str) -> Vec<usize> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/captures/{dir}/decoded.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|record| {
            record
                .get("messages")
                .and_then(Value::as_array)
                .map(Vec::len)
        })
        .filter(|n| *n > 0)
        .collect()
}

fn frames(body: &[u8]) -> Vec<Frame> {
    let mut codec = RestateCodec::new();
    let mut buffer = BytesMut::from(body);
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut buffer).unwrap() {
        frames.push(frame);
    }
    frames
}

fn encode(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    for frame in frames {
        RestateCodec::new().encode(frame, &mut out).unwrap();
    }
    out.freeze()
}

/// Every message body of both directions of every connection in `dir`, in order.
fn bodies(dir: &str) -> Vec<Bytes> {
    let mut bodies = Vec::new();
    for conn in 1..=3 {
        for side in ["c2s", "s2c"] {
            let bytes = capture(&format!("{dir}/conn{conn}.{side}.bin"));
            if dir == "h2" {
                bodies.extend(read_h2(&bytes).unwrap().streams.into_iter().map(|s| s.body));
            } else {
                bodies.extend(read_h1(&bytes).unwrap().into_iter().map(|m| m.body));
            }
        }
    }
    bodies
}

fn is_invocation_stream(body: &[u8]) -> bool {
    // Every invocation body starts with a message header; discovery bodies are JSON or empty.
    !body.is_empty() && body[0] != b'{'
}

#[test]
fn every_captured_stream_decodes_and_re_encodes_byte_for_byte() {
    for dir in ["h2", "http1"] {
        let mut counts = Vec::new();
        for body in bodies(dir).into_iter().filter(|b| is_invocation_stream(b)) {
            let frames = frames(&body);
            for frame in &frames {
                let message = frame.decode(1 << 20).unwrap();
                assert_eq!(
                    Frame::new(&message).body,
                    frame.body,
                    "{dir}: {:?} re-encodes to its bytes",
                    frame.message_type
                );
            }
            assert_eq!(
                encode(&frames),
                body,
                "{dir}: the stream re-encodes to its bytes"
            );
            counts.push(frames.len());
        }
        let mut recorded = recorded_counts(dir);
        recorded.sort_unstable();
        counts.sort_unstable();
        assert_eq!(
            counts, recorded,
            "{dir}: the streams hold the messages decoded.jsonl lists"
        );
    }
}

#[test]
fn the_v6_suspension_keeps_its_lists() {
    let responses = read_h1(&capture("http1/conn2.s2c.bin")).unwrap();
    let suspension = frames(&responses[0].body)
        .into_iter()
        .find(|f| f.message_type == MessageType::Suspension)
        .unwrap();
    match suspension.decode(1 << 20).unwrap() {
        Message::Suspension(s) => {
            assert_eq!(
                (s.waiting_completions, s.waiting_signals),
                (vec![1], vec![1])
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The Python SDK's greeter and counter, written with taskwire.
fn python_sdk_services() -> Endpoint {
    Endpoint::builder()
        .bind(Service::new("Greeter").handler(
            "greet",
            |ctx: Context, Json(name): Json<String>| async move {
                let Json(stamp): Json<String> = ctx
                    .run("stamp", || async { Ok(Json("side-effect-ok".to_owned())) })
                    .await?;
                ctx.sleep(Duration::from_secs(1)).await?;
                HandlerResult::Ok(Json(format!("hello {name} ({stamp})")))
            },
        ))
        .bind(VirtualObject::new("Counter").exclusive(
            "add",
            |ctx: ObjectContext, Json(delta): Json<i64>| async move {
                let count = ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n) + delta;
                ctx.set("count", &Json(count))?;
                HandlerResult::Ok(Json(count))
            },
        ))
        .build()
        .unwrap()
}

/// Each request the server sent over HTTP/1.1, and the SDK's answer to it.
fn exchanges(conn: u32) -> Vec<(String, Bytes, Bytes)> {
    let requests = read_h1(&capture(&format!("http1/conn{conn}.c2s.bin"))).unwrap();
    let responses = read_h1(&capture(&format!("http1/conn{conn}.s2c.bin"))).unwrap();
    requests
        .into_iter()
        .zip(responses)
        .map(|(request, response)| (request.start_line, request.body, response.body))
        .collect()
}

#[tokio::test]
async fn taskwire_answers_the_captured_greeter_requests_with_the_sdks_bytes() {
    let endpoint = python_sdk_services();
    let exchanges = exchanges(2);
    assert_eq!(
        exchanges.len(),
        3,
        "the greeter was invoked three times over HTTP/1.1"
    );
    for (i, (line, request, sdk)) in exchanges.iter().enumerate() {
        assert!(line.starts_with("POST /invoke/Greeter/greet"), "{line}");
        let ours = taskwire_restate::testing::invoke_bytes(&endpoint, "Greeter", "greet", request)
            .await
            .unwrap();
        if i == 1 {
            // The new timer's wake-up time is now plus a second: it differs by when the
            // test runs, and nothing else does.
            let (mut ours, mut sdk) = (frames(&ours), frames(sdk));
            for frames in [&mut ours, &mut sdk] {
                let sleep = frames
                    .iter_mut()
                    .find(|f| f.message_type == MessageType::SleepCommand)
                    .unwrap();
                let Message::SleepCommand(mut command) = sleep.decode(1 << 20).unwrap() else {
                    unreachable!()
                };
                command.wake_up_time = 0;
                *sleep = Frame::new(&Message::SleepCommand(command));
            }
            assert_eq!(ours, sdk, "answer {i}");
        } else {
            assert_eq!(
                ours, sdk,
                "answer {i}: the same bytes as Restate's Python SDK"
            );
        }
    }
}

#[tokio::test]
async fn taskwire_answers_the_captured_counter_requests_with_the_sdks_bytes() {
    let endpoint = python_sdk_services();
    for (line, request, sdk) in exchanges(3) {
        assert!(line.starts_with("POST /invoke/Counter/add"), "{line}");
        let ours = taskwire_restate::testing::invoke_bytes(&endpoint, "Counter", "add", &request)
            .await
            .unwrap();
        assert_eq!(ours, sdk, "the same bytes as Restate's Python SDK");
    }
}
