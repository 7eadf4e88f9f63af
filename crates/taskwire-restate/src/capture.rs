//! Reading recorded connections: one direction of an HTTP/1.1 or HTTP/2 connection, as a
//! packet capture saves it, split into its messages and their bodies, so the service
//! protocol inside can be decoded. For tools (`taskwire decode --dialect restate`) and
//! tests; nothing here serves traffic.
//!
//! HTTP/2 header blocks are kept as they are (HPACK-encoded: decoding them needs the
//! connection's whole history in that direction, which a caller with an HPACK decoder can
//! replay from [`H2Stream::header_blocks`], in order).

use bytes::{Bytes, BytesMut};

/// The HTTP/2 connection preface a client sends first.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("at byte {offset}: {message}")]
pub struct CaptureError {
    /// Where in the input.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

fn error<T>(offset: usize, message: impl Into<String>) -> Result<T, CaptureError> {
    Err(CaptureError {
        offset,
        message: message.into(),
    })
}

/// One HTTP/1.1 request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H1Message {
    /// Where it starts in the input.
    pub offset: usize,
    /// The request or status line.
    pub start_line: String,
    /// The headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, chunked encoding removed.
    pub body: Bytes,
}

impl H1Message {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits one direction of an HTTP/1.1 connection into its messages.
pub fn read_h1(input: &[u8]) -> Result<Vec<H1Message>, CaptureError> {
    let mut messages = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let offset = at;
        let Some(end) = find(&input[at..], b"\r\n\r\n") else {
            return error(at, "a message head without its blank line");
        };
        let head = std::str::from_utf8(&input[at..at + end]).map_err(|_| CaptureError {
            offset: at,
            message: "a message head that is not UTF-8".into(),
        })?;
        at += end + 4;
        let mut lines = head.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let message = H1Message {
            offset,
            start_line,
            headers,
            body: Bytes::new(),
        };
        let chunked = message
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            let mut body = BytesMut::new();
            loop {
                let Some(line_end) = find(&input[at..], b"\r\n") else {
                    return error(at, "a chunk size line without its end");
                };
                let size_text = std::str::from_utf8(&input[at..at + line_end]).unwrap_or("");
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(size_text, 16) else {
                    return error(at, format!("a chunk size {size_text:?} that is not hex"));
                };
                at += line_end + 2;
                if size == 0 {
                    // Trailers, then the blank line.
                    let Some(trailer_end) = find(&input[at..], b"\r\n") else {
                        return error(at, "a chunked body without its last blank line");
                    };
                    at += trailer_end + 2;
                    break;
                }
                let Some(chunk) = input.get(at..at + size) else {
                    return error(at, format!("a chunk of {size} bytes cut short"));
                };
                body.extend_from_slice(chunk);
                at += size + 2;
            }
            body.freeze()
        } else if let Some(length) = message.header("content-length") {
            let Ok(length) = length.parse::<usize>() else {
                return error(offset, format!("content-length {length:?}"));
            };
            let Some(body) = input.get(at..at + length) else {
                return error(at, format!("a body of {length} bytes cut short"));
            };
            at += length;
            Bytes::copy_from_slice(body)
        } else if message.start_line.starts_with("HTTP/") {
            // A response without a length ends with the connection.
            let body = Bytes::copy_from_slice(&input[at..]);
            at = input.len();
            body
        } else {
            Bytes::new()
        };
        messages.push(H1Message { body, ..message });
    }
    Ok(messages)
}

/// One HTTP/2 stream as one direction of a connection carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Stream {
    /// The stream id.
    pub id: u32,
    /// Its HEADERS (with CONTINUATION) blocks, HPACK-encoded, in order.
    pub header_blocks: Vec<Bytes>,
    /// Its DATA, padding removed.
    pub body: Bytes,
    /// Whether it ended (END_STREAM) in this direction.
    pub ended: bool,
}

/// One direction of an HTTP/2 connection, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Capture {
    /// Its streams, in the order they first appear.
    pub streams: Vec<H2Stream>,
    /// Every header block `(stream id, block)` in connection order, as an HPACK decoder
    /// must see them.
    pub header_blocks: Vec<(u32, Bytes)>,
}

/// Splits one direction of an HTTP/2 connection (with or without the client's preface)
/// into its streams.
pub fn read_h2(input: &[u8]) -> Result<H2Capture, CaptureError> {
    let mut at = if input.starts_with(H2_PREFACE) {
        H2_PREFACE.len()
    } else {
        0
    };
    let mut streams: Vec<H2Stream> = Vec::new();
    let mut blocks: Vec<(u32, Bytes)> = Vec::new();
    let mut bodies: Vec<BytesMut> = Vec::new();
    let mut open_block: Option<(u32, BytesMut)> = None;
    while at < input.len() {
        let Some(header) = input.get(at..at + 9) else {
            return error(at, "a frame header cut short");
        };
        let length =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let id = u32::from_be_bytes([header[5] & 0x7f, header[6], header[7], header[8]]);
        let Some(payload) = input.get(at + 9..at + 9 + length) else {
            return error(at, format!("a frame of {length} bytes cut short"));
        };
        let frame_at = at;
        at += 9 + length;
        let index = match streams.iter().position(|s| s.id == id) {
            Some(index) => index,
            None if id != 0 && matches!(kind, 0 | 1) => {
                streams.push(H2Stream {
                    id,
                    header_blocks: Vec::new(),
                    body: Bytes::new(),
                    ended: false,
                });
                bodies.push(BytesMut::new());
                streams.len() - 1
            }
            None => continue,
        };
        match kind {
            0 => {
                bodies[index].extend_from_slice(unpadded(payload, flags, 0, frame_at)?);
                streams[index].ended |= flags & 0x01 != 0;
            }
            1 => {
                let priority = if flags & 0x20 != 0 { 5 } else { 0 };
                let fragment = unpadded(payload, flags, priority, frame_at)?;
                streams[index].ended |= flags & 0x01 != 0;
                let block = BytesMut::from(fragment);
                if flags & 0x04 != 0 {
                    let block = block.freeze();
                    streams[index].header_blocks.push(block.clone());
                    blocks.push((id, block));
                } else {
                    open_block = Some((id, block));
                }
            }
            9 => {
                if let Some((block_id, mut block)) = open_block.take() {
                    block.extend_from_slice(payload);
                    if flags & 0x04 != 0 {
                        let block = block.freeze();
                        streams[index].header_blocks.push(block.clone());
                        blocks.push((block_id, block));
                    } else {
                        open_block = Some((block_id, block));
                    }
                }
            }
            _ => {}
        }
    }
    for (stream, body) in streams.iter_mut().zip(bodies) {
        stream.body = body.freeze();
    }
    Ok(H2Capture {
        streams,
        header_blocks: blocks,
    })
}

/// A DATA or HEADERS payload without its padding (flag 0x08) and the first `skip` bytes.
fn unpadded(
    payload: &[u8],
    flags: u8,
    skip: usize,
    frame_at: usize,
) -> Result<&[u8], CaptureError> {
    let (pad, rest) = if flags & 0x08 != 0 {
        let pad = usize::from(*payload.first().unwrap_or(&0));
        (pad, payload.get(1..).unwrap_or_default())
    } else {
        (0, payload)
    };
    let end = rest.len().checked_sub(pad).filter(|end| *end >= skip);
    end.and_then(|end| rest.get(skip..end))
        .ok_or_else(|| CaptureError {
            offset: frame_at,
            message: "padding or priority longer than the frame".into(),
        })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_sized_bodies_are_read_whole() {
        let input = b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n";
        let messages = read_h1(input).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(&messages[0].body[..], b"abc");
        assert_eq!(&messages[1].body[..], b"xyz");
        assert!(read_h1(b"POST /a HTTP/1.1\r\ncontent-length: 9\r\n\r\nab").is_err());
    }

    #[test]
    fn h2_data_is_collected_per_stream() {
        let mut input = H2_PREFACE.to_vec();
        // HEADERS on stream 1 (END_HEADERS), DATA "ab", DATA "c" with END_STREAM.
        input.extend_from_slice(&[0, 0, 1, 1, 0x04, 0, 0, 0, 1, 0x82]);
        input.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 1, b'a', b'b']);
        input.extend_from_slice(&[0, 0, 1, 0, 0x01, 0, 0, 0, 1, b'c']);
        let capture = read_h2(&input).unwrap();
        assert_eq!(capture.streams.len(), 1);
        assert_eq!(&capture.streams[0].body[..], b"abc");
        assert!(capture.streams[0].ended);
        assert_eq!(capture.header_blocks.len(), 1);
        assert!(read_h2(&[0, 0, 9, 0, 0, 0, 0, 0, 1]).is_err());
    }
}
