//! Hot reload: SIGHUP or a change of the configuration file re-reads it.
//!
//! A configuration that fails to load or validate is rejected with one log line per
//! error and a metric; the last good configuration keeps serving. A good one is swapped
//! in atomically; open connections, watches and in-flight requests are untouched.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use apigate_control::source::FileSource;
use apigate_control::ConfigError;
use pingora::server::ShutdownWatch;

use crate::install::{self, Origin};
use crate::rollout::Rollout;

/// Load the file and hand it to the rollout controller, which compiles it and
/// installs what each route should serve (through the one installer,
/// [`crate::install`]), or rejects it.
pub fn reload(source: &FileSource, rollout: &Rollout) -> Result<(), Vec<ConfigError>> {
    match source.load() {
        Ok(inputs) => rollout.submit(inputs, Origin::File),
        Err(errors) => {
            install::reject(rollout.state(), &errors, Origin::File);
            Err(errors)
        }
    }
}

/// Size, modification time and inode of each file: a change is noticed without reading
/// anything, and atomic replacement (as Kubernetes does with mounted ConfigMaps and
/// Secrets) changes the inode and is noticed too.
fn stamp(paths: &[std::path::PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        if let Ok(meta) = std::fs::metadata(path) {
            (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The configuration file and the files it references.
fn watched(source: &FileSource) -> Vec<std::path::PathBuf> {
    let mut paths = vec![source.path().to_path_buf()];
    paths.extend(source.referenced_paths());
    paths
}

/// What the files looked like: taken before the watcher starts, so a change made
/// between loading the configuration and the watcher's first check is not missed.
pub struct Seen {
    paths: Vec<std::path::PathBuf>,
    stamp: u64,
}

impl Seen {
    /// The configuration file and its referenced files, now.
    pub fn now(source: &FileSource) -> Seen {
        let paths = watched(source);
        let stamp = stamp(&paths);
        Seen { paths, stamp }
    }
}

/// Reload on SIGHUP and whenever the files change from `seen` (checked every
/// `interval`).
pub async fn watch(
    source: FileSource,
    seen: Seen,
    rollout: Arc<Rollout>,
    interval: Duration,
    mut shutdown: ShutdownWatch,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; file watching only");
            None
        }
    };
    let Seen {
        mut paths,
        stamp: mut last,
    } = seen;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            _ = ticker.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            _ = shutdown.changed() => return,
        };
        let current = stamp(&paths);
        if signalled || current != last {
            // The config may now reference other files; re-read the list.
            paths = watched(&source);
            last = stamp(&paths);
            tracing::info!(signalled, path = %source.path().display(), "reloading configuration");
            let source = source.clone();
            let rollout = rollout.clone();
            // Reading files and building TLS configs is blocking work.
            let _ = tokio::task::spawn_blocking(move || reload(&source, &rollout)).await;
        }
    }
}
