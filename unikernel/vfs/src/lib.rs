//! Hardware-independent VFS logic: paths, dentry cache, page cache, readahead
#![no_std]
