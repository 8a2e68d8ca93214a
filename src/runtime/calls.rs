//! The room-API calls an edge shard waits on other instances for, by request id
//! ([`super::api::call_owner`] makes them; the bus brings the answers).

use ahash::AHashMap;

use crate::cluster::forward::IdSource;

/// Where a call's answer goes: its HTTP status and body.
type Waiter = flume::Sender<(u16, Vec<u8>)>;

/// Calls this edge shard is waiting on, by request id.
pub(crate) struct Calls {
    ids: IdSource,
    waiting: AHashMap<u64, Waiter>,
}

impl Calls {
    /// No calls yet, for edge shard `shard`.
    pub(crate) fn new(shard: usize) -> Self {
        Calls { ids: IdSource::new(shard), waiting: AHashMap::new() }
    }

    /// Waits for an answer: the id to send the call under.
    pub(crate) fn wait(&mut self, waiter: Waiter) -> u64 {
        let id = self.ids.next_id();
        self.waiting.insert(id, waiter);
        id
    }

    /// Stops waiting for call `id` (answered or timed out).
    pub(crate) fn forget(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// Delivers the owner's answer to request `id` (ignored if it came too late).
    pub(crate) fn answer(&mut self, id: u64, status: u16, body: Vec<u8>) {
        if let Some(waiter) = self.waiting.remove(&id) {
            let _ = waiter.send((status, body));
        }
    }
}
