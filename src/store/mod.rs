//! Write-behind persistence of game rooms to Redis, and their recovery after a crash.
//!
//! The decisions are sans-IO ([`WriteBehind`]: which rooms are dirty and when they are due);
//! [`RedisStore`] is the one place that talks to Redis, on a thread of its own fed by a bounded
//! queue, so a shard never waits on Redis. The snapshot format is in [`snapshot`]. Writes are
//! fenced by the room's lease (see [`crate::cluster::Leases`]): an instance that no longer holds
//! it cannot overwrite or delete the new owner's snapshot.

mod answer;
mod leases;
mod redis;
pub mod snapshot;
mod write_behind;

pub use self::redis::{RedisStore, StoreConfig, StoreHandle, StoreStatus};
pub use answer::{Answer, StoreError};
pub use snapshot::{instance_key, lease_key, RoomSnapshot, SnapshotError, SNAPSHOT_FORMAT};
pub use write_behind::{Flush, WriteBehind};
