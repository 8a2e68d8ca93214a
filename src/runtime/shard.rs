//! One shard's runtime context: what every shard shares ([`Shared`]) and what each one owns
//! ([`Shard`]: its state, read buffer, calls waiting on other instances, its mesh). Its tasks
//! are in [`super::shard_run`] (accept, timers, messages, drain) and [`super::serve`] (each
//! connection's request, then its upgrade or answer).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use glommio::channels::channel_mesh::Senders;

use super::calls::Calls;
use super::mesh::{MeshOut, ShardMsg};
use super::state::{PubSubSettings, ShardState};
use super::turn::NextTurn;
use crate::admission::{Admission, ApiLimiter};
use crate::auth::TokenKey;
use crate::cluster::{BusHandle, Incoming};
use crate::config::ServeConfig;
use crate::game::words::WordPack;
use crate::metrics::{Metrics, ShardMetrics};
use crate::store::StoreHandle;

/// Things every shard shares with the others and with the main thread.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<ServeConfig>,
    pub(crate) metrics: Arc<Metrics>,
    /// Connection caps, for the whole process.
    pub(crate) admission: Arc<Admission>,
    /// Room-API requests per client address, for the whole process.
    pub(crate) api_limiter: Arc<ApiLimiter>,
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Set when a shard thread died of a panic: `/health` answers 503 with it.
    pub(crate) lost_shard: Arc<std::sync::OnceLock<String>>,
    pub(crate) tokens: TokenKey,
    pub(crate) packs: Arc<Vec<Arc<WordPack>>>,
    /// Redis, with `--redis`.
    pub(crate) store: Option<StoreHandle>,
    /// Relay rooms across instances, with `--redis`.
    pub(crate) bus: Option<BusHandle>,
    /// Each shard's receiver of other instances' relay messages, taken by the shard at start
    /// (indexed by shard index).
    pub(crate) bus_inbox: Arc<std::sync::Mutex<Vec<Option<flume::Receiver<Incoming>>>>>,
    /// `/pubsub`: the app's handlers and limits.
    pub(crate) pubsub: PubSubSettings,
    /// `/pubsub` token key (`--pubsub-secret`).
    pub(crate) pubsub_key: Option<crate::pubsub::TokenKey>,
    /// How `/pubsub` meets other instances: Redis with `--redis`, else the in-memory adapter.
    pub(crate) pubsub_adapter: Arc<dyn crate::cluster::pubsub::Adapter>,
    /// Webhook delivery (`--webhook-url`).
    pub(crate) webhooks: Option<crate::webhooks::WebhookHandle>,
    /// This instance's id (`--instance-id`, default host name and port).
    pub(crate) instance_id: Arc<str>,
}

/// A shard's runtime context, shared by its tasks through `Rc`.
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) shards: usize,
    pub(crate) shared: Shared,
    pub(crate) state: RefCell<ShardState>,
    /// Where connection drivers read into; borrowed only within one synchronous read.
    pub(crate) read_scratch: RefCell<Vec<u8>>,
    /// Room-API calls this shard waits on other instances for.
    pub(crate) calls: RefCell<Calls>,
    /// Connections that spent their poll budget, waiting for the next ring poll.
    pub(crate) next_turn: NextTurn,
    /// The other shards' inboxes.
    pub(crate) mesh: Rc<Senders<ShardMsg>>,
    /// What this shard's state sends the other shards, on its way to the mesh.
    pub(crate) mesh_out: Rc<MeshOut>,
}

/// Size of a shard's read scratch buffer: the largest single read.
pub(crate) const READ_SCRATCH_BYTES: usize = 256 * 1024;

impl Shard {
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        self.shared.metrics.shard(self.index)
    }
}
