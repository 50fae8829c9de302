//! The work the DNS listeners spawn for queries in flight (a UDP query that waits for
//! upstream, a TCP connection, each query it reads), tracked so that a stop can drain
//! it: wait for it to finish, within a bound, then cut off the rest.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long cut-off tasks get to notice (they end at their next poll).
const CUT_GRACE: Duration = Duration::from_millis(500);

/// The tasks the listeners spawn for work in flight: a UDP query that waits for
/// upstream, a TCP connection, and each query it reads. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    /// Cancelled when the drain's time is up: what is still running ends at once.
    cut: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Run `work` in a task of its own, tracked until it finishes or is cut off.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            cut.run_until_cancelled(work).await;
        });
    }

    /// Wait for the tasks to finish, at most `bound`; then cut off the rest (each is
    /// dropped where it waits, so it records nothing more) and return how many were.
    /// Call once the listeners have stopped: a task still running may spawn more (a
    /// TCP connection its last query), which are waited for too.
    pub async fn drain(&self, bound: Duration) -> usize {
        self.tracker.close();
        if tokio::time::timeout(bound, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let cut = self.tracker.len();
        tracing::warn!(
            cut,
            "stopping: {cut} DNS tasks still in flight after {bound:?} were cut off"
        );
        self.cut.cancel();
        if tokio::time::timeout(CUT_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(left = self.tracker.len(), "cut-off DNS tasks did not end");
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The drain waits for the work in flight, and cuts off (drops, so it can record
    /// nothing more) whatever outlives its bound, before it returns.
    #[tokio::test]
    async fn the_drain_waits_for_tasks_and_cuts_off_what_outlives_its_bound() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, SeqCst);
            }
        }

        let tasks = Tasks::new();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, SeqCst);
        });
        assert_eq!(tasks.drain(Duration::from_secs(5)).await, 0);
        assert!(finished.load(SeqCst), "the drain waited for the task");

        let tasks = Tasks::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        tasks.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        assert_eq!(tasks.drain(Duration::from_millis(50)).await, 1);
        assert!(
            dropped.load(SeqCst),
            "the task was cut off before the drain returned"
        );
    }
}
