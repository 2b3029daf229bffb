//! One tokio runtime per process, rebuilt after `fork()`.
//!
//! gunicorn and uWSGI import the app, then fork workers. A forked child has
//! the parent's memory but none of its threads, so the parent's runtime is
//! dead there: it is leaked (dropping it would wait for threads that do not
//! exist) and a new one is started on first use in the child.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};

use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{ContextExt, Runtime as AsyncRuntime};
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Mutex<(u32, &'static Runtime)>> = OnceLock::new();

fn start() -> &'static Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("magicauth")
        .build()
        .expect("starting the MagicAuth tokio runtime");
    Box::leak(Box::new(runtime))
}

/// The runtime of the current process.
pub fn get() -> &'static Runtime {
    let pid = std::process::id();
    let cell = RUNTIME.get_or_init(|| Mutex::new((pid, start())));
    let mut current = cell.lock().unwrap_or_else(|e| e.into_inner());
    if current.0 != pid {
        *current = (pid, start());
    }
    current.1
}

tokio::task_local! {
    static TASK_LOCALS: std::cell::OnceCell<TaskLocals>;
}

/// Lets `pyo3_async_runtimes` spawn onto the fork-aware runtime.
pub struct ForkSafeRuntime;

impl AsyncRuntime for ForkSafeRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        get().spawn(fut)
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        get().spawn_blocking(f)
    }
}

impl ContextExt for ForkSafeRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|c| c.get().cloned()).unwrap_or_default()
    }
}
