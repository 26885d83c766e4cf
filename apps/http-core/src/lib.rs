//! Sans-IO HTTP/1.1 request parsing and response logic for the static file server
#![no_std]
