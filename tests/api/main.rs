//! calgate's end-to-end tests: the real server on port 0, a fresh SQLite file,
//! and the project's fake Cronofy over HTTP on loopback.

mod authorize;
mod availability;
mod batch;
mod callback_flood;
mod changes;
mod decode_limits;
mod durability;
mod enterprise;
mod events;
mod exchange;
mod free_busy;
mod helpers;
mod hostile;
mod lifecycle;
mod notifications;
mod observability;
mod otel;
mod persistence;
mod postgres;
mod process;
mod refresh_ahead;
mod replicas;
mod resilience;
mod revoke;
mod rolling_restart;
mod shared_application;
mod shared_replicas;
mod standard;
mod store;
mod tenancy;
mod tls;
mod token_cache;
mod tokens;
mod unauthenticated_peers;
mod upstream;
