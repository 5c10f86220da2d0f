//! Discord double (work in progress).
pub mod config;
pub mod schema;
