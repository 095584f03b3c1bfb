//! The `tidemark` command.
//!
//! Subcommands:
//!
//! - `replay FILE|-`: drive a tracker from a JSON-lines trace (see [`replay`]).
//! - `simulate [flags]`: a replication pipeline under faults on the real library, with live
//!   progress, invariant checks and a final report (see [`simulate`]).
//! - `pg [flags]`: the same pipeline on a real PostgreSQL logical slot (see [`pg`]).
//!
//! Usage errors print to stderr and exit with status 2.

use std::process::ExitCode;

mod common;
mod pg;
mod pipeline_common;
mod replay;
mod simulate;

/// The usage text (`tidemark --help`).
const USAGE: &str = "\
usage: tidemark <command> [args]

commands:
  simulate [flags]
                  run a replication pipeline under injected faults on the real library, watch
                  it live, check its invariants and print a report (exit 1 if a check failed);
                  `tidemark simulate --help` lists the flags
  pg [flags]      stream a real PostgreSQL logical slot into writers under faults and
                  acknowledge it with the tracker's ack (start a server: scripts/pg.sh start);
                  `tidemark pg --help` lists the flags
  replay FILE|-   drive a flush tracker from a JSON-lines trace (`-` reads stdin) and print
                  one JSON line per input line: {\"ack\":N|null, ...}
  help            print this text
";

/// Exit status for usage errors (bad arguments, unreadable input file).
pub(crate) const EXIT_USAGE: u8 = 2;

/// Prints `msg` and the usage text to stderr and returns the usage exit status.
pub(crate) fn usage_error(msg: &str) -> ExitCode {
    eprintln!("tidemark: {msg}\n\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage_error("missing command");
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "replay" => replay::main(rest),
        "simulate" => simulate::main(rest),
        "pg" => pg::main(rest),
        other => usage_error(&format!("unknown command `{other}`")),
    }
}
