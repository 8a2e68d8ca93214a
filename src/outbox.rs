//! A connection's bounded queue of encoded frames waiting to be written.
//!
//! Frames are shared `Bytes` (a broadcast is encoded once and cloned into every member's outbox),
//! so queueing costs a reference count, and the writer gathers many queued frames into one
//! vectored write. The byte bound is what keeps one slow reader from growing memory without
//! limit: a push that would pass it fails and the caller closes that member.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// The queue would exceed its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue over {limit} bytes")]
pub struct Overflow {
    /// The configured limit.
    pub limit: usize,
}

/// Queue of frames for one connection. Its bound is the caller's (one per server), passed to
/// [`Outbox::push`].
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    written_of_front: usize,
    queued_bytes: usize,
    sealed: bool,
}

impl Outbox {
    /// Queues `frame` if the queue then holds at most `max_bytes` (one frame of any size is
    /// always accepted into an empty queue, so a message as large as the message limit can
    /// still be sent). Frames pushed after [`Outbox::seal`] are dropped silently: nothing may
    /// follow a close frame.
    pub fn push(&mut self, frame: Bytes, max_bytes: usize) -> Result<(), Overflow> {
        if self.sealed {
            return Ok(());
        }
        if self.queued_bytes > 0 && self.queued_bytes + frame.len() > max_bytes {
            return Err(Overflow { limit: max_bytes });
        }
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
        Ok(())
    }

    /// Queues a final frame (a close), ignoring the limit, and refuses everything after it.
    pub fn seal(&mut self, last: Bytes) {
        if !self.sealed {
            self.queued_bytes += last.len();
            self.frames.push_back(last);
            self.sealed = true;
        }
    }

    /// Drops every queued frame except a partly written front one, which must be finished to
    /// keep the stream well-formed.
    pub fn discard_unsent(&mut self) {
        let keep = usize::from(self.written_of_front > 0).min(self.frames.len());
        self.frames.truncate(keep);
        self.queued_bytes = self.frames.iter().map(Bytes::len).sum::<usize>() - self.written_of_front;
        self.release_if_empty();
    }

    /// Whether a close frame has been queued.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames waiting (a partly written one included).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Fills `slices` with the unwritten parts of the first frames; returns how many it filled.
    pub fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, (i, frame)) in slices.iter_mut().zip(self.frames.iter().enumerate()) {
            let skip = if i == 0 { self.written_of_front } else { 0 };
            *slot = IoSlice::new(frame.get(skip..).unwrap_or_default());
            filled += 1;
        }
        filled
    }

    /// The unwritten part of the front frame.
    pub fn front(&self) -> Option<Bytes> {
        self.frames.front().map(|f| f.slice(self.written_of_front..))
    }

    /// Records that `n` bytes from the front were written.
    pub fn advance(&mut self, mut n: usize) {
        self.queued_bytes -= n.min(self.queued_bytes);
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.written_of_front;
            if n < left {
                self.written_of_front += n;
                return;
            }
            n -= left;
            self.written_of_front = 0;
            self.frames.pop_front();
        }
        self.release_if_empty();
    }

    /// A connection whose frames are all written holds no queue: most connections are idle
    /// most of the time, and each would otherwise keep room for its largest burst.
    fn release_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_but_one_large_frame_fits() {
        let (mut q, limit) = (Outbox::default(), 10);
        assert!(q.push(Bytes::from(vec![0; 50]), limit).is_ok());
        assert_eq!(q.push(Bytes::from_static(b"x"), limit), Err(Overflow { limit: 10 }));
        q.advance(50);
        assert!(q.is_empty());
        assert_eq!(q.frames.capacity(), 0, "an empty queue holds no buffer");
        assert!(q.push(Bytes::from_static(b"12345"), limit).is_ok());
        assert!(q.push(Bytes::from_static(b"12345"), limit).is_ok());
        assert!(q.push(Bytes::from_static(b"1"), limit).is_err());
    }

    #[test]
    fn gather_and_partial_advance() {
        let (mut q, limit) = (Outbox::default(), 100);
        q.push(Bytes::from_static(b"abc"), limit).unwrap();
        q.push(Bytes::from_static(b"de"), limit).unwrap();
        q.advance(2);
        let mut slices = [IoSlice::new(&[]); 4];
        let n = q.gather(&mut slices);
        assert_eq!(n, 2);
        assert_eq!(&*slices[0], b"c");
        assert_eq!(&*slices[1], b"de");
        assert_eq!(q.queued_bytes(), 3);
        assert_eq!(q.front().unwrap(), Bytes::from_static(b"c"));
        q.advance(3);
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn discard_keeps_a_partly_written_front_then_seal() {
        let (mut q, limit) = (Outbox::default(), 100);
        q.push(Bytes::from_static(b"abc"), limit).unwrap();
        q.push(Bytes::from_static(b"def"), limit).unwrap();
        q.advance(1);
        q.discard_unsent();
        assert_eq!(q.queued_bytes(), 2);
        q.seal(Bytes::from_static(b"CLOSE"));
        q.push(Bytes::from_static(b"late"), limit).unwrap();
        q.advance(2);
        assert_eq!(q.front().unwrap(), Bytes::from_static(b"CLOSE"));
        q.advance(5);
        assert!(q.is_empty() && q.is_sealed());
    }
}
