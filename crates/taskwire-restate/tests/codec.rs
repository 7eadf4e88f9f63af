//! The service protocol's framing: round trips, limits, and hostile input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};
use taskwire_codec::{Builder, CodecError, ErrorKind};
use taskwire_restate::protocol::{self, StartMessage, start_message::StateEntry};
use taskwire_restate::{Frame, HEADER_LEN, Message, MessageType, Namespace, RestateCodec};

fn frame() -> impl Strategy<Value = Frame> {
    let known: Vec<u16> = taskwire_restate::ALL_MESSAGE_TYPES
        .iter()
        .map(|t| t.code())
        .collect();
    (
        prop_oneof![prop::sample::select(known), any::<u16>()],
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(code, flags, body)| Frame {
            message_type: MessageType::from_code(code),
            flags,
            body: Bytes::from(body),
        })
}

proptest! {
    #[test]
    fn frames_round_trip_split_at_any_point(frames in prop::collection::vec(frame(), 1..5), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        let mut codec = RestateCodec::new();
        for frame in &frames {
            codec.encode(frame, &mut wire).unwrap();
        }
        let cut = cut.index(wire.len());
        let mut buffer = BytesMut::from(&wire[..cut]);
        let mut decoded = Vec::new();
        while let Some(frame) = codec.decode(&mut buffer).unwrap() {
            decoded.push(frame);
        }
        buffer.extend_from_slice(&wire[cut..]);
        while let Some(frame) = codec.decode_eof(&mut buffer).unwrap() {
            decoded.push(frame);
        }
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_keep_the_decoders_properties(data in prop::collection::vec(any::<u8>(), 0..256)) {
        taskwire_restate::fuzzing::check_frames(&data);
    }

    #[test]
    fn every_start_message_round_trips(known in any::<u32>(), key in "\\PC{0,8}", state in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..8), prop::collection::vec(any::<u8>(), 0..8)), 0..4)) {
        let message = Message::Start(StartMessage {
            known_entries: known,
            key,
            state_map: state.into_iter().map(|(k, v)| StateEntry { key: k.into(), value: v.into() }).collect(),
            ..Default::default()
        });
        let frame = Frame::new(&message);
        prop_assert_eq!(frame.decode(1 << 20).unwrap(), message);
    }
}

#[test]
fn the_registry_agrees_with_restates_header_table() {
    // Codes from Restate's own header table (restate-sdk-shared-core), and the captures.
    for (ty, code) in [
        (MessageType::Start, 0x0000),
        (MessageType::Suspension, 0x0001),
        (MessageType::Error, 0x0002),
        (MessageType::End, 0x0003),
        (MessageType::ProposeRunCompletion, 0x0005),
        (MessageType::InputCommand, 0x0400),
        (MessageType::OutputCommand, 0x0401),
        (MessageType::GetEagerStateCommand, 0x0407),
        (MessageType::SleepCommand, 0x040C),
        (MessageType::CallCommand, 0x040D),
        (MessageType::CallCompletionNotification, 0x800D),
        (MessageType::CallInvocationIdCompletionNotification, 0x800E),
        (MessageType::SendSignalCommand, 0x0410),
        (MessageType::RunCommand, 0x0411),
        (MessageType::RunCompletionNotification, 0x8011),
        (MessageType::CompleteAwakeableCommand, 0x0414),
        (MessageType::SignalNotification, 0xFBFF),
    ] {
        assert_eq!(ty.code(), code, "{ty:?}");
        assert_eq!(MessageType::from_code(code), ty);
    }
    assert_eq!(MessageType::from_code(0xFC07), MessageType::Custom(0xFC07));
    assert_eq!(MessageType::from_code(0x0999), MessageType::Unknown(0x0999));
    assert_eq!(MessageType::SleepCommand.namespace(), Namespace::Command);
    assert_eq!(
        MessageType::SignalNotification.namespace(),
        Namespace::Notification
    );
    assert_eq!(
        MessageType::from_code(0xFC07).namespace(),
        Namespace::Custom
    );
    for ty in taskwire_restate::ALL_MESSAGE_TYPES {
        assert!(ty.name().is_some(), "{ty:?}");
    }
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_it_is_buffered() {
    let mut builder = Builder::new();
    builder.max_frame_length(1024);
    let mut codec = RestateCodec::from_builder(&builder);
    let mut wire = BytesMut::from(&[0x04, 0x00, 0, 0, 0x7f, 0xff, 0xff, 0xff][..]);
    let error = codec.decode(&mut wire).unwrap_err();
    assert!(
        matches!(
            error,
            CodecError::FrameTooLarge {
                len: 0x7fff_ffff,
                max: 1024
            }
        ),
        "{error}"
    );
    // A large declared length within the limit costs only what arrived.
    let mut codec = RestateCodec::new();
    let mut wire = BytesMut::from(&[0x04, 0x00, 0, 0, 0x00, 0xff, 0xff, 0xff, 1, 2, 3][..]);
    assert!(codec.decode(&mut wire).unwrap().is_none());
    assert!(
        wire.capacity() < 4096,
        "nothing was reserved for the declared length"
    );
    let truncated = codec.decode_eof(&mut wire).unwrap_err();
    assert_eq!(truncated.kind(), ErrorKind::Truncated);
    assert!(
        truncated.to_string().contains("11 of 16777223"),
        "{truncated}"
    );
}

#[test]
fn bodies_that_would_decode_past_the_budget_are_refused_unread() {
    // 64 KiB of empty state entries: two bytes each on the wire, a message each decoded.
    let body: Vec<u8> = [0x22, 0x00].repeat(32 * 1024);
    let frame = Frame {
        message_type: MessageType::Start,
        flags: 0,
        body: body.into(),
    };
    let error = frame.decode(1 << 20).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::DecodedTooLarge, "{error}");
    assert!(frame.decode(usize::MAX).is_ok());
}

#[test]
fn custom_and_unknown_types_and_bad_bodies_are_typed_errors() {
    let custom = Frame {
        message_type: MessageType::from_code(0xFC01),
        flags: 0,
        body: Bytes::new(),
    };
    assert!(matches!(
        custom.decode(1 << 20),
        Err(CodecError::UnknownMessageType {
            type_id: 0xFC01,
            ..
        })
    ));
    let bad = Frame {
        message_type: MessageType::RunCommand,
        flags: 0,
        body: Bytes::from_static(&[0xff]),
    };
    let error = bad.decode(1 << 20).unwrap_err();
    assert!(error.to_string().contains("RunCommandMessage"), "{error}");
    assert_eq!(HEADER_LEN, 8);
    let _ = protocol::Void {};
}
