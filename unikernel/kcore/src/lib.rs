//! Hardware-independent kernel logic: command line, frame and VMA bookkeeping
#![no_std]
