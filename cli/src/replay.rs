//! `tidemark replay FILE|-`: drives a [`Tracker`] from a JSON-lines trace.
//!
//! Every non-blank input line is one command and produces exactly one output line, in order:
//!
//! ```text
//! {"cmd":"commit","offset":[TX,OP],"writers":["name",...],"now":MS}
//! {"cmd":"flushed","writer":"name","offset":[TX,OP],"now":MS}
//! {"cmd":"remove","writer":"name"}
//! {"cmd":"config","stall_grace_ms":G}
//! {"cmd":"down","writer":"name","class":"crash|cleanup|teardown","now":MS}
//! {"cmd":"touch","writer":"name","now":MS}
//! {"cmd":"pause","writer":"name"}
//! {"cmd":"resume","writer":"name","now":MS}
//! {"cmd":"sweep","now":MS}
//! {"cmd":"stalled","now":MS}
//! ```
//!
//! `now` is optional (default 0); unknown extra fields are ignored. A writer is registered the
//! first time its name appears; after `remove`, a `cleanup` down or an eviction the name is
//! forgotten (the writer is unregistered), so its next mention registers a new writer.
//!
//! Output: `{"ack":N|null}` (the ack after the line), then as applicable `"error":"CODE"` (a
//! rejected command, which changed nothing), `"line":N,"detail":"..."` (with
//! `"error":"malformed"`: the line is not a valid command), `"events":[...]` (what the line
//! caused, in order) and `"stalled":[...]` (the `stalled` query, sorted by name). Blank lines
//! print nothing. The exit status is 1 if any line was malformed, else 0.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::process::ExitCode;

use serde_json::{Map, Value};
use tidemark::{DownClass, Event, Offset, Tracker, TrackerError, TrackerOptions, WriterId};

use crate::{EXIT_USAGE, usage_error};

/// I/O buffer size for the input and the output.
const BUF_SIZE: usize = 1 << 16;

/// Runs `tidemark replay` with the arguments after the subcommand.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let path = match args {
        [flag] if flag == "-h" || flag == "--help" => {
            print!("{}", crate::USAGE);
            return ExitCode::SUCCESS;
        }
        [path] => path.as_str(),
        [] => return usage_error("replay: missing FILE (use `-` for stdin)"),
        _ => return usage_error("replay: expected exactly one FILE"),
    };
    let stdout = io::stdout();
    let out = BufWriter::with_capacity(BUF_SIZE, stdout.lock());
    let result = if path == "-" {
        run(io::stdin().lock(), out)
    } else {
        match File::open(path) {
            Ok(f) => run(BufReader::with_capacity(BUF_SIZE, f), out),
            Err(e) => {
                eprintln!("tidemark: replay: cannot open {path}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // The reader went away (`tidemark replay big.jsonl | head`): nothing left to say.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidemark: replay: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Replays the trace from `input` into `out`. Returns `Ok(true)` if every line was well formed.
pub(crate) fn run<R: BufRead, W: Write>(mut input: R, mut out: W) -> io::Result<bool> {
    let mut replay = Replay::new();
    let mut buf = Vec::new();
    let mut line_no: u64 = 0;
    let mut all_ok = true;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let line = trim_end(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        all_ok &= replay.line(line, line_no, &mut out)?;
    }
    out.flush()?;
    Ok(all_ok)
}

/// The line without its trailing `\n` / `\r\n`.
fn trim_end(buf: &[u8]) -> &[u8] {
    let buf = buf.strip_suffix(b"\n").unwrap_or(buf);
    buf.strip_suffix(b"\r").unwrap_or(buf)
}

/// One parsed input line.
enum Cmd<'a> {
    Commit {
        offset: Offset,
        /// Validated: every element is a string.
        writers: &'a [Value],
        now: u64,
    },
    Flushed {
        writer: &'a str,
        offset: Offset,
        now: u64,
    },
    Remove {
        writer: &'a str,
    },
    Config {
        stall_grace_ms: u64,
    },
    Down {
        writer: &'a str,
        class: DownClass,
        now: u64,
    },
    Touch {
        writer: &'a str,
        now: u64,
    },
    Pause {
        writer: &'a str,
    },
    Resume {
        writer: &'a str,
        now: u64,
    },
    Sweep {
        now: u64,
    },
    Stalled {
        now: u64,
    },
}

/// Parses a command object; `Err` is the `detail` of a malformed line.
fn parse(obj: &Map<String, Value>) -> Result<Cmd<'_>, String> {
    let cmd = match obj.get("cmd") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("\"cmd\" must be a string".into()),
        None => return Err("missing \"cmd\"".into()),
    };
    let writer = || match obj.get("writer") {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err("\"writer\" must be a string".to_string()),
        None => Err("missing \"writer\"".to_string()),
    };
    let now = || match obj.get("now") {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| "\"now\" must be a non-negative integer".to_string()),
    };
    let offset = || {
        let bad = || "\"offset\" must be [TX,OP] with non-negative integers".to_string();
        match obj.get("offset") {
            Some(Value::Array(a)) => match a.as_slice() {
                [tx, op] => Ok(Offset::new(
                    tx.as_u64().ok_or_else(bad)?,
                    op.as_u64().ok_or_else(bad)?,
                )),
                _ => Err(bad()),
            },
            Some(_) => Err(bad()),
            None => Err("missing \"offset\"".to_string()),
        }
    };
    Ok(match cmd {
        "commit" => {
            let writers = match obj.get("writers") {
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.as_slice(),
                Some(_) => return Err("\"writers\" must be an array of strings".into()),
                None => return Err("missing \"writers\"".into()),
            };
            Cmd::Commit {
                offset: offset()?,
                writers,
                now: now()?,
            }
        }
        "flushed" => Cmd::Flushed {
            writer: writer()?,
            offset: offset()?,
            now: now()?,
        },
        "remove" => Cmd::Remove { writer: writer()? },
        "config" => match obj.get("stall_grace_ms") {
            Some(v) => Cmd::Config {
                stall_grace_ms: v
                    .as_u64()
                    .ok_or("\"stall_grace_ms\" must be a non-negative integer")?,
            },
            None => return Err("missing \"stall_grace_ms\"".into()),
        },
        "down" => {
            let class = match obj.get("class").and_then(Value::as_str) {
                Some("crash") => DownClass::Crash,
                Some("cleanup") => DownClass::Cleanup,
                Some("teardown") => DownClass::Teardown,
                _ => return Err("\"class\" must be \"crash\", \"cleanup\" or \"teardown\"".into()),
            };
            Cmd::Down {
                writer: writer()?,
                class,
                now: now()?,
            }
        }
        "touch" => Cmd::Touch {
            writer: writer()?,
            now: now()?,
        },
        "pause" => Cmd::Pause { writer: writer()? },
        "resume" => Cmd::Resume {
            writer: writer()?,
            now: now()?,
        },
        "sweep" => Cmd::Sweep { now: now()? },
        "stalled" => Cmd::Stalled { now: now()? },
        other => {
            let mut detail = String::from("unknown cmd ");
            detail.push_str(&serde_json::to_string(other).unwrap_or_default());
            return Err(detail);
        }
    })
}

/// The replay state: the tracker and the name ↔ id maps of the registered writers.
struct Replay {
    tracker: Tracker,
    ids: HashMap<String, WriterId>,
    names: HashMap<WriterId, String>,
    /// Reused buffers.
    events: Vec<Event>,
    commit_ids: Vec<WriterId>,
    retire: Vec<WriterId>,
}

impl Replay {
    fn new() -> Self {
        Replay {
            tracker: Tracker::new(TrackerOptions::default()).expect("default options are valid"),
            ids: HashMap::new(),
            names: HashMap::new(),
            events: Vec::new(),
            commit_ids: Vec::new(),
            retire: Vec::new(),
        }
    }

    /// Processes one non-blank line and writes its output line. Returns whether it was well
    /// formed.
    fn line<W: Write>(&mut self, line: &[u8], line_no: u64, out: &mut W) -> io::Result<bool> {
        let value = serde_json::from_slice::<Value>(line);
        let cmd = match &value {
            Ok(Value::Object(obj)) => parse(obj),
            Ok(_) => Err("expected a JSON object".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let cmd = match cmd {
            Ok(cmd) => cmd,
            Err(detail) => {
                self.write_ack(out)?;
                out.write_all(b",\"error\":\"malformed\",\"line\":")?;
                write!(out, "{line_no}")?;
                out.write_all(b",\"detail\":")?;
                write_str(out, &detail)?;
                out.write_all(b"}\n")?;
                return Ok(false);
            }
        };
        let result = self.apply(&cmd);
        self.events.clear();
        self.tracker.take_events(&mut self.events, usize::MAX);
        self.write_ack(out)?;
        let stalled = match result {
            Ok(stalled) => stalled,
            Err(e) => {
                out.write_all(b",\"error\":")?;
                write_str(out, e.code())?;
                None
            }
        };
        if !self.events.is_empty() {
            out.write_all(b",\"events\":[")?;
            for (i, ev) in self.events.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                let (kind, w, reason) = match *ev {
                    Event::Challenged(w) => ("challenged", w, None),
                    Event::Evicted(w, r) => ("evicted", w, Some(r)),
                    Event::Removed(w) => ("removed", w, None),
                };
                out.write_all(b"{\"type\":\"")?;
                out.write_all(kind.as_bytes())?;
                out.write_all(b"\",\"writer\":")?;
                write_name(out, &self.names, w)?;
                if let Some(r) = reason {
                    out.write_all(b",\"reason\":\"")?;
                    out.write_all(r.as_str().as_bytes())?;
                    out.write_all(b"\"")?;
                }
                out.write_all(b"}")?;
                if matches!(ev, Event::Evicted(..) | Event::Removed(_)) {
                    self.retire.push(w);
                }
            }
            out.write_all(b"]")?;
        }
        if let Some(names) = stalled {
            out.write_all(b",\"stalled\":[")?;
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_str(out, name)?;
            }
            out.write_all(b"]")?;
        }
        out.write_all(b"}\n")?;
        // After the events were taken and named: evicted, removed and cleaned-up writers are
        // unregistered and their names forgotten, so the next mention registers a new writer.
        let mut retire = std::mem::take(&mut self.retire);
        for w in retire.drain(..) {
            self.forget(w);
        }
        self.retire = retire;
        Ok(true)
    }

    /// Applies a command. `Ok(Some(names))` is the answer of a `stalled` query.
    fn apply(&mut self, cmd: &Cmd<'_>) -> Result<Option<Vec<String>>, TrackerError> {
        match *cmd {
            Cmd::Commit {
                offset,
                writers,
                now,
            } => {
                let mut ids = std::mem::take(&mut self.commit_ids);
                ids.clear();
                let result = writers
                    .iter()
                    .try_for_each(|name| {
                        let name = name.as_str().expect("validated by parse");
                        ids.push(self.id(name)?);
                        Ok(())
                    })
                    .and_then(|()| self.tracker.commit(offset, &ids, now));
                self.commit_ids = ids;
                result?;
            }
            Cmd::Flushed {
                writer,
                offset,
                now,
            } => {
                let w = self.id(writer)?;
                self.tracker.flushed(w, offset, now)?;
            }
            Cmd::Remove { writer } => {
                let w = self.id(writer)?;
                self.tracker.remove(w)?;
                self.retire.push(w);
            }
            Cmd::Config { stall_grace_ms } => self.tracker.set_stall_grace_ms(stall_grace_ms),
            Cmd::Down { writer, class, now } => {
                let w = self.id(writer)?;
                self.tracker.down(w, class, now)?;
            }
            Cmd::Touch { writer, now } => {
                let w = self.id(writer)?;
                self.tracker.touch(w, now)?;
            }
            Cmd::Pause { writer } => {
                let w = self.id(writer)?;
                self.tracker.pause(w)?;
            }
            Cmd::Resume { writer, now } => {
                let w = self.id(writer)?;
                self.tracker.resume(w, now)?;
            }
            Cmd::Sweep { now } => {
                self.tracker.sweep(now);
            }
            Cmd::Stalled { now } => {
                let mut names: Vec<String> = self
                    .tracker
                    .stalled(now)
                    .into_iter()
                    .map(|w| self.names.get(&w).cloned().unwrap_or_else(|| w.to_string()))
                    .collect();
                names.sort_unstable();
                return Ok(Some(names));
            }
        }
        Ok(None)
    }

    /// The writer registered under `name`, registering a new one on its first mention.
    fn id(&mut self, name: &str) -> Result<WriterId, TrackerError> {
        if let Some(&w) = self.ids.get(name) {
            return Ok(w);
        }
        let w = self.tracker.register()?;
        self.ids.insert(name.to_owned(), w);
        self.names.insert(w, name.to_owned());
        Ok(w)
    }

    /// Unregisters `w` and forgets its name (no-op if already forgotten).
    fn forget(&mut self, w: WriterId) {
        if let Some(name) = self.names.remove(&w) {
            self.ids.remove(&name);
            // Cannot fail: `w` is live or evicted, and unregister accepts both.
            let _ = self.tracker.unregister(w);
        }
    }

    /// Writes `{"ack":N` or `{"ack":null`.
    fn write_ack<W: Write>(&self, out: &mut W) -> io::Result<()> {
        match self.tracker.ack() {
            Some(ack) => write!(out, "{{\"ack\":{ack}"),
            None => out.write_all(b"{\"ack\":null"),
        }
    }
}

/// Writes `s` as a JSON string.
fn write_str<W: Write>(out: &mut W, s: &str) -> io::Result<()> {
    serde_json::to_writer(out, s).map_err(io::Error::from)
}

/// Writes the name of `w` as a JSON string (its id if it has no name, which cannot happen).
fn write_name<W: Write>(
    out: &mut W,
    names: &HashMap<WriterId, String>,
    w: WriterId,
) -> io::Result<()> {
    match names.get(&w) {
        Some(name) => write_str(out, name),
        None => write_str(out, &w.to_string()),
    }
}
