//! Host CLI library.
