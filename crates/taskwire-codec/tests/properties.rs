//! Property tests: every message round-trips through both framings, a byte stream split
//! anywhere decodes to the same frames, and arbitrary bytes never panic a decoder.

// Test inputs are a few bytes long: their lengths always fit in a u32.
#![allow(clippy::cast_possible_truncation)]

use bytes::BytesMut;
use proptest::prelude::*;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{Builder, CodecError, Frame, fuzzing};
use taskwire_conformance::sample::{self, Rng};
use taskwire_proto::registry::{self, AnyMessage};

/// A random frame of any registered type, stream id and end flag.
fn frames() -> impl Strategy<Value = Frame<AnyMessage>> {
    let count = registry::messages().len();
    (0..count, any::<u64>(), any::<u32>(), any::<bool>()).prop_map(|(index, seed, stream, end)| {
        let type_id = registry::messages()[index].type_id;
        let frame = Frame::new(sample::random(type_id, &mut Rng::new(seed))).with_stream_id(stream);
        if end { frame.end_stream() } else { frame }
    })
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    Binary,
    Json,
}

fn encode_all(framing: Framing, frames: &[Frame<AnyMessage>]) -> Result<BytesMut, CodecError> {
    let mut out = BytesMut::new();
    let builder = *Builder::new().first_frame_done(true);
    match framing {
        Framing::Binary => {
            let mut codec = builder.new_binary_message_codec::<AnyMessage>();
            frames.iter().try_for_each(|f| codec.encode(f, &mut out))?;
        }
        Framing::Json => {
            let mut codec = builder.new_any_json_codec();
            frames.iter().try_for_each(|f| codec.encode(f, &mut out))?;
        }
    }
    Ok(out)
}

/// Feeds `wire` to a decoder `step` bytes at a time (cycling through `steps`), then ends
/// the input.
fn decode_in_pieces(
    framing: Framing,
    wire: &[u8],
    steps: &[usize],
) -> Result<Vec<Frame<AnyMessage>>, CodecError> {
    let builder = *Builder::new().first_frame_done(true);
    let mut binary = builder.new_binary_message_codec::<AnyMessage>();
    let mut json = builder.new_any_json_codec();
    let mut decode = |src: &mut BytesMut, eof: bool| match (framing, eof) {
        (Framing::Binary, false) => binary.decode(src),
        (Framing::Binary, true) => binary.decode_eof(src),
        (Framing::Json, false) => json.decode(src),
        (Framing::Json, true) => json.decode_eof(src),
    };
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while offset < wire.len() {
        let step = steps[i % steps.len()].max(1);
        i += 1;
        let end = (offset + step).min(wire.len());
        src.extend_from_slice(&wire[offset..end]);
        offset = end;
        while let Some(frame) = decode(&mut src, false)? {
            out.push(frame);
        }
    }
    while let Some(frame) = decode(&mut src, true)? {
        out.push(frame);
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_roundtrips_through_binary_frames(frame in frames()) {
        let wire = encode_all(Framing::Binary, std::slice::from_ref(&frame)).expect("encodes");
        let decoded = decode_in_pieces(Framing::Binary, &wire, &[wire.len()]).expect("decodes");
        prop_assert_eq!(decoded, vec![frame]);
    }

    #[test]
    fn every_message_roundtrips_through_json_frames(frame in frames()) {
        let wire = encode_all(Framing::Json, std::slice::from_ref(&frame)).expect("encodes");
        let decoded = decode_in_pieces(Framing::Json, &wire, &[wire.len()]).expect("decodes");
        prop_assert_eq!(decoded, vec![frame]);
    }

    #[test]
    fn a_stream_split_anywhere_gives_the_same_frames(
        frames in prop::collection::vec(frames(), 1..6),
        steps in prop::collection::vec(1usize..64, 1..8),
        json in any::<bool>(),
    ) {
        let framing = if json { Framing::Json } else { Framing::Binary };
        let wire = encode_all(framing, &frames).expect("encodes");
        let whole = decode_in_pieces(framing, &wire, &[wire.len()]).expect("decodes whole");
        let split = decode_in_pieces(framing, &wire, &steps).expect("decodes split");
        let bytewise = decode_in_pieces(framing, &wire, &[1]).expect("decodes bytewise");
        prop_assert_eq!(&whole, &frames);
        prop_assert_eq!(&split, &frames);
        prop_assert_eq!(&bytewise, &frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = fuzzing::binary_frames(&data);
        let _ = fuzzing::json_frames(&data);
        fuzzing::stream_splitting(&data);
    }

    #[test]
    fn arbitrary_bodies_behind_valid_headers_never_panic(
        index in 0..registry::messages().len(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let type_id = registry::messages()[index].type_id;
        let mut wire = vec![1, 0];
        wire.extend_from_slice(&type_id.to_be_bytes());
        wire.extend_from_slice(&0u32.to_be_bytes());
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(&body);
        let flags = if type_id == 0x0004 { 2 } else { 0 };
        wire[1] = flags;
        let _ = fuzzing::binary_frames(&wire);
    }
}
