//! How a call runs. Its future runs on one I/O thread that drives a
//! current-thread tokio runtime, so a request and the HTTP connection task it
//! talks to share a thread and wake no other; its outcome comes back to the
//! JavaScript thread through one long-lived threadsafe function per
//! environment, which settles the call's Promise there. A call so costs two
//! thread hand-offs (JavaScript → I/O thread → JavaScript) and no per-call
//! setup. (napi's `spawn_future_with_callback` would run the future on a
//! multi-thread runtime, whose workers wake each other, and create and close
//! a threadsafe function, a libuv handle, for every call.)
//!
//! Waking a sleeping thread costs tens of microseconds on some machines
//! (virtual ones most), more than the rest of a call's client-side work. So
//! while calls come and go, neither side sleeps: the I/O thread polls its
//! sockets (`poll_while_busy`), and the event loop of an environment with a
//! recent call keeps turning without blocking in its poll (`Spinner`). Both
//! stop `STAY_AWAKE` after the last call started or settled, and while more
//! than `POLL_MAX_IN_FLIGHT` calls are in flight (the server then has a queue
//! and the cores work anyway); both let other threads ready to run on their
//! core go first on every turn.
//!
//! Only the JavaScript thread touches napi values. The I/O thread hands back a
//! closure that converts the outcome; it runs on the JavaScript thread.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::future::Future;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{PromiseRaw, ToNapiValue};
use napi::tokio::runtime::{Builder, Handle};
use napi::tokio::sync::Notify;
use napi::{Env, Error, JsError, Result, Status, sys};

/// Converts a call's outcome on the JavaScript thread: `Ok` resolves the
/// Promise with the value, `Err` rejects it with the value.
type Settle = Box<dyn FnOnce(&Env) -> std::result::Result<sys::napi_value, sys::napi_value> + Send>;

/// The handle of the runtime; the runtime itself lives on its thread for the
/// rest of the process, shared by every client and every environment.
fn runtime() -> Result<&'static Handle> {
    static RUNTIME: OnceLock<std::result::Result<Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("could not start the I/O runtime: {e}"))?;
            let handle = runtime.handle().clone();
            // The thread runs this image's code until the process exits.
            napi::bindgen_prelude::retain_current_module_for_unload_safety();
            std::thread::Builder::new()
                .name("magicauth-io".to_owned())
                .spawn(move || runtime.block_on(poll_while_busy()))
                .map_err(|e| format!("could not start the I/O thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|reason| Error::new(Status::GenericFailure, reason.clone()))
}

/// How long the I/O thread keeps polling for work, and an environment's event
/// loop keeps turning, after a call starts or settles, before they sleep.
///
/// Waking a sleeping thread costs tens of microseconds on some machines
/// (virtual ones most), and a call would pay it three times: the I/O thread
/// when the call starts and when its response arrives, and the JavaScript
/// thread when the outcome is handed to it. While calls come and go, the I/O
/// thread instead polls its sockets without blocking (tokio's `yield_now`
/// makes the runtime check for I/O with a zero timeout), and the event loop
/// polls for the outcome (see `Spinner`). Past this time both sleep until
/// something happens, so a slow call is waited for asleep, as `fetch` waits.
const STAY_AWAKE: Duration = Duration::from_micros(500);

/// Polling pays off while the other side answers soon after a call starts.
/// With more calls than this in flight, the server has a queue, the cores
/// are busy, and a wake-up costs little next to the time a poll would take
/// from the server: the I/O thread and the event loop then sleep until an
/// answer arrives.
const POLL_MAX_IN_FLIGHT: usize = 2;

/// When the I/O thread last saw a call start or finish.
struct Activity {
    epoch: Instant,
    /// Nanoseconds from `epoch`.
    last: AtomicU64,
    /// Calls started and not finished, of every environment.
    in_flight: AtomicUsize,
    /// Wakes the poller when a call starts or finishes while it sleeps.
    wake: Notify,
}

impl Activity {
    fn touch(&self) {
        self.last.store(self.elapsed(), Ordering::Relaxed);
    }

    /// Whether to poll rather than sleep: a call started or finished a
    /// moment ago, and few are in flight.
    fn poll(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) <= POLL_MAX_IN_FLIGHT
            && self.elapsed().saturating_sub(self.last.load(Ordering::Relaxed)) < STAY_AWAKE.as_nanos() as u64
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

static ACTIVITY: LazyLock<Activity> = LazyLock::new(|| Activity {
    epoch: Instant::now(),
    last: AtomicU64::new(0),
    in_flight: AtomicUsize::new(0),
    wake: Notify::new(),
});

/// The I/O thread's main future: polls without sleeping while a few calls
/// are recent, and sleeps (in the runtime's epoll wait) otherwise.
async fn poll_while_busy() {
    loop {
        if ACTIVITY.poll() {
            // Lets another thread that is ready to run on this core (the
            // server, on a small machine) go first.
            std::thread::yield_now();
            napi::tokio::task::yield_now().await;
        } else {
            ACTIVITY.wake.notified().await;
        }
    }
}

/// Counts a call in flight on the I/O thread until dropped (also when the
/// call panics), and tells the poller of each change.
struct InFlight;

impl InFlight {
    fn begin() -> InFlight {
        ACTIVITY.in_flight.fetch_add(1, Ordering::Relaxed);
        ACTIVITY.touch();
        ACTIVITY.wake.notify_one();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        ACTIVITY.in_flight.fetch_sub(1, Ordering::Relaxed);
        ACTIVITY.touch();
        ACTIVITY.wake.notify_one();
    }
}

/// Runs `call` on the I/O thread and returns a Promise of its outcome:
/// resolved with `T`, or rejected with the error `reject` builds (on the
/// JavaScript thread) from the call's error.
pub fn spawn<'env, T, E, F>(
    env: &'env Env,
    call: F,
    reject: fn(&Env, &E) -> sys::napi_value,
) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    E: Send + 'static,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
{
    let handle = runtime()?;
    let bridge = Bridge::of(env)?;
    let mut deferred = ptr::null_mut();
    let mut promise = ptr::null_mut();
    check(unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) })?;
    let settler = Settler {
        deferred: Some(Deferred(deferred)),
        shared: Arc::clone(&bridge.shared),
    };
    bridge.call_started(env);
    handle.spawn(async move {
        let mut settler = settler;
        let in_flight = InFlight::begin();
        let outcome = call.await;
        drop(in_flight);
        settler.settle(Box::new(move |env| match outcome {
            Ok(value) => unsafe { T::to_napi_value(env.raw(), value) }.map_err(|e| error_value(env, e)),
            Err(error) => Err(reject(env, &error)),
        }));
    });
    Ok(PromiseRaw::new(env.raw(), promise))
}

/// A JavaScript value for a napi error (a failed conversion).
pub fn error_value(env: &Env, error: Error) -> sys::napi_value {
    unsafe { JsError::from(error).into_value(env.raw()) }
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::new(Status::from(status), "Node-API call failed"))
    }
}

/// A Promise's deferred: only ever used on its environment's JavaScript
/// thread, carried through the I/O thread untouched.
struct Deferred(sys::napi_deferred);

// SAFETY: the pointer is only dereferenced (by Node-API) on the JavaScript
// thread that created it, in `settle_on_js_thread`.
unsafe impl Send for Deferred {}

/// What the I/O thread sends back: a deferred and how to settle it.
struct Settlement {
    deferred: Deferred,
    settle: Settle,
}

/// The part of an environment's bridge that the I/O thread uses: its
/// threadsafe function, `None` once the environment is tearing down.
struct Shared {
    tsfn: Mutex<Option<Tsfn>>,
}

struct Tsfn(sys::napi_threadsafe_function);

// SAFETY: calling a threadsafe function from any thread is its purpose; the
// mutex in `Shared` keeps a call from racing the environment's teardown.
unsafe impl Send for Tsfn {}

impl Shared {
    fn send(&self, settlement: Settlement) {
        let data = Box::into_raw(Box::new(settlement));
        let tsfn = self.tsfn.lock().unwrap_or_else(PoisonError::into_inner);
        let status = match tsfn.as_ref() {
            Some(tsfn) => unsafe {
                sys::napi_call_threadsafe_function(tsfn.0, data.cast(), sys::ThreadsafeFunctionCallMode::nonblocking)
            },
            None => sys::Status::napi_closing,
        };
        drop(tsfn);
        if status != sys::Status::napi_ok {
            // The environment is gone: there is no Promise left to settle.
            drop(unsafe { Box::from_raw(data) });
        }
    }
}

/// Settles one call's Promise exactly once: with the call's outcome, or, if
/// the task is dropped without one (the call panicked), with an error, so
/// that no Promise stays pending and keeps the event loop alive.
struct Settler {
    deferred: Option<Deferred>,
    shared: Arc<Shared>,
}

impl Settler {
    fn settle(&mut self, settle: Settle) {
        if let Some(deferred) = self.deferred.take() {
            self.shared.send(Settlement { deferred, settle });
        }
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        self.settle(Box::new(|env| {
            Err(error_value(
                env,
                Error::new(Status::GenericFailure, "the call failed unexpectedly (panic)"),
            ))
        }));
    }
}

/// One environment's threadsafe function and its count of unsettled calls,
/// kept by that environment's JavaScript thread. The threadsafe function keeps
/// the event loop alive only while a call is unsettled.
struct Bridge {
    env: sys::napi_env,
    tsfn: sys::napi_threadsafe_function,
    shared: Arc<Shared>,
    pending: Cell<usize>,
    /// Keeps the event loop turning while calls are recent.
    spinner: Option<Spinner>,
}

thread_local! {
    /// The bridge of the environment whose JavaScript thread this is.
    static BRIDGE: RefCell<Option<Rc<Bridge>>> = const { RefCell::new(None) };
}

impl Bridge {
    fn of(env: &Env) -> Result<Rc<Bridge>> {
        let existing = BRIDGE.with_borrow(|bridge| bridge.as_ref().filter(|b| b.env == env.raw()).cloned());
        if let Some(bridge) = existing {
            return Ok(bridge);
        }
        let bridge = Rc::new(Self::create(env)?);
        BRIDGE.set(Some(Rc::clone(&bridge)));
        Ok(bridge)
    }

    fn create(env: &Env) -> Result<Bridge> {
        let raw = env.raw();
        let mut name = ptr::null_mut();
        let label = "magicauth";
        check(unsafe { sys::napi_create_string_utf8(raw, label.as_ptr().cast(), label.len() as isize, &mut name) })?;
        let mut tsfn = ptr::null_mut();
        check(unsafe {
            sys::napi_create_threadsafe_function(
                raw,
                ptr::null_mut(),
                ptr::null_mut(),
                name,
                0,
                1,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
                Some(settle_on_js_thread),
                &mut tsfn,
            )
        })?;
        check(unsafe { sys::napi_unref_threadsafe_function(raw, tsfn) })?;
        let shared = Arc::new(Shared {
            tsfn: Mutex::new(Some(Tsfn(tsfn))),
        });
        // Registered after the threadsafe function, so it runs before Node
        // finalizes it (cleanup hooks run in reverse order).
        let hook_data = Arc::into_raw(Arc::clone(&shared)).cast_mut().cast::<c_void>();
        if let Err(error) = check(unsafe { sys::napi_add_env_cleanup_hook(raw, Some(environment_teardown), hook_data) })
        {
            drop(unsafe { Arc::from_raw(hook_data.cast_const().cast::<Shared>()) });
            unsafe { sys::napi_release_threadsafe_function(tsfn, sys::ThreadsafeFunctionReleaseMode::abort) };
            return Err(error);
        }
        Ok(Bridge {
            env: raw,
            tsfn,
            shared,
            pending: Cell::new(0),
            // Without it calls still work; the event loop then sleeps between them.
            spinner: Spinner::new(env),
        })
    }

    fn call_started(&self, env: &Env) {
        let pending = self.pending.get();
        if pending == 0 {
            unsafe { sys::napi_ref_threadsafe_function(env.raw(), self.tsfn) };
        }
        self.pending.set(pending + 1);
        if let Some(spinner) = &self.spinner {
            spinner.touch(pending + 1);
        }
    }

    fn call_settled(&self, env: sys::napi_env) {
        let pending = self.pending.get().saturating_sub(1);
        self.pending.set(pending);
        if pending == 0 {
            unsafe { sys::napi_unref_threadsafe_function(env, self.tsfn) };
        }
        if let Some(spinner) = &self.spinner {
            spinner.touch(pending);
        }
    }
}

/// The threadsafe function's callback, on the JavaScript thread: settles one
/// call's Promise. `env` is null when the environment is tearing down; then
/// the settlement is only dropped.
unsafe extern "C" fn settle_on_js_thread(
    env: sys::napi_env,
    _callback: sys::napi_value,
    _context: *mut c_void,
    data: *mut c_void,
) {
    let Settlement { deferred, settle } = *unsafe { Box::from_raw(data.cast::<Settlement>()) };
    if env.is_null() {
        return;
    }
    let js_env = Env::from_raw(env);
    let _ = match settle(&js_env) {
        Ok(value) => unsafe { sys::napi_resolve_deferred(env, deferred.0, value) },
        Err(value) => unsafe { sys::napi_reject_deferred(env, deferred.0, value) },
    };
    BRIDGE.with_borrow(|bridge| {
        if let Some(bridge) = bridge.as_ref().filter(|b| b.env == env) {
            bridge.call_settled(env);
        }
    });
}

/// Env cleanup hook, on the JavaScript thread: stops the I/O thread from
/// calling the threadsafe function (calls still running settle nothing), and
/// aborts it before Node finalizes it.
unsafe extern "C" fn environment_teardown(data: *mut c_void) {
    let shared = unsafe { Arc::from_raw(data.cast_const().cast::<Shared>()) };
    let tsfn = shared.tsfn.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(tsfn) = tsfn {
        let bridge = BRIDGE.with_borrow_mut(|bridge| {
            if bridge.as_ref().is_some_and(|b| b.tsfn == tsfn.0) {
                bridge.take()
            } else {
                None
            }
        });
        if let Some(spinner) = bridge.as_ref().and_then(|b| b.spinner.as_ref()) {
            spinner.close();
        }
        unsafe { sys::napi_release_threadsafe_function(tsfn.0, sys::ThreadsafeFunctionReleaseMode::abort) };
    }
}

/// Keeps an environment's event loop turning without blocking for
/// `STAY_AWAKE` after its last call started or settled, so that a call's
/// outcome is picked up on the loop's next turn instead of by waking the
/// thread: a libuv idle handle, which makes the loop poll with a zero timeout
/// while it is active. It is unreferenced, so it never keeps the process
/// alive, and it is closed when the environment tears down. Each turn lets
/// another thread that is ready to run on this core (the server, on a small
/// machine) go first.
struct Spinner {
    handle: *mut c_void,
    last: Cell<Instant>,
    active: Cell<bool>,
}

impl Spinner {
    /// `None` where the event loop cannot be reached; the loop then sleeps
    /// between calls.
    fn new(env: &Env) -> Option<Spinner> {
        let mut event_loop = ptr::null_mut();
        check(unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut event_loop) }).ok()?;
        let layout = uv::idle_layout()?;
        let handle = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<c_void>();
        if handle.is_null() {
            return None;
        }
        if unsafe { uv::idle_init(event_loop.cast(), handle) } != 0 {
            unsafe { std::alloc::dealloc(handle.cast(), layout) };
            return None;
        }
        unsafe { uv::unref(handle) };
        Some(Spinner {
            handle,
            last: Cell::new(Instant::now()),
            active: Cell::new(false),
        })
    }

    /// A call started or settled, leaving `pending` calls unsettled.
    fn touch(&self, pending: usize) {
        self.last.set(Instant::now());
        if pending > POLL_MAX_IN_FLIGHT {
            self.stop();
        } else if !self.active.get() && unsafe { uv::idle_start(self.handle, spin) } == 0 {
            self.active.set(true);
        }
    }

    fn stop(&self) {
        if self.active.get() {
            unsafe { uv::idle_stop(self.handle) };
            self.active.set(false);
        }
    }

    /// One turn of the event loop while active.
    fn turn(&self) {
        if self.last.get().elapsed() < STAY_AWAKE {
            std::thread::yield_now();
        } else {
            self.stop();
        }
    }

    fn close(&self) {
        unsafe { uv::close(self.handle, free_idle_handle) };
    }
}

/// The idle handle's callback, on the JavaScript thread.
unsafe extern "C" fn spin(handle: *mut c_void) {
    BRIDGE.with_borrow(|bridge| {
        match bridge
            .as_ref()
            .and_then(|b| b.spinner.as_ref())
            .filter(|s| s.handle == handle)
        {
            Some(spinner) => spinner.turn(),
            None => {
                unsafe { uv::idle_stop(handle) };
            }
        }
    });
}

/// Frees an idle handle once libuv has closed it.
unsafe extern "C" fn free_idle_handle(handle: *mut c_void) {
    if let Some(layout) = uv::idle_layout() {
        unsafe { std::alloc::dealloc(handle.cast(), layout) };
    }
}

/// The few libuv calls the spinner needs. Node exports libuv to addons; on
/// Windows napi-rs reaches Node-API through the host process instead of
/// linking it, so there the spinner is not built and the loop sleeps
/// between calls.
#[cfg(unix)]
mod uv {
    use std::alloc::Layout;
    use std::ffi::{c_int, c_void};

    /// `UV_IDLE` in libuv's `uv_handle_type`.
    const UV_IDLE: c_int = 6;

    type Callback = unsafe extern "C" fn(*mut c_void);

    unsafe extern "C" {
        fn uv_handle_size(kind: c_int) -> usize;
        #[link_name = "uv_idle_init"]
        pub fn idle_init(event_loop: *mut c_void, handle: *mut c_void) -> c_int;
        #[link_name = "uv_idle_start"]
        pub fn idle_start(handle: *mut c_void, callback: Callback) -> c_int;
        #[link_name = "uv_idle_stop"]
        pub fn idle_stop(handle: *mut c_void) -> c_int;
        #[link_name = "uv_unref"]
        pub fn unref(handle: *mut c_void);
        #[link_name = "uv_close"]
        pub fn close(handle: *mut c_void, callback: Callback);
    }

    /// The memory an idle handle takes.
    pub fn idle_layout() -> Option<Layout> {
        let size = unsafe { uv_handle_size(UV_IDLE) };
        Layout::from_size_align(size, 16).ok().filter(|_| size > 0)
    }
}

#[cfg(not(unix))]
mod uv {
    use std::alloc::Layout;
    use std::ffi::{c_int, c_void};

    type Callback = unsafe extern "C" fn(*mut c_void);

    /// No handle is ever made, so the functions below are never called.
    pub fn idle_layout() -> Option<Layout> {
        None
    }
    pub unsafe fn idle_init(_: *mut c_void, _: *mut c_void) -> c_int {
        -1
    }
    pub unsafe fn idle_start(_: *mut c_void, _: Callback) -> c_int {
        -1
    }
    pub unsafe fn idle_stop(_: *mut c_void) -> c_int {
        -1
    }
    pub unsafe fn unref(_: *mut c_void) {}
    pub unsafe fn close(_: *mut c_void, _: Callback) {}
}
