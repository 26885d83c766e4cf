//! Sans-IO HTTP/1.1 request parsing and response logic for the static file server.
//!
//! The server application owns sockets and files; this crate decides everything
//! else: how many bytes form a request, whether the connection stays open, which
//! file path a request target maps to, which status code, headers and body parts
//! the response consists of, and what the access log line looks like.
//!
//! Everything is bounded by [`Limits`] and never panics on network input.
//!
//! Typical flow for one request:
//!
//! 1. [`parse_request`] on the bytes received so far. [`ParseOutcome::Partial`]
//!    means "read more"; [`ParseOutcome::Error`] carries a [`StatusError`] whose
//!    [`StatusError::response`] is sent before (possibly) closing.
//! 2. [`resolve_target`] turns the request target into a [`SafePath`] (or a 400).
//! 3. The server looks the path up and describes what it found as a [`Resource`]
//!    (using [`mime_for`] for the content type).
//! 4. [`plan_response`] returns a [`ResponsePlan`]: the header block bytes plus a
//!    list of [`BodyPart`]s to write (file slices and literal bytes).
//! 5. [`combined_log_line`] produces the access log line.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

#[cfg(feature = "tls")]
pub mod acme;
pub mod balance;
pub mod config;
mod date;
mod encoding;
mod fuzz;
#[cfg(feature = "tls")]
pub mod https;
mod log;
mod mime;
mod oom;
mod parse;
mod path;
mod precond;
mod response;
#[cfg(feature = "tls")]
pub mod session;
pub mod sort;
pub mod x509;

pub use date::{MAX_HTTP_DATE, format_http_date, parse_http_date};
pub use encoding::{Encoding, choose_encoding};
pub use fuzz::fuzz_one;
pub use log::{LogLine, combined_log_line};
pub use mime::{DEFAULT_MIME, mime_for};
pub use oom::NoMemory;
pub use parse::{ALLOW, Limits, Method, ParseOutcome, Request, StatusError, parse_request};
pub use path::{SafePath, resolve_target};
pub use precond::{
    ByteRange, FileMeta, Precondition, RangeOutcome, etag, etag_list_matches,
    evaluate_preconditions, if_range_allows, parse_range,
};
pub use response::{
    BodyPart, FileInfo, ListingEntry, OVERLOADED, Resource, ResponsePlan, ServerInfo,
    error_response, plan_error, plan_error_page, plan_listing, plan_redirect, plan_response,
    reason_phrase,
};
