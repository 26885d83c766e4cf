//! The kernel's lowest-level lock: a spinlock that also disables interrupts
//! while held, so an interrupt handler on the same CPU can never deadlock on a
//! lock its own CPU holds.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::instructions::interrupts;

/// A spinlock that runs its critical section with interrupts disabled.
pub struct IrqMutex<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked`; T moves between CPUs
// only as a `Send` value would.
unsafe impl<T: Send> Sync for IrqMutex<T> {}
// SAFETY: as above; the lock owns its value.
unsafe impl<T: Send> Send for IrqMutex<T> {}

/// Proof of holding an [`IrqMutex`]; restores the interrupt flag on drop.
pub struct IrqGuard<'a, T> {
    lock: &'a IrqMutex<T>,
    irq_was_enabled: bool,
}

impl<T> IrqMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Spins until the lock is free.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let irq_was_enabled = interrupts::are_enabled();
        interrupts::disable();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Some(IrqGuard {
                lock: self,
                irq_was_enabled,
            })
        } else {
            if irq_was_enabled {
                interrupts::enable();
            }
            None
        }
    }

    /// True while someone holds the lock.
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive ownership of the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive ownership of the lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        if self.irq_was_enabled {
            interrupts::enable();
        }
    }
}
