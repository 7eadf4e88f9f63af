//! Reading and writing frames over `std::io` and tokio streams with any codec.
//!
//! For long-lived async connections, tokio-util's `FramedRead`/`FramedWrite` take the
//! codecs directly; these helpers suit one-off reads and writes, blocking peers, and tools.
//!
//! ```
//! use taskwire_codec::io::{SyncReader, SyncWriter};
//! use taskwire_codec::{Builder, Frame};
//! use taskwire_proto::session::v1::Ping;
//!
//! let mut wire = Vec::new();
//! let mut writer = SyncWriter::new(&mut wire, Builder::new().new_binary_message_codec::<Ping>());
//! writer.write(Frame::new(Ping { nonce: 7, ..Default::default() }))?;
//!
//! let mut reader = SyncReader::new(wire.as_slice(), Builder::new().new_binary_message_codec::<Ping>());
//! assert_eq!(reader.read()?.unwrap().message.nonce, 7);
//! assert!(reader.read()?.is_none(), "clean end of input between frames");
//! # Ok::<(), taskwire_codec::CodecError>(())
//! ```

use std::io::{Read, Write};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::CodecError;

/// How much a reader asks the stream for at a time. Buffers grow by what arrives, never
/// by what a header declares.
const READ_CHUNK: usize = 8 * 1024;

/// Reads frames from a blocking reader.
#[derive(Debug)]
pub struct SyncReader<R, C> {
    reader: R,
    codec: C,
    buffer: BytesMut,
    chunk: Box<[u8]>,
    offset: u64,
}

impl<R: Read, C: Decoder<Error = CodecError>> SyncReader<R, C> {
    /// A reader decoding `reader`'s bytes with `codec`.
    pub fn new(reader: R, codec: C) -> Self {
        SyncReader {
            reader,
            codec,
            buffer: BytesMut::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            offset: 0,
        }
    }

    /// The next frame; `None` at a clean end of input between frames.
    pub fn read(&mut self) -> Result<Option<C::Item>, CodecError> {
        loop {
            let before = self.buffer.len();
            let decoded = self.codec.decode(&mut self.buffer)?;
            self.offset += (before - self.buffer.len()) as u64;
            if decoded.is_some() {
                return Ok(decoded);
            }
            let read = match self.reader.read(&mut self.chunk) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if read == 0 {
                let before = self.buffer.len();
                let decoded = self.codec.decode_eof(&mut self.buffer)?;
                self.offset += (before - self.buffer.len()) as u64;
                return Ok(decoded);
            }
            self.buffer.extend_from_slice(&self.chunk[..read]);
        }
    }

    /// How many bytes of the input the frames read so far took: where the next frame (or
    /// the frame an error was found in) starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The codec, for its limits.
    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// The reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// Writes frames to a blocking writer, reusing one buffer.
#[derive(Debug)]
pub struct SyncWriter<W, C> {
    writer: W,
    codec: C,
    buffer: BytesMut,
}

impl<W: Write, C> SyncWriter<W, C> {
    /// A writer encoding with `codec` into `writer`.
    pub fn new(writer: W, codec: C) -> Self {
        SyncWriter {
            writer,
            codec,
            buffer: BytesMut::new(),
        }
    }

    /// Encodes and writes one frame. Nothing is written if encoding fails.
    pub fn write<I>(&mut self, item: I) -> Result<(), CodecError>
    where
        C: Encoder<I, Error = CodecError>,
    {
        self.buffer.clear();
        self.codec.encode(item, &mut self.buffer)?;
        self.writer.write_all(&self.buffer)?;
        Ok(())
    }

    /// Flushes the writer.
    pub fn flush(&mut self) -> Result<(), CodecError> {
        Ok(self.writer.flush()?)
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

/// Reads the next frame from an async reader, keeping partial input in `buffer` for the
/// next call. `None` at a clean end of input between frames.
///
/// The buffer grows by reads of at most 8 KiB of what actually arrives.
pub async fn read_frame<R, C>(
    reader: &mut R,
    codec: &mut C,
    buffer: &mut BytesMut,
) -> Result<Option<C::Item>, CodecError>
where
    R: AsyncRead + Unpin,
    C: Decoder<Error = CodecError>,
{
    loop {
        if let Some(frame) = codec.decode(buffer)? {
            return Ok(Some(frame));
        }
        buffer.reserve(READ_CHUNK);
        if reader.read_buf(buffer).await? == 0 {
            return codec.decode_eof(buffer);
        }
    }
}

/// Encodes `item` into `scratch` (cleared first, reused across calls), writes it and
/// flushes the writer.
///
/// The flush makes the frame reach the peer through writers that buffer: a
/// `tokio::io::BufWriter`, or a TLS stream whose socket was full.
pub async fn write_frame<W, C, I>(
    writer: &mut W,
    codec: &mut C,
    item: I,
    scratch: &mut BytesMut,
) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin,
    C: Encoder<I, Error = CodecError>,
{
    scratch.clear();
    codec.encode(item, scratch)?;
    writer.write_all(scratch).await?;
    writer.flush().await?;
    Ok(())
}
