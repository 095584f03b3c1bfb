//! pgoutput row decoding (with `pg_walstream`'s parser; no wire format code here).
//!
//! `pgwire-replication` turns `Begin`, `Commit` and logical messages into events itself and
//! hands every other pgoutput message over as raw `XLogData`: `Relation` (a table's id, name
//! and columns, sent before its first change in a session), `Insert` and `Update`. This module
//! keeps the relation map and turns changes of the published tables into [`Row`]s.

use std::collections::HashMap;

use pg_walstream::{LogicalReplicationMessage, LogicalReplicationParser, TupleData};

use super::sql::TABLES;

/// One change of a published table, as the load generator wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Row {
    /// Index into [`TABLES`].
    pub table: u8,
    /// Primary key.
    pub id: i64,
    /// Version (the load generator's counter for this key).
    pub ver: i64,
}

impl Row {
    /// The writer a row goes to: its key modulo the writer count.
    pub(crate) fn writer(&self, writers: usize) -> u32 {
        self.id.rem_euclid(writers as i64) as u32
    }
}

/// A decoded `XLogData` payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A change of a published table.
    Row(Row),
    /// Something that carries no row (a relation, a type, an origin).
    Meta,
}

#[derive(Clone, Copy, Debug)]
struct Relation {
    table: Option<u8>,
    id_col: usize,
    ver_col: usize,
}

/// The decoder: the parser plus the relation map of this session.
pub(crate) struct Decoder {
    parser: LogicalReplicationParser,
    relations: HashMap<u32, Relation>,
}

impl Decoder {
    /// A decoder for protocol version 1 (what `pgwire-replication` asks for).
    pub(crate) fn new() -> Decoder {
        Decoder {
            parser: LogicalReplicationParser::with_protocol_version(1),
            relations: HashMap::new(),
        }
    }

    /// Decodes one payload.
    pub(crate) fn decode(&mut self, data: &[u8]) -> Result<Decoded, String> {
        let msg = self
            .parser
            .parse_wal_message(data)
            .map_err(|e| format!("pgoutput: {e}"))?;
        match msg.message {
            LogicalReplicationMessage::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let table = (namespace.as_ref() == "public")
                    .then(|| TABLES.iter().position(|t| *t == relation_name.as_ref()))
                    .flatten()
                    .map(|i| i as u8);
                let col = |name: &str| columns.iter().position(|c| c.name.as_ref() == name);
                let rel = match table {
                    Some(_) => Relation {
                        table,
                        id_col: col("id").ok_or("relation without an id column")?,
                        ver_col: col("ver").ok_or("relation without a ver column")?,
                    },
                    None => Relation {
                        table: None,
                        id_col: 0,
                        ver_col: 0,
                    },
                };
                self.relations.insert(relation_id, rel);
                Ok(Decoded::Meta)
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                self.row(relation_id, &tuple)
            }
            LogicalReplicationMessage::Update {
                relation_id,
                new_tuple,
                ..
            } => self.row(relation_id, &new_tuple),
            LogicalReplicationMessage::Delete { .. }
            | LogicalReplicationMessage::Truncate { .. } => {
                Err("unexpected delete or truncate on a published table".into())
            }
            LogicalReplicationMessage::Type { .. } | LogicalReplicationMessage::Origin { .. } => {
                Ok(Decoded::Meta)
            }
            other => Err(format!("unexpected pgoutput message {other:?}")),
        }
    }

    fn row(&self, relation_id: u32, tuple: &TupleData) -> Result<Decoded, String> {
        let rel = self
            .relations
            .get(&relation_id)
            .ok_or_else(|| format!("change of relation {relation_id} before its Relation"))?;
        let table = rel
            .table
            .ok_or_else(|| format!("change of relation {relation_id}, not a tidemark table"))?;
        let int = |i: usize, what: &str| -> Result<i64, String> {
            tuple
                .columns
                .get(i)
                .and_then(|c| c.as_str())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{} row without a text {what}", TABLES[table as usize]))
        };
        Ok(Decoded::Row(Row {
            table,
            id: int(rel.id_col, "id")?,
            ver: int(rel.ver_col, "ver")?,
        }))
    }
}
