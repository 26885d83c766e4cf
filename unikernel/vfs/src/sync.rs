//! Lock abstraction supplied by the embedder.
//!
//! This crate forbids `unsafe`, so it cannot implement a lock itself. Instead
//! every type that needs interior mutability is generic over a [`Locking`]
//! family: the kernel plugs in its interrupt-safe spinlock (or a sleeping
//! mutex), host tests plug in `std::sync::Mutex` ([`StdLocking`], behind the
//! `std` feature or `cfg(test)`).
//!
//! Locks are only ever held for short, non-blocking critical sections; in
//! particular no lock of this crate is held while calling
//! [`Inode::read_page`](crate::Inode::read_page), so that method may block on
//! device I/O.

/// A family of mutexes (a "lock kind").
///
/// Implementations must provide mutual exclusion: `lock` runs the closure
/// with exclusive access to the protected value.
pub trait Locking: Send + Sync + 'static {
    /// The mutex type protecting a `T`.
    type Mutex<T: Send>: Send + Sync;

    /// Creates a new unlocked mutex holding `value`.
    fn new_mutex<T: Send>(value: T) -> Self::Mutex<T>;

    /// Runs `f` with exclusive access to the value in `mutex`.
    ///
    /// Must not be called re-entrantly on the same mutex from within `f`;
    /// this crate never does.
    fn lock<T: Send, R>(mutex: &Self::Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R;
}

/// A mutex of lock family `L` protecting a `T`.
pub struct Mutex<L: Locking, T: Send> {
    inner: L::Mutex<T>,
}

impl<L: Locking, T: Send> Mutex<L, T> {
    /// Creates a new mutex holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            inner: L::new_mutex(value),
        }
    }

    /// Runs `f` with exclusive access to the protected value.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        L::lock(&self.inner, f)
    }
}

/// [`Locking`] implemented with `std::sync::Mutex`, for host tests and tools.
#[cfg(any(test, feature = "std"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct StdLocking;

#[cfg(any(test, feature = "std"))]
impl Locking for StdLocking {
    type Mutex<T: Send> = std::sync::Mutex<T>;

    fn new_mutex<T: Send>(value: T) -> Self::Mutex<T> {
        std::sync::Mutex::new(value)
    }

    fn lock<T: Send, R>(mutex: &Self::Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = match mutex.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}
