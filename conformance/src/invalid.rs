//! The invalid vectors, each with the error kind the protocol requires.

use taskwire_proto::WireMessage;
use taskwire_proto::instance::v1::PollSignalsResponse;
use taskwire_proto::journal::v1::Suspension;
use taskwire_proto::runner::v1::{CancelRequest, ExecutionOutcome};
use taskwire_proto::session::v1::{Ping, Status};

use crate::sample;
use crate::vectors::{Framing, InvalidVector, Limits, any, encode};
use taskwire_codec::Frame;

fn header(version: u8, flags: u8, type_id: u16, stream: u32, len: u32) -> Vec<u8> {
    let mut out = vec![version, flags];
    out.extend_from_slice(&type_id.to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out
}

fn binary_frame(type_id: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = header(1, flags, type_id, 0, body.len() as u32);
    out.extend_from_slice(body);
    out
}

fn json_frame(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

fn good_ping(framing: Framing) -> Vec<u8> {
    encode(
        framing,
        &[Frame::new(any(Ping {
            nonce: 1,
            ..Default::default()
        }))],
    )
    .expect("ping encodes")
}

/// The number of `field` in the message `message` (full name), from the schema.
fn field_number(message: &str, field: &str) -> u32 {
    sample::pool()
        .get_message_by_name(message)
        .and_then(|m| m.get_field_by_name(field))
        .unwrap_or_else(|| panic!("{message}.{field} not in schema"))
        .number()
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field.
fn nested(field: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(field << 3 | 2), &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// An ExecutionOutcome whose success result nests `values` google.protobuf.Value levels
/// through list values: two protobuf message levels per Value.
fn deeply_nested_outcome(values: usize) -> Vec<u8> {
    let list_value = field_number("google.protobuf.Value", "list_value");
    let list_items = field_number("google.protobuf.ListValue", "values");
    let mut value = Vec::new();
    for _ in 0..values {
        value = nested(list_value, &nested(list_items, &value));
    }
    let success_field = field_number(ExecutionOutcome::NAME, "success");
    let result_field = field_number("taskwire.runner.v1.ExecutionOutcome.Success", "result");
    nested(success_field, &nested(result_field, &value))
}

fn case(
    name: &str,
    description: &str,
    framing: Framing,
    limits: Limits,
    bytes: Vec<u8>,
    frames_before_error: usize,
    error: &str,
) -> InvalidVector {
    InvalidVector {
        name: name.to_owned(),
        description: description.to_owned(),
        framing,
        limits,
        hex: hex::encode(bytes),
        frames_before_error,
        error: error.to_owned(),
    }
}

/// Every invalid case.
pub(crate) fn cases() -> Vec<InvalidVector> {
    use Framing::{Binary, Json};
    let d = Limits::default();
    let ping = Ping::TYPE_ID;
    let status = Status::TYPE_ID;
    let job_id = field_number(CancelRequest::NAME, "job_id");
    let after_ping = |framing: Framing, rest: Vec<u8>| [good_ping(framing), rest].concat();
    let deep_json = {
        let mut text =
            String::from(r#"{"type":"taskwire.runner.v1.ExecutionRequest","body":{"params":"#);
        text.push_str(&r#"{"a":"#.repeat(130));
        text.push('1');
        text.push_str(&"}".repeat(130));
        text.push_str("}}");
        text.into_bytes()
    };
    vec![
        case("binary/first-frame-over-hello-limit", "The first frame declares 65,537 bytes, one over the 64 KiB first-frame limit.", Binary, d, header(1, 0, ping, 0, 65_537), 0, "frame_too_large"),
        case("binary/length-0xffffffff", "A length of 0xFFFFFFFF after a good first frame: refused before any allocation.", Binary, d, after_ping(Binary, header(1, 0, ping, 0, u32::MAX)), 1, "frame_too_large"),
        case("binary/length-over-frame-limit", "16 MiB + 1 after a good first frame.", Binary, d, after_ping(Binary, header(1, 0, ping, 0, 16 * 1024 * 1024 + 1)), 1, "frame_too_large"),
        case("binary/length-over-announced-limit", "A peer that announced 1,024-byte frames receives a 1,025-byte body.", Binary, Limits { max_frame_length: Some(1024), ..d }, header(1, 0, ping, 0, 1025), 0, "frame_too_large"),
        case("binary/unknown-version", "Version byte 2.", Binary, d, binary_frame(ping, 0, &[]).iter().enumerate().map(|(i, b)| if i == 0 { 2 } else { *b }).collect(), 0, "unsupported_version"),
        case("binary/version-zero", "Version byte 0: what a JSON frame's length prefix looks like to a binary reader.", Binary, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","body":{}}"#), 0, "unsupported_version"),
        case("binary/reserved-flag", "Flag bit 2, reserved in version 1.", Binary, d, binary_frame(ping, 0x04, &[]), 0, "reserved_flags"),
        case("binary/reserved-flag-high", "Flag bit 7, reserved in version 1.", Binary, d, binary_frame(ping, 0x80, &[]), 0, "reserved_flags"),
        case("binary/unknown-type-id", "Type id 0x7fff, in the reserved range: no such message.", Binary, d, binary_frame(0x7fff, 0, &[]), 0, "unknown_message_type"),
        case("binary/type-id-zero", "Type id 0 is never assigned.", Binary, d, binary_frame(0, 0, &[]), 0, "unknown_message_type"),
        case("binary/status-flag-on-ping", "The status flag on a frame whose type is not Status.", Binary, d, binary_frame(ping, 0x02, &[]), 0, "status_flag_mismatch"),
        case("binary/status-without-flag", "A Status frame without the status flag.", Binary, d, binary_frame(status, 0, &[]), 0, "status_flag_mismatch"),
        case("binary/header-cut-short", "Input ends 5 bytes into a 12-byte header.", Binary, d, header(1, 0, ping, 0, 0)[..5].to_vec(), 0, "truncated"),
        case("binary/body-cut-short", "A header declaring 10 bytes, then 3 bytes and the end of input.", Binary, d, [header(1, 0, ping, 0, 10), vec![8, 1, 8]].concat(), 0, "truncated"),
        case("binary/body-never-sent", "A good frame, then a header declaring 4,096 bytes and nothing after it.", Binary, d, after_ping(Binary, header(1, 0, ping, 0, 4096)), 1, "truncated"),
        case("binary/invalid-varint", "An 11-byte varint: longer than any 64-bit value.", Binary, d, binary_frame(ping, 0, &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), 0, "protobuf"),
        case("binary/invalid-wire-type", "Wire type 7 does not exist.", Binary, d, binary_frame(ping, 0, &[0x0f]), 0, "protobuf"),
        case("binary/invalid-tag-zero", "Field number 0 is invalid.", Binary, d, binary_frame(ping, 0, &[0x00, 0x00]), 0, "protobuf"),
        case("binary/length-past-end-of-body", "A length-delimited field claims 5 bytes; 1 follows.", Binary, d, binary_frame(ping, 0, &[0x7a, 0x05, 0x41]), 0, "protobuf"),
        case("binary/invalid-utf8-string", "A string field holding the bytes ff fe.", Binary, d, binary_frame(CancelRequest::TYPE_ID, 0, &nested(job_id, &[0xff, 0xfe])), 0, "protobuf"),
        case("binary/nesting-past-100", "A Value nested 60 list levels deep: 120+ message levels, past the recursion limit of 100.", Binary, d, binary_frame(ExecutionOutcome::TYPE_ID, 0, &deeply_nested_outcome(60)), 0, "protobuf"),
        case("binary/decoded-size-over-budget", "A PollSignalsResponse of 10 empty Signals (20 body bytes) counts 11 x 1,024 decoded bytes, over a budget of 8,192: refused before decoding.", Binary, Limits { max_decoded_size: Some(8192), ..d }, binary_frame(PollSignalsResponse::TYPE_ID, 0, &[0x0a, 0x00].repeat(10)), 0, "decoded_too_large"),
        case("binary/packed-scalars-over-budget", "A Suspension whose packed entry_indexes hold 1,200 one-byte values: 1,024 + 8 x 1,200 decoded bytes, over a budget of 8,192.", Binary, Limits { max_decoded_size: Some(8192), ..d }, binary_frame(Suspension::TYPE_ID, 0, &nested(field_number(Suspension::NAME, "entry_indexes"), &[0x01; 1200])), 0, "decoded_too_large"),
        case("json/first-frame-over-hello-limit", "A JSON length prefix of 65,537 on the first frame.", Json, d, 65_537u32.to_be_bytes().to_vec(), 0, "frame_too_large"),
        case("json/length-0xffffffff", "A JSON length prefix of 0xFFFFFFFF after a good first frame.", Json, d, after_ping(Json, u32::MAX.to_be_bytes().to_vec()), 1, "frame_too_large"),
        case("json/empty-frame", "Length 0: no JSON value at all.", Json, d, json_frame(b""), 0, "json_syntax"),
        case("json/syntax-error", "Not JSON.", Json, d, json_frame(b"{type: Ping}"), 0, "json_syntax"),
        case("json/trailing-data", "A second value after the object.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","body":{}} {}"#), 0, "json_syntax"),
        case("json/invalid-utf8", "The byte ff inside a body string.", Json, d, json_frame(b"{\"type\":\"taskwire.runner.v1.CancelRequest\",\"body\":{\"jobId\":\"\xff\"}}"), 0, "json_syntax"),
        case("json/lone-surrogate", "A \\ud800 escape with no low surrogate after it.", Json, d, json_frame(br#"{"type":"taskwire.runner.v1.CancelRequest","body":{"jobId":"\ud800"}}"#), 0, "json_syntax"),
        case("json/nesting-past-128", "A body nested 130 objects deep, past the JSON depth limit of 128.", Json, d, json_frame(&deep_json), 0, "json_syntax"),
        case("json/unknown-member-invalid-utf8", "The byte ff inside a string of a body member the schema does not define: unknown members are ignored, but checked as JSON.", Json, d, json_frame(b"{\"type\":\"taskwire.session.v1.Ping\",\"body\":{\"later\":\"\xff\"}}"), 0, "json_syntax"),
        case("json/unknown-member-lone-surrogate", "A \\udc00 escape in the key of an object inside an unknown body member.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","body":{"later":{"\udc00":1}}}"#), 0, "json_syntax"),
        case("json/unknown-member-nesting-past-128", "An unknown body member nesting 126 lists: with the envelope and the body, 128 levels.", Json, d, json_frame(format!(r#"{{"type":"taskwire.session.v1.Ping","body":{{"later":{}1{}}}}}"#, "[".repeat(126), "]".repeat(126)).as_bytes()), 0, "json_syntax"),
        case("json/not-an-object", "An array where the envelope object should be.", Json, d, json_frame(b"[]"), 0, "json_envelope"),
        case("json/missing-body", "An envelope without `body`.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping"}"#), 0, "json_envelope"),
        case("json/missing-type", "An envelope without `type`.", Json, d, json_frame(br#"{"body":{}}"#), 0, "json_envelope"),
        case("json/duplicate-envelope-member", "`type` given twice.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","type":"taskwire.session.v1.Pong","body":{}}"#), 0, "json_envelope"),
        case("json/unknown-envelope-member", "A member the envelope does not define.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","body":{},"priority":1}"#), 0, "json_envelope"),
        case("json/negative-stream", "A stream id that is not a u32.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","stream":-1,"body":{}}"#), 0, "json_envelope"),
        case("json/unknown-type-name", "A type name no conversation defines.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Hullo","body":{}}"#), 0, "json_unknown_type"),
        case("json/body-type-mismatch", "A Ping whose nonce is not a number or numeric string.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","body":{"nonce":"abc"}}"#), 0, "json_body"),
        case("json/body-not-object", "A body that is a string.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","body":"hello"}"#), 0, "json_body"),
        case("json/duplicate-body-field", "A body naming the same field twice.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Ping","body":{"nonce":"1","nonce":"2"}}"#), 0, "json_body"),
        case("json/unknown-enum-name", "A Status whose code names no StatusCode value.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.Status","body":{"code":"STATUS_CODE_NOPE"}}"#), 0, "json_body"),
        case("json/out-of-range-timestamp", "A timestamp in year 10000, outside the proto3 JSON range.", Json, d, json_frame(br#"{"type":"taskwire.session.v1.CallHeader","body":{"deadline":"10000-01-01T00:00:00Z"}}"#), 0, "json_body"),
        case("json/decoded-size-over-budget", "Ten empty JSON objects in a list: the text's length plus 1,024 for each of the 13 objects and arrays it opens (the envelope, the body, the list and its ten elements), over a budget of 8,192.", Json, Limits { max_decoded_size: Some(8192), ..d }, json_frame(br#"{"type":"taskwire.instance.v1.PollSignalsResponse","body":{"signals":[{},{},{},{},{},{},{},{},{},{}]}}"#), 0, "decoded_too_large"),
        case("json/body-cut-short", "A length prefix of 50 and 10 bytes, then the end of input.", Json, d, [50u32.to_be_bytes().to_vec(), b"{\"type\":\"t".to_vec()].concat(), 0, "truncated"),
    ]
}
