//! `tidemark simulate`: short seeded runs of the whole pipeline, and mutants the checks must
//! catch (so a green run means something).

use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// Simulations are timing-sensitive (grace periods): run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A short run: 2 s of commits on 2 000 writers at a bounded rate (debug builds are slow), a
/// 500 ms grace period, pauses longer than the staleness bound, faults every kind twice.
const SHORT: &[&str] = &[
    "simulate",
    "--duration",
    "2s",
    "--writers",
    "2000",
    "--rate",
    "20000",
    "--grace-ms",
    "500",
    "--sweep-ms",
    "50",
    "--pause-ms",
    "900",
    "--slow-ms",
    "50",
    "--seed",
    "7",
    "--no-progress",
];

fn simulate(extra: &[&str]) -> Output {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(BIN)
        .args(SHORT)
        .args(extra)
        .output()
        .expect("run tidemark")
}

fn json_run(extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = simulate(&args);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().expect("exit status"))
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

#[test]
fn short_seeded_run_passes_with_balanced_counts_and_bounded_evictions() {
    let (r, status) = json_run(&[]);
    assert_eq!(status, 0, "report: {r:#}");
    assert_eq!(r["passed"], true);
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c}");
    }
    // Messages: every accepted one has exactly one outcome, and nothing offered is lost.
    let m = &r["messages"];
    let accepted = u(m, &["accepted"]);
    assert!(accepted > 10_000, "too little traffic: {m}");
    assert_eq!(
        accepted,
        u(m, &["delivered"]) + u(m, &["handed_back"]) + u(m, &["failed"])
    );
    assert_eq!(u(m, &["offered"]), accepted + u(m, &["returned"]));
    assert_eq!(m["lost"], 0);
    // Evictions: exactly the kills and wedges, each within its documented bound.
    let e = &r["evictions"];
    assert_eq!(
        (u(e, &["healthy"]), u(e, &["slow"]), u(e, &["paused"])),
        (0, 0, 0)
    );
    let faults = r["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 8);
    for f in faults {
        match f["kind"].as_str().unwrap() {
            "kill" | "wedge" => {
                let want = if f["kind"] == "kill" {
                    "orphaned"
                } else {
                    "stalled"
                };
                assert_eq!(f["reason"], want, "{f}");
                assert!(u(f, &["detect_ms"]) <= u(f, &["bound_ms"]), "{f}");
                // The documented bound: G + P for orphans, G + 2P for wedged writers.
                let k = if f["kind"] == "kill" { 1 } else { 2 };
                assert_eq!(u(f, &["bound_nominal_ms"]), 500 + k * 50);
            }
            _ => assert!(f["evicted_ms"].is_null(), "{f}"),
        }
    }
    assert_eq!(u(e, &["total"]), 4);
    // The observer sampled and never saw the ack above the safe bound; the drain ended exact.
    let o = &r["observer"];
    assert!(u(o, &["samples"]) > 50);
    assert_eq!((u(o, &["violations"]), u(o, &["regressions"])), (0, 0));
    let last = u(&r["final"], &["last_commit"]);
    assert_eq!(u(&r["final"], &["ack"]), last);
    assert_eq!(u(&r["final"], &["bound"]), last);
    assert_eq!(u(&r["throughput"], &["commits"]), last);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(r["ack_lag"][key].is_u64());
    }
}

#[test]
fn text_report_and_chart() {
    let dir = std::env::temp_dir().join(format!("tidemark-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("chart.svg");
    let out = simulate(&["--faults", "4", "--chart", chart.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    for needle in [
        "throughput",
        "ack lag",
        "faults",
        "evicted orphaned",
        "evicted stalled",
        "messages",
        "[ok] ack never above the exact safe bound",
        "PASSED",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<polyline").count(), 2, "last commit and ack");
    assert!(svg.contains(">evict<") && svg.contains(">kill<"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Mutant: the sink acks batches when it takes them, before storage completes. The observer
/// must see the ack pass commits that are not durable, and the run must fail.
#[test]
fn early_ack_mutant_is_caught_by_the_observer() {
    let (r, status) = json_run(&["--inject-bug", "early-ack", "--latency-us", "5000"]);
    assert_eq!(status, 1, "{r:#}");
    assert_eq!(r["passed"], false);
    assert!(
        u(&r["observer"], &["violations"]) > 0,
        "{:#}",
        r["observer"]
    );
    let failed: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        failed.contains(&"ack never above the exact safe bound"),
        "{failed:?}"
    );
}

/// Mutant: paused writers are held back without telling the tracker. The sweep then evicts
/// them, and the run must report the bad evictions and fail.
#[test]
fn forgotten_pause_mutant_is_caught() {
    let (r, status) = json_run(&["--inject-bug", "forget-pause"]);
    assert_eq!(status, 1, "{r:#}");
    assert!(u(&r["evictions"], &["paused"]) > 0, "{:#}", r["evictions"]);
}

#[test]
fn help_and_bad_flags() {
    let out = Command::new(BIN)
        .args(["simulate", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--grace-ms"));
    for bad in [
        &["simulate", "--writers"][..],
        &["simulate", "--duration", "soon"],
        &["simulate", "--frobnicate"],
        &["simulate", "--inject-bug", "nope"],
    ] {
        let out = Command::new(BIN).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    let out = Command::new(BIN).arg("help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("simulate"));
}
