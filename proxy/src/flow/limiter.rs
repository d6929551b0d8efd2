//! One route's flow-control state: the requests in flight under its cap, the fair queue
//! of those waiting for a slot, and each client's use of each policy.
//!
//! **Fairness.** When the route's cap is reached, a request waits in its client's own
//! queue, and a freed slot goes to the next client in turn (round robin over clients
//! with waiting requests: fair queuing with equal costs). A client with a hundred
//! waiting requests gets one slot per turn, like a client with one. The queue is bounded
//! in length (`maxQueued`) and time (`queueTimeout`); beyond either, a 429. A full queue
//! still takes a client with at least two requests fewer waiting than the busiest one:
//! the busiest client's newest request gives up its place. This is the shape of
//! kube-apiserver's API Priority and Fairness queues, without shuffle sharding: at a
//! gateway the number of clients per route is small enough for a queue each.
//!
//! The state outlives configurations (a route changed by a reload keeps its counts):
//! every [`Permit`] returns what it took to the state it took it from.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use apigate_control::flow_settings::{FlowControl, FlowPolicy, Rate};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client's token bucket is empty.
    Rate,
    /// The client has the policy's most requests in flight.
    InFlight,
    /// The client has the policy's most watches open.
    Watches,
    /// The route's cap is reached and its queue is full.
    QueueFull,
    /// The route's cap stayed reached for the whole queue timeout.
    QueueTimeout,
}

impl Reason {
    /// Metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Rate => "rate",
            Reason::InFlight => "in_flight",
            Reason::Watches => "watches",
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
        }
    }

    /// Every reason, for pre-resolving metric handles.
    pub const ALL: [Reason; 5] = [
        Reason::Rate,
        Reason::InFlight,
        Reason::Watches,
        Reason::QueueFull,
        Reason::QueueTimeout,
    ];
}

/// A refusal: the policy (`None`: the route's cap), why, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// The policy that refused, or `None` for the route's own cap.
    pub policy: Option<Arc<str>>,
    /// Why.
    pub reason: Reason,
    /// Seconds the client should wait (`Retry-After`).
    pub retry_after: u32,
}

/// What flow control needs to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The client's key: its name, or its address for anonymous clients.
    pub client: &'a str,
    /// The index of the policy it meets, if any.
    pub policy: Option<usize>,
    /// A watch or upgrade (never under the route's cap; counted by `maxWatches`).
    pub long_running: bool,
}

/// A client's use of one policy.
#[derive(Debug)]
struct Use {
    in_flight: u32,
    watches: u32,
    tokens: f64,
    refilled: Instant,
}

/// A request waiting for a slot.
struct Waiter {
    id: u64,
    /// `true`: here is a slot; `false`: evicted from a full queue.
    wake: oneshot::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// Ordinary requests holding a slot under the route's cap.
    in_flight: u32,
    /// Requests waiting, all clients.
    queued: u32,
    /// Clients with waiting requests, in turn order.
    turns: VecDeque<Arc<str>>,
    /// Each client's waiting requests, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Each policy's (by name) use by each client.
    uses: HashMap<Arc<str>, HashMap<Box<str>, Use>>,
    /// Requests each client sent recently (decaying), for the top-talker shares.
    recent: HashMap<Box<str>, (f64, Instant)>,
    next_waiter: u64,
    /// Admissions since the last sweep of idle entries.
    since_sweep: u32,
    /// When the full recent-count map was last pruned.
    pruned: Option<Instant>,
}

/// A route's flow-control state.
#[derive(Default)]
pub struct RouteFlow {
    state: Mutex<State>,
}

/// What an admitted request holds until it ends.
pub struct Permit {
    flow: Arc<RouteFlow>,
    /// The policy whose counts it holds.
    policy: Option<Arc<str>>,
    client: Box<str>,
    long_running: bool,
    /// It holds a slot under the route's cap.
    slot: bool,
    /// The bucket it took a token from, refunded if the request is refused after all.
    refund: Option<Rate>,
    /// How long it waited in the queue (`None`: it did not).
    pub waited: Option<Duration>,
}

impl Permit {
    /// The request is refused after it took its policy's counts (the queue was full or
    /// it waited too long): give them back, its token included, under the held lock.
    fn settle(&mut self, state: &mut State) {
        if let Some(policy) = self.policy.take() {
            state.give_back(&policy, &self.client, self.long_running, self.refund);
        }
        if std::mem::take(&mut self.slot) {
            state.release_slot();
        }
    }
}

/// Clients whose recent requests are counted, per route, at most.
const MAX_RECENT: usize = 4096;
/// Half-life of the recent-request counts behind the top-talker shares.
const RECENT_HALF_LIFE: Duration = Duration::from_secs(60);
/// Sweep idle entries after this many admissions.
const SWEEP_EVERY: u32 = 1024;
/// `Retry-After` of a refusal for in-flight requests or a full queue: a slot is
/// usually free within a second.
const RETRY_SOON: u32 = 1;
/// `Retry-After` of a refusal for open watches: one ends far less often.
const RETRY_WATCHES: u32 = 5;

impl RouteFlow {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still consistent
        // (each step is one assignment): keep going with them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admit a request now, after a fair wait, or refuse it.
    pub async fn admit(
        self: &Arc<Self>,
        settings: &FlowControl,
        ask: Ask<'_>,
    ) -> Result<Permit, Throttled> {
        let now = Instant::now();
        let policy = ask.policy.and_then(|i| settings.policies.get(i));
        let refusal = |reason| Throttled {
            policy: None,
            reason,
            retry_after: RETRY_SOON,
        };
        let (mut permit, mut ticket) = {
            let mut state = self.lock();
            state.count_recent(ask.client, now);
            state.sweep(settings, now);
            let rated = match policy {
                Some(policy) => state.take_policy(policy, ask, now)?,
                None => false,
            };
            let mut permit = Permit {
                flow: self.clone(),
                policy: policy.map(|p| p.name.clone()),
                client: ask.client.into(),
                long_running: ask.long_running,
                slot: false,
                refund: if rated {
                    policy.and_then(|p| p.rate)
                } else {
                    None
                },
                waited: None,
            };
            let Some(max) = settings.max_in_flight.filter(|_| !ask.long_running) else {
                return Ok(permit);
            };
            if state.in_flight < max && state.queued == 0 {
                state.in_flight += 1;
                permit.slot = true;
                return Ok(permit);
            }
            if state.queued >= settings.max_queued && !state.evict_for(ask.client) {
                permit.settle(&mut state);
                return Err(refusal(Reason::QueueFull));
            }
            let (id, woken) = state.enqueue(ask.client);
            let ticket = Ticket {
                flow: self.as_ref(),
                client: ask.client,
                id,
                woken,
                settled: false,
            };
            (permit, ticket)
        };
        let outcome = tokio::time::timeout(settings.queue_timeout, &mut ticket.woken).await;
        let mut state = self.lock();
        ticket.settled = true;
        let result = match outcome {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Reason::QueueFull),
            // Timed out. The slot or the eviction may have come just now: whatever was
            // sent is in the channel (it is sent under this lock).
            Err(_) if state.leave(ask.client, ticket.id) => Err(Reason::QueueTimeout),
            Err(_) => match ticket.woken.try_recv() {
                Ok(true) => Ok(()),
                _ => Err(Reason::QueueFull),
            },
            // The sender went without a word: only when the waiter was taken out,
            // which only happens here.
            Ok(Err(_)) => {
                state.leave(ask.client, ticket.id);
                Err(Reason::QueueTimeout)
            }
        };
        match result {
            Ok(()) => {
                permit.slot = true;
                permit.waited = Some(now.elapsed());
                Ok(permit)
            }
            Err(reason) => {
                permit.settle(&mut state);
                Err(refusal(reason))
            }
        }
    }

    /// Requests waiting and holding slots now.
    pub fn load(&self) -> (u32, u32) {
        let state = self.lock();
        (state.queued, state.in_flight)
    }

    /// The shares of the route's recent requests sent by its busiest clients, busiest
    /// first, with their names (at most `n`).
    pub fn top_clients(&self, n: usize) -> Vec<(String, f64)> {
        let state = self.lock();
        let now = Instant::now();
        let mut counts: Vec<(&str, f64)> = state
            .recent
            .iter()
            .map(|(client, (count, at))| (&**client, decayed(*count, *at, now)))
            .collect();
        let total: f64 = counts.iter().map(|(_, c)| c).sum();
        if total <= 0.0 {
            return Vec::new();
        }
        counts.sort_by(|a, b| b.1.total_cmp(&a.1));
        counts
            .into_iter()
            .take(n)
            .map(|(client, count)| (client.to_string(), count / total))
            .collect()
    }
}

/// A request's place in the queue. It holds the receiving end, so that whether a slot
/// was handed over can always be read: the sender sends under the state's lock, and
/// the receiver is only dropped after this leaves the queue under that lock.
struct Ticket<'a> {
    flow: &'a RouteFlow,
    client: &'a str,
    id: u64,
    /// `true`: a slot; `false`: evicted from a full queue.
    woken: oneshot::Receiver<bool>,
    /// The waiting request dealt with its outcome itself.
    settled: bool,
}

impl Drop for Ticket<'_> {
    /// The waiting request was dropped (its client went away): leave the queue, or give
    /// back the slot handed over meanwhile.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.flow.lock();
        if !state.leave(self.client, self.id) && matches!(self.woken.try_recv(), Ok(true)) {
            state.release_slot();
        }
    }
}

impl State {
    /// Check and take the policy's limits for one request; nothing is taken when it
    /// is refused.
    /// Returns whether a token was taken from the client's bucket.
    fn take_policy(
        &mut self,
        policy: &FlowPolicy,
        ask: Ask<'_>,
        now: Instant,
    ) -> Result<bool, Throttled> {
        let refuse = |reason, retry_after| Throttled {
            policy: Some(policy.name.clone()),
            reason,
            retry_after,
        };
        let uses = self.uses.entry(policy.name.clone()).or_default();
        let burst = policy.rate.map_or(0.0, |r| f64::from(r.burst));
        let use_ = match uses.get_mut(ask.client) {
            Some(existing) => existing,
            None => uses.entry(ask.client.into()).or_insert(Use {
                in_flight: 0,
                watches: 0,
                tokens: burst,
                refilled: now,
            }),
        };
        if ask.long_running {
            if policy.max_watches.is_some_and(|max| use_.watches >= max) {
                return Err(refuse(Reason::Watches, RETRY_WATCHES));
            }
        } else if policy
            .max_in_flight
            .is_some_and(|max| use_.in_flight >= max)
        {
            return Err(refuse(Reason::InFlight, RETRY_SOON));
        }
        if let Some(rate) = policy.rate {
            let elapsed = now.saturating_duration_since(use_.refilled).as_secs_f64();
            use_.tokens = (use_.tokens + elapsed * rate.qps).min(f64::from(rate.burst));
            use_.refilled = now;
            if use_.tokens < 1.0 {
                let seconds = ((1.0 - use_.tokens) / rate.qps).ceil();
                let retry_after = if seconds >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    // A finite, positive number of seconds in range.
                    (seconds as u32).max(1)
                };
                return Err(refuse(Reason::Rate, retry_after));
            }
            use_.tokens -= 1.0;
        }
        if ask.long_running {
            use_.watches += 1;
        } else {
            use_.in_flight += 1;
        }
        Ok(policy.rate.is_some())
    }

    /// Give back a request's counts under `policy`, and its token when it was refused.
    fn give_back(&mut self, policy: &str, client: &str, long_running: bool, refund: Option<Rate>) {
        let Some(use_) = self
            .uses
            .get_mut(policy)
            .and_then(|uses| uses.get_mut(client))
        else {
            return;
        };
        if long_running {
            use_.watches = use_.watches.saturating_sub(1);
        } else {
            use_.in_flight = use_.in_flight.saturating_sub(1);
        }
        if let Some(rate) = refund {
            use_.tokens = (use_.tokens + 1.0).min(f64::from(rate.burst));
        }
    }

    /// The queue is full: when another client has more requests waiting than `client`,
    /// its newest one gives its place up (refused), so a busy client cannot keep the
    /// others out of the queue. Returns whether a place was freed.
    fn evict_for(&mut self, client: &str) -> bool {
        let mine = self.waiting.get(client).map_or(0, VecDeque::len);
        let busiest = self
            .waiting
            .iter()
            .max_by_key(|(_, queue)| queue.len())
            .filter(|(_, queue)| queue.len() > mine + 1)
            .map(|(name, _)| name.clone());
        let Some(busiest) = busiest else {
            return false;
        };
        let Some(queue) = self.waiting.get_mut(&busiest) else {
            return false;
        };
        let Some(evicted) = queue.pop_back() else {
            return false;
        };
        self.queued -= 1;
        // Its request reads `false` and refuses itself (or is gone already).
        let _ = evicted.wake.send(false);
        true
    }

    /// Queue a request of `client`; returns its id and what wakes it with a slot.
    fn enqueue(&mut self, client: &str) -> (u64, oneshot::Receiver<bool>) {
        let (wake, woken) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.queued += 1;
        match self.waiting.get_mut(client) {
            Some(queue) => queue.push_back(Waiter { id, wake }),
            None => {
                let key: Arc<str> = Arc::from(client);
                self.turns.push_back(key.clone());
                self.waiting
                    .insert(key, VecDeque::from([Waiter { id, wake }]));
            }
        }
        (id, woken)
    }

    /// Take waiter `id` of `client` out of the queue; false when it is no longer
    /// there (a slot was handed to it).
    fn leave(&mut self, client: &str, id: u64) -> bool {
        let Some(queue) = self.waiting.get_mut(client) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.id == id) else {
            return false;
        };
        queue.remove(at);
        self.queued -= 1;
        if queue.is_empty() {
            self.waiting.remove(client);
            self.turns.retain(|c| &**c != client);
        }
        true
    }

    /// A slot is free: hand it to the next client in turn, or keep it free.
    fn release_slot(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        while let Some(client) = self.turns.pop_front() {
            let Some(queue) = self.waiting.get_mut(&client) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&client);
            } else {
                self.turns.push_back(client);
            }
            let Some(waiter) = next else {
                continue;
            };
            self.queued -= 1;
            if waiter.wake.send(true).is_ok() {
                self.in_flight += 1;
                return;
            }
        }
    }

    /// Count a request towards its client's recent share. At most [`MAX_RECENT`]
    /// clients are tracked: when full, clients down to less than one recent request
    /// are forgotten (at most once a second); a newcomer that still finds it full is
    /// not tracked. Clients presenting ever new tokens cannot grow it without bound.
    fn count_recent(&mut self, client: &str, now: Instant) {
        if let Some((count, at)) = self.recent.get_mut(client) {
            *count = decayed(*count, *at, now) + 1.0;
            *at = now;
            return;
        }
        if self.recent.len() >= MAX_RECENT {
            let due = self
                .pruned
                .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
            if due {
                self.pruned = Some(now);
                self.recent
                    .retain(|_, (count, at)| decayed(*count, *at, now) >= 1.0);
            }
            if self.recent.len() >= MAX_RECENT {
                return;
            }
        }
        self.recent.insert(client.into(), (1.0, now));
    }

    /// Every so often, forget clients that hold nothing and whose bucket is full
    /// again, and recent counts that have decayed away.
    fn sweep(&mut self, settings: &FlowControl, now: Instant) {
        self.since_sweep += 1;
        if self.since_sweep < SWEEP_EVERY {
            return;
        }
        self.since_sweep = 0;
        self.recent
            .retain(|_, (count, at)| decayed(*count, *at, now) >= 0.01);
        self.uses.retain(|name, uses| {
            let rate = settings
                .policies
                .iter()
                .find(|p| p.name == *name)
                .and_then(|p| p.rate);
            uses.retain(|_, u| {
                let full = rate.is_none_or(|r| {
                    let elapsed = now.saturating_duration_since(u.refilled).as_secs_f64();
                    u.tokens + elapsed * r.qps >= f64::from(r.burst)
                });
                u.in_flight > 0 || u.watches > 0 || !full
            });
            !uses.is_empty()
        });
    }
}

fn decayed(count: f64, at: Instant, now: Instant) -> f64 {
    let age = now.saturating_duration_since(at).as_secs_f64();
    count * 0.5f64.powf(age / RECENT_HALF_LIFE.as_secs_f64())
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.policy.is_none() && !self.slot {
            return;
        }
        let mut state = self.flow.lock();
        if let Some(policy) = self.policy.take() {
            state.give_back(&policy, &self.client, self.long_running, None);
        }
        if self.slot {
            state.release_slot();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apigate_control::flow_settings::{Exempt, FlowMatch, Rate};

    fn settings(max_in_flight: Option<u32>, policies: Vec<FlowPolicy>) -> FlowControl {
        FlowControl {
            max_in_flight,
            max_queued: 10,
            queue_timeout: Duration::from_secs(5),
            exempt: Exempt::default(),
            policies,
        }
    }

    fn policy(
        max_in_flight: Option<u32>,
        rate: Option<Rate>,
        max_watches: Option<u32>,
    ) -> FlowPolicy {
        FlowPolicy {
            name: Arc::from("p"),
            matches: FlowMatch::default(),
            max_in_flight,
            rate,
            max_watches,
        }
    }

    fn ask(client: &str) -> Ask<'_> {
        Ask {
            client,
            policy: Some(0),
            long_running: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_bucket_refills_at_its_rate_and_says_when() {
        let flow = Arc::new(RouteFlow::default());
        let rate = Rate { qps: 2.0, burst: 3 };
        let s = settings(None, vec![policy(None, Some(rate), None)]);
        for _ in 0..3 {
            drop(flow.admit(&s, ask("a")).await.unwrap());
        }
        let refused = flow.admit(&s, ask("a")).await.err().unwrap();
        assert_eq!((refused.reason, refused.retry_after), (Reason::Rate, 1));
        assert!(
            flow.admit(&s, ask("b")).await.is_ok(),
            "each client has its own bucket"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(
            flow.admit(&s, ask("a")).await.is_ok(),
            "one token after 0.5 s at 2 qps"
        );
        assert!(flow.admit(&s, ask("a")).await.is_err());
        let slow = settings(
            None,
            vec![policy(None, Some(Rate { qps: 0.1, burst: 1 }), None)],
        );
        drop(flow.admit(&slow, ask("c")).await.unwrap());
        assert_eq!(
            flow.admit(&slow, ask("c")).await.err().unwrap().retry_after,
            10
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_and_watches_are_counted_per_client_until_the_request_ends() {
        let flow = Arc::new(RouteFlow::default());
        let s = settings(None, vec![policy(Some(2), None, Some(1))]);
        let one = flow.admit(&s, ask("a")).await.unwrap();
        let _two = flow.admit(&s, ask("a")).await.unwrap();
        let refused = flow.admit(&s, ask("a")).await.err().unwrap();
        assert_eq!(refused.reason, Reason::InFlight);
        assert_eq!(refused.policy.as_deref(), Some("p"));
        drop(one);
        let _three = flow.admit(&s, ask("a")).await.unwrap();
        let watch = Ask {
            long_running: true,
            ..ask("a")
        };
        let open = flow.admit(&s, watch).await.unwrap();
        assert_eq!(
            flow.admit(&s, watch).await.err().unwrap().reason,
            Reason::Watches
        );
        drop(open);
        assert!(flow.admit(&s, watch).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_next_client_in_turn_not_the_busiest() {
        let flow = Arc::new(RouteFlow::default());
        let s = Arc::new(settings(Some(1), vec![]));
        let no_policy = |client| Ask {
            client,
            policy: None,
            long_running: false,
        };
        let held = flow.admit(&s, no_policy("heavy")).await.unwrap();
        let (order, mut served) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        // The heavy client queues five requests, then the light one queues one.
        for (i, client) in ["heavy", "heavy", "heavy", "heavy", "heavy", "light"]
            .into_iter()
            .enumerate()
        {
            let (flow, s, order) = (flow.clone(), s.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let permit = flow.admit(&s, no_policy(client)).await.unwrap();
                order.send(format!("{client}{i}")).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(flow.load(), (6, 1));
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        let mut got = Vec::new();
        while let Ok(name) = served.try_recv() {
            got.push(name);
        }
        assert_eq!(
            got[..2],
            ["heavy0".to_string(), "light5".to_string()],
            "{got:?}"
        );
        assert_eq!(flow.load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded_in_length_and_time_and_a_dropped_waiter_leaves_it() {
        let flow = Arc::new(RouteFlow::default());
        let mut s = settings(Some(1), vec![]);
        s.max_queued = 1;
        let no_policy = |client| Ask {
            client,
            policy: None,
            long_running: false,
        };
        let _held = flow.admit(&s, no_policy("a")).await.unwrap();
        let waiting = {
            let (flow, s) = (flow.clone(), s.clone());
            tokio::spawn(async move { flow.admit(&s, no_policy("b")).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        let full = flow.admit(&s, no_policy("c")).await.err().unwrap();
        assert_eq!(full.reason, Reason::QueueFull);
        tokio::time::advance(Duration::from_secs(6)).await;
        let timed_out = waiting.await.unwrap().err().unwrap();
        assert_eq!(timed_out.reason, Reason::QueueTimeout);
        assert_eq!(flow.load(), (0, 1));
        // A waiter whose request is dropped leaves its place.
        let gone = {
            let (flow, s) = (flow.clone(), s.clone());
            tokio::spawn(async move { flow.admit(&s, no_policy("d")).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(flow.load(), (1, 1));
        gone.abort();
        let _ = gone.await;
        assert_eq!(flow.load(), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_takes_nothing_and_watches_skip_the_route_cap() {
        let flow = Arc::new(RouteFlow::default());
        let rate = Rate {
            qps: 0.001,
            burst: 2,
        };
        let mut s = settings(Some(1), vec![policy(Some(5), Some(rate), None)]);
        s.max_queued = 0;
        let _held = flow.admit(&s, ask("a")).await.unwrap();
        for _ in 0..10 {
            let refused = flow.admit(&s, ask("a")).await.err().unwrap();
            assert_eq!(
                refused.reason,
                Reason::QueueFull,
                "the token came back each time"
            );
        }
        // The ten refusals left the policy's in-flight count and the bucket as they were.
        let (in_flight, tokens) = {
            let state = flow.lock();
            let use_ = &state.uses["p"]["a"];
            (use_.in_flight, use_.tokens)
        };
        assert_eq!(in_flight, 1);
        assert!((tokens - 1.0).abs() < 0.01, "{tokens}");
        let watch = Ask {
            long_running: true,
            ..ask("a")
        };
        assert!(flow.admit(&s, watch).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn ever_new_clients_cannot_grow_the_recent_counts_without_bound() {
        let flow = Arc::new(RouteFlow::default());
        let s = settings(None, vec![]);
        let no_policy = |client| Ask {
            client,
            policy: None,
            long_running: false,
        };
        for _ in 0..50 {
            drop(flow.admit(&s, no_policy("steady")).await.unwrap());
        }
        for i in 0..(MAX_RECENT * 2) {
            let client = format!("token:{i:016x}");
            let ask = Ask {
                client: &client,
                policy: None,
                long_running: false,
            };
            drop(flow.admit(&s, ask).await.unwrap());
        }
        assert!(flow.lock().recent.len() <= MAX_RECENT);
        let top = flow.top_clients(1);
        assert_eq!(
            top[0].0, "steady",
            "the busiest client is still known: {top:?}"
        );
        // A minute later the one-off clients have decayed below one request: the next
        // newcomer clears them away.
        tokio::time::advance(Duration::from_secs(61)).await;
        drop(flow.admit(&s, no_policy("late")).await.unwrap());
        assert!(flow.lock().recent.len() < 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_room_for_a_client_with_fewer_waiting() {
        let flow = Arc::new(RouteFlow::default());
        let mut s = settings(Some(1), vec![]);
        s.max_queued = 3;
        let s = Arc::new(s);
        let no_policy = |client| Ask {
            client,
            policy: None,
            long_running: false,
        };
        let held = flow.admit(&s, no_policy("heavy")).await.unwrap();
        let mut heavy = Vec::new();
        for _ in 0..3 {
            let (flow, s) = (flow.clone(), s.clone());
            heavy.push(tokio::spawn(async move {
                flow.admit(&s, no_policy("heavy")).await.map(|_| ())
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(flow.load(), (3, 1));
        // The heavy client cannot take another place from itself...
        let refused = flow.admit(&s, no_policy("heavy")).await.err().unwrap();
        assert_eq!(refused.reason, Reason::QueueFull);
        // ...but a light client takes the heavy one's newest.
        let light = {
            let (flow, s) = (flow.clone(), s.clone());
            tokio::spawn(async move { flow.admit(&s, no_policy("light")).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(flow.load(), (3, 1));
        let evicted = heavy.pop().unwrap().await.unwrap().err().unwrap();
        assert_eq!(evicted.reason, Reason::QueueFull);
        drop(held);
        assert!(light.await.unwrap().is_ok());
        for waiting in heavy {
            assert!(waiting.await.unwrap().is_ok());
        }
        assert_eq!(flow.load(), (0, 0));
    }
}
