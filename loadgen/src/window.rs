//! The measured window, one for every client thread: it opens once every thread has warmed
//! up and closes at the same time for all of them, and no thread tears its clients down
//! before every thread's window has closed. Otherwise the first thread to finish closes its
//! thousands of connections while the others still measure, and the server's work on those
//! closes shows up in their latency tail as if it were the server's steady state.

use std::sync::Mutex;

use tokio::sync::Notify;

/// A reusable rendezvous of the client threads that gives up if one of them failed.
pub struct Window {
    threads: usize,
    gate: Mutex<Gate>,
    changed: Notify,
}

#[derive(Default)]
struct Gate {
    arrived: usize,
    generation: u64,
    failed: bool,
}

impl Window {
    pub fn new(threads: usize) -> Self {
        Window { threads: threads.max(1), gate: Mutex::new(Gate::default()), changed: Notify::new() }
    }

    /// Waits until every thread has called this (the n-th time each); an error if a thread
    /// failed instead.
    pub async fn all_here(&self) -> anyhow::Result<()> {
        let generation = {
            let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            gate.arrived += 1;
            if gate.arrived == self.threads {
                gate.arrived = 0;
                gate.generation += 1;
                self.changed.notify_waiters();
                return Ok(());
            }
            gate.generation
        };
        loop {
            // Registered before the check, so a wake-up between the two is not missed.
            let notified = self.changed.notified();
            {
                let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
                if gate.failed {
                    anyhow::bail!("another client thread failed");
                }
                if gate.generation != generation {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// This thread failed: the others stop waiting for it.
    pub fn abandon(&self) {
        self.gate.lock().unwrap_or_else(|e| e.into_inner()).failed = true;
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn every_thread_passes_together_and_again() {
        let window = Arc::new(Window::new(3));
        let passed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..3 {
                let (window, passed) = (window.clone(), passed.clone());
                scope.spawn(move || {
                    block_on(async {
                        window.all_here().await.unwrap();
                        // Nobody is past the first meeting before all three arrived.
                        passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        window.all_here().await.unwrap();
                        assert_eq!(passed.load(std::sync::atomic::Ordering::SeqCst), 3);
                    })
                });
            }
        });
    }

    #[test]
    fn a_failed_thread_releases_the_others_with_an_error() {
        let window = Arc::new(Window::new(2));
        let waiter = {
            let window = window.clone();
            std::thread::spawn(move || block_on(window.all_here()))
        };
        window.abandon();
        assert!(waiter.join().unwrap().is_err());
    }
}
