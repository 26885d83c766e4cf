//! Hardware-independent readiness logic: epoll interest and ready lists
#![no_std]
