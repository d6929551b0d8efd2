//! `--report FILE.html|FILE.svg`: plots of one or more runs, side by side per target —
//! latency over time (p50/p99 per interval), latency by percentile, each target's
//! per-replica request share, and each replica's share over time (where a new replica
//! ramps up, or a draining one leaves).
//!
//! Drawn with `plotters`' SVG backend (no fonts or bitmaps needed); the HTML page embeds
//! the SVG and the terminal summary.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::RunReport;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// Drawing failed.
    #[error("drawing the plots: {0}")]
    Draw(String),
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The series legend, drawn the same way on every plot.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), HtmlError>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(position)
        .draw()
        .map_err(draw_err)
}

fn draw_err<E: std::fmt::Display>(e: E) -> HtmlError {
    HtmlError::Draw(e.to_string())
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A chart over the measured phase's seconds (x, to the last timeline point of any
/// run) and `0..max_y`, with its caption and y label: the frame of every plot over time.
fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    runs: &[RunReport],
    caption: &str,
    max_y: f64,
    y_desc: &str,
) -> Result<TimeChart<'a, 'b>, HtmlError> {
    let max_t = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.t))
        .fold(1.0, f64::max)
        + 1.0;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_t, 0f64..max_y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since measurement start")
        .y_desc(y_desc)
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// A chart made by [`time_chart`].
type TimeChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn latency_over_time(area: &Area<'_>, runs: &[RunReport]) -> Result<(), HtmlError> {
    let max_y = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.p99))
        .fold(0.001, f64::max)
        * 1.15;
    let mut chart = time_chart(
        area,
        runs,
        "Latency over time (p99 solid, p50 thin), ms",
        max_y,
        "ms",
    )?;
    for (i, r) in runs.iter().enumerate() {
        let c = color(i);
        let pts = |f: fn(&super::TimelinePoint) -> f64| -> Vec<(f64, f64)> {
            r.timeline
                .iter()
                .filter(|p| p.rps > 0.0)
                .map(|p| (p.t, f(p)))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(pts(|p| p.p99), c.stroke_width(2)))
            .map_err(draw_err)?
            .label(format!("{} p99", r.target))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(pts(|p| p.p50), c.mix(0.6).stroke_width(1)))
            .map_err(draw_err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// A fault run: successful, failed and retried requests per second over time, with each
/// action marked where it started.
fn faults_over_time(area: &Area<'_>, runs: &[RunReport]) -> Result<(), HtmlError> {
    let width = |r: &RunReport| match r.timeline.as_slice() {
        [a, b, ..] => (b.t - a.t).max(1e-9),
        _ => 1.0,
    };
    let per_second = |r: &RunReport, n: u64| n as f64 / width(r);
    let max_y = runs
        .iter()
        .flat_map(|r| {
            r.timeline.iter().map(move |p| {
                p.rps
                    .max(per_second(r, p.errors))
                    .max(per_second(r, p.retried))
            })
        })
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = time_chart(
        area,
        runs,
        "Requests per second over time: ok (solid), failed (red), retried (dashed); actions marked",
        max_y,
        "requests / s",
    )?;
    for (i, r) in runs.iter().enumerate() {
        let c = color(i);
        let series = |f: &dyn Fn(&super::TimelinePoint) -> f64| -> Vec<(f64, f64)> {
            r.timeline.iter().map(|p| (p.t, f(p))).collect()
        };
        chart
            .draw_series(LineSeries::new(series(&|p| p.rps), c.stroke_width(2)))
            .map_err(draw_err)?
            .label(format!("{} ok", r.target))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                series(&|p| per_second(r, p.errors)),
                RED.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(format!("{} failed", r.target))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                series(&|p| per_second(r, p.retried)),
                6,
                4,
                c.mix(0.7).stroke_width(1),
            ))
            .map_err(draw_err)?;
        for a in &r.actions {
            let Some(t) = a.started_s else { continue };
            chart
                .draw_series(DashedLineSeries::new(
                    [(t, 0.0), (t, max_y)],
                    4,
                    4,
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    a.label.clone(),
                    (t, max_y * 0.97),
                    ("sans-serif", 12).into_font(),
                )))
                .map_err(draw_err)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Maps a percentile to the "nines" axis: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3.
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-6).log10()
}

fn percentiles(area: &Area<'_>, runs: &[RunReport]) -> Result<(), HtmlError> {
    let max_x = runs
        .iter()
        .flat_map(|r| {
            r.percentiles
                .iter()
                .filter(|p| p.percentile < 100.0)
                .map(|p| nines(p.percentile))
        })
        .fold(3.0, f64::max);
    let max_y = runs
        .iter()
        .flat_map(|r| r.percentiles.iter().map(|p| p.ms))
        .fold(0.001, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile, ms", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            format!("{}%", (p * 1000.0).round() / 1000.0)
        })
        .x_desc("percentile")
        .y_desc("ms")
        .draw()
        .map_err(draw_err)?;
    for (i, r) in runs.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = r
            .percentiles
            .iter()
            .filter(|p| p.percentile < 100.0)
            .map(|p| (nines(p.percentile), p.ms))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(draw_err)?
            .label(r.target.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn shares(area: &Area<'_>, runs: &[RunReport]) -> Result<(), HtmlError> {
    let n = runs.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Per-replica request share per target (line = even share)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, 0f64..118f64)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("% of requests")
        .draw()
        .map_err(draw_err)?;
    for (g, r) in runs.iter().enumerate() {
        let x0 = g as f64;
        let d = r.distribution.as_ref().or(r.scraped.as_ref());
        let title = match d {
            Some(d) => format!("{} (CV {:.2})", r.target, d.cv),
            None => format!("{} (no data)", r.target),
        };
        chart
            .draw_series(std::iter::once(Text::new(
                title,
                (x0 + 0.05, 114.0),
                ("sans-serif", 15).into_font(),
            )))
            .map_err(draw_err)?;
        let Some(d) = d else { continue };
        let k = d.replicas.len().max(1) as f64;
        let w = 0.8 / k;
        for (j, rep) in d.replicas.iter().enumerate() {
            let left = x0 + 0.1 + j as f64 * w;
            let pct = rep.share * 100.0;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(left + w * 0.08, 0.0), (left + w * 0.92, pct)],
                    color(j).filled(),
                )))
                .map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{}: {:.1}%", rep.id, pct),
                    (left + w * 0.08, pct + 5.0),
                    ("sans-serif", 11).into_font(),
                )))
                .map_err(draw_err)?;
        }
        let even = 100.0 / k;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x0 + 0.08, even), (x0 + 0.92, even)],
                BLACK.stroke_width(1),
            )))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn shares_over_time(area: &Area<'_>, runs: &[RunReport]) -> Result<(), HtmlError> {
    let mut chart = time_chart(
        area,
        runs,
        "Per-replica share of responses over time",
        100.0,
        "% of responses",
    )?;
    let mut series = 0;
    for r in runs {
        let mut ids: Vec<&String> = r
            .timeline
            .iter()
            .flat_map(|p| p.replica_share.keys())
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let points: Vec<(f64, f64)> = r
                .timeline
                .iter()
                .filter(|p| !p.replica_share.is_empty())
                .map(|p| (p.t, p.replica_share.get(id).copied().unwrap_or(0.0) * 100.0))
                .collect();
            let c = color(series);
            let label = if runs.len() > 1 {
                format!("{} {id}", r.target)
            } else {
                id.clone()
            };
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(draw_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
            series += 1;
        }
    }
    if series > 0 {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

/// Renders the four plots (five for a fault run) into one SVG document.
pub fn svg(runs: &[RunReport]) -> Result<String, HtmlError> {
    let mut buf = String::new();
    {
        let faults = runs
            .iter()
            .any(|r| !r.actions.is_empty() || !r.retried.is_empty());
        let rows = if faults { 5 } else { 4 };
        let root = SVGBackend::with_string(&mut buf, (1100, 450 * rows)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let areas = root.split_evenly((rows as usize, 1));
        if let [a, b, c, d, rest @ ..] = areas.as_slice() {
            latency_over_time(a, runs)?;
            percentiles(b, runs)?;
            shares(c, runs)?;
            shares_over_time(d, runs)?;
            if let Some(e) = rest.first() {
                faults_over_time(e, runs)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An HTML page with the plots and the text summary.
pub fn html(runs: &[RunReport], summary: &str) -> Result<String, HtmlError> {
    let svg = svg(runs)?;
    let targets: Vec<&str> = runs.iter().map(|r| r.target.as_str()).collect();
    Ok(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>apigate-loadtest: {t}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style>\
         </head><body><h1>apigate-loadtest: {t}</h1>\n{svg}\n<h2>Summary</h2><pre>{s}</pre></body></html>\n",
        t = escape(&targets.join(" vs ")),
        s = escape(summary),
    ))
}

/// Writes `runs` to `path`: an SVG if the name ends in `.svg`, an HTML page otherwise.
pub fn write(path: &Path, runs: &[RunReport], summary: &str) -> Result<(), HtmlError> {
    let is_svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let content = if is_svg {
        svg(runs)?
    } else {
        html(runs, summary)?
    };
    std::fs::write(path, content).map_err(|source| HtmlError::Write {
        path: path.display().to_string(),
        source,
    })
}
