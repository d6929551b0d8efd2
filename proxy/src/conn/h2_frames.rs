//! Where HTTP/2 header blocks start and end, found from the frame layer while bytes
//! arrive.
//!
//! A header block is a HEADERS frame and the CONTINUATION frames after it, up to the
//! one flagged END_HEADERS; while it is open, nothing else may be sent on the
//! connection. The transport uses the boundaries to give every block a deadline: a
//! client that trickles a block (or a single frame of it) is cut off instead of
//! holding the connection. Only frame headers are parsed; payloads are skipped by
//! length, so the cost is per frame, not per byte.
//!
//! The same tracker reports every frame's header, for the abuse guard
//! ([`super::h2_guard`]), and, started without a preface, follows the server → client
//! direction to tell when apigate may put a frame of its own between the engine's.

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
/// HEADERS.
pub const HEADERS: u8 = 0x1;
/// PRIORITY.
pub const PRIORITY: u8 = 0x2;
/// RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// PING.
pub const PING: u8 = 0x6;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// WINDOW_UPDATE.
pub const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// A frame's header: what the guard judges a frame by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Payload length.
    pub length: usize,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub stream: u32,
}

/// What a chunk held, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// A frame header arrived (reported before the block boundary it may cause), with
    /// the frame's offset in the chunk fed when all of its header was in that chunk.
    Frame(FrameHead, Option<usize>),
    /// A header block began (its first frame header arrived).
    Started,
    /// The open header block is complete.
    Ended,
    /// A GOAWAY's error code (its payload's bytes 4..8) arrived.
    GoAway(u32),
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
    /// The first bytes of a GOAWAY payload being read (last-stream-id, error code).
    goaway: Option<([u8; 8], usize)>,
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
            goaway: None,
            block_open: false,
        }
    }
}

impl FrameTracker {
    /// A tracker at the start of a connection (before the client preface).
    pub fn new() -> Self {
        FrameTracker::default()
    }

    /// A tracker of the server → client direction, which has no preface.
    pub fn outbound() -> Self {
        FrameTracker {
            preface_left: 0,
            ..FrameTracker::default()
        }
    }

    /// Whether every frame fed so far is complete: a frame written now would not land
    /// inside another.
    pub fn at_frame_boundary(&self) -> bool {
        self.preface_left == 0 && self.header_len == 0 && self.payload_left == 0
    }

    /// Whether a header block is open.
    pub fn block_open(&self) -> bool {
        self.block_open
    }

    /// Feed the next bytes; `on` is called for each boundary, in order.
    pub fn feed(&mut self, mut chunk: &[u8], mut on: impl FnMut(Boundary)) {
        let total = chunk.len();
        if self.preface_left > 0 {
            let skip = self.preface_left.min(chunk.len());
            self.preface_left -= skip;
            chunk = &chunk[skip..];
        }
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(chunk.len());
                if let Some((bytes, have)) = &mut self.goaway {
                    let take = (bytes.len() - *have).min(skip);
                    bytes[*have..*have + take].copy_from_slice(&chunk[..take]);
                    *have += take;
                    if *have == bytes.len() {
                        let code = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                        self.goaway = None;
                        on(Boundary::GoAway(code));
                    }
                }
                self.payload_left -= skip;
                chunk = &chunk[skip..];
                if self.payload_left == 0 {
                    self.frame_done(&mut on);
                }
                continue;
            }
            let whole_header = self.header_len == 0;
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
            let stream = u32::from_be_bytes([
                self.header[5] & 0x7f,
                self.header[6],
                self.header[7],
                self.header[8],
            ]);
            let at = total - chunk.len();
            let start = whole_header.then(|| at - FRAME_HEADER_LEN);
            on(Boundary::Frame(
                FrameHead {
                    length,
                    kind,
                    flags,
                    stream,
                },
                start,
            ));
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
            // A shorter GOAWAY is a protocol error; its code is not reported.
            self.goaway = (kind == GOAWAY && length >= 8).then_some(([0; 8], 0));
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
            tracker.feed(part, |b| {
                if !matches!(b, Boundary::Frame(..)) {
                    seen.push(b)
                }
            });
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
    fn every_frame_header_is_reported_and_boundaries_are_known_however_split() {
        let bytes = connection();
        for size in [1, 2, 5, 9, 10, 17, bytes.len()] {
            let mut tracker = FrameTracker::new();
            let mut heads = Vec::new();
            for part in bytes.chunks(size) {
                tracker.feed(part, |b| {
                    if let Boundary::Frame(head, _) = b {
                        heads.push((head.kind, head.stream, head.length));
                    }
                });
            }
            assert_eq!(
                heads,
                vec![
                    (SETTINGS, 0, 6),
                    (HEADERS, 1, 10),
                    (CONTINUATION, 1, 5),
                    (CONTINUATION, 1, 5),
                    (DATA, 1, 20),
                    (HEADERS, 3, 7)
                ],
                "chunks of {size}"
            );
            assert!(tracker.at_frame_boundary());
        }
        // Without a preface (the server's direction), and mid-frame.
        let mut out = FrameTracker::outbound();
        assert!(out.at_frame_boundary());
        let data = frame(DATA, 0, 1, &[0; 30]);
        out.feed(&data[..5], |_| {});
        assert!(!out.at_frame_boundary(), "inside a header");
        out.feed(&data[5..20], |_| {});
        assert!(!out.at_frame_boundary(), "inside a payload");
        out.feed(&data[20..], |_| {});
        assert!(out.at_frame_boundary());
        // Offsets of frames whose header is whole in the chunk fed.
        let bytes = connection();
        let mut starts = Vec::new();
        let (first, rest) = bytes.split_at(24 + 9 + 6 + 4);
        let mut tracker = FrameTracker::new();
        for part in [first, rest] {
            tracker.feed(part, |b| {
                if let Boundary::Frame(head, start) = b {
                    starts.push((head.kind, start));
                }
            });
        }
        // SETTINGS at 24 of the first chunk; the first HEADERS' header is split; then
        // each frame's offset in the second chunk.
        assert_eq!(
            starts,
            vec![
                (SETTINGS, Some(24)),
                (HEADERS, None),
                (CONTINUATION, Some(5 + 10)),
                (CONTINUATION, Some(5 + 10 + 14)),
                (DATA, Some(5 + 10 + 28)),
                (HEADERS, Some(5 + 10 + 28 + 29)),
            ]
        );
        // A GOAWAY's error code is reported however its payload is split.
        let goaway = frame(GOAWAY, 0, 0, &[0, 0, 0, 9, 0, 0, 0, 0xb, b'x']);
        for size in [1, 3, 9, 10, 12, goaway.len()] {
            let mut out = FrameTracker::outbound();
            let mut codes = Vec::new();
            for part in goaway.chunks(size) {
                out.feed(part, |b| {
                    if let Boundary::GoAway(code) = b {
                        codes.push(code)
                    }
                });
            }
            assert_eq!(codes, vec![0xb], "chunks of {size}");
        }
        // The reserved bit is not part of the stream id.
        let mut heads = Vec::new();
        FrameTracker::outbound().feed(&frame(DATA, 0, 0x8000_0005, &[]), |b| {
            if let Boundary::Frame(head, _) = b {
                heads.push(head.stream)
            }
        });
        assert_eq!(heads, vec![5]);
    }

    #[test]
    fn a_block_trickled_frame_by_frame_stays_open_until_end_headers() {
        let mut tracker = FrameTracker::new();
        let mut seen = Vec::new();
        let mut on = |b| {
            if !matches!(b, Boundary::Frame(..)) {
                seen.push(b)
            }
        };
        tracker.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &mut on);
        let first = frame(HEADERS, 0, 1, &[1; 4]);
        tracker.feed(&first[..10], &mut on);
        assert!(tracker.block_open());
        tracker.feed(&first[10..], &mut on);
        for _ in 0..100 {
            tracker.feed(&frame(CONTINUATION, 0, 1, &[1]), &mut on);
        }
        assert!(tracker.block_open(), "no END_HEADERS yet");
        tracker.feed(&frame(CONTINUATION, END_HEADERS, 1, &[]), &mut on);
        assert!(!tracker.block_open());
        assert_eq!(seen, vec![Boundary::Started, Boundary::Ended]);
    }
}
