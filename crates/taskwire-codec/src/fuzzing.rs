//! The properties the fuzz targets in `fuzz/` check, shared with the tests that replay
//! each target's corpus on stable Rust (as prost shares its `roundtrip` helper).
//!
//! Each function takes arbitrary bytes, must never panic on any input, and panics only
//! when a property is broken, which is what the fuzzer looks for.

use bytes::BytesMut;
use taskwire_proto::registry::AnyMessage;
use tokio_util::codec::{Decoder, Encoder};

use crate::{Builder, CodecError, Frame};

/// The frame limit the fuzz targets use. The fuzzers run with `-malloc_limit_mb=1`, about
/// twice this, so an allocation sized by a declared length rather than by received bytes
/// is a crash.
pub const FUZZ_MAX_FRAME_LENGTH: u32 = 512 * 1024;

fn builder() -> Builder {
    let mut builder = Builder::new();
    builder
        .max_frame_length(FUZZ_MAX_FRAME_LENGTH)
        .max_first_frame_length(4096);
    builder
}

/// Decodes `data` as binary frames until it ends or an error that is not confined to one
/// frame. Every raw frame re-encodes to exactly the bytes it was decoded from; every body
/// that decodes as a registered message survives an encode/decode round trip.
pub fn binary_frames(data: &[u8]) -> Result<usize, CodecError> {
    let mut codec = builder().new_binary_codec();
    let mut src = BytesMut::from(data);
    let mut frames = 0;
    loop {
        let before = src.clone();
        let raw = match codec.decode_eof(&mut src) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(frames),
            // The decoder consumed the refused frame (or is skipping its body): go on.
            Err(error) if error.refused_frame().is_some() => continue,
            Err(error) => return Err(error),
        };
        frames += 1;
        let consumed = before.len() - src.len();
        let mut again = BytesMut::new();
        builder()
            .first_frame_done(true)
            .new_binary_codec()
            .encode(&raw, &mut again)?;
        assert_eq!(
            &again[..],
            &before[..consumed],
            "raw frame did not re-encode to its bytes"
        );
        if let Ok(frame) = raw.decode::<AnyMessage>() {
            roundtrip_binary(&frame);
        }
    }
}

/// Decodes `data` as JSON frames until it ends or an error. Every decoded message
/// survives a JSON round trip and a binary round trip, and the decoder, with its canonical
/// fast path, gives what the general parser gives for each length-prefixed text.
pub fn json_frames(data: &[u8]) -> Result<usize, CodecError> {
    fast_path_agrees(data);
    let mut codec = builder().new_any_json_codec();
    let mut src = BytesMut::from(data);
    let mut frames = 0;
    loop {
        match codec.decode_eof(&mut src) {
            Ok(Some(frame)) => {
                frames += 1;
                roundtrip_json(&frame);
                roundtrip_binary(&frame);
            }
            Ok(None) => return Ok(frames),
            // Confined to a frame the decoder consumed whole: the next frame follows.
            Err(error) if error.refused_frame().is_some() => {}
            Err(error) => return Err(error),
        }
    }
}

/// Walks `data` as length-prefixed JSON texts and checks that the decoder, whose canonical
/// fast path takes most of them, gives what the general parser gives for each: the same
/// frame, or an error of the same kind.
fn fast_path_agrees(data: &[u8]) {
    let mut rest = data;
    while let Some((prefix, after)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*prefix) as usize;
        let Some(text) = after.get(..len) else {
            return;
        };
        let mut config = builder();
        config.first_frame_done(true);
        let mut codec = config.new_any_json_codec();
        let mut one = BytesMut::from(&rest[..4 + len]);
        // The general path as the decoder takes it: the decoded-size check, then the parser.
        let general = crate::json::check_decoded_size(text, config.max_decoded_size)
            .map_err(|over| crate::json::confine_decoded_too_large(over, text))
            .and_then(|()| crate::json::parse_general::<AnyMessage>(text));
        match (codec.decode(&mut one), general) {
            (Err(CodecError::FrameTooLarge { .. }), _) => {}
            (Ok(Some(fast)), Ok(general)) => assert_eq!(
                encode_binary(&fast),
                encode_binary(&general),
                "the fast path and the general parser disagree"
            ),
            (Err(fast), Err(general)) => assert_eq!(
                (fast.kind(), fast.refused_frame()),
                (general.kind(), general.refused_frame()),
                "the decoder and the general parser refuse a frame for different reasons"
            ),
            (fast, general) => {
                panic!("the decoder gave {fast:?}, the general parser {general:?}")
            }
        }
        rest = &after[len..];
    }
}

/// Feeds `data` to a decoder in pieces whose sizes come from the first byte, and checks
/// that the frames, the errors confined to one frame, and the final error kind are those
/// of decoding it whole.
pub fn stream_splitting(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(seed % 17) + 1;
    let json = seed & 0x80 != 0;
    let whole = split_decode(data, data.len().max(1), json);
    let pieces = split_decode(data, step, json);
    assert_eq!(
        whole, pieces,
        "decoding in {step}-byte pieces changed the result"
    );
}

/// What decoding `data` in `step`-byte pieces gives: each frame (as re-encoded bytes) or
/// error confined to one frame, in order, and the error that ended it, if any.
#[allow(clippy::type_complexity)]
fn split_decode(
    data: &[u8],
    step: usize,
    json: bool,
) -> (
    Vec<Result<Vec<u8>, (crate::ErrorKind, crate::RefusedFrame)>>,
    Option<crate::ErrorKind>,
) {
    let mut binary = builder().new_binary_codec();
    let mut text = builder().new_any_json_codec();
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunks = data.chunks(step).peekable();
    loop {
        let last = chunks.peek().is_none();
        let decoded = if json {
            let result = if last {
                text.decode_eof(&mut src)
            } else {
                text.decode(&mut src)
            };
            result.map(|f| f.map(|f| encode_binary(&f)))
        } else {
            let result = if last {
                binary.decode_eof(&mut src)
            } else {
                binary.decode(&mut src)
            };
            result.map(|f| f.map(|f| [f.type_id.to_be_bytes().as_slice(), &f.body].concat()))
        };
        match decoded {
            Err(error) => match error.refused_frame() {
                Some(frame) => frames.push(Err((error.kind(), frame))),
                None => return (frames, Some(error.kind())),
            },
            Ok(Some(frame)) => frames.push(Ok(frame)),
            Ok(None) if last => return (frames, None),
            Ok(None) => src.extend_from_slice(chunks.next().expect("not last")),
        }
    }
}

fn encode_binary(frame: &Frame<AnyMessage>) -> Vec<u8> {
    let mut out = BytesMut::new();
    builder()
        .first_frame_done(true)
        .max_frame_length(u32::MAX)
        .new_binary_codec()
        .encode(frame, &mut out)
        .expect("a decoded message re-encodes");
    out.to_vec()
}

/// Encode, decode, encode: the two encodings are identical (compared as bytes, so that
/// NaN payloads compare equal).
pub fn roundtrip_binary(frame: &Frame<AnyMessage>) {
    let first = encode_binary(frame);
    let mut src = BytesMut::from(first.as_slice());
    let decoded = Builder::new()
        .first_frame_done(true)
        .max_frame_length(u32::MAX)
        .new_binary_message_codec::<AnyMessage>()
        .decode(&mut src)
        .expect("an encoded frame decodes")
        .expect("an encoded frame is whole");
    assert_eq!(
        encode_binary(&decoded),
        first,
        "binary round trip changed the frame"
    );
    let mut chunks = Vec::new();
    builder()
        .first_frame_done(true)
        .max_frame_length(u32::MAX)
        .new_binary_codec()
        .encode_chunks(&decoded, &mut chunks)
        .expect("a frame that encodes encodes as chunks");
    assert_eq!(chunks.concat(), first, "chunks differ from the frame");
}

/// JSON encode, decode, encode: the two encodings are identical. A message that has no
/// JSON form (an out-of-range timestamp, say) is skipped.
pub fn roundtrip_json(frame: &Frame<AnyMessage>) {
    let mut codec = Builder::new()
        .max_frame_length(u32::MAX)
        .new_any_json_codec();
    let mut first = BytesMut::new();
    if codec.encode(frame, &mut first).is_err() {
        return;
    }
    let mut src = first.clone();
    let decoded = codec
        .decode(&mut src)
        .unwrap_or_else(|e| panic!("our own JSON does not decode: {e}\n{first:?}"))
        .expect("an encoded frame is whole");
    let mut second = BytesMut::new();
    codec
        .encode(&decoded, &mut second)
        .expect("a decoded frame re-encodes");
    assert_eq!(first, second, "JSON round trip changed the frame");
}
