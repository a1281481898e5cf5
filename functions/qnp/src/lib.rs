//! What `qnp serve` runs, as a library so the integration tests serve exactly the same thing.

pub mod app;
pub mod listener;
