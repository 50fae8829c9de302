//! The one way Warden takes a `std::sync::Mutex`: [`lock`], which recovers from poison.
//!
//! A mutex is poisoned when a thread panics while holding it. Warden's mutexes guard
//! small state (a connection table, a sign-in limiter, a database connection, metric
//! sources, reload bookkeeping) that every method leaves consistent before anything in
//! it can panic, so the data behind a poisoned lock is still good. Refusing it would
//! turn one panic in one request into a daemon that can no longer answer over TCP,
//! record blocks, alert or reload. So the guard is taken anyway, here, in one place.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, taking the guard even if a panic elsewhere poisoned it (see the module
/// documentation for why that is safe here).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks_with_its_data() {
        let m = Mutex::new(vec![1]);
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let mut guard = m.lock().expect("not poisoned yet");
                guard.push(2);
                panic!("poison the mutex on purpose");
            })
            .join()
            .is_err()
        });
        assert!(panicked && m.is_poisoned());
        lock(&m).push(3);
        assert_eq!(*lock(&m), [1, 2, 3]);
    }
}
