//! calgate: a gRPC service through which internal services write events into
//! their users' own calendars using Cronofy's Read-Write access mode.
//!
//! Layers, each its own module:
//! - [`grpc`]: calgate.v1 handlers, request conversion, the status mapping;
//! - [`auth`]: API-key caller authentication;
//! - [`domain`]: tenants, grants, states, events, and the operations on them;
//! - [`cronofy`]: the Cronofy REST client;
//! - [`resilience`]: retries, per-tenant request budgets and circuit breakers around it;
//! - [`store`]: the encrypted credential store;
//! - [`config`]: the TOML file and environment overrides;
//! - [`callbacks`]: the HTTP listener for Cronofy's Enterprise Connect callbacks;
//! - [`server`]: start-up, health, reflection and graceful shutdown;
//! - [`operations`]: operator commands (rekey, purge-tenant, audit);
//! - `sandbox` (feature `sandbox`, on by default): calgate with the fake
//!   Cronofy (the `fake-cronofy` crate of this workspace) embedded, for offline
//!   development.
//! - [`tasks`]: the owner of every spawned task and the shutdown signal.

pub mod auth;
pub mod callbacks;
pub mod clock;
pub mod config;
pub mod cronofy;
pub mod domain;
pub mod grpc;
pub mod health;
pub mod operations;
pub(crate) mod resilience;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod server;
pub mod store;
pub(crate) mod tasks;
pub mod telemetry;
pub(crate) mod workers;
