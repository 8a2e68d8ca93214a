//! A connection in transit from the shard that accepted it to the shard that owns its room.

use std::os::fd::OwnedFd;

use crate::admission::Permit;

/// The socket, the bytes already read from it, and its admission permit. If the message is
/// never delivered, dropping it closes the socket and releases the permit.
#[derive(Debug)]
pub(crate) struct Handoff {
    fd: OwnedFd,
    head: Vec<u8>,
    permit: Permit,
}

impl Handoff {
    pub(crate) fn new(fd: OwnedFd, head: Vec<u8>, permit: Permit) -> Self {
        Handoff { fd, head, permit }
    }

    pub(crate) fn into_parts(self) -> (OwnedFd, Vec<u8>, Permit) {
        (self.fd, self.head, self.permit)
    }
}
