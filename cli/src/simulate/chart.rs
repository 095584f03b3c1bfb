//! `--chart out.svg`: last-seen vs ack over time, with fault and eviction markers. Hand-written
//! SVG (no plotting dependency).

use std::fmt::Write as _;

use super::report::Report;
use crate::pipeline_common::Chart;

const W: f64 = 960.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// At most this many points per line.
const MAX_POINTS: usize = 1500;

impl Chart for Report {
    /// Renders the chart.
    fn svg(&self) -> String {
        let r = self;
        let samples = &r.samples;
        let t_max = samples.last().map_or(1, |s| s.t_ms).max(1) as f64;
        let y_max = samples
            .iter()
            .filter_map(|s| s.last_tx)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let x = |t: f64| LEFT + t / t_max * (W - LEFT - RIGHT);
        let y = |v: f64| H - BOTTOM - v / y_max * (H - TOP - BOTTOM);
        let step = samples.len().div_ceil(MAX_POINTS).max(1);
        let line = |get: &dyn Fn(usize) -> Option<u64>| -> String {
            let mut p = String::new();
            for (k, s) in samples.iter().enumerate().step_by(step) {
                if let Some(v) = get(k) {
                    let _ = write!(p, "{:.1},{:.1} ", x(s.t_ms as f64), y(v as f64));
                }
            }
            p
        };
        let last_seen = line(&|k| samples[k].last_tx);
        let ack = line(&|k| samples[k].ack);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="22" font-size="15">tidemark simulate: last commit vs ack (seed {}, {} writers, grace {} ms)</text>"#,
            r.config.common.seed, r.config.common.writers, r.config.common.grace_ms
        );
        // Axes and ticks.
        let (x0, y0) = (LEFT, H - BOTTOM);
        let _ = writeln!(
            s,
            r##"<path d="M{x0},{TOP} L{x0},{y0} L{:.1},{y0}" stroke="#333" fill="none"/>"##,
            W - RIGHT
        );
        for k in 0..=5 {
            let t = t_max * k as f64 / 5.0;
            let v = y_max * k as f64 / 5.0;
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{:.1} s</text>"##,
                x(t),
                y0 + 18.0,
                t / 1000.0
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{:.0}</text><path d="M{x0},{:.1} L{:.1},{:.1}" stroke="#eee"/>"##,
                x0 - 6.0,
                y(v) + 4.0,
                v,
                y(v),
                W - RIGHT,
                y(v)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">time</text>"##,
            (LEFT + W - RIGHT) / 2.0,
            H - 20.0
        );
        let _ = writeln!(
            s,
            r##"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle" fill="#333">tx</text>"##,
            (TOP + y0) / 2.0,
            (TOP + y0) / 2.0
        );
        // Markers: faults (red, dashed) and evictions (green).
        let rel = |t: u64| t.saturating_sub(r.start_ms) as f64;
        for f in &r.faults {
            if let Some(t) = f.record.applied_ms {
                let xm = x(rel(t));
                let _ = writeln!(
                    s,
                    r##"<path d="M{xm:.1},{TOP} L{xm:.1},{y0}" stroke="#d62728" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#d62728" font-size="10">{}</text>"##,
                    xm + 2.0,
                    TOP + 10.0,
                    f.record.planned.kind.as_str()
                );
            }
        }
        for e in &r.evictions {
            let xm = x(rel(e.at_ms));
            let _ = writeln!(
                s,
                r##"<path d="M{xm:.1},{TOP} L{xm:.1},{y0}" stroke="#2ca02c"/><text x="{:.1}" y="{:.1}" fill="#2ca02c" font-size="10">evict</text>"##,
                xm + 2.0,
                TOP + 22.0
            );
        }
        let _ = writeln!(
            s,
            r##"<polyline points="{last_seen}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##
        );
        let _ = writeln!(
            s,
            r##"<polyline points="{ack}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>"##
        );
        // Legend.
        let lx = W - RIGHT - 230.0;
        let _ = writeln!(
            s,
            r##"<g font-size="11"><path d="M{lx},{TOP} l20,0" stroke="#1f77b4" stroke-width="2"/><text x="{:.1}" y="{:.1}">last commit</text><path d="M{:.1},{TOP} l20,0" stroke="#ff7f0e" stroke-width="2"/><text x="{:.1}" y="{:.1}">ack</text><path d="M{lx},{:.1} l20,0" stroke="#d62728" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}">fault</text><path d="M{:.1},{:.1} l20,0" stroke="#2ca02c"/><text x="{:.1}" y="{:.1}">eviction</text></g>"##,
            lx + 24.0,
            TOP + 4.0,
            lx + 110.0,
            lx + 134.0,
            TOP + 4.0,
            TOP + 16.0,
            lx + 24.0,
            TOP + 20.0,
            lx + 110.0,
            TOP + 16.0,
            lx + 134.0,
            TOP + 20.0
        );
        s.push_str("</svg>\n");
        s
    }
}
