//! One byte stream, two framings: a codec that reads and writes [`RawFrame`]s whichever
//! framing the connection negotiated. JSON frames are transcoded to protobuf bodies on
//! the way in and back on the way out, so the router sees one kind of frame.

use bytes::BytesMut;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{BinaryCodec, Builder, CodecError, JsonCodec, RawFrame};
use taskwire_proto::registry::AnyMessage;
use taskwire_proto::session::v1::Codec;

/// The framing of a connection.
#[derive(Debug)]
pub(crate) enum WireCodec {
    Binary(BinaryCodec),
    Json(JsonCodec<AnyMessage>),
}

impl WireCodec {
    pub(crate) fn new(codec: Codec, builder: Builder) -> WireCodec {
        match codec {
            Codec::Json => WireCodec::Json(builder.new_any_json_codec()),
            _ => WireCodec::Binary(builder.new_binary_codec()),
        }
    }

    pub(crate) fn codec(&self) -> Codec {
        match self {
            WireCodec::Binary(_) => Codec::Protobuf,
            WireCodec::Json(_) => Codec::Json,
        }
    }

    pub(crate) fn set_max_frame_length(&mut self, max: u32) {
        match self {
            WireCodec::Binary(c) => c.set_max_frame_length(max),
            WireCodec::Json(c) => c.set_max_frame_length(max),
        }
    }
}

impl Decoder for WireCodec {
    type Item = RawFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, CodecError> {
        match self {
            WireCodec::Binary(c) => c.decode(src),
            WireCodec::Json(c) => Ok(c.decode(src)?.map(|frame| RawFrame::encode(&frame))),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, CodecError> {
        match self {
            WireCodec::Binary(c) => c.decode_eof(src),
            WireCodec::Json(c) => Ok(c.decode_eof(src)?.map(|frame| RawFrame::encode(&frame))),
        }
    }
}

impl Encoder<&RawFrame> for WireCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &RawFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            WireCodec::Binary(c) => c.encode(frame, dst),
            WireCodec::Json(c) => {
                let typed = frame.clone().decode::<AnyMessage>()?;
                c.encode(&typed, dst)
            }
        }
    }
}
