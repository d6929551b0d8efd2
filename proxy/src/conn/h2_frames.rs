//! Where HTTP/2 header blocks start and end, found from the frame layer while bytes
//! arrive.
//!
//! A header block is a HEADERS frame and the CONTINUATION frames after it, up to the
//! one flagged END_HEADERS; while it is open, nothing else may be sent on the
//! connection. The transport uses the boundaries to give every block a deadline: a
//! client that trickles a block (or a single frame of it) is cut off instead of
//! holding the connection. Only frame headers are parsed; payloads are skipped by
//! length, so the cost is per frame, not per byte.

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// A boundary found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// A header block began (its first frame header arrived).
    Started,
    /// The open header block is complete.
    Ended,
}

/// Tracks frame boundaries of the client → server direction of one connection.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    /// The frame whose payload is being skipped ends the open header block.
    frame_ends_block: bool,
    block_open: bool,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            frame_ends_block: false,
            block_open: false,
        }
    }
}

impl FrameTracker {
    /// A tracker at the start of a connection (before the client preface).
    pub fn new() -> Self {
        FrameTracker::default()
    }

    /// Whether a header block is open.
    pub fn block_open(&self) -> bool {
        self.block_open
    }

    /// Feed the next bytes; `on` is called for each boundary, in order.
    pub fn feed(&mut self, mut chunk: &[u8], mut on: impl FnMut(Boundary)) {
        if self.preface_left > 0 {
            let skip = self.preface_left.min(chunk.len());
            self.preface_left -= skip;
            chunk = &chunk[skip..];
        }
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(chunk.len());
                self.payload_left -= skip;
                chunk = &chunk[skip..];
                if self.payload_left == 0 {
                    self.frame_done(&mut on);
                }
                continue;
            }
            let take = (FRAME_HEADER_LEN - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
            self.header_len += take;
            chunk = &chunk[take..];
            if self.header_len < FRAME_HEADER_LEN {
                break;
            }
            self.header_len = 0;
            let length = (usize::from(self.header[0]) << 16)
                | (usize::from(self.header[1]) << 8)
                | usize::from(self.header[2]);
            let kind = self.header[3];
            let flags = self.header[4];
            let in_block = match kind {
                HEADERS => {
                    if !self.block_open {
                        self.block_open = true;
                        on(Boundary::Started);
                    }
                    true
                }
                // A CONTINUATION outside a block is a protocol error the HTTP/2 layer
                // reports; here it neither opens nor closes anything.
                CONTINUATION => self.block_open,
                _ => false,
            };
            self.frame_ends_block = in_block && flags & END_HEADERS != 0;
            self.payload_left = length;
            if length == 0 {
                self.frame_done(&mut on);
            }
        }
    }

    fn frame_done(&mut self, on: &mut impl FnMut(Boundary)) {
        if self.frame_ends_block {
            self.frame_ends_block = false;
            self.block_open = false;
            on(Boundary::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn boundaries(parts: &[&[u8]]) -> Vec<Boundary> {
        let mut tracker = FrameTracker::new();
        let mut seen = Vec::new();
        for part in parts {
            tracker.feed(part, |b| seen.push(b));
        }
        seen
    }

    fn connection() -> Vec<u8> {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0; 6])); // SETTINGS
        bytes.extend(frame(HEADERS, 0, 1, &[1; 10])); // block opens
        bytes.extend(frame(CONTINUATION, 0, 1, &[2; 5]));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &[3; 5])); // block ends
        bytes.extend(frame(0x0, 0x1, 1, &[4; 20])); // DATA
        bytes.extend(frame(HEADERS, END_HEADERS | 0x1, 3, &[5; 7])); // one-frame block
        bytes
    }

    #[test]
    fn blocks_open_and_close_however_the_bytes_are_split() {
        use Boundary::*;
        let bytes = connection();
        let expected = vec![Started, Ended, Started, Ended];
        assert_eq!(boundaries(&[&bytes]), expected);
        for size in [1, 2, 5, 9, 10, 17] {
            let parts: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(boundaries(&parts), expected, "chunks of {size}");
        }
    }

    #[test]
    fn a_block_trickled_frame_by_frame_stays_open_until_end_headers() {
        let mut tracker = FrameTracker::new();
        let mut seen = Vec::new();
        tracker.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", |b| seen.push(b));
        let first = frame(HEADERS, 0, 1, &[1; 4]);
        tracker.feed(&first[..10], |b| seen.push(b));
        assert!(tracker.block_open());
        tracker.feed(&first[10..], |b| seen.push(b));
        for _ in 0..100 {
            tracker.feed(&frame(CONTINUATION, 0, 1, &[1]), |b| seen.push(b));
        }
        assert!(tracker.block_open(), "no END_HEADERS yet");
        tracker.feed(&frame(CONTINUATION, END_HEADERS, 1, &[]), |b| seen.push(b));
        assert!(!tracker.block_open());
        assert_eq!(seen, vec![Boundary::Started, Boundary::Ended]);
    }
}
