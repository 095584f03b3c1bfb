//! `--chart out.svg`: two panels over the same time axis. Top: retained WAL
//! (`pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)`, one sample every 100 ms) with
//! the WAL-return threshold. Bottom: the slot's confirmed LSN against the newest streamed
//! commit (end LSN), both as MiB of WAL after the start position. Fault (red, dashed) and
//! eviction (green) markers on both, and where the load stopped (grey). Hand-written SVG (no plotting dependency).

use std::fmt::Write as _;

use super::config::TrackerKind;
use super::report::Report;
use crate::pipeline_common::Chart;

const W: f64 = 960.0;
const H: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
/// Top panel: retained WAL.
const TOP1: f64 = 50.0;
const BOT1: f64 = 270.0;
/// Bottom panel: positions.
const TOP2: f64 = 320.0;
const BOT2: f64 = 500.0;
/// At most this many points per line.
const MAX_POINTS: usize = 1500;
const MIB: f64 = (1 << 20) as f64;

/// A tick step of 1, 2 or 5 × 10^k giving at most `n` steps up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&st| st >= raw)
        .unwrap_or(10.0 * mag)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

impl Chart for Report {
    /// Renders the chart.
    fn svg(&self) -> String {
        let r = self;
        let samples = &r.samples;
        let t_max = samples.last().map_or(1, |s| s.t_ms).max(1) as f64;
        let x = |t: f64| LEFT + t / t_max * (W - LEFT - RIGHT);
        let step = samples.len().div_ceil(MAX_POINTS).max(1);
        let start = r.start_lsn;

        let ret_max = samples
            .iter()
            .map(|s| s.slot.retained.max(0))
            .max()
            .unwrap_or(0)
            .max(r.threshold) as f64
            / MIB
            * 1.1;
        let ret_max = match r.config.chart_max_mib {
            Some(m) => m,
            None => ret_max.max(0.01),
        };
        let y1 = |v: f64| BOT1 - v / ret_max * (BOT1 - TOP1);
        let pos_max = samples
            .iter()
            .filter_map(|s| s.newest_end)
            .chain(samples.iter().map(|s| s.slot.confirmed))
            .max()
            .unwrap_or(start)
            .saturating_sub(start) as f64
            / MIB
            * 1.05;
        let pos_max = pos_max.max(0.01);
        let y2 = |v: f64| BOT2 - v / pos_max * (BOT2 - TOP2);
        let line = |get: &dyn Fn(usize) -> Option<(f64, f64)>| -> String {
            let mut p = String::new();
            for k in (0..samples.len()).step_by(step) {
                if let Some((xv, yv)) = get(k) {
                    let _ = write!(p, "{xv:.1},{yv:.1} ");
                }
            }
            p
        };
        let retained = line(&|k| {
            let s = &samples[k];
            let v = (s.slot.retained.max(0) as f64 / MIB).min(ret_max);
            Some((x(s.t_ms as f64), y1(v)))
        });
        let newest = line(&|k| {
            let s = &samples[k];
            s.newest_end
                .map(|e| (x(s.t_ms as f64), y2(e.saturating_sub(start) as f64 / MIB)))
        });
        let confirmed = line(&|k| {
            let s = &samples[k];
            Some((
                x(s.t_ms as f64),
                y2(s.slot.confirmed.saturating_sub(start) as f64 / MIB),
            ))
        });

        let c = &r.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let faults: Vec<&str> = r
            .faults
            .iter()
            .map(|f| f.record.planned.kind.as_str())
            .collect();
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="22" font-size="15">tidemark pg --tracker {}: PostgreSQL {}, {} writers, {} rows/s, faults: {}</text>"#,
            c.tracker.as_str(),
            r.server.split_whitespace().next().unwrap_or(""),
            c.common.writers,
            c.rate,
            if faults.is_empty() {
                "none".to_owned()
            } else {
                faults.join(", ")
            }
        );
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="40" font-size="11" fill="#555">{}; retained = pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), sampled every 100 ms; peak {:.2} MiB</text>"##,
            match c.tracker {
                TrackerKind::Tidemark => format!(
                    "grace {} ms, sweep {} ms",
                    c.common.grace_ms, c.common.sweep_ms
                ),
                TrackerKind::Electric => "per-writer minimum, no staleness sweeps".to_owned(),
            },
            r.retained.max as f64 / MIB
        );
        for (top, bot, vmax, label) in [
            (TOP1, BOT1, ret_max, "retained WAL (MiB)"),
            (TOP2, BOT2, pos_max, "MiB of WAL after start"),
        ] {
            let _ = writeln!(
                s,
                r##"<path d="M{LEFT},{top} L{LEFT},{bot} L{:.1},{bot}" stroke="#333" fill="none"/>"##,
                W - RIGHT
            );
            let step = nice_step(vmax, 5.0);
            let mut v = 0.0;
            while v <= vmax + 1e-9 {
                let yv = bot - v / vmax * (bot - top);
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{}</text><path d="M{LEFT},{yv:.1} L{:.1},{yv:.1}" stroke="#eee"/>"##,
                    LEFT - 6.0,
                    yv + 4.0,
                    tick_label(v, step),
                    W - RIGHT
                );
                v += step;
            }
            let mid = (top + bot) / 2.0;
            let _ = writeln!(
                s,
                r##"<text x="20" y="{mid:.1}" transform="rotate(-90 20 {mid:.1})" text-anchor="middle" fill="#333">{label}</text>"##
            );
        }
        let step = nice_step(t_max / 1000.0, 8.0);
        let mut t = 0.0;
        while t * 1000.0 <= t_max + 1e-9 {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{} s</text>"##,
                x(t * 1000.0),
                BOT2 + 18.0,
                tick_label(t, step)
            );
            t += step;
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">time since start</text>"##,
            (LEFT + W - RIGHT) / 2.0,
            H - 18.0
        );
        // Threshold of the WAL-return check.
        let yt = y1(r.threshold as f64 / MIB);
        let _ = writeln!(
            s,
            r##"<path d="M{LEFT},{yt:.1} L{:.1},{yt:.1}" stroke="#999" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" fill="#777" font-size="10" text-anchor="end">threshold</text>"##,
            W - RIGHT,
            W - RIGHT - 2.0,
            yt - 3.0
        );
        // Markers.
        for f in &r.faults {
            if let Some(t) = f.record.applied_ms {
                let xm = x(t as f64);
                for (top, bot) in [(TOP1, BOT1), (TOP2, BOT2)] {
                    let _ = writeln!(
                        s,
                        r##"<path d="M{xm:.1},{top} L{xm:.1},{bot}" stroke="#d62728" stroke-dasharray="4 3"/>"##
                    );
                }
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" fill="#d62728" font-size="10">{}</text>"##,
                    xm + 2.0,
                    TOP1 + 28.0,
                    f.record.planned.kind.as_str()
                );
            }
        }
        for e in &r.evictions {
            let xm = x(e.at_ms as f64);
            for (top, bot) in [(TOP1, BOT1), (TOP2, BOT2)] {
                let _ = writeln!(
                    s,
                    r##"<path d="M{xm:.1},{top} L{xm:.1},{bot}" stroke="#2ca02c"/>"##
                );
            }
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#2ca02c" font-size="10">evict</text>"##,
                xm + 2.0,
                TOP1 + 40.0
            );
        }
        if let Some(t) = r.stop_ms {
            let xm = x(t as f64);
            for (top, bot) in [(TOP1, BOT1), (TOP2, BOT2)] {
                let _ = writeln!(
                    s,
                    r##"<path d="M{xm:.1},{top} L{xm:.1},{bot}" stroke="#777" stroke-dasharray="1 3"/>"##
                );
            }
            let (lx, anchor) = if xm > W - RIGHT - 80.0 {
                (xm - 2.0, "end")
            } else {
                (xm + 2.0, "start")
            };
            let _ = writeln!(
                s,
                r##"<text x="{lx:.1}" y="{:.1}" fill="#777" font-size="10" text-anchor="{anchor}">load stops</text>"##,
                TOP2 + 28.0
            );
        }
        let _ = writeln!(
            s,
            r##"<polyline points="{retained}" fill="none" stroke="#9467bd" stroke-width="1.5"/>"##
        );
        let _ = writeln!(
            s,
            r##"<polyline points="{newest}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##
        );
        let _ = writeln!(
            s,
            r##"<polyline points="{confirmed}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>"##
        );
        // Legends.
        let lx = LEFT + 10.0;
        let _ = writeln!(
            s,
            r##"<g font-size="11"><path d="M{lx},{:.1} l20,0" stroke="#9467bd" stroke-width="2"/><text x="{:.1}" y="{:.1}">retained WAL</text><path d="M{:.1},{:.1} l20,0" stroke="#d62728" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}">fault</text><path d="M{:.1},{:.1} l20,0" stroke="#2ca02c"/><text x="{:.1}" y="{:.1}">eviction</text></g>"##,
            TOP1 + 6.0,
            lx + 24.0,
            TOP1 + 10.0,
            lx + 120.0,
            TOP1 + 6.0,
            lx + 144.0,
            TOP1 + 10.0,
            lx + 190.0,
            TOP1 + 6.0,
            lx + 214.0,
            TOP1 + 10.0
        );
        let _ = writeln!(
            s,
            r##"<g font-size="11"><path d="M{lx},{:.1} l20,0" stroke="#1f77b4" stroke-width="2"/><text x="{:.1}" y="{:.1}">newest streamed commit</text><path d="M{:.1},{:.1} l20,0" stroke="#ff7f0e" stroke-width="2"/><text x="{:.1}" y="{:.1}">slot confirmed_flush_lsn</text></g>"##,
            TOP2 + 6.0,
            lx + 24.0,
            TOP2 + 10.0,
            lx + 180.0,
            TOP2 + 6.0,
            lx + 204.0,
            TOP2 + 10.0
        );
        s.push_str("</svg>\n");
        s
    }
}
