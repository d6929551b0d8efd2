//! When the changes the watches saw are compiled: at once after a quiet spell, else
//! once they pause.
//!
//! An isolated change (an endpoint gone, one route edited) should be served as soon as
//! it compiles; a burst (a rolling update touching every slice, a re-list) should
//! compile a handful of times, not once per event. So the first change after
//! `debounce` without a compile is compiled at once, and the changes that follow
//! within it wait until none arrived for `debounce`, at most `max_delay`.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Decides when to compile. Driven by tokio's clock, so it is tested with it paused.
#[derive(Debug)]
pub struct Debounce {
    debounce: Duration,
    max_delay: Duration,
    /// When the last compile finished; `None` before the first.
    compiled: Option<Instant>,
}

impl Debounce {
    /// `debounce`: the quiet spell; `max_delay`: the longest a change waits for it.
    pub fn new(debounce: Duration, max_delay: Duration) -> Self {
        Debounce {
            debounce,
            max_delay,
            compiled: None,
        }
    }

    /// Wait for a change, then for the moment to compile it: at once when nothing was
    /// compiled for `debounce` (or ever), else once no change arrived for `debounce`,
    /// but no later than `max_delay` after this one. True when it was at once.
    pub async fn settle(&self, changed: &Notify) -> bool {
        changed.notified().await;
        let started = Instant::now();
        if self
            .compiled
            .is_none_or(|at| started.duration_since(at) >= self.debounce)
        {
            return true;
        }
        while tokio::time::timeout(self.debounce, changed.notified())
            .await
            .is_ok()
        {
            if started.elapsed() >= self.max_delay {
                return false;
            }
        }
        false
    }

    /// A compile finished now.
    pub fn compiled(&mut self) {
        self.compiled = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(1);

    /// Notify `changed` after each of `gaps`, one after the other.
    fn changes(changed: &Arc<Notify>, gaps: Vec<Duration>) {
        let changed = changed.clone();
        tokio::spawn(async move {
            for gap in gaps {
                tokio::time::sleep(gap).await;
                changed.notify_one();
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_change_ever_is_compiled_at_once() {
        let debounce = Debounce::new(DEBOUNCE, MAX_DELAY);
        let changed = Notify::new();
        changed.notify_one();
        let start = Instant::now();
        assert!(debounce.settle(&changed).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_quiet_spell_is_compiled_at_once() {
        let mut debounce = Debounce::new(DEBOUNCE, MAX_DELAY);
        debounce.compiled();
        let changed = Arc::new(Notify::new());
        changes(&changed, vec![Duration::from_millis(150)]);
        let start = Instant::now();
        assert!(debounce.settle(&changed).await);
        assert_eq!(start.elapsed(), Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn changes_right_after_a_compile_wait_until_they_pause() {
        let mut debounce = Debounce::new(DEBOUNCE, MAX_DELAY);
        debounce.compiled();
        let changed = Arc::new(Notify::new());
        let ms = Duration::from_millis;
        // At 10, 60 and 110 ms; quiet from 110 ms on.
        changes(&changed, vec![ms(10), ms(50), ms(50)]);
        let start = Instant::now();
        assert!(!debounce.settle(&changed).await);
        assert_eq!(start.elapsed(), ms(110) + DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_changes_waits_at_most_the_max_delay() {
        let mut debounce = Debounce::new(DEBOUNCE, MAX_DELAY);
        debounce.compiled();
        let changed = Arc::new(Notify::new());
        let ms = Duration::from_millis;
        // One change every 50 ms for 3 s.
        changes(&changed, vec![ms(50); 60]);
        let start = Instant::now();
        assert!(!debounce.settle(&changed).await);
        let waited = start.elapsed() - ms(50);
        assert!(
            waited >= MAX_DELAY && waited <= MAX_DELAY + ms(50),
            "{waited:?}"
        );
    }
}
