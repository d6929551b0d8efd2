//! Human-readable summaries: one block per run, one table per compare. Numbers are
//! formatted by the helpers here only, so tests can check the text against the JSON.

use std::fmt::Write;

use super::{CompareReport, RunReport};
use crate::distribution::Distribution;

/// Milliseconds with 3 decimals (µs resolution), as printed everywhere.
pub fn fmt_ms(v: f64) -> String {
    format!("{v:.3}")
}

/// A share as a percentage with one decimal.
pub fn fmt_share(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// A ratio (CV, max/mean) with 3 decimals.
pub fn fmt_ratio(v: f64) -> String {
    format!("{v:.3}")
}

/// Requests per second with one decimal.
pub fn fmt_rps(v: f64) -> String {
    format!("{v:.1}")
}

fn kv_list(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn distribution_block(out: &mut String, title: &str, d: &Distribution) {
    let _ = writeln!(out, "  {title}");
    let w = d
        .replicas
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        out,
        "    {:<w$}  {:>10}  {:>7}",
        "replica", "requests", "share"
    );
    for r in &d.replicas {
        let _ = writeln!(
            out,
            "    {:<w$}  {:>10}  {:>7}",
            r.id,
            r.requests,
            fmt_share(r.share)
        );
    }
    let _ = write!(
        out,
        "    max/mean {}  CV {}",
        fmt_ratio(d.max_over_mean),
        fmt_ratio(d.cv)
    );
    if d.unattributed > 0 {
        let _ = write!(
            out,
            "  ({} responses without replica header)",
            d.unattributed
        );
    }
    out.push('\n');
}

fn scenario_line(v: &serde_json::Value) -> String {
    let g = |k: &str| match v.get(k) {
        Some(serde_json::Value::Number(n)) => n.as_f64().map(trim_number).unwrap_or_default(),
        Some(x) => x.to_string().trim_matches('"').to_owned(),
        None => String::new(),
    };
    let pacing = match g("mode").as_str() {
        "open" => format!("open loop {} req/s", g("rate")),
        "closed" => format!("closed loop, {} outstanding per client", g("concurrency")),
        other => other.to_owned(),
    };
    let conns = if g("protocol") == "h2" {
        "1 h2 connection".to_owned()
    } else {
        format!("{} h1 connections", g("h1_pool"))
    };
    format!(
        "{pacing}; {} clients x {conns}; warm-up {}s, duration {}s; mix {}; watches/client {}",
        g("clients"),
        g("warmup"),
        g("duration"),
        v.get("mix")
            .and_then(|m| m.get("weights"))
            .map(mix_text)
            .unwrap_or_default(),
        g("watches_per_client"),
    )
}

/// `500.0` → `500`, `0.25` → `0.25`.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn mix_text(w: &serde_json::Value) -> String {
    w.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some(format!("{}={}", p.get(0)?.as_str()?, p.get(1)?)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The end-of-run summary of one run.
pub fn run_summary(r: &RunReport) -> String {
    let mut o = String::new();
    let l = &r.latency_ms;
    let q = &r.requests;
    let _ = writeln!(o, "== {} ({})", r.target, r.url);
    let _ = writeln!(o, "  scenario   {}", scenario_line(&r.scenario));
    let _ = writeln!(
        o,
        "  requests   ok {}  errors {} ({})  throughput {} req/s over {}s",
        q.ok,
        q.errors,
        fmt_share(q.error_rate),
        fmt_rps(q.throughput_rps),
        fmt_rps(r.measured_seconds)
    );
    let _ = writeln!(
        o,
        "  latency ms p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={}, from {})",
        fmt_ms(l.p50),
        fmt_ms(l.p90),
        fmt_ms(l.p99),
        fmt_ms(l.p999),
        fmt_ms(l.max),
        l.count,
        l.measured_from
    );
    let _ = writeln!(
        o,
        "  send lag   p50 {}  p99 {}  max {} ms (generator lateness; large = generator-bound)",
        fmt_ms(r.send_lag_ms.p50),
        fmt_ms(r.send_lag_ms.p99),
        fmt_ms(r.send_lag_ms.max)
    );
    let _ = writeln!(o, "  errors     {}", kv_list(&r.errors));
    for (kind, msg) in &r.error_examples {
        let _ = writeln!(o, "    e.g. {kind}: {msg}");
    }
    if !r.retried.is_empty() {
        let _ = writeln!(
            o,
            "  retried    {} (handled by the client)",
            kv_list(&r.retried)
        );
    }
    let w = &r.watches;
    let _ = writeln!(
        o,
        "  watches    opened {}  held to end {}  ended early {}  events {}  errors {}",
        w.opened,
        w.held_to_end,
        w.ended_early,
        w.events,
        kv_list(&w.errors)
    );
    if let Some(d) = &r.distribution {
        distribution_block(&mut o, "per replica (response header)", d);
    }
    if let Some(d) = &r.scraped {
        distribution_block(&mut o, "per replica (scraped apiserver_request_total)", d);
    }
    for e in &r.scrape_errors {
        let _ = writeln!(o, "  scrape     {e}");
    }
    actions_block(&mut o, r);
    let _ = writeln!(o, "  verdict    {}", verdict_text(&r.verdict));
    o
}

/// A fault run's actions, and the requests of each window between them.
fn actions_block(o: &mut String, r: &RunReport) {
    for a in &r.actions {
        let when = a
            .started_s
            .map_or_else(|| "not run".to_owned(), |s| format!("at {s:.1}s"));
        let status = if a.ok { "ok" } else { "FAILED" };
        let _ = writeln!(
            o,
            "  action     {} {when}, took {:.2}s, {status} {}",
            a.label, a.took_s, a.detail
        );
    }
    if r.windows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "  windows    after                     from     to       ok   failed  retried"
    );
    for w in &r.windows {
        let _ = writeln!(
            o,
            "             {:<24} {:>6.1}s {:>6.1}s {:>6} {:>8} {:>8}",
            w.after, w.from_s, w.to_s, w.ok, w.failed, w.retried
        );
    }
}

fn verdict_text(v: &crate::verdict::Verdict) -> String {
    if v.checks.is_empty() {
        return "no thresholds given".into();
    }
    let checks: Vec<String> = v
        .checks
        .iter()
        .map(|c| {
            let (a, l) = if c.name == "error_rate" {
                (fmt_share(c.actual), fmt_share(c.limit))
            } else {
                (fmt_ms(c.actual), fmt_ms(c.limit))
            };
            format!("{} {a} {} {l}", c.name, if c.passed { "<=" } else { ">" })
        })
        .collect();
    format!(
        "{} ({})",
        if v.passed { "PASS" } else { "FAIL" },
        checks.join(", ")
    )
}

/// The one table of a compare: a row per target. `lag p99` is the generator's own send
/// lag: when it is large, the row measured the generator (or a busy machine), not the
/// target.
pub fn compare_table(c: &CompareReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "scenario: {}",
        c.runs
            .first()
            .map(|r| scenario_line(&r.scenario))
            .unwrap_or_default()
    );
    let name_w = c
        .runs
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        o,
        "{:<name_w$}  {:>9}  {:>8}  {:>8}  {:>8}  {:>9}  {:>9}  {:>7}  {:>8}  {:>6}  {:>8}  per-replica share",
        "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "max/mean", "CV", "lag p99"
    );
    for r in &c.runs {
        let l = &r.latency_ms;
        let d = r.distribution.as_ref().or(r.scraped.as_ref());
        let (mm, cv, shares) = match d {
            Some(d) => (
                fmt_ratio(d.max_over_mean),
                fmt_ratio(d.cv),
                d.replicas
                    .iter()
                    .map(|x| format!("{} {}", x.id, fmt_share(x.share)))
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
            None => (
                "-".into(),
                "-".into(),
                "unknown (no replica header, no --scrape)".into(),
            ),
        };
        let _ = writeln!(
            o,
            "{:<name_w$}  {:>9}  {:>8}  {:>8}  {:>8}  {:>9}  {:>9}  {:>7}  {:>8}  {:>6}  {:>8}  {shares}",
            r.target,
            fmt_rps(r.requests.throughput_rps),
            fmt_ms(l.p50),
            fmt_ms(l.p90),
            fmt_ms(l.p99),
            fmt_ms(l.p999),
            fmt_ms(l.max),
            r.requests.errors,
            mm,
            cv,
            fmt_ms(r.send_lag_ms.p99),
        );
    }
    for r in &c.runs {
        if !r.errors.is_empty() || !r.verdict.passed {
            let _ = writeln!(
                o,
                "{}: errors {}; verdict {}",
                r.target,
                kv_list(&r.errors),
                verdict_text(&r.verdict)
            );
        }
    }
    let _ = writeln!(o, "overall: {}", if c.passed { "PASS" } else { "FAIL" });
    o
}
