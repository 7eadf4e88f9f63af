//! The codecs' contracts, one behaviour per test: limits, truncation, zero-copy bodies,
//! checks in both directions, and the I/O helpers.

// Test inputs are a few bytes long: their lengths always fit in a u32.
#![allow(clippy::cast_possible_truncation)]

use bytes::{Bytes, BytesMut};
use taskwire_codec::io::{SyncReader, SyncWriter, read_frame, write_frame};
use taskwire_codec::tokio_util::codec::{Decoder, Encoder, FramedRead};
use taskwire_codec::{
    Builder, CodecError, DEFAULT_MAX_FIRST_FRAME_LENGTH, DEFAULT_MAX_FRAME_LENGTH, ErrorKind,
    Flags, Frame, FrameHeader, HEADER_LEN, JsonErrorKind, RawFrame,
};
use taskwire_proto::WireMessage;
use taskwire_proto::instance::v1::CheckpointRequest;
use taskwire_proto::registry::{AnyMessage, InstanceMessage, SessionMessage};
use taskwire_proto::session::v1::{Hello, Ping, Status};

fn header(type_id: u16, len: u32) -> Vec<u8> {
    FrameHeader {
        flags: Flags::empty(),
        type_id,
        stream_id: 0,
        body_len: len,
    }
    .to_bytes()
    .to_vec()
}

#[test]
fn defaults_are_16_mib_frames_and_a_64_kib_first_frame() {
    assert_eq!(DEFAULT_MAX_FRAME_LENGTH, 16 * 1024 * 1024);
    assert_eq!(DEFAULT_MAX_FIRST_FRAME_LENGTH, 64 * 1024);
    assert_eq!(
        Builder::new().new_binary_codec().max_frame_length(),
        DEFAULT_MAX_FRAME_LENGTH
    );
}

#[test]
fn the_first_frame_is_held_to_the_smaller_limit_and_later_frames_to_the_larger() {
    let mut codec = Builder::new().new_binary_codec();
    let mut src = BytesMut::from(&header(Ping::TYPE_ID, 65_537)[..]);
    match codec.decode(&mut src) {
        Err(CodecError::FrameTooLarge {
            len: 65_537,
            max: 65_536,
        }) => {}
        other => panic!("expected the first-frame limit, got {other:?}"),
    }

    let mut codec = Builder::new().new_binary_codec();
    let mut src = BytesMut::from(&header(Ping::TYPE_ID, 0)[..]);
    assert!(codec.decode(&mut src).unwrap().is_some());
    src.extend_from_slice(&header(Ping::TYPE_ID, 65_537));
    assert_eq!(
        codec.decode(&mut src).unwrap(),
        None,
        "past the first frame, 65,537 is allowed"
    );
}

#[test]
fn a_huge_declared_length_is_refused_before_any_allocation() {
    let mut codec = Builder::new().first_frame_done(true).new_binary_codec();
    let mut src = BytesMut::from(&header(Ping::TYPE_ID, u32::MAX)[..]);
    let capacity = src.capacity();
    match codec.decode(&mut src) {
        Err(CodecError::FrameTooLarge { len, max }) => {
            assert_eq!((len, max), (u64::from(u32::MAX), DEFAULT_MAX_FRAME_LENGTH));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        src.capacity(),
        capacity,
        "the decoder reserved memory for a refused frame"
    );
}

#[tokio::test]
async fn a_peer_declaring_16_mib_and_sending_10_bytes_costs_about_10_bytes() {
    // The reader delivers the header and 10 body bytes, then stays silent.
    let (mut client, server) = tokio::io::duplex(64);
    let mut wire = header(Ping::TYPE_ID, 16 * 1024 * 1024);
    wire.extend_from_slice(&[0x08; 10]);
    tokio::io::AsyncWriteExt::write_all(&mut client, &wire)
        .await
        .unwrap();
    let codec = Builder::new().first_frame_done(true).new_binary_codec();
    let mut framed = FramedRead::new(server, codec);
    let next = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        futures::StreamExt::next(&mut framed),
    )
    .await;
    assert!(next.is_err(), "no frame can be complete yet");
    // FramedRead starts with 8 KiB; the codec must not have grown it toward 16 MiB.
    assert!(
        framed.read_buffer().capacity() <= 8 * 1024,
        "buffer grew to {}",
        framed.read_buffer().capacity()
    );
    assert_eq!(framed.read_buffer().len(), 10);
}

#[test]
fn input_ending_inside_a_frame_is_truncated_and_between_frames_is_clean() {
    let mut codec = Builder::new().new_binary_codec();
    let mut empty = BytesMut::new();
    assert_eq!(
        codec.decode_eof(&mut empty).unwrap(),
        None,
        "clean end between frames"
    );

    let mut src = BytesMut::from(&header(Ping::TYPE_ID, 0)[..5]);
    match codec.decode_eof(&mut src) {
        Err(CodecError::Truncated {
            expected: 12,
            received: 5,
        }) => {}
        other => panic!("{other:?}"),
    }

    let mut codec = Builder::new().new_binary_codec();
    let mut src = BytesMut::from(&[header(Ping::TYPE_ID, 10), vec![8, 1]].concat()[..]);
    match codec.decode_eof(&mut src) {
        Err(CodecError::Truncated {
            expected: 22,
            received: 14,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_frames_carry_header_fields_and_a_zero_copy_body() {
    let request = CheckpointRequest {
        state: Bytes::from(vec![9; 1000]),
        ..Default::default()
    };
    let mut wire = BytesMut::new();
    let frame = Frame::new(InstanceMessage::from(request))
        .with_stream_id(77)
        .end_stream();
    Builder::new()
        .new_binary_codec()
        .encode(&frame, &mut wire)
        .unwrap();
    let buffer_start = wire.as_ptr() as usize;

    let raw = Builder::new()
        .new_binary_codec()
        .decode(&mut wire)
        .unwrap()
        .unwrap();
    assert_eq!(
        (raw.type_id, raw.stream_id, raw.flags),
        (CheckpointRequest::TYPE_ID, 77, Flags::END_STREAM)
    );
    let body_start = raw.body.as_ptr() as usize;
    assert_eq!(
        body_start,
        buffer_start + HEADER_LEN,
        "the body was copied out of the read buffer"
    );

    let typed = raw.decode::<InstanceMessage>().unwrap();
    let InstanceMessage::CheckpointRequest(decoded) = typed.message else {
        panic!("wrong variant")
    };
    let state_start = decoded.state.as_ptr() as usize;
    assert!(
        (body_start..body_start + 1100).contains(&state_start),
        "the bytes field was copied"
    );
}

#[test]
fn a_typed_codec_refuses_messages_of_another_conversation() {
    let mut wire = BytesMut::new();
    Builder::new()
        .new_binary_codec()
        .encode(
            Frame::new(InstanceMessage::from(CheckpointRequest::default())),
            &mut wire,
        )
        .unwrap();
    match Builder::new()
        .new_binary_message_codec::<SessionMessage>()
        .decode(&mut wire)
    {
        Err(CodecError::UnknownMessageType { type_id, .. }) => {
            assert_eq!(type_id, CheckpointRequest::TYPE_ID);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_typed_codec_decodes_bytes_fields_as_slices_of_the_read_buffer() {
    let request = CheckpointRequest {
        state: Bytes::from(vec![9; 1000]),
        ..Default::default()
    };
    let mut wire = BytesMut::new();
    let mut codec = Builder::new().new_binary_message_codec::<InstanceMessage>();
    codec
        .encode(
            Frame::new(InstanceMessage::from(request.clone())),
            &mut wire,
        )
        .unwrap();
    let buffer = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    let frame = codec.decode(&mut wire).unwrap().unwrap();
    let InstanceMessage::CheckpointRequest(decoded) = frame.message else {
        panic!("wrong variant")
    };
    assert_eq!(decoded, request);
    assert!(
        buffer.contains(&(decoded.state.as_ptr() as usize)),
        "the bytes field was copied out of the read buffer"
    );
    assert!(wire.is_empty());
}

#[test]
fn a_typed_codec_skips_a_refused_body_whole_and_decodes_the_next_frame() {
    let ping = Frame::new(SessionMessage::from(Ping {
        nonce: 7,
        sent_at: None,
    }));
    let mut wire = BytesMut::new();
    // A body that is not protobuf: field 1 with the reserved wire type 7.
    wire.extend_from_slice(&header(Ping::TYPE_ID, 4));
    wire.extend_from_slice(&[0x0F, 1, 2, 3]);
    // A message of another conversation.
    wire.extend_from_slice(&header(CheckpointRequest::TYPE_ID, 2));
    wire.extend_from_slice(&[0x18, 0x01]);
    // A body over a small decoded-size budget.
    let mut codec = Builder::new()
        .max_decoded_size(1500)
        .new_binary_message_codec::<SessionMessage>();
    let mut big = BytesMut::new();
    Builder::new()
        .new_binary_codec()
        .encode(
            Frame::new(SessionMessage::from(Hello {
                peer_name: "p".repeat(2000),
                ..Default::default()
            })),
            &mut big,
        )
        .unwrap();
    wire.extend_from_slice(&big);
    codec.encode(&ping, &mut wire).unwrap();

    assert!(
        matches!(codec.decode(&mut wire), Err(CodecError::Protobuf { type_id, .. }) if type_id == Ping::TYPE_ID)
    );
    let second = codec.decode(&mut wire);
    assert!(
        matches!(second, Err(CodecError::UnknownMessageType { type_id, .. }) if type_id == CheckpointRequest::TYPE_ID),
        "{second:?}"
    );
    assert!(
        matches!(codec.decode(&mut wire), Err(CodecError::DecodedTooLarge { type_id, .. }) if type_id == Hello::TYPE_ID)
    );
    assert_eq!(codec.decode(&mut wire).unwrap(), Some(ping));
    assert!(wire.is_empty());
}

#[test]
fn encoding_over_the_limit_is_an_error_and_writes_nothing() {
    let mut builder = Builder::new();
    builder.max_frame_length(100).first_frame_done(true);
    let big = CheckpointRequest {
        state: Bytes::from(vec![0; 200]),
        ..Default::default()
    };
    let frame = Frame::new(InstanceMessage::from(big));

    let mut out = BytesMut::from(&b"kept"[..]);
    match builder.new_binary_codec().encode(&frame, &mut out) {
        Err(CodecError::FrameTooLarge { len, max: 100 }) => assert!(len > 200),
        other => panic!("{other:?}"),
    }
    assert_eq!(&out[..], b"kept");

    match builder
        .new_json_codec::<InstanceMessage>()
        .encode(&frame, &mut out)
    {
        Err(CodecError::FrameTooLarge { max: 100, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(&out[..], b"kept", "a refused JSON frame left bytes behind");
}

#[test]
fn the_first_frame_limit_applies_when_encoding_too() {
    let hello = Hello {
        peer_name: "x".repeat(70_000),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    let mut codec = Builder::new().new_binary_message_codec::<SessionMessage>();
    match codec.encode(Frame::new(SessionMessage::from(hello.clone())), &mut out) {
        Err(CodecError::FrameTooLarge { max: 65_536, .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut codec = Builder::new()
        .first_frame_done(true)
        .new_binary_message_codec::<SessionMessage>();
    codec
        .encode(Frame::new(SessionMessage::from(hello)), &mut out)
        .expect("past the first frame");
}

#[test]
fn encoders_refuse_a_status_flag_that_disagrees_with_the_type() {
    let mut out = BytesMut::new();
    let mut ping = Frame::new(SessionMessage::from(Ping::default()));
    ping.flags = Flags::STATUS;
    assert_eq!(
        Builder::new()
            .new_binary_codec()
            .encode(&ping, &mut out)
            .unwrap_err()
            .kind(),
        ErrorKind::StatusFlagMismatch
    );
    assert_eq!(
        Builder::new()
            .new_json_codec::<SessionMessage>()
            .encode(&ping, &mut out)
            .unwrap_err()
            .kind(),
        ErrorKind::StatusFlagMismatch
    );

    let mut status = Frame::new(SessionMessage::from(Status::default()));
    assert!(
        status.flags.is_status(),
        "Frame::new sets the status flag for Status"
    );
    status.flags = Flags::empty();
    assert_eq!(
        Builder::new()
            .new_binary_codec()
            .encode(&status, &mut out)
            .unwrap_err()
            .kind(),
        ErrorKind::StatusFlagMismatch
    );
    assert!(out.is_empty());
}

#[test]
fn raw_frames_with_type_id_zero_are_refused_when_encoding() {
    let raw = RawFrame {
        flags: Flags::empty(),
        type_id: 0,
        stream_id: 0,
        body: Bytes::new(),
    };
    let mut out = BytesMut::new();
    assert_eq!(
        Builder::new()
            .new_binary_codec()
            .encode(&raw, &mut out)
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownMessageType
    );
}

#[test]
fn json_errors_name_the_kind_and_the_position() {
    let mut codec = Builder::new().new_any_json_codec();
    let text = br#"{"type":"taskwire.session.v1.Ping","body":{"nonce":true}}"#;
    let mut src =
        BytesMut::from(&[(text.len() as u32).to_be_bytes().as_slice(), text].concat()[..]);
    let CodecError::Json(error) = codec.decode(&mut src).unwrap_err() else {
        panic!("not a JSON error")
    };
    assert_eq!(
        error.kind(),
        &JsonErrorKind::Body {
            type_name: "taskwire.session.v1.Ping"
        }
    );
    assert_eq!(error.line(), 1);
    assert!(error.column() > 40, "column {}", error.column());
    assert!(
        error.to_string().contains("taskwire.session.v1.Ping"),
        "{error}"
    );
}

#[test]
fn json_accepts_members_in_any_order() {
    let mut codec = Builder::new().new_any_json_codec();
    let text = br#"{"body":{"nonce":"5"},"end":true,"stream":9,"type":"taskwire.session.v1.Ping"}"#;
    let mut src =
        BytesMut::from(&[(text.len() as u32).to_be_bytes().as_slice(), text].concat()[..]);
    let frame = codec.decode(&mut src).unwrap().unwrap();
    assert_eq!(frame.stream_id, 9);
    assert!(frame.flags.is_end_stream());
    let AnyMessage::Session(SessionMessage::Ping(ping)) = frame.message else {
        panic!("not a ping")
    };
    assert_eq!(ping.nonce, 5);
}

fn json_frame(text: &[u8]) -> BytesMut {
    BytesMut::from(&[(text.len() as u32).to_be_bytes().as_slice(), text].concat()[..])
}

#[test]
fn canonical_and_other_json_spellings_of_a_frame_decode_alike() {
    // The first is the canonical text the fast path reads; each other spelling goes to the
    // general parser, and all give the same frame.
    let spellings: [&[u8]; 5] = [
        br#"{"type":"taskwire.session.v1.Ping","stream":9,"end":true,"body":{"nonce":"5"}}"#,
        br#"{ "type":"taskwire.session.v1.Ping","stream":9,"end":true,"body":{"nonce":"5"}}"#,
        br#"{"type":"taskwire.session.v1.Ping","stream":9,"end":true,"body":{"nonce":"5"}}"#,
        br#"{"type":"taskwire.session.v1.Ping","end":true,"stream":9,"body":{"nonce":"5"}}"#,
        br#"{"type":"taskwire.session.v1.Ping","stream":9,"end":true,"body":{"nonce":"5"} }"#,
    ];
    let mut codec = Builder::new().new_any_json_codec();
    for text in spellings {
        let frame = codec.decode(&mut json_frame(text)).unwrap().unwrap();
        assert_eq!(
            (frame.stream_id, frame.flags),
            (9, Flags::END_STREAM),
            "{}",
            String::from_utf8_lossy(text)
        );
        assert_eq!(
            frame.message,
            AnyMessage::from(SessionMessage::from(Ping {
                nonce: 5,
                sent_at: None
            }))
        );
    }
    // Near misses of the canonical form are refused, as JSON or as envelopes.
    let refused: [&[u8]; 4] = [
        br#"{"type":"taskwire.session.v1.Ping","stream":09,"body":{}}"#,
        br#"{"type":"taskwire.session.v1.Ping","stream":4294967296,"body":{}}"#,
        br#"{"type":"taskwire.session.v1.Ping","body":{}}}"#,
        br#"{"type":"taskwire.session.v1.Ping","body":{},"body":{}}"#,
    ];
    for text in refused {
        assert!(
            codec.decode(&mut json_frame(text)).is_err(),
            "{}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn json_nesting_counts_the_envelope_and_stops_below_128_levels() {
    // Envelope, body and `params` make three levels; each list one more.
    let text = |lists: usize| {
        format!(
            r#"{{"type":"taskwire.runner.v1.ExecutionRequest","body":{{"params":{{"a":{}{}}}}}}}"#,
            "[".repeat(lists),
            "]".repeat(lists)
        )
    };
    let mut codec = Builder::new().new_any_json_codec();
    assert!(codec.decode(&mut json_frame(text(124).as_bytes())).is_ok());
    match codec.decode(&mut json_frame(text(125).as_bytes())) {
        Err(CodecError::Json(e)) => assert_eq!(e.kind(), &JsonErrorKind::Syntax, "{e}"),
        other => panic!("128 levels were not refused: {other:?}"),
    }
}

#[test]
fn json_encoding_is_canonical() {
    let mut out = BytesMut::new();
    let frame = Frame::new(SessionMessage::from(Ping {
        nonce: 5,
        ..Default::default()
    }))
    .with_stream_id(9)
    .end_stream();
    Builder::new()
        .new_json_codec::<SessionMessage>()
        .encode(&frame, &mut out)
        .unwrap();
    assert_eq!(
        &out[4..],
        br#"{"type":"taskwire.session.v1.Ping","stream":9,"end":true,"body":{"nonce":"5"}}"#
    );
    assert_eq!(
        u32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
        out.len() - 4
    );
}

#[test]
fn sync_helpers_write_and_read_frames_and_report_offsets() {
    let mut wire = Vec::new();
    let mut writer = SyncWriter::new(
        &mut wire,
        Builder::new().new_binary_message_codec::<SessionMessage>(),
    );
    for nonce in 1..=3 {
        writer
            .write(Frame::new(SessionMessage::from(Ping {
                nonce,
                ..Default::default()
            })))
            .unwrap();
    }
    writer.flush().unwrap();
    wire.extend_from_slice(&[1, 0, 0]); // the start of a fourth header, then the input ends

    let mut reader = SyncReader::new(
        wire.as_slice(),
        Builder::new().new_binary_message_codec::<SessionMessage>(),
    );
    let mut nonces = Vec::new();
    let error = loop {
        match reader.read() {
            Ok(Some(frame)) => match frame.message {
                SessionMessage::Ping(p) => nonces.push(p.nonce),
                other => panic!("{other:?}"),
            },
            Ok(None) => panic!("the truncated fourth frame was not reported"),
            Err(e) => break e,
        }
    };
    assert_eq!(nonces, [1, 2, 3]);
    assert_eq!(error.kind(), ErrorKind::Truncated);
    assert_eq!(
        reader.offset(),
        3 * (HEADER_LEN as u64 + 2),
        "offset of the bad frame"
    );
}

#[tokio::test]
async fn async_helpers_write_and_read_frames() {
    let (mut a, mut b) = tokio::io::duplex(16);
    let writer = tokio::spawn(async move {
        let mut codec = Builder::new().new_json_codec::<SessionMessage>();
        let mut scratch = BytesMut::new();
        for nonce in 1..=20 {
            let frame = Frame::new(SessionMessage::from(Ping {
                nonce,
                ..Default::default()
            }));
            write_frame(&mut a, &mut codec, frame, &mut scratch)
                .await
                .unwrap();
        }
    });
    let mut codec = Builder::new().new_json_codec::<SessionMessage>();
    let mut buffer = BytesMut::new();
    let mut count = 0;
    while let Some(frame) = read_frame(&mut b, &mut codec, &mut buffer).await.unwrap() {
        count += 1;
        assert_eq!(
            frame.message,
            SessionMessage::from(Ping {
                nonce: count,
                ..Default::default()
            })
        );
    }
    writer.await.unwrap();
    assert_eq!(count, 20);
}

#[test]
fn error_kinds_have_stable_names() {
    let names: Vec<&str> = [
        ErrorKind::FrameTooLarge,
        ErrorKind::UnsupportedVersion,
        ErrorKind::UnknownMessageType,
        ErrorKind::ReservedFlags,
        ErrorKind::StatusFlagMismatch,
        ErrorKind::Truncated,
        ErrorKind::Protobuf,
        ErrorKind::JsonSyntax,
        ErrorKind::JsonEnvelope,
        ErrorKind::JsonUnknownType,
        ErrorKind::JsonBody,
        ErrorKind::Io,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect();
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .unwrap();
    for name in names.iter().filter(|n| **n != "io") {
        assert!(
            spec.contains(&format!("`{name}`")),
            "docs/protocol.md does not describe `{name}`"
        );
    }
}

#[tokio::test]
async fn write_frame_flushes_so_a_buffering_writer_delivers_the_frame() {
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    // A BufWriter keeps a small write until it is flushed, as a TLS stream keeps the tail
    // of a write when its socket is full; the peer still needs the frame now.
    let mut writer = tokio::io::BufWriter::new(near);
    let mut codec = Builder::new().new_binary_message_codec::<SessionMessage>();
    let mut scratch = BytesMut::new();
    let ping = Frame::new(SessionMessage::from(Ping {
        nonce: 9,
        ..Default::default()
    }));
    write_frame(&mut writer, &mut codec, ping.clone(), &mut scratch)
        .await
        .unwrap();
    let mut decoder = Builder::new().new_binary_message_codec::<SessionMessage>();
    let mut buffer = BytesMut::new();
    let arrived = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        read_frame(&mut far, &mut decoder, &mut buffer),
    )
    .await
    .expect("the frame stayed in the BufWriter")
    .unwrap();
    assert_eq!(arrived, Some(ping));
    drop(writer);
}

fn binary_frame(type_id: u16, flags: u8, stream: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![1, flags];
    out.extend_from_slice(&type_id.to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn type_id_zero_is_confined_to_its_frame_whose_body_is_skipped_as_it_arrives() {
    let ping = binary_frame(Ping::TYPE_ID, 0, 4, &[0x08, 0x2a]);
    let refused = binary_frame(0, 0x01, 3, &[0xAB; 100]);
    let input = [refused, ping].concat();
    // Whole, and a byte at a time: the same refusal, then the same ping.
    for step in [input.len(), 1] {
        let mut codec = Builder::new().first_frame_done(true).new_binary_codec();
        let mut src = BytesMut::new();
        let mut seen = Vec::new();
        for piece in input.chunks(step) {
            src.extend_from_slice(piece);
            loop {
                match codec.decode(&mut src) {
                    Ok(Some(frame)) => seen.push(Ok((frame.type_id, frame.stream_id))),
                    Ok(None) => break,
                    Err(error) => seen.push(Err((error.kind(), error.refused_frame()))),
                }
            }
            assert!(src.len() < 12 + 2, "a refused body is never buffered");
        }
        assert_eq!(
            seen,
            [
                Err((
                    ErrorKind::UnknownMessageType,
                    Some(taskwire_codec::RefusedFrame {
                        stream_id: 3,
                        flags: Flags::END_STREAM
                    })
                )),
                Ok((Ping::TYPE_ID, 4)),
            ],
            "in {step}-byte pieces"
        );
    }
}

#[test]
fn type_id_zero_over_the_frame_limit_is_not_confined() {
    let mut codec = Builder::new()
        .first_frame_done(true)
        .max_frame_length(16)
        .new_binary_codec();
    let mut src = BytesMut::from(&binary_frame(0, 0, 3, &[0; 17])[..]);
    let error = codec.decode(&mut src).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownMessageType);
    assert_eq!(error.refused_frame(), None, "the connection cannot go on");
    // Every other header error leaves the connection unable to go on too.
    for (flags, type_id) in [(0x04, Ping::TYPE_ID), (0x02, Ping::TYPE_ID)] {
        let mut codec = Builder::new().first_frame_done(true).new_binary_codec();
        let mut src = BytesMut::from(&binary_frame(type_id, flags, 3, &[])[..]);
        assert_eq!(codec.decode(&mut src).unwrap_err().refused_frame(), None);
    }
}

/// Decodes `texts` as consecutive JSON frames: each result's kind and confinement. The
/// decoded-size budget is 16 KiB.
fn json_results(texts: &[&[u8]]) -> Vec<Result<u32, (ErrorKind, Option<u32>)>> {
    let mut codec = Builder::new()
        .first_frame_done(true)
        .max_decoded_size(16 * 1024)
        .new_any_json_codec();
    let mut src = BytesMut::new();
    for text in texts {
        src.extend_from_slice(&json_frame(text));
    }
    let mut results = Vec::new();
    loop {
        match codec.decode(&mut src) {
            Ok(Some(frame)) => results.push(Ok(frame.stream_id)),
            Ok(None) => return results,
            Err(error) => {
                let confined = error.refused_frame().map(|frame| frame.stream_id);
                results.push(Err((error.kind(), confined)));
                if confined.is_none() {
                    return results;
                }
            }
        }
    }
}

#[test]
fn json_type_and_body_errors_are_confined_to_the_stream_the_envelope_names() {
    let next: &[u8] = br#"{"type":"taskwire.session.v1.Ping","stream":9,"body":{}}"#;
    let cases: [(&[u8], ErrorKind); 6] = [
        (
            br#"{"type":"taskwire.session.v1.Hullo","stream":5,"body":{}}"#,
            ErrorKind::JsonUnknownType,
        ),
        (
            br#"{"body":{"nonce":"abc"},"stream":5,"type":"taskwire.session.v1.Ping"}"#,
            ErrorKind::JsonBody,
        ),
        (
            br#"{"type":"taskwire.session.v1.Status","stream":5,"body":{"code":"STATUS_CODE_NOPE"}}"#,
            ErrorKind::JsonBody,
        ),
        (
            br#"{"type":"taskwire.session.v1.Ping","stream":5,"body":"hello"}"#,
            ErrorKind::JsonBody,
        ),
        (
            br#"{"type":"taskwire.session.v1.CallHeader","stream":5,"body":{"deadline":"10000-01-01T00:00:00Z"}}"#,
            ErrorKind::JsonBody,
        ),
        (
            br#"{"type":"taskwire.instance.v1.PollSignalsResponse","stream":5,"body":{"signals":[{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}]}}"#,
            ErrorKind::DecodedTooLarge,
        ),
    ];
    for (text, kind) in cases {
        assert_eq!(
            json_results(&[text, next]),
            [Err((kind, Some(5))), Ok(9)],
            "{}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn a_body_error_in_a_frame_that_is_also_malformed_ranks_as_the_worse_fault() {
    let next: &[u8] = br#"{"type":"taskwire.session.v1.Ping","stream":9,"body":{}}"#;
    let cases: [(&[u8], ErrorKind); 4] = [
        // Not well-formed JSON further on: the stream id cannot be trusted.
        (
            br#"{"type":"taskwire.session.v1.Ping","stream":5,"body":{"nonce":"abc"},"x":tru}"#,
            ErrorKind::JsonSyntax,
        ),
        // Well-formed, but the envelope is invalid after the body.
        (
            br#"{"type":"taskwire.session.v1.Ping","body":{"nonce":"abc"},"stream":5,"priority":1}"#,
            ErrorKind::JsonEnvelope,
        ),
        (
            br#"{"type":"taskwire.session.v1.Hullo","body":{},"stream":-5}"#,
            ErrorKind::JsonEnvelope,
        ),
        (
            br#"{"type":"taskwire.session.v1.Ping","stream":1.0,"body":{}}"#,
            ErrorKind::JsonEnvelope,
        ),
    ];
    for (text, kind) in cases {
        assert_eq!(
            json_results(&[text, next]),
            [Err((kind, None))],
            "{}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn unknown_body_members_are_checked_as_json_in_both_parsers() {
    let deep = format!(
        r#"{{"type":"taskwire.session.v1.Ping","body":{{"later":{}1{}}}}}"#,
        "[".repeat(126),
        "]".repeat(126)
    );
    let refused: [&[u8]; 4] = [
        b"{\"type\":\"taskwire.session.v1.Ping\",\"body\":{\"later\":\"\xff\"}}",
        br#"{"type":"taskwire.session.v1.Ping","body":{"later":"\ud800"}}"#,
        br#"{"type":"taskwire.session.v1.Ping","body":{"later":{"\udc00":1}}}"#,
        deep.as_bytes(),
    ];
    let mut codec = Builder::new().new_any_json_codec();
    for text in refused {
        // The canonical text, then the same with a space that sends it to the general parser.
        let general = [&text[..1], b" ", &text[1..]].concat();
        for text in [text, &general[..]] {
            let error = codec.decode(&mut json_frame(text)).unwrap_err();
            assert_eq!(
                (error.kind(), error.refused_frame()),
                (ErrorKind::JsonSyntax, None),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
    // One level less is within the limit, and unknown members are ignored.
    let within = deep.replacen('[', "", 1).replacen(']', "", 1);
    let general = format!(" {within}");
    for text in [&within, &general] {
        let frame = codec.decode(&mut json_frame(text.as_bytes())).unwrap();
        assert_eq!(
            frame.map(|frame| frame.message),
            Some(AnyMessage::from(SessionMessage::from(Ping::default())))
        );
    }
}
