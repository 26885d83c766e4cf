//! Hardware-independent scheduler logic: run queues, timer queue, wait queues
#![no_std]
