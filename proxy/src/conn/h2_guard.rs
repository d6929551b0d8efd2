//! What an HTTP/2 client may make apigate do without asking for anything: reset the
//! streams it opens (the "rapid reset" attack, CVE-2023-44487: each stream still starts
//! a request upstream) and flood control frames (PING and SETTINGS each make the server
//! answer, CVE-2019-9512/9515; PRIORITY, empty DATA and unearned WINDOW_UPDATEs cost a
//! wake-up each, CVE-2019-9516/9518). Over the configured rate within one second the
//! connection is closed with GOAWAY `ENHANCE_YOUR_CALM`; other connections, and the
//! replicas, never notice.
//!
//! A WINDOW_UPDATE is earned by data: a client that reads a large response sends one
//! per stream and one for the connection as it consumes DATA frames, so every DATA
//! frame apigate sends it earns two that are not counted. Pure: the caller feeds frame
//! headers and the time.

use std::time::Duration;

use apigate_control::snapshot::Http2Settings;
use tokio::time::Instant;

use super::h2_frames::{
    FrameHead, DATA, HEADERS, PING, PRIORITY, RST_STREAM, SETTINGS, WINDOW_UPDATE,
};

/// ACK flag of SETTINGS and PING; END_STREAM flag of DATA.
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
/// The window the rates are counted in.
const WINDOW: Duration = Duration::from_secs(1);
/// Unspent WINDOW_UPDATE credit is capped: a client cannot bank a flood.
const MAX_CREDIT: u64 = 1 << 16;
/// HTTP/2 error code ENHANCE_YOUR_CALM (RFC 9113 §7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// More stream resets than allowed within a second.
    RapidReset,
    /// More control frames than allowed within a second.
    ControlFlood,
    /// The HTTP/2 layer's own bounds (resets of streams not yet accepted, streams it
    /// had to reset for protocol errors, CONTINUATION floods, header lists far over the
    /// limit): it sent the GOAWAY.
    Http2Layer,
}

impl Abuse {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Abuse::RapidReset => "rapid_reset",
            Abuse::ControlFlood => "control_flood",
            Abuse::Http2Layer => "http2_layer",
        }
    }

    fn debug_data(self) -> &'static [u8] {
        match self {
            Abuse::RapidReset => b"too many stream resets",
            Abuse::ControlFlood => b"too many control frames",
            Abuse::Http2Layer => b"",
        }
    }
}

/// The guard of one connection.
#[derive(Debug)]
pub struct H2Guard {
    max_resets: u32,
    max_control: u32,
    window_start: Option<Instant>,
    resets: u32,
    control: u32,
    /// WINDOW_UPDATEs the client may send without counting.
    credit: u64,
    /// Highest stream the client opened (GOAWAY's last-stream-id).
    last_stream: u32,
}

impl H2Guard {
    /// A guard with the gateway's bounds.
    pub fn new(settings: &Http2Settings) -> Self {
        H2Guard {
            max_resets: settings.max_resets_per_second,
            max_control: settings.max_control_frames_per_second,
            window_start: None,
            resets: 0,
            control: 0,
            credit: 0,
            last_stream: 0,
        }
    }

    /// Judge one frame from the client, received at `now`.
    pub fn inbound(&mut self, frame: FrameHead, now: Instant) -> Result<(), Abuse> {
        let control = match frame.kind {
            HEADERS => {
                if frame.stream % 2 == 1 {
                    self.last_stream = self.last_stream.max(frame.stream);
                }
                return Ok(());
            }
            RST_STREAM => {
                self.tick(now);
                self.resets += 1;
                if self.resets > self.max_resets {
                    return Err(Abuse::RapidReset);
                }
                return Ok(());
            }
            SETTINGS | PING => frame.flags & ACK == 0,
            PRIORITY => true,
            DATA => frame.length == 0 && frame.flags & END_STREAM == 0,
            WINDOW_UPDATE if self.credit > 0 => {
                self.credit -= 1;
                false
            }
            WINDOW_UPDATE => true,
            _ => false,
        };
        if control {
            self.tick(now);
            self.control += 1;
            if self.control > self.max_control {
                return Err(Abuse::ControlFlood);
            }
        }
        Ok(())
    }

    /// apigate sent the client a frame.
    pub fn outbound(&mut self, frame: FrameHead) {
        if frame.kind == DATA && frame.length > 0 {
            self.credit = (self.credit + 2).min(MAX_CREDIT);
        }
    }

    /// The GOAWAY that closes the connection for `abuse`: every stream the client opened
    /// may have been processed, none later will be.
    pub fn goaway(&self, abuse: Abuse) -> Vec<u8> {
        let debug = abuse.debug_data();
        let length = 8 + debug.len();
        let mut frame = Vec::with_capacity(9 + length);
        frame.extend_from_slice(&u32::try_from(length).unwrap_or(8).to_be_bytes()[1..]);
        frame.push(super::h2_frames::GOAWAY);
        frame.push(0);
        frame.extend_from_slice(&0u32.to_be_bytes());
        frame.extend_from_slice(&self.last_stream.to_be_bytes());
        frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        frame.extend_from_slice(debug);
        frame
    }

    /// Start a new counting window when the current one is over.
    fn tick(&mut self, now: Instant) {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.resets = 0;
                self.control = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(resets: u32, control: u32) -> Http2Settings {
        Http2Settings {
            max_concurrent_streams: 100,
            initial_stream_window: 65536,
            initial_connection_window: 1 << 20,
            max_resets_per_second: resets,
            max_pending_reset_streams: 20,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            upstream_ping_interval: Duration::from_secs(30),
            upstream_stream_window: 256 * 1024,
            max_control_frames_per_second: control,
        }
    }

    fn head(kind: u8, flags: u8, stream: u32, length: usize) -> FrameHead {
        FrameHead {
            length,
            kind,
            flags,
            stream,
        }
    }

    #[test]
    fn resets_beyond_the_rate_within_a_second_are_abuse_and_the_window_moves_on() {
        let start = Instant::now();
        let mut guard = H2Guard::new(&settings(3, 100));
        let reset = head(RST_STREAM, 0, 1, 4);
        for i in 0..3 {
            assert_eq!(
                guard.inbound(reset, start + Duration::from_millis(i)),
                Ok(())
            );
        }
        // A second later the count starts over.
        let later = start + Duration::from_millis(1000);
        for _ in 0..3 {
            assert_eq!(guard.inbound(reset, later), Ok(()));
        }
        assert_eq!(
            guard.inbound(reset, later + Duration::from_millis(999)),
            Err(Abuse::RapidReset)
        );
    }

    #[test]
    fn pings_settings_priority_and_empty_data_count_but_acks_and_requests_do_not() {
        let now = Instant::now();
        let mut guard = H2Guard::new(&settings(100, 4));
        for free in [
            head(PING, ACK, 0, 8),
            head(SETTINGS, ACK, 0, 0),
            head(HEADERS, 0x5, 1, 20),
            head(DATA, 0, 1, 100),
            head(DATA, END_STREAM, 1, 0),
        ] {
            for _ in 0..10 {
                assert_eq!(guard.inbound(free, now), Ok(()), "{free:?}");
            }
        }
        for counted in [
            head(PING, 0, 0, 8),
            head(SETTINGS, 0, 0, 6),
            head(PRIORITY, 0, 3, 5),
            head(DATA, 0, 1, 0),
        ] {
            assert_eq!(guard.inbound(counted, now), Ok(()));
        }
        assert_eq!(
            guard.inbound(head(PING, 0, 0, 8), now),
            Err(Abuse::ControlFlood)
        );
    }

    #[test]
    fn window_updates_are_free_while_earned_by_data_sent() {
        let now = Instant::now();
        let mut guard = H2Guard::new(&settings(100, 2));
        let update = head(WINDOW_UPDATE, 0, 1, 4);
        for _ in 0..1000 {
            guard.outbound(head(DATA, 0, 1, 16384));
            assert_eq!(guard.inbound(update, now), Ok(()));
            assert_eq!(guard.inbound(head(WINDOW_UPDATE, 0, 0, 4), now), Ok(()));
        }
        // Empty DATA (END_STREAM only) earns nothing; unearned updates count.
        guard.outbound(head(DATA, END_STREAM, 1, 0));
        assert_eq!(guard.inbound(update, now), Ok(()));
        assert_eq!(guard.inbound(update, now), Ok(()));
        assert_eq!(guard.inbound(update, now), Err(Abuse::ControlFlood));
    }

    #[test]
    fn goaway_names_the_last_client_stream_and_enhance_your_calm() {
        let now = Instant::now();
        let mut guard = H2Guard::new(&settings(100, 100));
        for stream in [1, 5, 3, 2] {
            guard.inbound(head(HEADERS, 0x4, stream, 10), now).unwrap();
        }
        let frame = guard.goaway(Abuse::RapidReset);
        let debug = b"too many stream resets";
        assert_eq!(&frame[..3], &[0, 0, (8 + debug.len()) as u8]);
        assert_eq!(frame[3], super::super::h2_frames::GOAWAY);
        assert_eq!(&frame[5..9], &[0, 0, 0, 0], "stream 0");
        assert_eq!(&frame[9..13], &5u32.to_be_bytes(), "last client stream");
        assert_eq!(&frame[13..17], &0xbu32.to_be_bytes());
        assert_eq!(&frame[17..], debug);
    }
}
