//! The access log's writer thread: takes entries off the buffer, renders them, and
//! writes them in batches to standard output or the configured file. It polls the
//! buffer rather than waiting on it, so a request never wakes it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use super::{line, Entry};

/// Write a batch once it is this large, even when more entries wait.
const BATCH_BYTES: usize = 64 * 1024;

/// Lines written and lines lost to a failed write or an unopenable file.
pub(super) struct Counts {
    pub(super) written: IntCounter,
    pub(super) failed: IntCounter,
}

/// Where lines go.
enum Sink {
    Stdout,
    File(File),
    /// The configured file could not be opened: lines are counted as failed.
    Broken,
}

impl Sink {
    fn open(path: Option<&Arc<str>>) -> Sink {
        let Some(path) = path else {
            return Sink::Stdout;
        };
        match OpenOptions::new().create(true).append(true).open(&**path) {
            Ok(file) => Sink::File(file),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "cannot open the access log file; its lines are dropped and counted");
                Sink::Broken
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            // One locked write per batch: lines never interleave with other output.
            Sink::Stdout => std::io::stdout().lock().write_all(bytes),
            Sink::File(file) => file.write_all(bytes),
            Sink::Broken => Err(std::io::Error::other("access log file not open")),
        }
    }
}

/// How long the writer sleeps when it found the buffer empty. While lines keep coming
/// it does not block on the buffer: a receiver blocked there would be woken (a futex
/// call and a context switch) by every line, which measured as the larger part of the
/// log's cost per request. Lines wait at most this long, and the buffer holds 16,384 of
/// them. After a whole sleep with no line (the log is off, or traffic stopped) it
/// blocks until the next one, so an idle writer costs no wake-ups.
const IDLE_SLEEP: Duration = Duration::from_millis(20);

/// Render and write entries until the sending side is dropped.
pub(super) fn run(receiver: &Receiver<Entry>, counts: &Counts) {
    let mut path: Option<Arc<str>> = None;
    let mut sink = Sink::Stdout;
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut lines = 0u64;
    let mut slept = false;
    loop {
        let next = match receiver.try_recv() {
            // Idle for a whole sleep: wait for the next line instead of polling.
            Err(TryRecvError::Empty) if slept => {
                receiver.recv().map_err(|_| TryRecvError::Disconnected)
            }
            next => next,
        };
        slept = false;
        match next {
            Ok(entry) => {
                if entry.settings.path != path {
                    flush(&mut sink, &mut batch, &mut lines, counts);
                    path.clone_from(&entry.settings.path);
                    sink = Sink::open(path.as_ref());
                }
                line::render(&entry, &mut batch);
                lines += 1;
                if batch.len() >= BATCH_BYTES {
                    flush(&mut sink, &mut batch, &mut lines, counts);
                }
            }
            Err(TryRecvError::Empty) => {
                flush(&mut sink, &mut batch, &mut lines, counts);
                std::thread::sleep(IDLE_SLEEP);
                slept = true;
            }
            Err(TryRecvError::Disconnected) => {
                flush(&mut sink, &mut batch, &mut lines, counts);
                return;
            }
        }
    }
}

fn flush(sink: &mut Sink, batch: &mut Vec<u8>, lines: &mut u64, counts: &Counts) {
    if *lines == 0 {
        return;
    }
    match sink.write(batch) {
        Ok(()) => counts.written.inc_by(*lines),
        Err(e) => {
            if !matches!(sink, Sink::Broken) {
                tracing::warn!(error = %e, "access log write failed");
            }
            counts.failed.inc_by(*lines);
        }
    }
    batch.clear();
    *lines = 0;
}
