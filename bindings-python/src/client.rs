//! `NativeClient`: the Rust client behind `magicauth.Client` and `magicauth.AsyncClient`.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use magicauth::{Client, ClientBuilder, SendLinkResponse, SessionClaims, Verification};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::to_py_err;
use crate::runtime::{self, ForkSafeRuntime};

#[pyclass(module = "magicauth._native", frozen)]
pub struct NativeClient {
    builder: ClientBuilder,
    clients: Mutex<Clients>,
}

/// One client per runtime, since a pooled connection is served by a task of
/// the runtime that opened it; and the process they were built in: a forked
/// child builds its own, since pooled connections belong to the parent.
struct Clients {
    pid: u32,
    blocking: Option<Client>,
    asyncio: Option<Client>,
}

#[derive(Clone, Copy)]
enum Mode {
    Blocking,
    Asyncio,
}

impl NativeClient {
    fn client(&self, py: Python<'_>, mode: Mode) -> PyResult<Client> {
        let pid = std::process::id();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.pid != pid {
            *clients = Clients {
                pid,
                blocking: None,
                asyncio: None,
            };
        }
        let slot = match mode {
            Mode::Blocking => &mut clients.blocking,
            Mode::Asyncio => &mut clients.asyncio,
        };
        if let Some(client) = slot {
            return Ok(client.clone());
        }
        let client = self.builder.clone().build().map_err(|e| to_py_err(py, e))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `call` on the runtime with the GIL released.
    fn blocking<T, F, Fut>(&self, py: Python<'_>, call: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(Client) -> Fut + Send,
        Fut: Future<Output = Result<T, magicauth::Error>> + Send,
    {
        let client = self.client(py, Mode::Blocking)?;
        py.detach(move || runtime::blocking().block_on(call(client)))
            .map_err(|e| to_py_err(py, e))
    }

    /// Returns an asyncio awaitable that runs `call` on the runtime.
    fn awaitable<'py, T, F, Fut>(
        &self,
        py: Python<'py>,
        call: F,
        convert: fn(Python<'_>, T) -> PyResult<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, magicauth::Error>> + Send + 'static,
    {
        let client = self.client(py, Mode::Asyncio)?;
        pyo3_async_runtimes::generic::future_into_py::<ForkSafeRuntime, _, _>(py, async move {
            let result = call(client).await;
            Python::attach(|py| match result {
                Ok(value) => convert(py, value),
                Err(error) => Err(to_py_err(py, error)),
            })
        })
    }
}

fn send_link_dict(py: Python<'_>, sent: SendLinkResponse) -> PyResult<Py<PyAny>> {
    let dict = PyDict::new(py);
    dict.set_item("expires_in", sent.expires_in)?;
    Ok(dict.into_any().unbind())
}

fn verification_dict(py: Python<'_>, v: Verification) -> PyResult<Py<PyAny>> {
    let user = PyDict::new(py);
    user.set_item("id", v.user.id)?;
    user.set_item("email", v.user.email)?;
    user.set_item("name", v.user.name)?;
    user.set_item("email_verified_at", v.user.email_verified_at)?;
    user.set_item("last_login_at", v.user.last_login_at)?;
    let dict = PyDict::new(py);
    dict.set_item("user", user)?;
    dict.set_item("token", v.token)?;
    dict.set_item("redirect_url", v.redirect_url)?;
    Ok(dict.into_any().unbind())
}

fn claims_dict(py: Python<'_>, c: SessionClaims) -> PyResult<Py<PyAny>> {
    let dict = PyDict::new(py);
    dict.set_item("iss", c.iss)?;
    dict.set_item("sub", c.sub)?;
    dict.set_item("aud", c.aud)?;
    dict.set_item("email", c.email)?;
    dict.set_item("iat", c.iat)?;
    dict.set_item("exp", c.exp)?;
    dict.set_item("jti", c.jti)?;
    Ok(dict.into_any().unbind())
}

/// The core's configuration error (`ConfigurationError`) for an option this
/// binding checks in its own types.
fn configuration(py: Python<'_>, message: &str) -> PyErr {
    to_py_err(py, magicauth::Error::configuration(message))
}

#[pymethods]
impl NativeClient {
    /// Arguments left out come from MAGICAUTH_APP_KEY / MAGICAUTH_BASE_URL.
    #[new]
    #[pyo3(signature = (app_key=None, *, base_url=None, timeout=None, max_retries=None, user_agent=None))]
    fn new(
        py: Python<'_>,
        app_key: Option<String>,
        base_url: Option<String>,
        timeout: Option<f64>,
        max_retries: Option<i64>,
        user_agent: Option<String>,
    ) -> PyResult<Self> {
        let mut builder = Client::builder();
        if let Some(key) = app_key {
            builder = builder.app_key(key);
        }
        if let Some(url) = base_url {
            builder = builder.base_url(url);
        }
        if let Some(secs) = timeout {
            // Negative or not a number: not a duration at all. Zero is the core's to refuse.
            let timeout = Duration::try_from_secs_f64(secs)
                .map_err(|_| configuration(py, "timeout must be a positive number of seconds"))?;
            builder = builder.timeout(timeout);
        }
        if let Some(n) = max_retries {
            let retries =
                u32::try_from(n).map_err(|_| configuration(py, "max_retries must be a non-negative integer"))?;
            builder = builder.max_retries(retries);
        }
        builder = builder.user_agent(
            user_agent.unwrap_or_else(|| format!("magicauth-python/{} (rust core)", env!("CARGO_PKG_VERSION"))),
        );
        let builder = builder.from_env();
        // Built now so that a bad configuration fails here, not at the first call.
        let client = builder.clone().build().map_err(|e| to_py_err(py, e))?;
        Ok(Self {
            builder,
            clients: Mutex::new(Clients {
                pid: std::process::id(),
                blocking: Some(client),
                asyncio: None,
            }),
        })
    }

    #[getter]
    fn base_url(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.client(py, Mode::Blocking)?.base_url().to_owned())
    }

    #[pyo3(signature = (email, redirect_url=None))]
    fn send_link(&self, py: Python<'_>, email: String, redirect_url: Option<String>) -> PyResult<Py<PyAny>> {
        let sent = self.blocking(py, move |c| async move {
            c.send_link(&email, redirect_url.as_deref()).await
        })?;
        send_link_dict(py, sent)
    }

    fn verify_token(&self, py: Python<'_>, token: String) -> PyResult<Py<PyAny>> {
        let verification = self.blocking(py, move |c| async move { c.verify_token(&token).await })?;
        verification_dict(py, verification)
    }

    fn verify_session(&self, py: Python<'_>, jwt: String) -> PyResult<Py<PyAny>> {
        let claims = self.blocking(py, move |c| async move { c.verify_session(&jwt).await })?;
        claims_dict(py, claims)
    }

    #[pyo3(signature = (email, redirect_url=None))]
    fn send_link_async<'py>(
        &self,
        py: Python<'py>,
        email: String,
        redirect_url: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.awaitable(
            py,
            move |c| async move { c.send_link(&email, redirect_url.as_deref()).await },
            send_link_dict,
        )
    }

    fn verify_token_async<'py>(&self, py: Python<'py>, token: String) -> PyResult<Bound<'py, PyAny>> {
        self.awaitable(
            py,
            move |c| async move { c.verify_token(&token).await },
            verification_dict,
        )
    }

    fn verify_session_async<'py>(&self, py: Python<'py>, jwt: String) -> PyResult<Bound<'py, PyAny>> {
        self.awaitable(py, move |c| async move { c.verify_session(&jwt).await }, claims_dict)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.client(py, Mode::Blocking) {
            Ok(c) => format!("NativeClient(base_url={:?})", c.base_url()),
            Err(_) => "NativeClient()".to_owned(),
        }
    }
}
