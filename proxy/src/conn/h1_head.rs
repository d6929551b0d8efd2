//! Where an HTTP/1.1 request head ends, found while its bytes arrive.
//!
//! The transport uses it to bound every request head in size and in time, whatever the
//! HTTP engine does: the engine's own read timeout restarts with every byte, so a head
//! trickled one byte per second would hold a connection forever. Line endings are
//! accepted as the parser accepts them (CRLF or bare LF), and empty lines before the
//! request line (which parsers skip) do not end a head.

/// What a chunk of bytes did to the head being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The head is not complete yet.
    Partial,
    /// The head ended after this many bytes of the chunk.
    Complete(usize),
    /// The head grew past the limit before it ended.
    TooLarge,
}

/// Scanner of one request head.
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    /// Bytes of the head seen so far.
    seen: usize,
    /// A byte other than CR/LF has been seen (the request line started).
    started: bool,
    /// The last line ended (LF seen, possibly followed by CR).
    at_line_start: bool,
}

impl HeadScanner {
    /// Start scanning a new head.
    pub fn new() -> Self {
        HeadScanner::default()
    }

    /// Bytes of the head seen so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Feed the next bytes of the stream; `limit` bounds the head's total size.
    pub fn feed(&mut self, chunk: &[u8], limit: usize) -> Scan {
        for (i, &byte) in chunk.iter().enumerate() {
            self.seen += 1;
            match byte {
                b'\n' if self.started && self.at_line_start => return Scan::Complete(i + 1),
                b'\n' => self.at_line_start = true,
                b'\r' => {}
                _ => {
                    self.started = true;
                    self.at_line_start = false;
                }
            }
            if self.seen > limit {
                return Scan::TooLarge;
            }
        }
        Scan::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parts: &[&[u8]], limit: usize) -> Vec<Scan> {
        let mut scanner = HeadScanner::new();
        parts.iter().map(|p| scanner.feed(p, limit)).collect()
    }

    #[test]
    fn a_head_ends_at_its_empty_line_however_it_is_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        assert_eq!(scan(&[head], 1000), vec![Scan::Complete(27)]);
        for split in 1..head.len() {
            let (a, b) = head.split_at(split);
            let results = scan(&[a, b], 1000);
            let ends: usize = match results.as_slice() {
                [Scan::Complete(n), _] => *n,
                [Scan::Partial, Scan::Complete(n)] => split + n,
                other => panic!("split {split}: {other:?}"),
            };
            assert_eq!(ends, 27, "split at {split}");
        }
    }

    #[test]
    fn bare_line_feeds_end_a_head_and_leading_empty_lines_do_not() {
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\nHost: a\n\n"], 1000),
            vec![Scan::Complete(24)]
        );
        // Empty lines before the request line are skipped by parsers, not an end.
        assert_eq!(scan(&[b"\r\n\r\n\r\n"], 1000), vec![Scan::Partial]);
        assert_eq!(
            scan(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"], 1000),
            vec![Scan::Complete(22)]
        );
    }

    #[test]
    fn a_head_larger_than_the_limit_is_refused_before_it_ends() {
        let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(scan(&[&head], 64), vec![Scan::TooLarge]);
        assert_eq!(
            scan(&[&head[..60], &head[60..]], 64),
            vec![Scan::Partial, Scan::TooLarge]
        );
        // Exactly at the limit is fine.
        let exact = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(
            scan(&[exact], exact.len()),
            vec![Scan::Complete(exact.len())]
        );
    }
}
