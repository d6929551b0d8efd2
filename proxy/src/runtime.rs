//! The proxy's async runtime: one worker thread per core it may run on, or as many as
//! `--workers` says. (Health probes run on a thread of their own, see [`crate::probe`].)

use std::num::NonZeroUsize;

/// Most worker threads `--workers` accepts.
pub const MAX_WORKERS: usize = 1024;

/// `--workers`: a count from 1 to [`MAX_WORKERS`].
pub fn workers(text: &str) -> Result<NonZeroUsize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of worker threads"))?;
    match NonZeroUsize::new(n) {
        Some(n) if n.get() <= MAX_WORKERS => Ok(n),
        _ => Err(format!(
            "{text:?} is out of range: between 1 and {MAX_WORKERS}"
        )),
    }
}

/// A multi-threaded runtime with `workers` worker threads; by default one per core
/// this process may run on (its CPU affinity, e.g. under `taskset`).
pub fn build(workers: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers {
        builder.worker_threads(n.get());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_bounded_and_applied() {
        assert!(workers("0").is_err());
        assert!(workers("many").is_err());
        assert!(workers("100000").unwrap_err().contains("out of range"));
        let runtime = build(Some(workers("3").unwrap())).unwrap();
        assert_eq!(runtime.metrics().num_workers(), 3);
        let default = build(None).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(default.metrics().num_workers(), cores);
    }
}
