//! `tidemark replay`: the JSON-lines contract, checked line by line against hand-computed
//! outputs (these expected lines *are* the contract).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// Runs `tidemark` with `args`, feeding `stdin`.
fn tidemark(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidemark");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_owned();
    let feeder = std::thread::spawn(move || input.write_all(data.as_bytes()));
    let out = child.wait_with_output().expect("wait tidemark");
    feeder.join().unwrap().expect("write stdin");
    out
}

/// Replays `trace` through stdin; returns the output lines and the exit status.
fn replay(trace: &str) -> (Vec<String>, i32) {
    let out = tidemark(&["replay", "-"], trace);
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    (
        stdout.lines().map(str::to_owned).collect(),
        out.status.code().expect("exit status"),
    )
}

/// Replays `trace` and asserts the exact output lines and a successful exit.
fn assert_replay(trace: &str, expected: &[&str]) {
    let (lines, status) = replay(trace);
    assert_eq!(lines, expected, "trace:\n{trace}");
    assert_eq!(status, 0);
}

/// A trace from one line per command (plus optional blank lines as given).
fn trace(lines: &[&str]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

const BASIC: &[&str] = &[
    r#"{"cmd":"commit","offset":[10,0],"writers":["a","b"],"now":1}"#,
    r#"{"cmd":"commit","offset":[11,2],"writers":["b"],"now":2}"#,
    r#"{"cmd":"commit","offset":[12,1],"writers":["a","c"],"now":3}"#,
    r#"{"cmd":"flushed","writer":"c","offset":[12,1],"now":4}"#,
    r#"{"cmd":"flushed","writer":"b","offset":[10,0],"now":5}"#,
    "",
    r#"{"cmd":"flushed","writer":"a","offset":[10,0],"now":6}"#,
    r#"{"cmd":"flushed","writer":"b","offset":[11,2],"now":7}"#,
    r#"{"cmd":"commit","offset":[11,5],"writers":["a"],"now":8}"#,
    r#"{"cmd":"commit","offset":[13],"writers":["a"]}"#,
    "   ",
    r#"{"cmd":"remove","writer":"a"}"#,
    r#"{"cmd":"commit","offset":[13,0],"writers":["a"],"now":9}"#,
    r#"{"cmd":"flushed","writer":"a","offset":[13,0],"now":10}"#,
];

const BASIC_OUT: &[&str] = &[
    r#"{"ack":9}"#,
    r#"{"ack":9}"#,
    r#"{"ack":9}"#,
    // c completes; a and b still owe commit 10.
    r#"{"ack":9}"#,
    // b's partial report covers its part of commit 10; a still owes it.
    r#"{"ack":9}"#,
    // a's partial report: commit 10 is done everywhere; b owes 11.
    r#"{"ack":10}"#,
    // b completes; a owes 12.
    r#"{"ack":11}"#,
    r#"{"ack":11,"error":"offset_regressed"}"#,
    r#"{"ack":11,"error":"malformed","line":10,"detail":"\"offset\" must be [TX,OP] with non-negative integers"}"#,
    // a is gone: nothing pending, the ack is the last commit.
    r#"{"ack":12}"#,
    // "a" again is a new writer.
    r#"{"ack":12}"#,
    r#"{"ack":13}"#,
];

#[test]
fn basic_trace_from_stdin() {
    let (lines, status) = replay(&trace(BASIC));
    assert_eq!(lines, BASIC_OUT);
    assert_eq!(status, 1, "a malformed line makes the exit status 1");
}

#[test]
fn basic_trace_from_file() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tidemark-basic-trace.jsonl");
    std::fs::write(&path, trace(BASIC)).unwrap();
    let out = tidemark(&["replay", path.to_str().unwrap()], "");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), BASIC_OUT);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn well_formed_trace_exits_zero_and_crlf_is_accepted() {
    let input = "{\"cmd\":\"commit\",\"offset\":[1,0],\"writers\":[]}\r\n\r\n\
                 {\"cmd\":\"commit\",\"offset\":[2,0],\"writers\":[\"x\"]}\r\n";
    assert_replay(input, &[r#"{"ack":1}"#, r#"{"ack":1}"#]);
}

#[test]
fn empty_input_prints_nothing() {
    assert_replay("", &[]);
    assert_replay("\n\n  \n", &[]);
}

#[test]
fn last_line_without_newline_is_processed() {
    assert_replay(
        r#"{"cmd":"commit","offset":[4,0],"writers":[]}"#,
        &[r#"{"ack":4}"#],
    );
}

#[test]
fn rejected_commits_change_nothing() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"commit","offset":[5,0],"writers":["a"]}"#,
            r#"{"cmd":"commit","offset":[5,1],"writers":["b"]}"#,
            r#"{"cmd":"commit","offset":[18446744073709551615,0],"writers":["a"]}"#,
            r#"{"cmd":"flushed","writer":"a","offset":[5,0]}"#,
            // b was registered by the rejected commit but owes nothing.
            r#"{"cmd":"commit","offset":[6,0],"writers":[]}"#,
        ]),
        &[
            r#"{"ack":4}"#,
            r#"{"ack":4,"error":"offset_regressed"}"#,
            r#"{"ack":4,"error":"invalid_argument"}"#,
            r#"{"ack":5}"#,
            r#"{"ack":6}"#,
        ],
    );
}

#[test]
fn late_flush_and_unknown_names_are_harmless() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"flushed","writer":"ghost","offset":[1,0]}"#,
            r#"{"cmd":"remove","writer":"nobody"}"#,
            r#"{"cmd":"commit","offset":[3,0],"writers":["a","a"]}"#,
            r#"{"cmd":"flushed","writer":"a","offset":[3,0],"extra":{"ignored":true}}"#,
            r#"{"cmd":"flushed","writer":"a","offset":[3,0]}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":null}"#,
            r#"{"ack":2}"#,
            r#"{"ack":3}"#,
            r#"{"ack":3}"#,
        ],
    );
}

#[test]
fn malformed_lines_report_line_numbers_and_processing_continues() {
    let input = trace(&[
        r#"{"cmd":"commit","offset":[1,0],"writers":["a"]}"#,
        "not json",
        "",
        "[1,2]",
        r#"{"offset":[1,0]}"#,
        r#"{"cmd":"frobnicate"}"#,
        r#"{"cmd":"commit","offset":[2,0,0],"writers":[]}"#,
        r#"{"cmd":"commit","offset":[-2,0],"writers":[]}"#,
        r#"{"cmd":"commit","offset":[2,0],"writers":["a",7]}"#,
        r#"{"cmd":"commit","offset":[2,0]}"#,
        r#"{"cmd":"flushed","offset":[1,0]}"#,
        r#"{"cmd":"flushed","writer":"a","offset":[1,0],"now":-1}"#,
        r#"{"cmd":"config"}"#,
        r#"{"cmd":"config","stall_grace_ms":"5"}"#,
        r#"{"cmd":"config","stall_grace_ms":1.5}"#,
        r#"{"cmd":"down","writer":"a","class":"nap"}"#,
        r#"{"cmd":"down","writer":"a"}"#,
        r#"{"cmd":"flushed","writer":"a","offset":[1,0]}"#,
    ]);
    let (lines, status) = replay(&input);
    assert_eq!(status, 1);
    assert_eq!(lines.len(), 17);
    assert_eq!(lines[0], r#"{"ack":0}"#);
    assert_eq!(
        lines[1],
        r#"{"ack":0,"error":"malformed","line":2,"detail":"expected ident at line 1 column 2"}"#
    );
    assert_eq!(
        lines[2],
        r#"{"ack":0,"error":"malformed","line":4,"detail":"expected a JSON object"}"#
    );
    assert_eq!(
        lines[3],
        r#"{"ack":0,"error":"malformed","line":5,"detail":"missing \"cmd\""}"#
    );
    assert_eq!(
        lines[4],
        r#"{"ack":0,"error":"malformed","line":6,"detail":"unknown cmd \"frobnicate\""}"#
    );
    for (i, line) in lines.iter().enumerate().take(16).skip(5) {
        let prefix = format!(
            r#"{{"ack":0,"error":"malformed","line":{},"detail":"#,
            i + 2
        );
        assert!(
            line.starts_with(&prefix),
            "{line} should start with {prefix}"
        );
    }
    // Processing went on: the last line is a normal one.
    assert_eq!(lines[16], r#"{"ack":1}"#);
}

#[test]
fn killed_writer_is_evicted_as_orphaned_past_the_grace_period() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"config","stall_grace_ms":1000}"#,
            r#"{"cmd":"commit","offset":[5,0],"writers":["a","b"],"now":0}"#,
            r#"{"cmd":"commit","offset":[6,0],"writers":["a","b"],"now":10}"#,
            r#"{"cmd":"flushed","writer":"a","offset":[6,0],"now":20}"#,
            r#"{"cmd":"down","writer":"b","class":"teardown","now":30}"#,
            r#"{"cmd":"sweep","now":500}"#,
            r#"{"cmd":"sweep","now":1000}"#,
            r#"{"cmd":"sweep","now":1001}"#,
            r#"{"cmd":"sweep","now":5000}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4}"#,
            // Orphaned but still pinned.
            r#"{"ack":4}"#,
            r#"{"ack":4}"#,
            // The grace period is strict: 1000 ms without progress is not past it.
            r#"{"ack":4}"#,
            // No challenge for an orphan: evicted at the first sweep past the grace period.
            r#"{"ack":6,"events":[{"type":"evicted","writer":"b","reason":"orphaned"}]}"#,
            r#"{"ack":6}"#,
        ],
    );
}

#[test]
fn wedged_writer_is_challenged_then_evicted() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"config","stall_grace_ms":1000}"#,
            r#"{"cmd":"commit","offset":[5,0],"writers":["w"],"now":0}"#,
            r#"{"cmd":"commit","offset":[6,0],"writers":["w"],"now":900}"#,
            r#"{"cmd":"sweep","now":1001}"#,
            r#"{"cmd":"sweep","now":1002}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4}"#,
            // New commits are not progress: past the grace period since 0.
            r#"{"ack":4,"events":[{"type":"challenged","writer":"w"}]}"#,
            r#"{"ack":6,"events":[{"type":"evicted","writer":"w","reason":"stalled"}]}"#,
        ],
    );
}

#[test]
fn touched_writer_survives_and_is_challenged_again_later() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"config","stall_grace_ms":1000}"#,
            r#"{"cmd":"commit","offset":[5,0],"writers":["w"],"now":0}"#,
            r#"{"cmd":"sweep","now":1001}"#,
            r#"{"cmd":"touch","writer":"w","now":1200}"#,
            r#"{"cmd":"sweep","now":1300}"#,
            r#"{"cmd":"sweep","now":2200}"#,
            r#"{"cmd":"sweep","now":2201}"#,
            r#"{"cmd":"sweep","now":2300}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4,"events":[{"type":"challenged","writer":"w"}]}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4,"events":[{"type":"challenged","writer":"w"}]}"#,
            r#"{"ack":5,"events":[{"type":"evicted","writer":"w","reason":"stalled"}]}"#,
        ],
    );
}

#[test]
fn flush_progress_rearms_the_grace_period() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"config","stall_grace_ms":1000}"#,
            r#"{"cmd":"commit","offset":[5,0],"writers":["w"],"now":0}"#,
            r#"{"cmd":"commit","offset":[6,0],"writers":["w"],"now":0}"#,
            r#"{"cmd":"flushed","writer":"w","offset":[5,0],"now":800}"#,
            r#"{"cmd":"sweep","now":1500}"#,
            r#"{"cmd":"sweep","now":1801}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":4}"#,
            r#"{"ack":4}"#,
            r#"{"ack":5}"#,
            r#"{"ack":5}"#,
            r#"{"ack":5,"events":[{"type":"challenged","writer":"w"}]}"#,
        ],
    );
}

#[test]
fn crash_down_evicts_at_once() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"commit","offset":[7,0],"writers":["a","b"]}"#,
            r#"{"cmd":"down","writer":"a","class":"crash","now":5}"#,
            r#"{"cmd":"flushed","writer":"b","offset":[7,0]}"#,
        ]),
        &[
            r#"{"ack":6}"#,
            r#"{"ack":6,"events":[{"type":"evicted","writer":"a","reason":"crashed"}]}"#,
            r#"{"ack":7}"#,
        ],
    );
}

#[test]
fn cleanup_down_reports_removed_and_unpins() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"commit","offset":[7,0],"writers":["a"]}"#,
            r#"{"cmd":"down","writer":"a","class":"cleanup","now":5}"#,
            // The name was forgotten: a new idle writer, a late (ignored) report.
            r#"{"cmd":"flushed","writer":"a","offset":[7,0]}"#,
            r#"{"cmd":"down","writer":"idle","class":"cleanup"}"#,
        ]),
        &[
            r#"{"ack":6}"#,
            r#"{"ack":7,"events":[{"type":"removed","writer":"a"}]}"#,
            r#"{"ack":7}"#,
            r#"{"ack":7,"events":[{"type":"removed","writer":"idle"}]}"#,
        ],
    );
}

#[test]
fn paused_writer_is_not_challenged_until_resumed() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"config","stall_grace_ms":1000}"#,
            r#"{"cmd":"commit","offset":[3,0],"writers":["p","q"],"now":0}"#,
            r#"{"cmd":"pause","writer":"p"}"#,
            r#"{"cmd":"sweep","now":5000}"#,
            r#"{"cmd":"sweep","now":6000}"#,
            r#"{"cmd":"stalled","now":6000}"#,
            r#"{"cmd":"resume","writer":"p","now":6000}"#,
            r#"{"cmd":"sweep","now":7000}"#,
            r#"{"cmd":"sweep","now":7001}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":2}"#,
            r#"{"ack":2}"#,
            r#"{"ack":2,"events":[{"type":"challenged","writer":"q"}]}"#,
            // q is gone; p, paused, still pins the ack.
            r#"{"ack":2,"events":[{"type":"evicted","writer":"q","reason":"stalled"}]}"#,
            r#"{"ack":2,"stalled":[]}"#,
            r#"{"ack":2}"#,
            // The grace period re-armed at resume.
            r#"{"ack":2}"#,
            r#"{"ack":2,"events":[{"type":"challenged","writer":"p"}]}"#,
        ],
    );
}

#[test]
fn stalled_query_lists_names_sorted_and_acts_on_nothing() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"config","stall_grace_ms":1000}"#,
            r#"{"cmd":"commit","offset":[1,0],"writers":["zeta","alpha","mid"],"now":0}"#,
            r#"{"cmd":"commit","offset":[2,0],"writers":["beta"],"now":600}"#,
            r#"{"cmd":"pause","writer":"mid"}"#,
            r#"{"cmd":"stalled","now":1000}"#,
            r#"{"cmd":"stalled","now":1001}"#,
            r#"{"cmd":"stalled","now":1601}"#,
            r#"{"cmd":"flushed","writer":"zeta","offset":[1,0],"now":1700}"#,
            r#"{"cmd":"stalled","now":1700}"#,
            r#"{"cmd":"remove","writer":"beta"}"#,
            // The queries challenged nothing: the first sweep only challenges.
            r#"{"cmd":"sweep","now":1700}"#,
            r#"{"cmd":"stalled","now":1700}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":0}"#,
            r#"{"ack":0}"#,
            r#"{"ack":0}"#,
            r#"{"ack":0,"stalled":[]}"#,
            r#"{"ack":0,"stalled":["alpha","zeta"]}"#,
            r#"{"ack":0,"stalled":["alpha","beta","zeta"]}"#,
            r#"{"ack":0}"#,
            r#"{"ack":0,"stalled":["alpha","beta"]}"#,
            r#"{"ack":0}"#,
            r#"{"ack":0,"events":[{"type":"challenged","writer":"alpha"}]}"#,
            r#"{"ack":0,"stalled":["alpha"]}"#,
        ],
    );
}

#[test]
fn name_reuse_after_eviction_registers_a_fresh_writer() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"config","stall_grace_ms":1000}"#,
            r#"{"cmd":"commit","offset":[1,0],"writers":["w"],"now":0}"#,
            r#"{"cmd":"sweep","now":1001}"#,
            r#"{"cmd":"sweep","now":1002}"#,
            // Not "evicted": a new writer under the old name.
            r#"{"cmd":"commit","offset":[2,0],"writers":["w"],"now":1100}"#,
            r#"{"cmd":"sweep","now":1200}"#,
            r#"{"cmd":"touch","writer":"w","now":1300}"#,
            r#"{"cmd":"flushed","writer":"w","offset":[2,0],"now":1400}"#,
            r#"{"cmd":"down","writer":"w","class":"crash"}"#,
            r#"{"cmd":"pause","writer":"w"}"#,
            r#"{"cmd":"resume","writer":"w","now":1500}"#,
            r#"{"cmd":"commit","offset":[3,0],"writers":["w"],"now":1500}"#,
            r#"{"cmd":"flushed","writer":"w","offset":[3,0],"now":1600}"#,
        ]),
        &[
            r#"{"ack":null}"#,
            r#"{"ack":0}"#,
            r#"{"ack":0,"events":[{"type":"challenged","writer":"w"}]}"#,
            r#"{"ack":1,"events":[{"type":"evicted","writer":"w","reason":"stalled"}]}"#,
            r#"{"ack":1}"#,
            r#"{"ack":1}"#,
            r#"{"ack":1}"#,
            r#"{"ack":2}"#,
            r#"{"ack":2,"events":[{"type":"evicted","writer":"w","reason":"crashed"}]}"#,
            r#"{"ack":2}"#,
            r#"{"ack":2}"#,
            r#"{"ack":2}"#,
            r#"{"ack":3}"#,
        ],
    );
}

#[test]
fn names_are_escaped_in_output() {
    assert_replay(
        &trace(&[
            r#"{"cmd":"commit","offset":[1,0],"writers":["quo\"te\\ü\n"]}"#,
            r#"{"cmd":"stalled","now":60001}"#,
        ]),
        &[r#"{"ack":0}"#, r#"{"ack":0,"stalled":["quo\"te\\ü\n"]}"#],
    );
}

#[test]
fn example_trace_replays_cleanly() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl");
    let out = tidemark(&["replay", path], "");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    let input = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        lines.len(),
        input.lines().filter(|l| !l.trim().is_empty()).count()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""error":"offset_regressed""#))
    );
    assert_eq!(
        lines.last().copied(),
        Some(r#"{"ack":13,"events":[{"type":"evicted","writer":"shape-b","reason":"orphaned"}]}"#)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["replay"][..],
        &["replay", "a", "b"][..],
        &["replay", "/nonexistent/tidemark/trace.jsonl"][..],
    ] {
        let out = tidemark(args, "");
        assert_eq!(out.status.code(), Some(2), "args {args:?}");
        assert!(out.stdout.is_empty(), "args {args:?}");
        assert!(!out.stderr.is_empty(), "args {args:?}");
    }
}

#[test]
fn help_lists_replay() {
    for args in [&["--help"][..], &["help"][..], &["-h"][..]] {
        let out = tidemark(args, "");
        assert_eq!(out.status.code(), Some(0));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains("replay FILE|-"), "{stdout}");
    }
}
