//! How the store's threads answer the shards: each request carries a one-shot channel for its
//! result. Shared by the snapshot thread ([`super::redis`]) and the lease thread
//! ([`super::leases`]).

/// Why the store refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The queue to the Redis thread is full.
    #[error("the Redis queue is full")]
    Full,
    /// Redis is not reachable (or answered with an error).
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// The URL is not a Redis URL.
    #[error("--redis {0}")]
    Url(String),
}

/// Where a store thread sends one request's result.
pub(super) type Reply<T> = flume::Sender<Result<T, StoreError>>;

/// An answer the store will send; the caller awaits it.
pub type Answer<T> = flume::Receiver<Result<T, StoreError>>;
