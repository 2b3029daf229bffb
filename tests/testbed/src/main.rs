//! `magicauth-testbed`: starts a test bed and prints one JSON line
//! `{"base_url", "server_url", "control_url", "smtp_port", "null_base_url"}`
//! on stdout (`null_base_url`: an API stand-in that refuses every call at
//! once, for benchmarks; see `null_api`), then
//! serves until SIGTERM/SIGINT (or, with `--exit-on-stdin-eof`, until its
//! standard input closes, so it never outlives the suite that started it).

use std::io::{Read, Write};
use std::sync::Arc;

use magicauth_testbed::{Testbed, control, null_api};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

/// The server's allocator (see the server's `main.rs`), so that the test bed,
/// which the benchmarks measure, runs the server as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let exit_on_eof = std::env::args().any(|a| a == "--exit-on-stdin-eof");
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let testbed = Arc::new(Testbed::start().await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control_url = format!("http://{}", listener.local_addr()?);
    let null_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let null_base_url = format!("http://{}/api", null_listener.local_addr()?);
    tokio::spawn(null_api::serve(null_listener));
    let line = json!({
        "base_url": testbed.base_url,
        "server_url": testbed.server_url,
        "control_url": control_url,
        "smtp_port": testbed.smtp_port(),
        "null_base_url": null_base_url,
    });
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    if exit_on_eof {
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = eof_tx.send(());
        });
    } else {
        std::mem::forget(eof_tx);
    }
    let serve = axum::serve(listener, control::router(testbed.clone()));
    tokio::select! {
        result = serve => result?,
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
        _ = eof_rx => {}
    }
    testbed.stop().await
}
