//! End-to-end tests of the Rust SDK against the real reference server
//! (in process, on loopback, with a real SMTP sink).

mod contract;
mod sdk;

use magicauth::Client;
use magicauth_testbed::Testbed;

/// A client for `key` on the test bed.
pub fn client(testbed: &Testbed, key: &str) -> Client {
    Client::builder()
        .base_url(&testbed.base_url)
        .app_key(key)
        .build()
        .expect("client builds")
}
