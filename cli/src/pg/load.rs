//! The load generator: inserts and updates rows of the published tables at `--rate` rows per
//! second (transactions of 1–4 rows, upserts whose version it counts itself), plus a share of
//! transactions on the unpublished table (`--noise`). It logs every change it committed: that
//! log, not the stream, is what the "no change lost" check compares the stores against.
//!
//! After a kill or a wedge it writes a row with a key of that writer (the *anchor*, see
//! faults.rs). When told to stop it writes a `CHECKPOINT` (so that the slot's `restart_lsn`
//! can move once the stream is confirmed past it) and then the fence.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;

use super::decode::Row;
use super::pipeline::Shared;
use super::sql::{self, NOISE_ROWS, NOISE_TABLE, TABLES, full};
use crate::common::Rng;

/// What the load generator did.
#[derive(Clone, Debug)]
pub(crate) struct LoadLog {
    /// Every change committed, in commit order.
    pub rows: Vec<Row>,
    /// Transactions on the published tables.
    pub txns: u64,
    /// Transactions on the unpublished table.
    pub noise_txns: u64,
    /// Anchor rows written.
    pub anchors: u64,
    /// Statements that failed (their outcome is unknown).
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Seconds of load.
    pub elapsed_s: f64,
    /// `pg_current_wal_lsn()` when the load started and when it stopped.
    pub wal: (u64, u64),
    /// The fence's LSN (its logical message), or why it could not be written.
    pub fence: Result<u64, String>,
    /// The `CHECKPOINT` before the fence, or why it failed.
    pub checkpoint: Result<(), String>,
}

/// Runs until `stop` turns true, then checkpoints and writes the fence.
pub(crate) async fn run(
    sh: Arc<Shared>,
    client: Client,
    mut stop: watch::Receiver<bool>,
) -> LoadLog {
    let cfg = &sh.cfg;
    let mut log = LoadLog {
        rows: Vec::new(),
        txns: 0,
        noise_txns: 0,
        anchors: 0,
        errors: 0,
        first_error: None,
        elapsed_s: 0.0,
        wal: (0, 0),
        fence: Err("not written".into()),
        checkpoint: Err("not run".into()),
    };
    let mut rng = Rng::new(cfg.common.seed, 3);
    let keys = cfg.common.writers as u64 * cfg.keys_per_writer;
    let mut versions: HashMap<(u8, i64), i64> = HashMap::new();
    let payload: String = "x".repeat(cfg.row_bytes);
    log.wal.0 = sql::current_lsn(&client).await.unwrap_or(0);
    let start = Instant::now();
    let mut produced = 0u64;
    let mut rows: Vec<Row> = Vec::with_capacity(8);
    let mut text = String::new();
    'outer: loop {
        let due = (start.elapsed().as_secs_f64() * cfg.rate as f64) as u64;
        while produced < due {
            if *stop.borrow() {
                break 'outer;
            }
            if rng.chance(cfg.noise) {
                let q = format!(
                    "UPDATE {NOISE_TABLE} SET n = n + 1 WHERE id = {}",
                    rng.below(NOISE_ROWS)
                );
                match client.batch_execute(&q).await {
                    Ok(()) => log.noise_txns += 1,
                    Err(e) => failed(&mut log, &e),
                }
                continue;
            }
            rows.clear();
            let anchors = std::mem::take(&mut *sh.anchor_requests.lock().unwrap());
            for w in &anchors {
                let id =
                    *w as i64 + cfg.common.writers as i64 * rng.below(cfg.keys_per_writer) as i64;
                push_row(&mut rows, rng.below(2) as u8, id);
            }
            log.anchors += anchors.len() as u64;
            let n = rows.len() + 1 + rng.below(4) as usize;
            for _ in 0..8 * n {
                if rows.len() >= n {
                    break;
                }
                push_row(&mut rows, rng.below(2) as u8, rng.below(keys) as i64);
            }
            for r in &mut rows {
                let v = versions.entry((r.table, r.id)).or_insert(0);
                *v += 1;
                r.ver = *v;
            }
            text.clear();
            for t in 0..TABLES.len() as u8 {
                let mut first = true;
                for r in rows.iter().filter(|r| r.table == t) {
                    if first {
                        let _ = write!(
                            text,
                            "INSERT INTO {} (id, ver, payload) VALUES ",
                            TABLES[t as usize]
                        );
                        first = false;
                    } else {
                        text.push(',');
                    }
                    let _ = write!(text, "({}, {}, '{payload}')", r.id, r.ver);
                }
                if !first {
                    text.push_str(
                        " ON CONFLICT (id) DO UPDATE SET ver = EXCLUDED.ver, \
                         payload = EXCLUDED.payload;",
                    );
                }
            }
            // One simple query: one transaction, one round trip.
            match client.batch_execute(&text).await {
                Ok(()) => {
                    log.txns += 1;
                    produced += rows.len() as u64;
                    log.rows.extend_from_slice(&rows);
                }
                Err(e) => {
                    failed(&mut log, &e);
                    produced += rows.len() as u64;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    log.elapsed_s = start.elapsed().as_secs_f64();
    log.wal.1 = sql::current_lsn(&client).await.unwrap_or(0);
    // Not fatal when refused: only the restart_lsn figure depends on it.
    log.checkpoint = sql::checkpoint(&client).await;
    log.fence = sql::fence(&client, &sh.run_id).await;
    log
}

/// Adds a row unless its key is already in the transaction (an upsert may touch a row once).
fn push_row(rows: &mut Vec<Row>, table: u8, id: i64) {
    if !rows.iter().any(|r| r.table == table && r.id == id) {
        rows.push(Row { table, id, ver: 0 });
    }
}

fn failed(log: &mut LoadLog, e: &tokio_postgres::Error) {
    log.errors += 1;
    log.first_error.get_or_insert_with(|| full(e));
}
