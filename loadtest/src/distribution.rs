//! How requests spread over replicas: each replica's share, max/mean and the coefficient
//! of variation (CV) — the number that shows connection pinning.
//!
//! Pure functions over counts. The replica *set* is an input, not just what was seen: a
//! replica that got nothing must count as a zero, otherwise "everything went to one
//! replica" would look perfectly even.
//!
//! - `share_i = n_i / Σ n`
//! - `CV = population stddev(n) / mean(n)`: 0 for an even split; `sqrt(N-1)` when one of
//!   N replicas gets everything (≈ 1.41 for 3).
//! - `max/mean`: 1 for an even split, N when one replica gets everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which replicas exist, when it is known independently of the responses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReplicaSet {
    /// Not known: only replicas that answered are counted.
    #[default]
    Seen,
    /// `N` replicas; those not seen count as zeros under placeholder names.
    Count(usize),
    /// The replica ids (e.g. from the backend list).
    Ids(Vec<String>),
}

impl std::str::FromStr for ReplicaSet {
    type Err = String;
    /// `3` (a count) or `r0,r1,r2` (ids).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(n) = s.parse::<usize>() {
            if n == 0 || n > 10_000 {
                return Err("--replicas count must be between 1 and 10000".into());
            }
            return Ok(Self::Count(n));
        }
        let ids: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return Err("--replicas needs a count or a comma-separated list of replica ids".into());
        }
        Ok(Self::Ids(ids))
    }
}

/// One replica's part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaShare {
    /// Replica id (header value, scrape target name, or a placeholder for an unseen one).
    pub id: String,
    /// Requests it served.
    pub requests: u64,
    /// `requests / total` (0 when total is 0).
    pub share: f64,
}

/// The spread of requests over a replica set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Where the counts came from: `header` or `scrape`.
    pub source: String,
    /// Per replica, expected replicas first (in the given order), then any extra seen.
    pub replicas: Vec<ReplicaShare>,
    /// Sum of requests.
    pub total: u64,
    /// Mean requests per replica.
    pub mean: f64,
    /// Largest count divided by the mean (1 = even, N = all on one).
    pub max_over_mean: f64,
    /// Coefficient of variation, population stddev / mean (0 = even).
    pub cv: f64,
    /// Responses that could not be attributed to a replica (no header).
    pub unattributed: u64,
}

/// Population coefficient of variation of `counts`; 0 for an empty set or all zeros.
pub fn coefficient_of_variation(counts: &[u64]) -> f64 {
    if counts.is_empty() {
        return 0.0;
    }
    let n = counts.len() as f64;
    let mean = counts.iter().map(|&c| c as f64).sum::<f64>() / n;
    if mean == 0.0 {
        return 0.0;
    }
    let var = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    var.sqrt() / mean
}

/// Largest count over the mean; 0 for an empty set or all zeros.
pub fn max_over_mean(counts: &[u64]) -> f64 {
    if counts.is_empty() {
        return 0.0;
    }
    let mean = counts.iter().map(|&c| c as f64).sum::<f64>() / counts.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    counts.iter().copied().max().unwrap_or(0) as f64 / mean
}

/// Builds the distribution of `seen` counts over `set`. Ids in `seen` that are not in
/// the set are appended (a replica nobody told us about is still a replica).
pub fn distribution(
    source: &str,
    set: &ReplicaSet,
    seen: &BTreeMap<String, u64>,
    unattributed: u64,
) -> Distribution {
    let mut ids: Vec<String> = match set {
        ReplicaSet::Ids(ids) => ids.clone(),
        ReplicaSet::Seen | ReplicaSet::Count(_) => Vec::new(),
    };
    for id in seen.keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    if let ReplicaSet::Count(n) = set {
        let mut k = 0;
        while ids.len() < *n {
            ids.push(format!("(unseen {k})"));
            k += 1;
        }
    }
    let counts: Vec<u64> = ids
        .iter()
        .map(|id| seen.get(id).copied().unwrap_or(0))
        .collect();
    let total: u64 = counts.iter().sum();
    let replicas = ids
        .into_iter()
        .zip(&counts)
        .map(|(id, &requests)| ReplicaShare {
            id,
            requests,
            share: if total == 0 {
                0.0
            } else {
                requests as f64 / total as f64
            },
        })
        .collect();
    Distribution {
        source: source.to_owned(),
        replicas,
        total,
        mean: if counts.is_empty() {
            0.0
        } else {
            total as f64 / counts.len() as f64
        },
        max_over_mean: max_over_mean(&counts),
        cv: coefficient_of_variation(&counts),
        unattributed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn all_on_one_of_three_is_sqrt2() {
        let set = ReplicaSet::Ids(vec!["a".into(), "b".into(), "c".into()]);
        let d = distribution("header", &set, &seen(&[("a", 300)]), 0);
        assert!((d.cv - 2f64.sqrt()).abs() < 1e-12, "{}", d.cv);
        assert!((d.max_over_mean - 3.0).abs() < 1e-12);
        assert_eq!(
            d.replicas.iter().map(|r| r.requests).collect::<Vec<_>>(),
            vec![300, 0, 0]
        );
        assert_eq!(d.replicas[0].share, 1.0);
    }

    #[test]
    fn even_split_is_zero() {
        let d = distribution(
            "header",
            &ReplicaSet::Seen,
            &seen(&[("a", 100), ("b", 100), ("c", 100)]),
            0,
        );
        assert_eq!(d.cv, 0.0);
        assert_eq!(d.max_over_mean, 1.0);
        assert!((d.replicas[1].share - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn count_pads_unseen_replicas() {
        let d = distribution("header", &ReplicaSet::Count(3), &seen(&[("x", 10)]), 2);
        assert_eq!(d.replicas.len(), 3);
        assert_eq!(d.replicas[1].id, "(unseen 0)");
        assert!((d.cv - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(d.unattributed, 2);
    }

    #[test]
    fn known_uneven_split() {
        // 50/25/25: mean 33.3, stddev 11.79 → CV 0.3536, max/mean 1.5.
        let d = distribution(
            "scrape",
            &ReplicaSet::Seen,
            &seen(&[("a", 50), ("b", 25), ("c", 25)]),
            0,
        );
        assert!((d.cv - 0.353_553_390_593_273_8).abs() < 1e-9, "{}", d.cv);
        assert!((d.max_over_mean - 1.5).abs() < 1e-12);
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(coefficient_of_variation(&[]), 0.0);
        assert_eq!(coefficient_of_variation(&[0, 0]), 0.0);
        assert_eq!(max_over_mean(&[0, 0]), 0.0);
        let d = distribution("header", &ReplicaSet::Seen, &BTreeMap::new(), 0);
        assert_eq!((d.total, d.mean, d.cv), (0, 0.0, 0.0));
    }

    #[test]
    fn replica_set_parses() {
        assert_eq!("3".parse(), Ok(ReplicaSet::Count(3)));
        assert_eq!(
            "a, b".parse(),
            Ok(ReplicaSet::Ids(vec!["a".into(), "b".into()]))
        );
        assert!("0".parse::<ReplicaSet>().is_err());
        assert!(",".parse::<ReplicaSet>().is_err());
    }
}
