//! Helpers shared by the integration test files (each file is its own crate and includes this).

#[allow(dead_code)] // each test file uses a different subset
pub mod batch;
