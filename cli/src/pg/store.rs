//! The writers' storage: one append-only file per writer in a directory of its own.
//!
//! A message's payload is the text the writer stores: one line per row,
//! `COMMIT_LSN_HEX TABLE ID VER`. A batch is appended with one `write_all` (and `fsync` when
//! asked) before it is acked, so what the tracker hears as flushed is in the file. The checks
//! read the files back at the end.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use tidemark::batch::Batch;

use super::decode::Row;

/// The store directory.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    fsync: bool,
    /// The directory was made by this run (so it may be removed).
    made: bool,
}

impl Store {
    /// Creates `dir`, or a fresh directory under the system temp dir.
    pub(crate) fn create(dir: Option<&Path>, fsync: bool) -> io::Result<Store> {
        let (dir, made) = match dir {
            Some(d) => {
                let made = !d.exists();
                std::fs::create_dir_all(d)?;
                if std::fs::read_dir(d)?.next().is_some() {
                    return Err(io::Error::other(format!(
                        "{} is not empty: the stores must start empty",
                        d.display()
                    )));
                }
                (d.to_path_buf(), made)
            }
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let d = std::env::temp_dir()
                    .join(format!("tidemark-pg-{}-{nanos:08x}", std::process::id()));
                std::fs::create_dir(&d)?;
                (d, true)
            }
        };
        Ok(Store { dir, fsync, made })
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writer `w`'s file.
    pub(crate) fn path(&self, w: u32) -> PathBuf {
        self.dir.join(format!("writer-{w:06}.log"))
    }

    /// Appends a batch's payloads to writer `w`'s file; durable (with `--fsync`) on return.
    pub(crate) fn append(&self, w: u32, batch: &Batch) -> io::Result<()> {
        // The batch's payloads are already back to back: written as they are.
        let buf = batch.payload_bytes();
        // Opened per batch: thousands of writers would otherwise hold thousands of descriptors.
        let path = self.path(w);
        let created = self.fsync && !path.exists();
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(buf)?;
        if self.fsync {
            f.sync_data()?;
            if created {
                // A new file's directory entry must be durable too.
                File::open(&self.dir)?.sync_all()?;
            }
        }
        Ok(())
    }

    /// Reads writer `w`'s file: every stored `(commit_lsn, row)` and the count of malformed
    /// lines (a missing file is an empty store).
    pub(crate) fn read(&self, w: u32) -> io::Result<(Vec<(u64, Row)>, u64)> {
        let text = match std::fs::read_to_string(self.path(w)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let mut rows = Vec::new();
        let mut bad = 0;
        for line in text.lines() {
            match parse_line(line) {
                Some(r) => rows.push(r),
                None => bad += 1,
            }
        }
        Ok((rows, bad))
    }

    /// Removes the directory (only if this run made it).
    pub(crate) fn remove(&self) -> io::Result<()> {
        if self.made {
            std::fs::remove_dir_all(&self.dir)
        } else {
            Ok(())
        }
    }
}

/// The payload for `rows` of the commit at `commit_lsn`.
pub(crate) fn encode(commit_lsn: u64, rows: &[Row], out: &mut Vec<u8>) {
    let mut s = String::with_capacity(rows.len() * 32);
    for r in rows {
        let _ = writeln!(s, "{commit_lsn:X} {} {} {}", r.table, r.id, r.ver);
    }
    out.extend_from_slice(s.as_bytes());
}

fn parse_line(line: &str) -> Option<(u64, Row)> {
    let mut it = line.split(' ');
    let lsn = u64::from_str_radix(it.next()?, 16).ok()?;
    let table = it.next()?.parse().ok()?;
    let id = it.next()?.parse().ok()?;
    let ver = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((lsn, Row { table, id, ver }))
}

/// The rows of one writer's store as a set, plus how many `(commit, row)` records were stored
/// more than once (a redelivery would show here).
pub(crate) fn row_set(stored: &[(u64, Row)]) -> (HashSet<Row>, u64) {
    let set = stored.iter().map(|(_, r)| *r).collect();
    let unique: HashSet<&(u64, Row)> = stored.iter().collect();
    (set, (stored.len() - unique.len()) as u64)
}
