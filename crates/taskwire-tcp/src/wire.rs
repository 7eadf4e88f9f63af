//! One byte stream, two framings: a codec that reads and writes [`RawFrame`]s whichever
//! framing the connection negotiated. JSON frames are transcoded to protobuf bodies on
//! the way in and back on the way out, so the router sees one kind of frame.

use bytes::BytesMut;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{BinaryCodec, Builder, CodecError, JsonCodec, RawFrame};
use taskwire_proto::registry::AnyMessage;
use taskwire_proto::session::v1::Codec;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The status frame, with END_STREAM, that ends `stream_id`: how a server ends a call, and
/// how a client with no item left ends its side.
pub(crate) fn status_frame(status: &taskwire_rpc::Status, stream_id: u32) -> RawFrame {
    let mut frame = RawFrame::encode(&taskwire_codec::Frame::new(status.to_message()).end_stream());
    frame.stream_id = stream_id;
    frame
}

/// Frames already queued are coalesced into one write of about this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// Writes `frames` to `writer` until the channel closes or a write fails, then shuts the
/// stream down. The one writer of a connection, on either side.
///
/// Frames queued together go out in one write, and every write is flushed. The flush is
/// what delivers the last bytes: a TLS stream whose socket is full accepts the tail of a
/// write into its own buffer and reports it written, and without a flush those bytes wait
/// for a next write that may never come (the peer then waits for them forever).
///
/// A frame the codec refuses (over the peer's frame limit) is replaced by what
/// `unencodable` returns, if anything.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut codec: WireCodec,
    mut frames: mpsc::Receiver<RawFrame>,
    unencodable: impl Fn(&RawFrame, CodecError) -> Option<RawFrame>,
) {
    let mut bytes = BytesMut::with_capacity(16 * 1024);
    while let Some(frame) = frames.recv().await {
        bytes.clear();
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if let Err(error) = codec.encode(&frame, &mut bytes)
                && let Some(replacement) = unencodable(&frame, error)
            {
                let _ = codec.encode(&replacement, &mut bytes);
            }
            if bytes.len() < COALESCE_BYTES {
                next = frames.try_recv().ok();
            }
        }
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use taskwire_codec::Frame;
    use taskwire_proto::session::v1::Ping;
    use tokio::io::BufWriter;

    use super::*;

    /// A `BufWriter` keeps small writes until it is flushed, as a TLS stream keeps the
    /// tail of a write when its socket is full: the writer must flush for the peer to see
    /// the frame while the connection stays open.
    #[tokio::test]
    async fn a_frame_reaches_the_peer_through_a_buffering_stream_while_the_channel_stays_open() {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = mpsc::channel(4);
        let codec = WireCodec::new(Codec::Protobuf, *Builder::new().first_frame_done(true));
        tokio::spawn(write_frames(BufWriter::new(near), codec, rx, |_, _| None));
        let mut ping = RawFrame::encode(&Frame::new(Ping {
            nonce: 7,
            sent_at: None,
        }));
        ping.stream_id = 3;
        tx.send(ping.clone()).await.unwrap();

        let mut reader = far;
        let mut decoder = WireCodec::new(Codec::Protobuf, *Builder::new().first_frame_done(true));
        let mut buffer = BytesMut::new();
        let arrived = tokio::time::timeout(
            Duration::from_secs(5),
            taskwire_codec::io::read_frame(&mut reader, &mut decoder, &mut buffer),
        )
        .await
        .expect("the frame stayed in the writer's buffer")
        .unwrap()
        .unwrap();
        assert_eq!(arrived, ping);
        drop(tx);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_replaced_and_the_next_one_still_goes_out() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = mpsc::channel(4);
        let codec = WireCodec::new(
            Codec::Protobuf,
            *Builder::new().first_frame_done(true).max_frame_length(16),
        );
        let replacement = RawFrame::encode(&Frame::new(Ping {
            nonce: 1,
            sent_at: None,
        }));
        let substitute = replacement.clone();
        tokio::spawn(write_frames(near, codec, rx, move |frame, error| {
            assert!(matches!(error, CodecError::FrameTooLarge { max: 16, .. }));
            assert_eq!(frame.body.len(), 40);
            Some(substitute.clone())
        }));
        let too_large = RawFrame {
            body: vec![0u8; 40].into(),
            ..replacement.clone()
        };
        tx.send(too_large).await.unwrap();
        tx.send(replacement.clone()).await.unwrap();
        drop(tx);

        let mut decoder = WireCodec::new(Codec::Protobuf, *Builder::new().first_frame_done(true));
        let mut buffer = BytesMut::new();
        for _ in 0..2 {
            let frame = taskwire_codec::io::read_frame(&mut far, &mut decoder, &mut buffer)
                .await
                .unwrap();
            assert_eq!(frame, Some(replacement.clone()));
        }
        let end = taskwire_codec::io::read_frame(&mut far, &mut decoder, &mut buffer).await;
        assert!(
            matches!(end, Ok(None)),
            "the writer shut the stream down: {end:?}"
        );
    }
}
