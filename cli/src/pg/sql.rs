//! Plain SQL (tokio-postgres): the server target, setup (tables, publication, slot), the slot
//! samples, the stop fence, and cleanup. The replication connection itself is in `stream.rs`.

use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls, Statement};

use super::ack::parse_lsn;
use super::config::Config;

/// The published tables, in row-table order (`Row::table` indexes it).
pub(crate) const TABLES: [&str; 2] = ["tidemark_a", "tidemark_b"];
/// A table outside the publication: its WAL must not pin the slot.
pub(crate) const NOISE_TABLE: &str = "tidemark_noise";
/// Rows of the noise table.
pub(crate) const NOISE_ROWS: u64 = 100;
/// Prefix of the transactional logical message that fences the end of the load.
pub(crate) const FENCE_PREFIX: &str = "tidemark.fence";

/// Where the server is, as both clients need it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// For tokio-postgres.
    pub config: tokio_postgres::Config,
    /// Host name, address or Unix socket directory.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (empty: none).
    pub password: String,
    /// Database.
    pub dbname: String,
}

impl Target {
    /// Parses `--url` (a libpq URL or key=value string).
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("--url `{url}` is not a PostgreSQL URL: {e}"))?;
        config.connect_timeout(Duration::from_secs(5));
        config.application_name("tidemark-pg");
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "127.0.0.1".to_owned(),
        };
        if config.get_hosts().is_empty() {
            config.host("127.0.0.1");
        }
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config
            .get_user()
            .map(str::to_owned)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".to_owned());
        if config.get_user().is_none() {
            config.user(&user);
        }
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        Ok(Target {
            config,
            host,
            port,
            user,
            password,
            dbname,
        })
    }

    /// `user@host:port/db` (no password), for messages.
    pub(crate) fn display(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

/// Connects a SQL session (its connection task runs on the current runtime).
pub(crate) async fn connect(t: &Target) -> Result<Client, String> {
    let (client, conn) = t
        .config
        .connect(NoTls)
        .await
        .map_err(|e| format!("cannot connect to {}: {}", t.display(), full(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// An error with its causes (tokio-postgres puts the useful part in the source).
pub(crate) fn full(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// What setup found or made.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    /// `server_version`.
    pub server_version: String,
    /// The slot's confirmed flush position at the start (streaming starts there).
    pub start_lsn: u64,
    /// This run created the slot.
    pub created_slot: bool,
    /// This run created the publication.
    pub created_publication: bool,
}

/// Creates the tables, the publication and the slot unless they exist; checks the server.
pub(crate) async fn setup(c: &Client, cfg: &Config) -> Result<Setup, String> {
    let err = |what: &str, e: tokio_postgres::Error| format!("{what}: {}", full(&e));
    let server_version: String = c
        .query_one("SHOW server_version", &[])
        .await
        .map_err(|e| err("SHOW server_version", e))?
        .get(0);
    let wal_level: String = c
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| err("SHOW wal_level", e))?
        .get(0);
    if wal_level != "logical" {
        return Err(format!(
            "the server runs with wal_level={wal_level}; logical decoding needs wal_level=logical \
             (scripts/pg.sh start sets it)"
        ));
    }
    let mut ddl = String::new();
    for t in TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (id bigint PRIMARY KEY, ver bigint NOT NULL, \
             payload text NOT NULL);"
        ));
    }
    ddl.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {NOISE_TABLE} (id int PRIMARY KEY, n bigint NOT NULL);\
         INSERT INTO {NOISE_TABLE} SELECT g, 0 FROM generate_series(0, {}) g ON CONFLICT DO NOTHING;",
        NOISE_ROWS - 1
    ));
    c.batch_execute(&ddl)
        .await
        .map_err(|e| err("creating the tables", e))?;

    let publication = &cfg.publication;
    let exists = !c
        .query(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[publication],
        )
        .await
        .map_err(|e| err("reading pg_publication", e))?
        .is_empty();
    let created_publication = !exists;
    if exists {
        let rows = c
            .query(
                "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1",
                &[publication],
            )
            .await
            .map_err(|e| err("reading pg_publication_tables", e))?;
        let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if let Some(missing) = TABLES.iter().find(|t| !tables.iter().any(|x| x == *t)) {
            return Err(format!(
                "publication `{publication}` exists but does not publish {missing}; drop it or \
                 pass another --publication"
            ));
        }
        if tables.iter().any(|t| t == NOISE_TABLE) {
            return Err(format!(
                "publication `{publication}` publishes {NOISE_TABLE}, which must stay unpublished"
            ));
        }
    } else {
        c.batch_execute(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE {}",
            TABLES.join(", ")
        ))
        .await
        .map_err(|e| err("CREATE PUBLICATION", e))?;
    }

    let slot = &cfg.slot;
    let rows = c
        .query(
            "SELECT plugin::text, active, confirmed_flush_lsn::text, database::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await
        .map_err(|e| err("reading pg_replication_slots", e))?;
    let (start, created_slot) = match rows.first() {
        Some(r) => {
            let plugin: Option<String> = r.get(0);
            let active: bool = r.get(1);
            let confirmed: Option<String> = r.get(2);
            let database: Option<String> = r.get(3);
            if plugin.as_deref() != Some("pgoutput") {
                return Err(format!(
                    "slot `{slot}` exists with plugin {}; pass another --slot or drop it",
                    plugin.as_deref().unwrap_or("none (a physical slot)")
                ));
            }
            if database.as_deref() != Some(current_database(c).await?.as_str()) {
                return Err(format!(
                    "slot `{slot}` belongs to database {}; pass another --slot",
                    database.as_deref().unwrap_or("?")
                ));
            }
            if active {
                return Err(format!("slot `{slot}` is in use by another session"));
            }
            (confirmed, false)
        }
        None => {
            // Autocommit: a slot cannot be created in a transaction that wrote.
            let r = c
                .query_one(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[slot],
                )
                .await
                .map_err(|e| err("pg_create_logical_replication_slot", e))?;
            (Some(r.get::<_, String>(0)), true)
        }
    };
    let start_lsn = start
        .as_deref()
        .and_then(parse_lsn)
        .ok_or_else(|| format!("slot `{slot}` has no confirmed flush position"))?;
    Ok(Setup {
        server_version,
        start_lsn,
        created_slot,
        created_publication,
    })
}

async fn current_database(c: &Client) -> Result<String, String> {
    c.query_one("SELECT current_database()::text", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| format!("current_database(): {}", full(&e)))
}

/// One reading of the slot.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlotReading {
    /// `pg_current_wal_lsn()`.
    pub current: u64,
    /// `confirmed_flush_lsn`.
    pub confirmed: u64,
    /// `restart_lsn`.
    pub restart: u64,
    /// A walsender holds the slot.
    pub active: bool,
    /// `pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)`.
    pub retained: i64,
    /// `pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)`: what the slot keeps on disk.
    pub retained_restart: i64,
}

/// Prepares the slot reading.
pub(crate) async fn prepare_reading(c: &Client) -> Result<Statement, String> {
    c.prepare(
        "SELECT pg_current_wal_lsn()::text, confirmed_flush_lsn::text, restart_lsn::text, active, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .await
    .map_err(|e| format!("preparing the slot reading: {}", full(&e)))
}

/// Reads the slot.
pub(crate) async fn read_slot(
    c: &Client,
    st: &Statement,
    slot: &str,
) -> Result<SlotReading, String> {
    let row = c
        .query_opt(st, &[&slot])
        .await
        .map_err(|e| format!("reading the slot: {}", full(&e)))?
        .ok_or_else(|| format!("slot `{slot}` disappeared"))?;
    let lsn = |i: usize| -> u64 {
        row.get::<_, Option<String>>(i)
            .as_deref()
            .and_then(parse_lsn)
            .unwrap_or(0)
    };
    Ok(SlotReading {
        current: lsn(0),
        confirmed: lsn(1),
        restart: lsn(2),
        active: row.get(3),
        retained: row.get::<_, Option<i64>>(4).unwrap_or(0),
        retained_restart: row.get::<_, Option<i64>>(5).unwrap_or(0),
    })
}

/// `pg_current_wal_lsn()`.
pub(crate) async fn current_lsn(c: &Client) -> Result<u64, String> {
    let s: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| format!("pg_current_wal_lsn(): {}", full(&e)))?
        .get(0);
    parse_lsn(&s).ok_or_else(|| format!("bad LSN `{s}`"))
}

/// Writes the fence: a transactional logical message in a transaction of its own. When the
/// stream delivers it, every transaction the load committed before it has been streamed.
pub(crate) async fn fence(c: &Client, run_id: &str) -> Result<u64, String> {
    let s: String = c
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&FENCE_PREFIX, &run_id],
        )
        .await
        .map_err(|e| format!("pg_logical_emit_message: {}", full(&e)))?
        .get(0);
    parse_lsn(&s).ok_or_else(|| format!("bad LSN `{s}`"))
}

/// `CHECKPOINT`: logs a running-transactions record, after which (once decoded and confirmed)
/// the slot's `restart_lsn` can move and WAL be recycled.
pub(crate) async fn checkpoint(c: &Client) -> Result<(), String> {
    c.batch_execute("CHECKPOINT")
        .await
        .map_err(|e| format!("CHECKPOINT: {}", full(&e)))
}

/// Drops the slot, waiting up to `wait` for its walsender to let go.
pub(crate) async fn drop_slot(c: &Client, slot: &str, wait: Duration) -> Result<(), String> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match c
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < until => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("dropping slot `{slot}`: {}", full(&e))),
        }
    }
}
