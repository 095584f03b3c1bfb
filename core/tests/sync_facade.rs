//! docs/CONTRIBUTING.md habit 1, enforced: `core/src/sync/` is the only module of the core that
//! names atomics, locks or loom. (clippy's `disallowed-types` cannot express this: it also fires on
//! the facade's own re-exports.)

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "std::sync::atomic",
    "core::sync::atomic",
    "std::sync::Mutex",
    "std::sync::RwLock",
    "std::sync::Condvar",
    "std::sync::{",
    "parking_lot",
    "loom::",
    "crossbeam_utils",
    "crossbeam_epoch",
    "arc_swap",
];

fn scan(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "sync") {
                continue;
            }
            scan(&path, offenders);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for pat in FORBIDDEN {
                    if code.contains(pat) {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
}

#[test]
fn only_the_sync_facade_names_atomics_locks_or_loom() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    scan(&src, &mut offenders);
    assert!(
        offenders.is_empty(),
        "use crate::sync instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_sees_the_facade() {
    // Guards against a scan that silently finds nothing (wrong directory, renamed files).
    let facade = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sync/mod.rs");
    let text = std::fs::read_to_string(facade).unwrap();
    assert!(text.contains("std::sync::atomic") && text.contains("loom::"));
}
