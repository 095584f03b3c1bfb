//! The replication connection (`pgwire-replication`: START_REPLICATION on the slot with
//! pgoutput, keepalives, standby status updates). This task only moves bytes: events go to the
//! dispatcher thread in order; flush positions come back from the acker through a watch
//! channel and are handed to `update_applied_lsn` (monotonic; the crate sends them as the
//! write, flush and apply positions of the next standby status update).

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use tokio::sync::{oneshot, watch};

use super::pipeline::Shared;
use super::sql::{Target, full};

/// What the dispatcher receives, in stream order.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// A transaction starts.
    Begin,
    /// A pgoutput message other than Begin, Commit or a logical message (rows, relations).
    Data(Vec<u8>),
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        /// Its prefix.
        prefix: String,
        /// Its content.
        content: Vec<u8>,
    },
    /// The transaction commits: its commit LSN and end LSN.
    Commit {
        /// Start of the commit record (the tracker's `tx`).
        lsn: u64,
        /// End of the commit record (what confirming it means).
        end_lsn: u64,
    },
    /// A keepalive: everything below `wal_end` was sent.
    KeepAlive {
        /// The walsender's sent position.
        wal_end: u64,
    },
}

/// What the stream did.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamSummary {
    /// Events received.
    pub events: u64,
    /// Standby status updates sent (the crate's metric).
    pub feedback_sent: u64,
    /// The newest position handed to `update_applied_lsn`.
    pub last_applied: u64,
    /// Flush positions handed over.
    pub applied_updates: u64,
}

/// How long connecting and START_REPLICATION may take.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams the slot from `start_lsn` until `stop` turns true (then ends the copy cleanly and
/// drains) or the server ends the stream. `started` hears once the server accepted
/// START_REPLICATION, or why not.
pub(crate) async fn run(
    sh: Arc<Shared>,
    target: Target,
    start_lsn: u64,
    events: Sender<StreamEvent>,
    mut stop: watch::Receiver<bool>,
    started: oneshot::Sender<Result<(), String>>,
) -> Result<StreamSummary, String> {
    let cfg = ReplicationConfig::new(
        target.host.clone(),
        target.user.clone(),
        target.password.clone(),
        target.dbname.clone(),
        sh.cfg.slot.clone(),
        sh.cfg.publication.clone(),
    )
    .with_port(target.port)
    .with_tls(TlsConfig::disabled())
    .with_start_lsn(Lsn::from_u64(start_lsn))
    .with_status_interval(Duration::from_millis(sh.cfg.status_ms))
    .with_wakeup_interval(Duration::from_secs(1))
    .with_application_name("tidemark-pg");
    let what = format!(
        "replication on slot `{}` at {}",
        sh.cfg.slot,
        target.display()
    );
    let connect = async {
        let mut client = ReplicationClient::connect(cfg).await?;
        client.wait_started().await?;
        Ok::<_, pgwire_replication::PgWireError>(client)
    };
    let mut client = match tokio::time::timeout(START_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let msg = format!("{what}: {}", full(&e));
            let _ = started.send(Err(msg.clone()));
            return Err(msg);
        }
        Err(_) => {
            let msg = format!("{what}: not started within {START_TIMEOUT:?}");
            let _ = started.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let _ = started.send(Ok(()));
    let metrics = client.metrics();
    let mut confirm = sh.confirm_tx.subscribe();
    let mut summary = StreamSummary::default();
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            biased;
            ev = client.recv() => match ev {
                Ok(Some(ev)) => {
                    summary.events += 1;
                    let out = match ev {
                        ReplicationEvent::Begin { .. } => StreamEvent::Begin,
                        ReplicationEvent::XLogData { data, .. } => StreamEvent::Data(data.to_vec()),
                        ReplicationEvent::Message { prefix, content, .. } => {
                            StreamEvent::Message { prefix, content: content.to_vec() }
                        }
                        ReplicationEvent::Commit { lsn, end_lsn, .. } => StreamEvent::Commit {
                            lsn: lsn.as_u64(),
                            end_lsn: end_lsn.as_u64(),
                        },
                        ReplicationEvent::KeepAlive { wal_end, .. } => {
                            StreamEvent::KeepAlive { wal_end: wal_end.as_u64() }
                        }
                        ReplicationEvent::StoppedAt { .. } => continue,
                    };
                    if events.send(out).is_err() {
                        break Err("the dispatcher is gone".to_owned());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("{what}: {}", full(&e))),
            },
            changed = confirm.changed(), if !stopping => {
                if changed.is_err() {
                    continue;
                }
                let lsn = *confirm.borrow_and_update();
                if lsn > summary.last_applied {
                    client.update_applied_lsn(Lsn::from_u64(lsn));
                    summary.last_applied = lsn;
                    summary.applied_updates += 1;
                }
            },
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    client.stop();
                }
            },
        }
    };
    summary.feedback_sent = metrics.feedback_sent();
    result.map(|()| summary)
}
