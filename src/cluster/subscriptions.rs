//! Which relay rooms this instance must hear from other instances: a room is subscribed while
//! it has at least one local member, and unsubscribed when the last one leaves.

use ahash::AHashMap;

use crate::rooms::RoomId;

/// What the bus must do after a membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// The first local member joined: start hearing the room.
    Subscribe(RoomId),
    /// The last local member left: stop.
    Unsubscribe(RoomId),
    /// A `/pubsub` room got its first member on this instance, or a user its first connection.
    SubscribePubSub(super::pubsub::Topic),
    /// The last one went.
    UnsubscribePubSub(super::pubsub::Topic),
}

/// Local member counts of the relay rooms of one shard (each relay room lives on one shard).
#[derive(Debug, Default)]
pub struct Subscriptions {
    members: AHashMap<RoomId, usize>,
}

impl Subscriptions {
    /// A member of `room` connected here.
    pub fn join(&mut self, room: &RoomId) -> Option<SubscriptionChange> {
        let count = self.members.entry(room.clone()).or_default();
        *count += 1;
        (*count == 1).then(|| SubscriptionChange::Subscribe(room.clone()))
    }

    /// A member of `room` left.
    pub fn leave(&mut self, room: &RoomId) -> Option<SubscriptionChange> {
        let count = self.members.get_mut(room)?;
        *count = count.saturating_sub(1);
        if *count > 0 {
            return None;
        }
        self.members.remove(room);
        Some(SubscriptionChange::Unsubscribe(room.clone()))
    }

    /// Rooms subscribed.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether none is subscribed.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_subscribes_last_out_unsubscribes() {
        let a = RoomId::parse("a").unwrap();
        let mut s = Subscriptions::default();
        assert_eq!(s.join(&a), Some(SubscriptionChange::Subscribe(a.clone())));
        assert_eq!(s.join(&a), None);
        assert_eq!(s.leave(&a), None);
        assert_eq!(s.leave(&a), Some(SubscriptionChange::Unsubscribe(a.clone())));
        assert_eq!(s.leave(&a), None, "an unknown room changes nothing");
        assert!(s.is_empty());
    }
}
