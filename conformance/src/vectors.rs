//! The golden vectors: their file format, their generation, and the check of this
//! crate's codec against them.
//!
//! Two files, both JSON:
//!
//! * `vectors/valid.json`: byte strings that decode to the listed frames, and that
//!   encoding the listed frames must reproduce exactly.
//! * `vectors/invalid.json`: byte strings a decoder must reject with the named error kind
//!   (the names of [`taskwire_codec::ErrorKind::as_str`]), after decoding the listed
//!   number of good frames first.
//!
//! Beside them, `vectors/taskwire.binpb` is the compiled schema ([`DESCRIPTOR_SET`]).

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use taskwire_codec::{Builder, CodecError, Flags, Frame};
use taskwire_proto::registry::{self, AnyMessage};
use taskwire_proto::{MessageSet, WireMessage};
use tokio_util::codec::{Decoder, Encoder};

use crate::sample;

/// The format tag at the top of each file.
pub const FORMAT: &str = "taskwire-conformance-vectors/1";

/// The framings of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// 12-byte header plus protobuf body.
    Binary,
    /// 4-byte length plus JSON envelope.
    Json,
}

/// Decoder limits a vector is decoded under; absent fields take the protocol defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The maximum frame length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_length: Option<u32>,
    /// The maximum first-frame length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_first_frame_length: Option<u32>,
    /// The decoded-size budget (`docs/protocol.md` §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decoded_size: Option<u64>,
}

/// One frame of a valid vector, in language-neutral form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameSpec {
    /// The message's full protobuf name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The message's registry type id.
    pub type_id: u16,
    /// The stream id.
    pub stream: u32,
    /// The flags byte (bit 0 end of stream, bit 1 status).
    pub flags: u8,
    /// The message in canonical proto3 JSON.
    pub body: serde_json::Value,
}

/// A byte string and the frames it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidVector {
    /// A unique name.
    pub name: String,
    /// Which framing the bytes use.
    pub framing: Framing,
    /// The bytes, lowercase hex.
    pub hex: String,
    /// The frames, in order.
    pub frames: Vec<FrameSpec>,
}

/// A byte string a decoder must reject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvalidVector {
    /// A unique name.
    pub name: String,
    /// What is wrong with the bytes.
    pub description: String,
    /// Which framing the bytes use.
    pub framing: Framing,
    /// Decoder limits, where they differ from the defaults.
    #[serde(default)]
    pub limits: Limits,
    /// The bytes, lowercase hex. The input ends after them.
    pub hex: String,
    /// How many good frames precede the error.
    pub frames_before_error: usize,
    /// The error kind the decoder must report.
    pub error: String,
}

/// A vector file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorFile<V> {
    /// Always [`FORMAT`].
    pub format: String,
    /// What the file holds.
    pub description: String,
    /// The vectors.
    pub vectors: Vec<V>,
}

/// `conformance/vectors/`.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// The name of the compiled schema in `conformance/vectors/`: the bytes of
/// [`taskwire_proto::FILE_DESCRIPTOR_SET`], an encoded `google.protobuf.FileDescriptorSet`,
/// so that other-language checks load every message without `protoc`.
pub const DESCRIPTOR_SET: &str = "taskwire.binpb";

/// Every file the generator writes into [`vectors_dir`], by name, with its exact contents.
pub fn generated_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("valid.json", render(&valid_vectors()).into_bytes()),
        ("invalid.json", render(&invalid_vectors()).into_bytes()),
        (DESCRIPTOR_SET, taskwire_proto::FILE_DESCRIPTOR_SET.to_vec()),
    ]
}

fn builder(limits: Limits) -> Builder {
    let mut builder = Builder::new();
    if let Some(max) = limits.max_frame_length {
        builder.max_frame_length(max);
    }
    if let Some(max) = limits.max_first_frame_length {
        builder.max_first_frame_length(max);
    }
    if let Some(max) = limits.max_decoded_size {
        builder.max_decoded_size(usize::try_from(max).unwrap_or(usize::MAX));
    }
    builder
}

/// Encodes frames with a fresh codec of `framing` (so the first-frame limit applies to the
/// first one).
pub fn encode(framing: Framing, frames: &[Frame<AnyMessage>]) -> Result<Vec<u8>, CodecError> {
    let mut out = BytesMut::new();
    let b = builder(Limits::default());
    match framing {
        Framing::Binary => {
            let mut codec = b.new_binary_message_codec::<AnyMessage>();
            for frame in frames {
                codec.encode(frame, &mut out)?;
            }
        }
        Framing::Json => {
            let mut codec = b.new_any_json_codec();
            for frame in frames {
                codec.encode(frame, &mut out)?;
            }
        }
    }
    Ok(out.to_vec())
}

/// Decodes every frame of `bytes` until the input ends or an error.
pub fn decode(
    framing: Framing,
    limits: Limits,
    bytes: &[u8],
) -> (Vec<Frame<AnyMessage>>, Option<CodecError>) {
    let mut src = BytesMut::from(bytes);
    let mut frames = Vec::new();
    let b = builder(limits);
    let mut binary = b.new_binary_message_codec::<AnyMessage>();
    let mut json = b.new_any_json_codec();
    loop {
        let next = match framing {
            Framing::Binary => binary.decode_eof(&mut src),
            Framing::Json => json.decode_eof(&mut src),
        };
        match next {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(error) => return (frames, Some(error)),
        }
    }
}

/// The language-neutral form of a frame.
pub fn frame_spec(frame: &Frame<AnyMessage>) -> FrameSpec {
    struct Body<'a>(&'a AnyMessage);
    impl Serialize for Body<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize_json_body(s)
        }
    }
    FrameSpec {
        type_name: frame.message.name().to_owned(),
        type_id: frame.message.type_id(),
        stream: frame.stream_id,
        flags: frame.flags.bits(),
        body: serde_json::to_value(Body(&frame.message)).expect("sample messages have JSON"),
    }
}

/// The frame a language-neutral spec describes, with its message read from the JSON body.
pub fn frame_from_spec(spec: &FrameSpec) -> Frame<AnyMessage> {
    let type_id = AnyMessage::type_id_of(&spec.type_name)
        .unwrap_or_else(|| panic!("unknown type {}", spec.type_name));
    assert_eq!(
        type_id, spec.type_id,
        "{}: type id disagrees with the registry",
        spec.type_name
    );
    let message = AnyMessage::deserialize_json_body(type_id, &spec.body)
        .unwrap_or_else(|e| panic!("{}: body does not deserialize: {e}", spec.type_name));
    Frame {
        stream_id: spec.stream,
        flags: Flags::from_bits(spec.flags).expect("valid vectors use defined flags"),
        message,
    }
}

/// The valid vectors: every registered message in both framings, plus multi-frame
/// streams that exercise stream ids, end of stream and status frames.
pub fn valid_vectors() -> VectorFile<ValidVector> {
    let mut vectors = Vec::new();
    for framing in [Framing::Binary, Framing::Json] {
        let tag = match framing {
            Framing::Binary => "binary",
            Framing::Json => "json",
        };
        for info in registry::messages() {
            let frame = Frame::new(sample::example(info.type_id));
            vectors.push(vector(format!("{tag}/{}", info.name), framing, vec![frame]));
        }
        vectors.push(vector(
            format!("{tag}/stream/unary-call"),
            framing,
            unary_call(),
        ));
        vectors.push(vector(
            format!("{tag}/stream/bidi-client-ends-with-status"),
            framing,
            bidi_client_ends_with_status(),
        ));
        vectors.push(vector(
            format!("{tag}/stream/empty-bodies"),
            framing,
            empty_bodies(),
        ));
    }
    VectorFile {
        format: FORMAT.to_owned(),
        description: "Byte strings and the frames they hold. Decoding `hex` must give `frames`; \
                      encoding `frames` (a fresh connection: the first frame is under the 64 KiB \
                      first-frame limit) must give exactly `hex`."
            .to_owned(),
        vectors,
    }
}

fn vector(name: String, framing: Framing, frames: Vec<Frame<AnyMessage>>) -> ValidVector {
    let bytes = encode(framing, &frames).unwrap_or_else(|e| panic!("{name}: {e}"));
    ValidVector {
        name,
        framing,
        hex: hex::encode(bytes),
        frames: frames.iter().map(frame_spec).collect(),
    }
}

/// A Hello, then a unary call on stream 1 (call header, request) answered on stream 1.
fn unary_call() -> Vec<Frame<AnyMessage>> {
    use taskwire_proto::runner::v1::{CancelRequest, CancelResponse};
    use taskwire_proto::session::v1::{CallHeader, Hello, Status, StatusCode};
    use taskwire_proto::wkt::Timestamp;
    let hello = Hello {
        min_version: 1,
        max_version: 1,
        peer_name: "vector".into(),
        ..Default::default()
    };
    let header = CallHeader {
        request_id: 1,
        deadline: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ..Default::default()
    };
    let request = CancelRequest {
        job_id: "job-1".into(),
        request_id: "req-1".into(),
        hard_kill: true,
        ..Default::default()
    };
    let response = CancelResponse {
        found: true,
        ..Default::default()
    };
    let status = Status {
        code: StatusCode::Ok as i32,
        message: "done".into(),
        ..Default::default()
    };
    vec![
        Frame::new(any(hello)),
        Frame::new(any(header)).with_stream_id(1),
        Frame::new(any(request)).with_stream_id(1).end_stream(),
        Frame::new(any(response)).with_stream_id(1),
        Frame::new(any(status)).with_stream_id(1).end_stream(),
    ]
}

/// A journal stream on stream 2 where the two sides take turns: the client's last item
/// went out without END_STREAM, so it ends its side with an OK status frame; the server
/// then sends `End` and its own closing OK status.
fn bidi_client_ends_with_status() -> Vec<Frame<AnyMessage>> {
    use taskwire_proto::journal::v1::{End, OutputEntry, Start};
    use taskwire_proto::session::v1::{Status, StatusCode};
    let start = Start {
        invocation_id: b"inv-1".to_vec().into(),
        ..Default::default()
    };
    let entry = OutputEntry {
        name: "step".into(),
        ..Default::default()
    };
    let ok = || Status {
        code: StatusCode::Ok as i32,
        ..Default::default()
    };
    vec![
        Frame::new(any(start)).with_stream_id(2),
        Frame::new(any(entry)).with_stream_id(2),
        Frame::new(any(ok())).with_stream_id(2).end_stream(),
        Frame::new(any(End::default())).with_stream_id(2),
        Frame::new(any(ok())).with_stream_id(2).end_stream(),
    ]
}

/// Messages whose every field is default: empty protobuf bodies, `{}` JSON bodies.
fn empty_bodies() -> Vec<Frame<AnyMessage>> {
    use taskwire_proto::journal::v1::End;
    use taskwire_proto::session::v1::Ping;
    vec![
        Frame::new(any(Ping::default())),
        Frame::new(any(End::default()))
            .with_stream_id(u32::MAX)
            .end_stream(),
    ]
}

/// Any registered message as an [`AnyMessage`].
pub fn any<M: WireMessage>(message: M) -> AnyMessage {
    let mut body = Vec::new();
    prost::Message::encode_raw(&message, &mut body);
    AnyMessage::decode_body(M::TYPE_ID, body.into())
        .expect("registered")
        .expect("own encoding decodes")
}

/// Checks one valid vector both ways; returns a description of the first disagreement.
pub fn check_valid(vector: &ValidVector) -> Result<(), String> {
    let bytes = hex::decode(&vector.hex).map_err(|e| format!("bad hex: {e}"))?;
    let (frames, error) = decode(vector.framing, Limits::default(), &bytes);
    if let Some(error) = error {
        return Err(format!("decoding failed: {error}"));
    }
    let decoded: Vec<FrameSpec> = frames.iter().map(frame_spec).collect();
    if decoded != vector.frames {
        return Err(format!(
            "decoded {decoded:#?}\nexpected {:#?}",
            vector.frames
        ));
    }
    let rebuilt: Vec<Frame<AnyMessage>> = vector.frames.iter().map(frame_from_spec).collect();
    let encoded = encode(vector.framing, &rebuilt).map_err(|e| format!("encoding failed: {e}"))?;
    if encoded != bytes {
        return Err(format!(
            "encoded {}\nexpected {}",
            hex::encode(encoded),
            vector.hex
        ));
    }
    if vector.framing == Framing::Binary {
        // Writers that take a list of buffers (the QUIC client) must send the same bytes.
        let mut codec = builder(Limits::default()).new_binary_codec();
        let mut chunks = Vec::new();
        for frame in &rebuilt {
            codec
                .encode_chunks(frame, &mut chunks)
                .map_err(|e| format!("encoding as chunks failed: {e}"))?;
        }
        if chunks.concat() != bytes {
            return Err(format!(
                "encoded as chunks {}\nexpected {}",
                hex::encode(chunks.concat()),
                vector.hex
            ));
        }
    }
    Ok(())
}

/// Checks one invalid vector.
pub fn check_invalid(vector: &InvalidVector) -> Result<(), String> {
    let bytes = hex::decode(&vector.hex).map_err(|e| format!("bad hex: {e}"))?;
    let (frames, error) = decode(vector.framing, vector.limits, &bytes);
    let Some(error) = error else {
        return Err(format!(
            "accepted: decoded {} frames and no error",
            frames.len()
        ));
    };
    if error.kind().as_str() != vector.error || frames.len() != vector.frames_before_error {
        return Err(format!(
            "got `{}` after {} frames ({error}); expected `{}` after {}",
            error.kind(),
            frames.len(),
            vector.error,
            vector.frames_before_error
        ));
    }
    Ok(())
}

/// Reads a vector file.
pub fn read<V: for<'de> Deserialize<'de>>(name: &str) -> VectorFile<V> {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A vector file's exact text: pretty JSON with a trailing newline.
pub fn render<V: Serialize>(file: &VectorFile<V>) -> String {
    let mut text = serde_json::to_string_pretty(file).expect("vectors serialize");
    text.push('\n');
    text
}

/// The invalid vectors, written by hand: each states its expected error kind.
pub fn invalid_vectors() -> VectorFile<InvalidVector> {
    VectorFile {
        format: FORMAT.to_owned(),
        description: "Byte strings a decoder must reject. Decode with the given limits (defaults: \
                      16 MiB frames, 64 KiB first frame), treating the end of `hex` as the end of \
                      input; expect `frames_before_error` good frames, then the error kind `error`."
            .to_owned(),
        vectors: crate::invalid::cases(),
    }
}
