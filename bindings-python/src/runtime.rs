//! The tokio runtimes of the process, rebuilt after `fork()`.
//!
//! Blocking calls run on a current-thread runtime that the calling thread
//! drives itself inside `block_on`: the request, its connection's task and
//! the socket's readiness are all handled on that thread, with no hand-off
//! to another thread and back (on small machines those wake-ups cost more
//! than the HTTP exchange). Several threads may call at once: one drives the
//! runtime while the others wait for their own results or for their turn.
//! asyncio calls need tasks that progress with no caller waiting, so they
//! run on a multi-thread runtime, with their own connections.
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

type Slot = OnceLock<Mutex<(u32, &'static Runtime)>>;

static RUNTIME: Slot = OnceLock::new();
static BLOCKING: Slot = OnceLock::new();

fn start_multi_thread() -> &'static Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("magicauth")
        .build()
        .expect("starting the MagicAuth tokio runtime");
    Box::leak(Box::new(runtime))
}

fn start_current_thread() -> &'static Runtime {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the MagicAuth tokio runtime");
    Box::leak(Box::new(runtime))
}

/// The runtime in `slot` for the current process.
fn of_this_process(slot: &Slot, start: fn() -> &'static Runtime) -> &'static Runtime {
    let pid = std::process::id();
    let cell = slot.get_or_init(|| Mutex::new((pid, start())));
    let mut current = cell.lock().unwrap_or_else(|e| e.into_inner());
    if current.0 != pid {
        *current = (pid, start());
    }
    current.1
}

/// The multi-thread runtime of the current process, for asyncio calls.
pub fn get() -> &'static Runtime {
    of_this_process(&RUNTIME, start_multi_thread)
}

/// The current-thread runtime of the current process, for blocking calls.
pub fn blocking() -> &'static Runtime {
    of_this_process(&BLOCKING, start_current_thread)
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
