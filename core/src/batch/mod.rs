//! Batch buffers: many producers, one sink, size/bytes/linger triggers, bounded memory, and a
//! shutdown that drains everything or hands it back (DOMAIN.md §5).
