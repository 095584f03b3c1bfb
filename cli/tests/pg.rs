//! `tidemark pg` without a server: the flags and the failure modes a user meets first. The runs
//! against a real PostgreSQL are `scripts/pg-test.sh` (docs/PG.md, "Checks").

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

fn pg(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("pg")
        .args(args)
        .output()
        .expect("run tidemark")
}

#[test]
fn help_lists_the_flags() {
    let out = pg(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--url",
        "--tracker",
        "--writers",
        "--rate",
        "--faults",
        "--chart",
        "--json",
    ] {
        assert!(text.contains(flag), "help lacks {flag}:\n{text}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["--tracker", "nope"][..],
        &["--faults", "explode"],
        &["--faults", "kill@30s"],
        &["--slot", "Bad-Name"],
        &["--writers", "0"],
        &["--chart-max-mib", "-1"],
        &["--bogus"],
    ] {
        let out = pg(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn an_unreachable_server_is_reported_not_hung() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let out = pg(&[
        "--url",
        "postgresql://postgres@127.0.0.1:1/postgres",
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}
