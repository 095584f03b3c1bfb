//! Fuzz target `replay`: the `tidemark replay` driver (`cli/src/replay.rs`, compiled in here as
//! a module because it lives in the binary crate), fed two ways from every input:
//!
//! 1. **Raw bytes**: the input itself is the trace. The driver must not panic, must print
//!    exactly one JSON object per non-blank input line, each with an `ack` that is `null` or
//!    an integer, and the acks must never move backwards.
//! 2. **Structured trace**: the same bytes, read with `arbitrary`, become a trace of well-formed
//!    commands (commits, flush reports of every kind, removes, downs, touches, pauses, sweeps,
//!    `stalled` queries, config changes, and a few malformed lines). It is rendered as JSON
//!    lines, replayed, and checked line by line against `tidemark_testkit::model::ExactModel` driven
//!    with the same operations under the same naming rules: the ack after every line, the
//!    error code, the events (as a set of `(type, writer, reason)`) and the `stalled` answer.
#![no_main]

use std::collections::{BTreeSet, HashMap};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidemark::{DownClass, Event, Offset, WriterId};
use tidemark_testkit::model::ExactModel;

// What `cli/src/replay.rs` expects at its crate root (`crate::USAGE`, `crate::EXIT_USAGE`,
// `crate::usage_error`), as in `cli/src/main.rs`; only its `main` uses them.
const USAGE: &str = "usage: tidemark replay FILE|-\n";
const EXIT_USAGE: u8 = 2;
fn usage_error(msg: &str) -> std::process::ExitCode {
    eprintln!("tidemark: {msg}\n\n{USAGE}");
    std::process::ExitCode::from(EXIT_USAGE)
}

#[allow(dead_code)] // `replay::main` (argument handling) is not reachable from here.
#[path = "../../cli/src/replay.rs"]
mod replay;

/// At most this many structured lines, so a trace never delivers more than the tracker's
/// default call budget (1 024) in total: without a backlog the ack must be exact.
const MAX_LINES: usize = 200;
/// Writers are named `w0` .. `w5`.
const NAMES: u8 = 6;

/// Replays `input`; returns the output lines and whether every line was well formed.
fn run_replay(input: &[u8]) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let ok = replay::run(input, &mut out).expect("writing to a Vec cannot fail");
    let text = std::str::from_utf8(&out).expect("replay prints UTF-8");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("every output line is JSON"))
        .collect();
    (lines, ok)
}

/// The `ack` of an output line (`None` for `null`).
fn ack_of(line: &Value) -> Option<u64> {
    match line.get("ack").expect("every output line has an ack") {
        Value::Null => None,
        v => Some(v.as_u64().expect("ack is a non-negative integer")),
    }
}

/// Part 1: raw bytes.
fn check_raw(data: &[u8]) {
    let (lines, _) = run_replay(data);
    // One output line per non-blank input line (`\n`-separated, `\r\n` tolerated).
    let expected = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    assert_eq!(
        lines.len(),
        expected,
        "one output line per non-blank input line"
    );
    let mut last = None;
    for line in &lines {
        let ack = ack_of(line);
        assert!(ack >= last, "ack moved backwards: {last:?} -> {ack:?}");
        last = ack;
    }
}

/// One structured command. Writer fields are indexes into `w0..w5`; times are deltas.
#[derive(Arbitrary, Debug)]
enum Cmd {
    /// `step == 0`: a regressed (equal) tx; `huge`: tx = u64::MAX (invalid).
    Commit {
        step: u8,
        op: u8,
        writers: Vec<u8>,
        dt: u8,
        huge: bool,
    },
    /// `kind`: 0 partial, 1 an earlier commit's offset, 2 beyond last_sent, 3 lowered old
    /// offset, 4 exactly last_sent, else an arbitrary offset.
    Flushed {
        w: u8,
        kind: u8,
        pick: u8,
        tx: u64,
        op: u64,
        dt: u8,
    },
    Remove(u8),
    Config(u16),
    Down(u8, u8, u8),
    Touch(u8, u8),
    Pause(u8),
    Resume(u8, u8),
    Sweep(u16),
    Stalled(u8),
    /// A line the parser must reject (`kind` picks which).
    Malformed(u8),
}

/// The ExactModel side of a replay, with the driver's naming rules: a name registers a writer
/// on its first mention; after `remove`, a `cleanup` down or an eviction it is forgotten (and
/// the writer unregistered), so the next mention registers a new one.
struct Mirror {
    m: ExactModel,
    ids: HashMap<String, WriterId>,
    names: HashMap<WriterId, String>,
    commits: Vec<Offset>,
    next_tx: u64,
    now: u64,
}

/// What the model expects of one output line.
#[derive(Debug, PartialEq)]
struct Expect {
    ack: Option<u64>,
    error: Option<String>,
    events: BTreeSet<(String, String, Option<String>)>,
    stalled: Option<Vec<String>>,
}

impl Mirror {
    fn id(&mut self, name: &str) -> WriterId {
        if let Some(&w) = self.ids.get(name) {
            return w;
        }
        let w = self.m.register();
        self.ids.insert(name.to_owned(), w);
        self.names.insert(w, name.to_owned());
        w
    }

    fn forget(&mut self, w: WriterId) {
        if let Some(name) = self.names.remove(&w) {
            self.ids.remove(&name);
            let _ = self.m.unregister(w);
        }
    }

    /// Applies `cmd` to the model; returns the JSON line and what the output must say.
    fn step(&mut self, cmd: &Cmd) -> (String, Expect) {
        let name = |i: u8| format!("w{}", i % NAMES);
        let mut retire = Vec::new();
        let mut stalled = None;
        let (line, result): (String, Result<(), tidemark::TrackerError>) = match cmd {
            Cmd::Commit {
                step,
                op,
                writers,
                dt,
                huge,
            } => {
                self.now += u64::from(*dt);
                let tx = if *huge {
                    u64::MAX
                } else if *step == 0 {
                    self.next_tx.saturating_sub(1)
                } else {
                    self.next_tx + u64::from(*step % 3)
                };
                let names: Vec<String> = writers.iter().take(4).map(|&i| name(i)).collect();
                let ids: Vec<WriterId> = names.iter().map(|n| self.id(n)).collect();
                let offset = Offset::new(tx, u64::from(*op % 4));
                let r = self.m.commit(offset, &ids, self.now);
                if r.is_ok() {
                    self.commits.push(offset);
                    self.next_tx = tx + 1;
                }
                let line = format!(
                    r#"{{"cmd":"commit","offset":[{},{}],"writers":{},"now":{}}}"#,
                    offset.tx,
                    offset.op,
                    serde_json::to_string(&names).unwrap(),
                    self.now
                );
                (line, r)
            }
            Cmd::Flushed {
                w,
                kind,
                pick,
                tx,
                op,
                dt,
            } => {
                self.now += u64::from(*dt);
                let n = name(*w);
                let id = self.id(&n);
                let last_sent = self.m.last_sent(id);
                let old = (!self.commits.is_empty())
                    .then(|| self.commits[*pick as usize % self.commits.len()]);
                let offset = match (kind % 6, last_sent) {
                    (0, Some(ls)) if ls.op > 0 => Offset::new(ls.tx, ls.op - 1),
                    (0, Some(ls)) => Offset::new(ls.tx.saturating_sub(1), 7),
                    (1, _) => old.unwrap_or(Offset::ZERO),
                    (2, Some(ls)) => Offset::new(ls.tx + 1, 0),
                    (3, _) => old.map_or(Offset::ZERO, |o| Offset::new(o.tx, o.op / 2)),
                    (4, Some(ls)) => ls,
                    _ => Offset::new(*tx, *op),
                };
                let r = self.m.flushed(id, offset, self.now);
                let line = format!(
                    r#"{{"cmd":"flushed","writer":"{n}","offset":[{},{}],"now":{}}}"#,
                    offset.tx, offset.op, self.now
                );
                (line, r)
            }
            Cmd::Remove(w) => {
                let n = name(*w);
                let id = self.id(&n);
                let r = self.m.remove(id);
                if r.is_ok() {
                    retire.push(id);
                }
                (format!(r#"{{"cmd":"remove","writer":"{n}"}}"#), r)
            }
            Cmd::Config(g) => {
                self.m.set_stall_grace_ms(u64::from(*g));
                (
                    format!(r#"{{"cmd":"config","stall_grace_ms":{g}}}"#),
                    Ok(()),
                )
            }
            Cmd::Down(w, class, dt) => {
                self.now += u64::from(*dt);
                let n = name(*w);
                let id = self.id(&n);
                let (class, text) = match class % 3 {
                    0 => (DownClass::Crash, "crash"),
                    1 => (DownClass::Cleanup, "cleanup"),
                    _ => (DownClass::Teardown, "teardown"),
                };
                let r = self.m.down(id, class, self.now);
                let line = format!(
                    r#"{{"cmd":"down","writer":"{n}","class":"{text}","now":{}}}"#,
                    self.now
                );
                (line, r)
            }
            Cmd::Touch(w, dt) => {
                self.now += u64::from(*dt);
                let n = name(*w);
                let id = self.id(&n);
                let r = self.m.touch(id, self.now);
                let line = format!(r#"{{"cmd":"touch","writer":"{n}","now":{}}}"#, self.now);
                (line, r)
            }
            Cmd::Pause(w) => {
                let n = name(*w);
                let id = self.id(&n);
                (
                    format!(r#"{{"cmd":"pause","writer":"{n}"}}"#),
                    self.m.pause(id),
                )
            }
            Cmd::Resume(w, dt) => {
                self.now += u64::from(*dt);
                let n = name(*w);
                let id = self.id(&n);
                let r = self.m.resume(id, self.now);
                let line = format!(r#"{{"cmd":"resume","writer":"{n}","now":{}}}"#, self.now);
                (line, r)
            }
            Cmd::Sweep(dt) => {
                self.now += u64::from(*dt);
                self.m.sweep(self.now);
                (format!(r#"{{"cmd":"sweep","now":{}}}"#, self.now), Ok(()))
            }
            Cmd::Stalled(dt) => {
                self.now += u64::from(*dt);
                let mut names: Vec<String> = self
                    .m
                    .stalled(self.now)
                    .into_iter()
                    .map(|w| self.names[&w].clone())
                    .collect();
                names.sort_unstable();
                stalled = Some(names);
                (format!(r#"{{"cmd":"stalled","now":{}}}"#, self.now), Ok(()))
            }
            Cmd::Malformed(kind) => {
                let line = match kind % 6 {
                    0 => r#"{"cmd":"commit","offset":[1],"writers":["w0"]}"#,
                    1 => r#"{"cmd":"flushed","writer":7,"offset":[1,0]}"#,
                    2 => r#"{"cmd":"launch"}"#,
                    3 => r#"[1,2,3]"#,
                    4 => r#"{"cmd":"sweep","now":-1}"#,
                    _ => r#"{"cmd":"commit","offset":[1,0],"writers":["w0""#,
                };
                let expect = Expect {
                    ack: self.m.ack(),
                    error: Some("malformed".into()),
                    events: BTreeSet::new(),
                    stalled: None,
                };
                return (line.to_owned(), expect);
            }
        };
        let mut events = BTreeSet::new();
        for ev in self.m.take_events() {
            let (kind, w, reason) = match ev {
                Event::Challenged(w) => ("challenged", w, None),
                Event::Evicted(w, r) => ("evicted", w, Some(r.as_str().to_owned())),
                Event::Removed(w) => ("removed", w, None),
            };
            events.insert((kind.to_owned(), self.names[&w].clone(), reason));
            if !matches!(ev, Event::Challenged(_)) {
                retire.push(w);
            }
        }
        for w in retire {
            self.forget(w);
        }
        let expect = Expect {
            ack: self.m.ack(),
            error: result.err().map(|e| e.code().to_owned()),
            events,
            stalled,
        };
        (line, expect)
    }
}

/// What an output line says, in the shape of [`Expect`].
fn observed(line: &Value) -> Expect {
    let events = line
        .get("events")
        .and_then(Value::as_array)
        .map(|evs| {
            evs.iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap().to_owned(),
                        e["writer"].as_str().unwrap().to_owned(),
                        e.get("reason").map(|r| r.as_str().unwrap().to_owned()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Expect {
        ack: ack_of(line),
        error: line.get("error").map(|e| e.as_str().unwrap().to_owned()),
        events,
        stalled: line.get("stalled").map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()
        }),
    }
}

/// Part 2: the structured trace against the exact model.
fn check_structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(cmds) = u.arbitrary_iter::<Cmd>().and_then(|it| {
        it.take(MAX_LINES)
            .collect::<Result<Vec<Cmd>, arbitrary::Error>>()
    }) else {
        return;
    };
    let mut mirror = Mirror {
        m: ExactModel::new(None, 60_000),
        ids: HashMap::new(),
        names: HashMap::new(),
        commits: Vec::new(),
        next_tx: 1,
        now: 0,
    };
    let mut trace = String::new();
    let mut expected = Vec::new();
    for cmd in &cmds {
        let (line, expect) = mirror.step(cmd);
        trace.push_str(&line);
        trace.push('\n');
        expected.push(expect);
    }
    let (lines, ok) = run_replay(trace.as_bytes());
    assert_eq!(lines.len(), expected.len(), "one output line per command");
    assert_eq!(
        ok,
        !cmds.iter().any(|c| matches!(c, Cmd::Malformed(_))),
        "exit status"
    );
    for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
        let got = observed(line);
        assert_eq!(
            &got,
            want,
            "line {} of the trace:\n{}",
            i + 1,
            trace.lines().nth(i).unwrap_or_default()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check_raw(data);
    check_structured(data);
});
