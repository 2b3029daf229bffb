//! Email: rendering the sign-in message, the transports (SMTP or a directory
//! of `.eml` files) and the outbox worker that delivers queued messages.

mod message;
mod smtp;
mod transport;
mod worker;

pub use message::{SignInEmail, render_sign_in_email};
pub use transport::{DeliveryError, MailTransport, SmtpUrl};
pub use worker::{DRAIN_TIME, OutboxWorker, RetryPolicy};
