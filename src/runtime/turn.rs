//! Connections that used up their poll budget wait for the shard's next ring poll.
//!
//! glommio tries a socket's `recv` before its ring, so a client whose reads keep succeeding
//! never leaves the run queue, and the executor polls its rings (every other socket's reads and
//! writes) only once the run queue is empty or its preempt timer fires, 100 ms by default: one
//! flooding client held every other socket of its shard that long. A connection that spent its
//! budget is therefore not woken at once but after the next ring poll, which it cannot delay.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The wakers of connections waiting for the shard's next ring poll.
#[derive(Default)]
pub(crate) struct NextTurn {
    waiting: RefCell<Vec<Waker>>,
    /// The shard's [`NextTurn::run`] task while it waits for work.
    idle: RefCell<Option<Waker>>,
}

impl NextTurn {
    /// Wakes `waker` after the shard has next polled its rings.
    pub(crate) fn defer(&self, waker: &Waker) {
        self.waiting.borrow_mut().push(waker.clone());
        if let Some(idle) = self.idle.borrow_mut().take() {
            idle.wake();
        }
    }

    /// The shard's one task that wakes the deferred connections: glommio fires timers only from
    /// its reactor, so a timer a microsecond out completes once the executor has polled its rings.
    pub(crate) async fn run(&self) {
        loop {
            poll_fn(|cx| {
                if self.waiting.borrow().is_empty() {
                    *self.idle.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            glommio::timer::sleep(Duration::from_micros(1)).await;
            let mut waking = std::mem::take(&mut *self.waiting.borrow_mut());
            waking.drain(..).for_each(Waker::wake);
            // Keep the allocation for the next turn: under a flood this runs every ring poll.
            let mut waiting = self.waiting.borrow_mut();
            if waiting.is_empty() {
                *waiting = waking;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Write;
    use std::rc::Rc;

    use futures_lite::AsyncReadExt;
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    /// A task that always has more to do and waits for the next turn after every poll, as a
    /// connection with a full budget does, must not keep a socket whose bytes are already in the
    /// kernel from being read: the read completes within a few of its turns. (With an immediate
    /// wake it would run until glommio's preempt timer, thousands of polls.)
    #[test]
    fn a_task_that_always_has_work_lets_the_ring_be_polled_every_turn() {
        let ex = LocalExecutorBuilder::new(Placement::Unbound).io_memory(256 * 1024).make().unwrap();
        let busy_polls = ex.run(async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let mut stream = listener.accept().await.unwrap();
            let turn = Rc::new(NextTurn::default());
            glommio::spawn_local({
                let turn = turn.clone();
                async move { turn.run().await }
            })
            .detach();
            let read_done = Rc::new(Cell::new(false));
            let reader = glommio::spawn_local({
                let read_done = read_done.clone();
                async move {
                    let mut byte = [0u8; 1];
                    stream.read_exact(&mut byte).await.unwrap();
                    read_done.set(true);
                }
            });
            let polls = Rc::new(Cell::new(0u32));
            let busy = glommio::spawn_local({
                let (turn, polls, read_done) = (turn.clone(), polls.clone(), read_done.clone());
                poll_fn(move |cx| {
                    polls.set(polls.get() + 1);
                    if polls.get() == 1 {
                        // The reader is parked on its ring by now; the byte arrives while busy.
                        peer.write_all(b"x").unwrap();
                    }
                    if read_done.get() {
                        return Poll::Ready(());
                    }
                    turn.defer(cx.waker());
                    Poll::Pending
                })
            });
            reader.await;
            busy.await;
            polls.get()
        });
        assert!(busy_polls < 20, "the busy task ran {busy_polls} times before the read completed");
    }
}
