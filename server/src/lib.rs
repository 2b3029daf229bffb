//! MagicAuth reference server: emails single-use magic links and verifies them.
//!
//! Layers, data flowing one way: [`http`] (routes, extractors, errors) →
//! [`auth`] (the rules, on [`domain`] types) → [`store`] (one trait, one
//! implementation per database) and [`mail`] (outbox worker, transports).
#![forbid(unsafe_code)]

pub mod app;
pub mod apps;
pub mod auth;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod session;
pub mod store;
pub mod telemetry;

pub use app::{Application, BuildOptions};
