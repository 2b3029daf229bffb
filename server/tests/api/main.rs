//! Integration tests of the reference server over real HTTP, with a real
//! SMTP server on loopback. One binary, one module per area.

mod support;

mod contract;
mod mail;
mod process;
mod replicas;
mod smtp_sink;
