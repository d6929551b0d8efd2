//! Per-replica request counts from the replicas themselves: scrape each API server's
//! Prometheus `/metrics` before and after a run and take the difference of
//! `apiserver_request_total`.
//!
//! This is how the distribution is measured behind a balancer that adds no replica
//! header, e.g. with real kube-apiservers. The scrape itself is one extra GET per replica
//! and scrape (negligible against a run); other clients' traffic during the run is
//! counted too — use `--scrape-label` to narrow to the scenario's resource (for example
//! `resource=pods`).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use crate::client::{ClientError, Endpoint, ErrorKind, HttpConn, Target};

/// The metric summed per replica.
pub const REQUEST_TOTAL: &str = "apiserver_request_total";

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The request failed.
    #[error("scrape {url}: {source}")]
    Request {
        /// The scraped URL.
        url: String,
        /// Cause.
        source: ClientError,
    },
    /// The response was not 200.
    #[error("scrape {url}: HTTP {status}")]
    Status {
        /// The scraped URL.
        url: String,
        /// Response status.
        status: u16,
    },
    /// The body was not Prometheus text or had no `apiserver_request_total`.
    #[error("scrape {url}: {reason}")]
    Parse {
        /// The scraped URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// A replica to scrape: a name for reports and the URL of its metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// Replica name in the report.
    pub name: String,
    /// Base URL of the replica.
    pub target: Target,
    /// Path of the metrics endpoint (default `/metrics`).
    pub path: String,
}

impl FromStr for ScrapeTarget {
    type Err = String;
    /// `[name=]https://host:port[/path]`; the name defaults to `host:port`, the path to
    /// `/metrics`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, url) = match s.split_once('=') {
            Some((n, u)) if !n.contains("://") => (Some(n.trim().to_owned()), u.trim()),
            _ => (None, s.trim()),
        };
        let target: Target = url.parse().map_err(|e| format!("{e}"))?;
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("invalid scrape URL {url:?}"))?;
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") | Some("") => "/metrics".to_owned(),
            Some(p) => p.to_owned(),
        };
        Ok(Self {
            name: name.unwrap_or_else(|| target.authority()),
            target,
            path,
        })
    }
}

/// A label matcher `name=value` applied to every sample before summing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatch {
    /// Label name.
    pub name: String,
    /// Required value.
    pub value: String,
}

impl FromStr for LabelMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--scrape-label {s:?}: expected name=value"))?;
        Ok(Self {
            name: n.trim().to_owned(),
            value: v.trim().to_owned(),
        })
    }
}

/// Parses the labels of one sample, `{a="x",b="y\"z"}` (without the braces).
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or("label without '='")?;
        let after = after
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        out.insert(name.trim().to_owned(), value);
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

/// Sums all samples of `metric` in Prometheus text format whose labels match all
/// `matchers`. Returns `None` when the metric does not occur at all.
pub fn sum_metric(
    text: &str,
    metric: &str,
    matchers: &[LabelMatch],
) -> Result<Option<f64>, String> {
    let mut sum = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (labels, value_part) = if let Some(r) = rest.strip_prefix('{') {
            let close = r
                .rfind('}')
                .ok_or_else(|| format!("line {}: unclosed '{{'", n + 1))?;
            (
                parse_labels(&r[..close]).map_err(|e| format!("line {}: {e}", n + 1))?,
                &r[close + 1..],
            )
        } else if rest.starts_with([' ', '\t']) {
            (BTreeMap::new(), rest)
        } else {
            continue; // another metric with this prefix, e.g. apiserver_request_total_x
        };
        if !matchers
            .iter()
            .all(|m| labels.get(&m.name) == Some(&m.value))
        {
            continue;
        }
        let value = value_part
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("line {}: no value", n + 1))?;
        let v: f64 = value
            .parse()
            .map_err(|_| format!("line {}: bad value {value:?}", n + 1))?;
        *sum.get_or_insert(0.0) += v;
    }
    Ok(sum)
}

/// Scrapes one replica and returns its `apiserver_request_total` sum.
pub async fn scrape_one(
    t: &ScrapeTarget,
    endpoint: Arc<Endpoint>,
    matchers: &[LabelMatch],
    timeout: Duration,
    token: Option<&str>,
) -> Result<f64, ScrapeError> {
    let url = format!("{}{}", t.target, t.path);
    let req_err = |source| ScrapeError::Request {
        url: url.clone(),
        source,
    };
    let conn = HttpConn::new(endpoint, 1);
    let mut req = Request::get(t.path.as_str()).header(http::header::HOST, t.target.authority());
    if let Some(tok) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {tok}"));
    }
    if matches!(conn, HttpConn::H2(_)) {
        req = req.uri(url.as_str());
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| req_err(ClientError::new(ErrorKind::Other, e.to_string())))?;
    let fetch = async {
        let (resp, _lease) = conn.send(req).await.map_err(req_err)?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| req_err(ClientError::classify(&e, ErrorKind::Reset)))?
            .to_bytes();
        Ok::<_, ScrapeError>((status, body))
    };
    let res = tokio::time::timeout(timeout, fetch).await;
    conn.close().await;
    let (status, body) =
        res.map_err(|_| req_err(ClientError::new(ErrorKind::Timeout, "scrape timed out")))??;
    if status != 200 {
        return Err(ScrapeError::Status { url, status });
    }
    let text = String::from_utf8_lossy(&body);
    match sum_metric(&text, REQUEST_TOTAL, matchers) {
        Ok(Some(v)) => Ok(v),
        // A replica that has served nothing yet may list the metric without samples.
        Ok(None) if text.contains(&format!("# TYPE {REQUEST_TOTAL} ")) => Ok(0.0),
        Ok(None) => Err(ScrapeError::Parse {
            url,
            reason: format!("no {REQUEST_TOTAL} in the metrics"),
        }),
        Err(reason) => Err(ScrapeError::Parse { url, reason }),
    }
}

/// Per-replica difference of two scrapes (`after - before`), rounded to whole requests;
/// a counter that went backwards (replica restarted) counts from zero.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or(0.0);
            let d = if *a >= b { a - b } else { *a };
            (k.clone(), d.round().max(0.0) as u64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 12
apiserver_request_total{code="201",resource="pods",verb="POST"} 3
apiserver_request_total{code="200",resource="nodes",verb="GET",weird="a\"b,c}"} 5 1700000000000
apiserver_request_total_other{code="200"} 1000
apiserver_request_duration_seconds_count{verb="GET"} 99
"#;

    #[test]
    fn sums_request_total() {
        assert_eq!(sum_metric(TEXT, REQUEST_TOTAL, &[]), Ok(Some(20.0)));
        let pods = [LabelMatch {
            name: "resource".into(),
            value: "pods".into(),
        }];
        assert_eq!(sum_metric(TEXT, REQUEST_TOTAL, &pods), Ok(Some(15.0)));
        assert_eq!(sum_metric("up 1\n", REQUEST_TOTAL, &[]), Ok(None));
        assert!(sum_metric("apiserver_request_total{code=\"200\" 1", REQUEST_TOTAL, &[]).is_err());
        assert!(sum_metric("apiserver_request_total x", REQUEST_TOTAL, &[]).is_err());
        assert_eq!(
            sum_metric("apiserver_request_total 7", REQUEST_TOTAL, &[]),
            Ok(Some(7.0))
        );
    }

    #[test]
    fn deltas() {
        let b: BTreeMap<String, f64> = [("a".into(), 10.0), ("b".into(), 50.0)].into();
        let a: BTreeMap<String, f64> =
            [("a".into(), 25.0), ("b".into(), 5.0), ("c".into(), 1.0)].into();
        let d = delta(&b, &a);
        assert_eq!(d["a"], 15);
        assert_eq!(d["b"], 5, "restarted replica counts from zero");
        assert_eq!(d["c"], 1);
    }

    #[test]
    fn scrape_targets() -> Result<(), String> {
        let t: ScrapeTarget = "r0=https://127.0.0.1:6443".parse()?;
        assert_eq!((t.name.as_str(), t.path.as_str()), ("r0", "/metrics"));
        let t: ScrapeTarget = "https://127.0.0.1:6443/custom".parse()?;
        assert_eq!(
            (t.name.as_str(), t.path.as_str()),
            ("127.0.0.1:6443", "/custom")
        );
        assert!("r0=nope".parse::<ScrapeTarget>().is_err());
        Ok(())
    }
}
