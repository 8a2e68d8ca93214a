//! Messages between the shards of one process, over glommio's channel mesh: connections handed
//! to the shard that owns their room, and `/pubsub` traffic between the owner of a room or user
//! and the shards of its members.
//!
//! Shard state is synchronous and never awaits, so what it sends is queued per peer in
//! [`MeshOut`] and one task per peer moves the queue into the mesh, in order. When the queues
//! grow past [`HIGH_WATER`] (a peer shard slower than the connections feeding it), `/pubsub`
//! connections stop reading until they drain below [`LOW_WATER`]: their clients are held back
//! by TCP instead of the process by memory.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::channel_mesh::Senders;

use super::handoff::Handoff;
use crate::pubsub::ShardMessage;

/// What one shard sends another.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// A connection for the shard that owns its room.
    Handoff(Handoff),
    /// `/pubsub` traffic.
    PubSub(ShardMessage),
    /// The admin API's listing: this shard's rows, to the shard answering the request.
    Rows(flume::Sender<Vec<crate::admin::RoomRow>>),
}

/// Queued messages (all peers) past which `/pubsub` connections stop reading.
pub(crate) const HIGH_WATER: usize = 65_536;
/// Queued messages below which they read again.
pub(crate) const LOW_WATER: usize = 16_384;

/// Messages waiting for the mesh, one queue per peer shard.
pub(crate) struct MeshOut {
    queues: Vec<RefCell<VecDeque<ShardMsg>>>,
    /// The sending task of each peer, while its queue is empty.
    senders: Vec<Cell<Option<Waker>>>,
    queued: Cell<usize>,
    /// Connections waiting for the queues to drain.
    held: RefCell<Vec<Waker>>,
}

impl MeshOut {
    /// Queues for `shards` peers.
    pub(crate) fn new(shards: usize) -> Self {
        MeshOut {
            queues: (0..shards).map(|_| RefCell::new(VecDeque::new())).collect(),
            senders: (0..shards).map(|_| Cell::new(None)).collect(),
            queued: Cell::new(0),
            held: RefCell::new(Vec::new()),
        }
    }

    /// Queues `message` for shard `peer`.
    pub(crate) fn push(&self, peer: usize, message: ShardMsg) {
        let Some(queue) = self.queues.get(peer) else { return };
        queue.borrow_mut().push_back(message);
        self.queued.set(self.queued.get() + 1);
        if let Some(waker) = self.senders.get(peer).and_then(Cell::take) {
            waker.wake();
        }
    }

    /// Whether connections feeding the mesh should stop reading.
    pub(crate) fn is_congested(&self) -> bool {
        self.queued.get() > HIGH_WATER
    }

    /// Wakes `waker` once the queues have drained below [`LOW_WATER`].
    pub(crate) fn hold(&self, waker: &Waker) {
        self.held.borrow_mut().push(waker.clone());
    }

    /// Moves `peer`'s queue into the mesh, in order, for ever.
    pub(crate) async fn send_to(self: Rc<Self>, peer: usize, mesh: Rc<Senders<ShardMsg>>) {
        loop {
            let message = poll_fn(|cx| match self.queues.get(peer).and_then(|q| q.borrow_mut().pop_front()) {
                Some(message) => Poll::Ready(message),
                None => {
                    if let Some(slot) = self.senders.get(peer) {
                        slot.set(Some(cx.waker().clone()));
                    }
                    Poll::Pending
                }
            })
            .await;
            self.queued.set(self.queued.get().saturating_sub(1));
            if self.queued.get() < LOW_WATER && !self.held.borrow().is_empty() {
                let held = std::mem::take(&mut *self.held.borrow_mut());
                held.into_iter().for_each(Waker::wake);
            }
            if let Err(e) = mesh.send_to(peer, message).await {
                // Only when the peer shard is gone, which ends the process.
                tracing::error!(peer, error = %e, "cannot reach a shard");
            }
        }
    }
}
