//! The Prometheus text exposition format, parsed into samples.

use std::collections::BTreeMap;

/// One sample: metric name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (with `_bucket`, `_sum`, `_count` suffixes as exposed).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

/// Why a scrape could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("metrics line {line}: {problem}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: &'static str,
    /// The line.
    pub text: String,
}

impl Metrics {
    /// Parse a scrape. Comments and blank lines are skipped; every other line must be
    /// `name{label="value",...} value`.
    pub fn parse(text: &str) -> Result<Metrics, ParseError> {
        let mut samples = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |problem| ParseError {
                line: index + 1,
                problem,
                text: line.to_string(),
            };
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| error("no value"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| error("value is not a number"))?,
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .ok_or_else(|| error("unclosed labels"))?;
                    (
                        name.to_string(),
                        parse_labels(body).ok_or_else(|| error("bad labels"))?,
                    )
                }
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Ok(Metrics { samples })
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples [`Metrics::matching`] selects; 0 when none does.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample of `name` exists at all.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// `a="x",b="y"` with Prometheus escapes (`\\`, `\"`, `\n`) in values.
fn parse_labels(body: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        rest = after[end + 2..].trim_start_matches(',').trim();
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_a_subset_of_labels() {
        let text = r#"# HELP apigate_requests_total Requests.
# TYPE apigate_requests_total counter
apigate_requests_total{backend="127.0.0.1:1",code="200",route="ns/a"} 3
apigate_requests_total{backend="127.0.0.1:2",code="200",route="ns/a"} 4
apigate_requests_total{backend="none",code="503",route="ns/a"} 1
apigate_routes 2
odd{v="a \"quoted\", \\ value"} 1e3
"#;
        let m = Metrics::parse(text).unwrap();
        assert_eq!(m.sum("apigate_requests_total", &[("code", "200")]), 7.0);
        assert_eq!(m.sum("apigate_requests_total", &[]), 8.0);
        assert_eq!(m.sum("apigate_routes", &[]), 2.0);
        assert_eq!(m.sum("apigate_requests_total", &[("code", "404")]), 0.0);
        let odd = m.matching("odd", &[]).next().unwrap();
        assert_eq!(odd.labels["v"], "a \"quoted\", \\ value");
        assert_eq!(odd.value, 1000.0);
        assert!(Metrics::parse("broken{a=\"x\" 1").is_err());
    }
}
