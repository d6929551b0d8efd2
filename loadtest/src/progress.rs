//! The live progress line on stderr: phase, elapsed/remaining, request rate of the last
//! second, errors, in-flight requests and open watches. Overwrites itself on a terminal;
//! prints a line every 5 s otherwise (CI logs).

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::client::AbortOnDrop;
use crate::schedule::Window;
use crate::stats::Stats;

/// Starts the progress task; it stops when the returned guard is dropped.
pub fn spawn(stats: Arc<Stats>, window: Window, label: String) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last = 0u64;
        let mut last_t = Instant::now();
        let total = window.end.saturating_duration_since(window.start).as_secs() + 60;
        for n in 0..total {
            tick.tick().await;
            let now = Instant::now();
            let ok = stats.live.ok.load(Ordering::Relaxed);
            let err = stats.live.errors.load(Ordering::Relaxed);
            let warm = stats.live.warmup.load(Ordering::Relaxed);
            let done = ok + err + warm;
            let dt = now
                .saturating_duration_since(last_t)
                .as_secs_f64()
                .max(1e-3);
            let rate = (done.saturating_sub(last)) as f64 / dt;
            (last, last_t) = (done, now);
            let phase = if now < window.measure_start {
                "warm-up"
            } else if now < window.end {
                "measuring"
            } else {
                "draining"
            };
            let elapsed = now.saturating_duration_since(window.start).as_secs_f64();
            let remaining = window.end.saturating_duration_since(now).as_secs_f64();
            let line = format!(
                "[{label}] {phase:<9} {elapsed:6.1}s elapsed {remaining:6.1}s left | {rate:9.0} req/s | ok {ok} errors {err} | in flight {} | watches open {}",
                stats.live.in_flight.load(Ordering::Relaxed),
                stats.live.watches_open.load(Ordering::Relaxed),
            );
            let mut e = std::io::stderr().lock();
            if tty {
                let _ = write!(e, "\r\x1b[2K{line}");
                let _ = e.flush();
            } else if n % 5 == 4 {
                let _ = writeln!(e, "{line}");
            }
        }
    }))
}

/// Ends the progress line (newline on a terminal).
pub fn finish() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}
