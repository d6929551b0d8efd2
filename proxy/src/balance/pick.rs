//! The balancing decision as a pure function over plain data.

use apigate_control::model::Balancing;
use rand::Rng;

use super::health::Admission;

/// How one route chooses among its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Fewer ordinary requests in flight of two random replicas (terminate mode default).
    LeastRequest,
    /// Strict rotation (terminate mode, when configured).
    RoundRobin,
    /// Fewest open connections of all replicas (passthrough: one replica per connection).
    LeastConnections,
}

impl From<Balancing> for Policy {
    fn from(b: Balancing) -> Self {
        match b {
            Balancing::LeastRequest => Policy::LeastRequest,
            Balancing::RoundRobin => Policy::RoundRobin,
        }
    }
}

/// What the picker needs to know about one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Whether it takes new requests, and what share ([`Admission`]).
    pub admission: Admission,
    /// Already tried for this request (a retry must go elsewhere).
    pub excluded: bool,
    /// The load the policy compares: ordinary requests in flight for the request
    /// policies (long-running ones are not counted: an open watch costs the replica
    /// little, and counting it would starve replicas that hold many), open passthrough
    /// connections for [`Policy::LeastConnections`].
    pub load: u64,
    /// Requests sent to it recently (decaying within seconds): breaks ties so that an
    /// idle or sequential client is spread evenly, and a replica that joins or comes
    /// back gets its share within seconds rather than after its lifetime count caught
    /// up.
    pub recent: f64,
}

impl Candidate {
    /// Its share when eligible: the slow-start weight, or a full share.
    fn weight(&self) -> f64 {
        match self.admission {
            Admission::Serving(w) => w.max(0.01),
            Admission::Trial | Admission::Out => 1.0,
        }
    }
}

/// A chosen backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into the candidates.
    pub index: usize,
    /// True when no backend could take requests and one was used anyway.
    pub panic: bool,
    /// The backend is in probation: this request is its trial (the caller claims it).
    pub trial: bool,
}

/// One of the `eligible` backends other than `except`, drawn with probability in
/// proportion to its weight. `eligible` lists them anew on each call (no allocation on
/// the pick path).
fn draw<R: Rng, I: Iterator<Item = usize>>(
    eligible: impl Fn() -> I,
    candidates: &[Candidate],
    except: Option<usize>,
    rng: &mut R,
) -> Option<usize> {
    let weight = |i: usize| {
        if Some(i) == except {
            0.0
        } else {
            candidates[i].weight()
        }
    };
    let total: f64 = eligible().map(weight).sum();
    let mut target = rng.gen::<f64>() * total;
    let mut last = None;
    for i in eligible() {
        target -= weight(i);
        if target < 0.0 {
            return Some(i);
        }
        if Some(i) != except {
            last = Some(i);
        }
    }
    // Rounding left a sliver: the last one that may be drawn.
    last.or_else(|| eligible().next())
}

/// Choose a backend. Backends that serve (or whose probation trial is free) are
/// eligible; when none is, every non-excluded backend is (panic mode: trying a
/// possibly broken replica beats failing every request). Excluded ones are never
/// chosen. `round_robin` is the route's rotating counter value for this pick.
pub fn choose<R: Rng>(
    policy: Policy,
    candidates: &[Candidate],
    round_robin: usize,
    rng: &mut R,
) -> Option<Choice> {
    let admitted = |c: &Candidate| {
        !c.excluded && matches!(c.admission, Admission::Serving(_) | Admission::Trial)
    };
    let healthy = candidates.iter().filter(|c| admitted(c)).count();
    let panic = healthy == 0;
    let eligible = |c: &Candidate| !c.excluded && (panic || admitted(c));
    let indices = || (0..candidates.len()).filter(move |&i| eligible(&candidates[i]));
    let count = indices().count();
    if count == 0 {
        return None;
    }
    let nth = |n: usize| indices().nth(n);
    // Lower is better: load per share, then recent picks per share.
    let key = |i: usize| {
        let c = &candidates[i];
        let w = c.weight();
        (c.load as f64 / w, c.recent / w)
    };
    let index = match policy {
        Policy::RoundRobin => {
            // The rotation, where a ramping replica takes its turn with the
            // probability of its share.
            let start = round_robin % count;
            let first = nth(start)?;
            (0..count)
                .filter_map(|k| nth((start + k) % count))
                .find(|&i| {
                    let w = candidates[i].weight();
                    w >= 1.0 || rng.gen::<f64>() < w
                })
                .unwrap_or(first)
        }
        Policy::LeastConnections => {
            // Exact minimum; ties rotate with the route's counter so sequential
            // connections spread evenly.
            let least = indices().map(|i| key(i).0).fold(f64::INFINITY, f64::min);
            let tied = || indices().filter(|&i| key(i).0 <= least);
            tied().nth(round_robin % tied().count().max(1))?
        }
        Policy::LeastRequest if count == 1 => nth(0)?,
        Policy::LeastRequest => {
            // Power of two choices: two distinct eligible backends drawn with
            // probability in proportion to their share (a ramping replica is drawn less
            // often), and of the two the one with fewer requests in flight wins; on a
            // tie, the one with fewer recent requests per share.
            let a = draw(indices, candidates, None, rng)?;
            let b = draw(indices, candidates, Some(a), rng)?;
            let order = |i: usize| {
                let c = &candidates[i];
                (c.load, c.recent / c.weight())
            };
            if order(b) < order(a) {
                b
            } else {
                a
            }
        }
    };
    Some(Choice {
        index,
        panic,
        trial: !panic && candidates[index].admission == Admission::Trial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn c(admission: Admission, excluded: bool, load: u64) -> Candidate {
        Candidate {
            admission,
            excluded,
            load,
            recent: 0.0,
        }
    }
    const UP: Admission = Admission::Serving(1.0);
    const OUT: Admission = Admission::Out;

    #[test]
    fn least_request_prefers_the_less_loaded_of_two() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cands = [c(UP, false, 10), c(UP, false, 0)];
        for _ in 0..100 {
            let choice = choose(Policy::LeastRequest, &cands, 0, &mut rng).unwrap();
            assert_eq!(choice.index, 1);
            assert!(!choice.panic);
        }
    }

    #[test]
    fn least_request_spreads_evenly_when_idle() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let cands = [c(UP, false, 0); 3];
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[choose(Policy::LeastRequest, &cands, 0, &mut rng)
                .unwrap()
                .index] += 1;
        }
        for n in counts {
            assert!((800..1200).contains(&n), "{counts:?}");
        }
    }

    #[test]
    fn ties_go_to_the_backend_picked_least_recently_so_sequential_load_is_even() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut cands = [c(UP, false, 0); 3];
        for _ in 0..300 {
            let i = choose(Policy::LeastRequest, &cands, 0, &mut rng)
                .unwrap()
                .index;
            cands[i].recent += 1.0;
        }
        for cand in cands {
            assert!((99.0..=101.0).contains(&cand.recent), "{cands:?}");
        }
    }

    #[test]
    fn a_ramping_replica_gets_its_share() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut cands = [
            c(UP, false, 0),
            c(UP, false, 0),
            c(Admission::Serving(0.25), false, 0),
        ];
        for _ in 0..900 {
            let i = choose(Policy::LeastRequest, &cands, 0, &mut rng)
                .unwrap()
                .index;
            cands[i].recent += 1.0;
        }
        // Shares 1 : 1 : 0.25 → 400 : 400 : 100.
        let ramping = cands[2].recent;
        assert!((80.0..=120.0).contains(&ramping), "{cands:?}");
    }

    #[test]
    fn a_ramping_replica_gets_its_share_under_load_too() {
        // Requests in flight come and go: an idle ramping replica must not win every
        // comparison against busy full ones.
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut cands = [
            c(UP, false, 0),
            c(UP, false, 0),
            c(UP, false, 0),
            c(Admission::Serving(0.25), false, 0),
        ];
        let picks = 13_000;
        for _ in 0..picks {
            for cand in cands.iter_mut() {
                cand.load = u64::from(rng.gen_bool(0.3));
            }
            let i = choose(Policy::LeastRequest, &cands, 0, &mut rng)
                .unwrap()
                .index;
            cands[i].recent += 1.0;
        }
        // Shares 1 : 1 : 1 : 0.25 → the ramping one takes 1/13.
        let share = cands[3].recent / f64::from(picks);
        assert!((0.06..=0.095).contains(&share), "{share} {cands:?}");
    }

    #[test]
    fn out_and_excluded_backends_are_skipped_and_a_free_trial_is_taken() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [c(OUT, false, 0), c(UP, true, 0), c(UP, false, 99)];
        for policy in [
            Policy::LeastRequest,
            Policy::RoundRobin,
            Policy::LeastConnections,
        ] {
            for rr in 0..10 {
                let choice = choose(policy, &cands, rr, &mut rng).unwrap();
                assert_eq!(choice.index, 2);
            }
        }
        let trial = [c(OUT, false, 0), c(Admission::Trial, false, 0)];
        let choice = choose(Policy::LeastRequest, &trial, 0, &mut rng).unwrap();
        assert_eq!(
            choice,
            Choice {
                index: 1,
                panic: false,
                trial: true
            }
        );
    }

    #[test]
    fn panic_mode_uses_out_backends_but_never_excluded_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [c(OUT, true, 0), c(OUT, false, 0)];
        let choice = choose(Policy::LeastRequest, &cands, 0, &mut rng).unwrap();
        assert_eq!(
            choice,
            Choice {
                index: 1,
                panic: true,
                trial: false
            }
        );
        let all_excluded = [c(UP, true, 0), c(OUT, true, 0)];
        assert_eq!(choose(Policy::RoundRobin, &all_excluded, 0, &mut rng), None);
    }

    #[test]
    fn round_robin_rotates_over_eligible_backends() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [c(UP, false, 0), c(OUT, false, 0), c(UP, false, 0)];
        let picks: Vec<usize> = (0..4)
            .map(|rr| {
                choose(Policy::RoundRobin, &cands, rr, &mut rng)
                    .unwrap()
                    .index
            })
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn least_connections_takes_the_minimum_and_rotates_ties() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [
            c(UP, false, 4),
            c(UP, false, 1),
            c(UP, false, 1),
            c(OUT, false, 0),
        ];
        let picks: Vec<usize> = (0..4)
            .map(|rr| {
                choose(Policy::LeastConnections, &cands, rr, &mut rng)
                    .unwrap()
                    .index
            })
            .collect();
        // Index 3 has no connections but is out; 1 and 2 tie and alternate.
        assert_eq!(picks, vec![1, 2, 1, 2]);
    }
}
