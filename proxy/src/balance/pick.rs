//! The balancing decision as a pure function over plain data.

use apigate_control::model::Balancing;
use rand::Rng;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Not ejected.
    pub available: bool,
    /// Already tried for this request (a retry must go elsewhere).
    pub excluded: bool,
    /// The load the policy compares: ordinary requests in flight for the request
    /// policies (long-running ones are not counted: an open watch costs the replica
    /// little, and counting it would starve replicas that hold many), open passthrough
    /// connections for [`Policy::LeastConnections`].
    pub load: u64,
    /// Requests ever sent to it; breaks ties so that an idle or sequential client is
    /// spread evenly instead of randomly.
    pub picks: u64,
}

/// A chosen backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into the candidates.
    pub index: usize,
    /// True when every non-excluded backend was ejected and one was used anyway.
    pub panic: bool,
}

/// Choose a backend. Ejected backends are skipped unless all are ejected (panic mode:
/// trying a possibly-broken replica beats failing every request). Excluded ones are
/// never chosen. `round_robin` is the route's rotating counter value for this pick.
pub fn choose<R: Rng>(
    policy: Policy,
    candidates: &[Candidate],
    round_robin: usize,
    rng: &mut R,
) -> Option<Choice> {
    let healthy = candidates
        .iter()
        .filter(|c| !c.excluded && c.available)
        .count();
    let panic = healthy == 0;
    let eligible = |c: &Candidate| !c.excluded && (c.available || panic);
    let count = if panic {
        candidates.iter().filter(|c| !c.excluded).count()
    } else {
        healthy
    };
    if count == 0 {
        return None;
    }
    let nth = |n: usize| {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| eligible(c))
            .nth(n)
            .map(|(i, _)| i)
    };
    let index = match policy {
        Policy::RoundRobin => nth(round_robin % count)?,
        Policy::LeastConnections => {
            // Exact minimum; ties rotate with the route's counter so sequential
            // connections spread evenly.
            let least = candidates
                .iter()
                .filter(|c| eligible(c))
                .map(|c| c.load)
                .min()?;
            let tied: Vec<usize> = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| eligible(c) && c.load == least)
                .map(|(i, _)| i)
                .collect();
            *tied.get(round_robin % tied.len().max(1))?
        }
        Policy::LeastRequest if count == 1 => nth(0)?,
        Policy::LeastRequest => {
            // Power of two choices: two distinct random eligible backends, fewer
            // requests in flight wins.
            let a = rng.gen_range(0..count);
            let mut b = rng.gen_range(0..count - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth(a)?, nth(b)?);
            let load = |i: usize| (candidates[i].load, candidates[i].picks);
            if load(b) < load(a) {
                b
            } else {
                a
            }
        }
    };
    Some(Choice { index, panic })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn c(available: bool, excluded: bool, load: u64) -> Candidate {
        Candidate {
            available,
            excluded,
            load,
            picks: 0,
        }
    }

    #[test]
    fn least_request_prefers_the_less_loaded_of_two() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cands = [c(true, false, 10), c(true, false, 0)];
        for _ in 0..100 {
            let choice = choose(Policy::LeastRequest, &cands, 0, &mut rng).unwrap();
            assert_eq!(choice.index, 1);
            assert!(!choice.panic);
        }
    }

    #[test]
    fn least_request_spreads_evenly_when_idle() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let cands = [c(true, false, 0); 3];
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
    fn ties_go_to_the_backend_picked_least_so_sequential_load_is_even() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut cands = [c(true, false, 0); 3];
        for _ in 0..300 {
            let i = choose(Policy::LeastRequest, &cands, 0, &mut rng)
                .unwrap()
                .index;
            cands[i].picks += 1;
        }
        for cand in cands {
            assert!((99..=101).contains(&cand.picks), "{cands:?}");
        }
    }

    #[test]
    fn ejected_and_excluded_backends_are_skipped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [c(false, false, 0), c(true, true, 0), c(true, false, 99)];
        for policy in [Policy::LeastRequest, Policy::RoundRobin] {
            for rr in 0..10 {
                let choice = choose(policy, &cands, rr, &mut rng).unwrap();
                assert_eq!(choice.index, 2);
            }
        }
    }

    #[test]
    fn panic_mode_uses_ejected_backends_but_never_excluded_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [c(false, true, 0), c(false, false, 0)];
        let choice = choose(Policy::LeastRequest, &cands, 0, &mut rng).unwrap();
        assert_eq!(
            choice,
            Choice {
                index: 1,
                panic: true
            }
        );
        let all_excluded = [c(true, true, 0), c(false, true, 0)];
        assert_eq!(choose(Policy::RoundRobin, &all_excluded, 0, &mut rng), None);
    }

    #[test]
    fn least_connections_takes_the_minimum_and_rotates_ties() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [
            c(true, false, 4),
            c(true, false, 1),
            c(true, false, 1),
            c(false, false, 0),
        ];
        let picks: Vec<usize> = (0..4)
            .map(|rr| {
                choose(Policy::LeastConnections, &cands, rr, &mut rng)
                    .unwrap()
                    .index
            })
            .collect();
        // Index 3 has no connections but is ejected; 1 and 2 tie and alternate.
        assert_eq!(picks, vec![1, 2, 1, 2]);
    }

    #[test]
    fn round_robin_rotates_over_eligible_backends() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [c(true, false, 0), c(false, false, 0), c(true, false, 0)];
        let picks: Vec<usize> = (0..4)
            .map(|rr| {
                choose(Policy::RoundRobin, &cands, rr, &mut rng)
                    .unwrap()
                    .index
            })
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }
}
