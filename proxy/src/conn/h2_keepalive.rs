//! Dead HTTP/2 clients: after `keepaliveInterval` without a byte from the client,
//! apigate sends it a PING; with nothing back within `keepaliveTimeout` the connection
//! is closed. A quiet watch or `kubectl logs -f` on a live client is never cut: the
//! client's HTTP/2 stack answers the PING by itself.
//!
//! The PING carries apigate's own payload, and its ACK is taken out of the bytes the
//! HTTP engine reads (it would warn about an ACK for a PING it never sent). Pure: the
//! transport feeds what it read and polls the timer.

use std::time::Duration;

use super::h2_frames::{FrameHead, PING};

/// The payload of apigate's keepalive PINGs (the HTTP/2 layer uses others).
pub const PAYLOAD: [u8; 8] = *b"apigate!";
const ACK: u8 = 0x1;
/// How soon to try again when a PING cannot be written yet (a frame of the engine's
/// is half written).
const RETRY: Duration = Duration::from_millis(10);

/// Where a connection's keepalive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the interval to pass; `heard` says whether the client sent anything
    /// since it started.
    Listening { heard: bool },
    /// A PING is out and nothing came back yet.
    Pinged,
}

/// What the transport does when the timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Nothing to do: fire again after this.
    Wait(Duration),
    /// Write [`ping_frame`], and fire again after this.
    Ping(Duration),
    /// The client did not answer: close the connection.
    Dead,
}

/// The keepalive of one connection.
#[derive(Debug)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    phase: Phase,
}

impl Keepalive {
    /// A keepalive whose timer first fires after `interval`.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval,
            timeout,
            phase: Phase::Listening { heard: false },
        }
    }

    /// The client sent something. `Some` when a PING was out: the timer is re-armed
    /// with the returned delay.
    pub fn heard(&mut self) -> Option<Duration> {
        match self.phase {
            Phase::Listening { heard: true } => None,
            Phase::Listening { heard: false } => {
                self.phase = Phase::Listening { heard: true };
                None
            }
            Phase::Pinged => {
                self.phase = Phase::Listening { heard: false };
                Some(self.interval)
            }
        }
    }

    /// The timer fired; `can_write` says whether a frame of apigate's own may be
    /// written now.
    pub fn tick(&mut self, can_write: bool) -> Tick {
        match self.phase {
            Phase::Listening { heard: true } => {
                self.phase = Phase::Listening { heard: false };
                Tick::Wait(self.interval)
            }
            Phase::Listening { heard: false } if can_write => {
                self.phase = Phase::Pinged;
                Tick::Ping(self.timeout)
            }
            Phase::Listening { heard: false } => Tick::Wait(RETRY),
            Phase::Pinged => Tick::Dead,
        }
    }
}

/// The PING frame apigate sends.
pub fn ping_frame() -> [u8; 17] {
    let mut frame = [0u8; 17];
    frame[2] = 8;
    frame[3] = PING;
    frame[9..].copy_from_slice(&PAYLOAD);
    frame
}

/// Whether the frame at `start` of `chunk` (its header `head`) is the ACK of one of
/// apigate's PINGs, whole in the chunk.
pub fn is_our_ack(head: &FrameHead, chunk: &[u8], start: usize) -> bool {
    head.kind == PING
        && head.flags & ACK != 0
        && head.length == PAYLOAD.len()
        && chunk.get(start + 9..start + 17) == Some(&PAYLOAD[..])
}

/// Remove the 17-byte frames at `starts` (ascending) from `chunk`; returns the length
/// of what remains at its front.
pub fn strip(chunk: &mut [u8], starts: &[usize]) -> usize {
    let mut kept = 0;
    let mut from = 0;
    for &start in starts {
        chunk.copy_within(from..start, kept);
        kept += start - from;
        from = start + 17;
    }
    chunk.copy_within(from.., kept);
    kept + chunk.len() - from
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_client_heard_from_is_never_pinged_and_a_silent_one_is_pinged_then_dead() {
        let mut k = Keepalive::new(SECOND, 3 * SECOND);
        // Heard within each interval: nothing to do.
        for _ in 0..3 {
            assert_eq!(k.heard(), None);
            assert_eq!(k.tick(true), Tick::Wait(SECOND));
        }
        // A silent interval: a PING, once a frame may be written.
        assert_eq!(k.tick(false), Tick::Wait(RETRY));
        assert_eq!(k.tick(true), Tick::Ping(3 * SECOND));
        // Anything back (the ACK) and the interval starts over.
        assert_eq!(k.heard(), Some(SECOND));
        assert_eq!(k.tick(true), Tick::Ping(3 * SECOND), "silent again");
        assert_eq!(k.tick(true), Tick::Dead, "no answer within the timeout");
    }

    #[test]
    fn our_acks_are_recognised_and_stripped_whatever_surrounds_them() {
        let mut ack = ping_frame().to_vec();
        ack[4] = ACK;
        let head = |bytes: &[u8]| FrameHead {
            length: usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: 0,
        };
        let mut chunk = b"AB".to_vec();
        chunk.extend(&ack);
        chunk.extend(b"CDE");
        chunk.extend(&ack);
        assert!(is_our_ack(&head(&ack), &chunk, 2));
        assert!(is_our_ack(&head(&ack), &chunk, 22));
        // Another payload (the HTTP/2 layer's own PING), a PING that is no ACK, or one
        // cut off by the end of the chunk is not ours.
        let mut other = ack.clone();
        other[16] = b'?';
        assert!(!is_our_ack(&head(&other), &other, 0));
        assert!(!is_our_ack(&head(&ping_frame()), &ping_frame(), 0));
        assert!(!is_our_ack(&head(&ack), &ack[..16], 0));
        let kept = strip(&mut chunk, &[2, 22]);
        assert_eq!(&chunk[..kept], b"ABCDE");
        let mut only = ack.clone();
        assert_eq!(strip(&mut only, &[0]), 0);
        let mut none = b"xyz".to_vec();
        assert_eq!(strip(&mut none, &[]), 3);
    }
}
