//! Encoding a binary frame as a list of buffers, for writers that take several at once
//! (quinn's `write_all_chunks`, `write_vectored`): long `bytes` fields go out as the
//! message's own buffer instead of being copied into the frame's.
//!
//! ```text
//! ImageUpload { chunk: <64 KiB Bytes> }
//!
//! encode:        [ header | tag len | 64 KiB copied ............ ]   one new buffer
//! encode_chunks: [ header | tag len ] [ the message's 64 KiB Bytes ] nothing copied
//! ```
//!
//! Concatenated, the chunks are exactly the bytes [`BinaryCodec`](crate::BinaryCodec)'s
//! `encode` writes; only where they live differs.

// The one `unsafe` in taskwire: implementing `BufMut` (an `unsafe trait`) is the only way
// to see prost's writes of `bytes` fields as `Bytes` instead of as slices to copy. Every
// method delegates to a `BytesMut`, so its contract is the `BytesMut`'s.
#![allow(unsafe_code)]

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `bytes` fields at least this long are sent as the message's own buffer; shorter ones
/// are copied, which costs less than one more chunk for the writer to handle.
pub const MIN_SHARED_LEN: usize = 4 * 1024;

/// How much room the first buffer gets before it knows whether a shared field follows:
/// enough for every frame under [`MIN_SHARED_LEN`], which therefore needs one buffer.
const FIRST_BUFFER: usize = crate::HEADER_LEN + MIN_SHARED_LEN;

/// A `BufMut` that copies small writes into a buffer and takes long `Bytes` as chunks.
pub(crate) struct ChunkWriter<'a> {
    current: BytesMut,
    chunks: &'a mut Vec<Bytes>,
    /// The bytes of the frame not written yet: when `current` fills, it grows by this much
    /// at once instead of doubling, so nothing in it is copied twice.
    left: usize,
}

impl<'a> ChunkWriter<'a> {
    /// A writer for a frame of `frame_len` bytes, appending to `chunks`.
    pub(crate) fn new(frame_len: usize, chunks: &'a mut Vec<Bytes>) -> Self {
        ChunkWriter {
            current: BytesMut::with_capacity(frame_len.min(FIRST_BUFFER)),
            chunks,
            left: frame_len,
        }
    }

    /// Appends the last buffer.
    pub(crate) fn finish(mut self) {
        if !self.current.is_empty() {
            self.chunks.push(self.current.split().freeze());
        }
    }

    fn reserve(&mut self, additional: usize) {
        if self.current.capacity() - self.current.len() < additional {
            self.current.reserve(additional.max(self.left));
        }
    }

    fn wrote(&mut self, len: usize) {
        self.left = self.left.saturating_sub(len);
    }
}

// SAFETY: `chunk_mut` and `advance_mut` are `current`'s, so the bytes `advance_mut`
// declares initialized are those its caller initialized in `current`'s own chunk.
unsafe impl BufMut for ChunkWriter<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee for this writer is the one `current` needs: `cnt`
        // bytes of `current.chunk_mut()` are initialized.
        unsafe { self.current.advance_mut(cnt) };
        self.wrote(cnt);
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.reserve(1);
        self.current.chunk_mut()
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        let len = src.remaining();
        if len >= MIN_SHARED_LEN {
            if !self.current.is_empty() {
                self.chunks.push(self.current.split().freeze());
            }
            // For `Bytes`, what prost passes for a `bytes` field, this is a reference-count
            // increment, not a copy.
            self.chunks.push(src.copy_to_bytes(len));
            self.wrote(len);
            return;
        }
        while src.has_remaining() {
            let chunk = src.chunk();
            let n = chunk.len();
            self.put_slice(chunk);
            src.advance(n);
        }
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.reserve(src.len());
        self.current.extend_from_slice(src);
        self.wrote(src.len());
    }

    fn put_u8(&mut self, n: u8) {
        self.put_slice(&[n]);
    }
}
