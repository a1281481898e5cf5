//! QNP's shared library: everything the Lambda functions and the `qnp` binary have in common.

pub mod accounts;
pub mod billing;
pub mod budget;
pub mod catalog;
pub mod config;
pub mod conversation;
pub mod cost_bound;
pub mod dialects;
pub mod error;
pub mod ids;
pub mod key_controls;
pub mod key_settings;
pub mod keys;
pub mod lambda;
pub mod limits;
pub mod plans;
pub mod pricing;
pub mod privacy;
pub mod providers;
pub mod refusals;
pub mod retention;
pub mod retention_periods;
pub mod routes;
pub mod secrets;
pub mod sessions;
pub mod store;
pub mod subscription;
pub mod usage;
pub mod usage_log;
pub mod web;
pub mod wire;

#[cfg(test)]
mod properties;
#[cfg(test)]
pub(crate) mod test_support;

pub use error::GatewayError;
