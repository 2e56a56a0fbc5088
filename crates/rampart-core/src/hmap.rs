//! Emptied header maps, kept per thread for the next request.
//!
//! Every proxied HTTP/1.1 request builds two maps (the client's request fields and the
//! upstream's response fields), each two allocations sized for a dozen fields. A map whose
//! request is done is cleared (its values dropped, its tables kept) and handed to the next
//! head parsed on the same thread. A map grown large by one request is let go rather than
//! kept, and only a few are kept, so what the pool holds stays small.

use http::HeaderMap;
use std::cell::RefCell;

/// Maps kept per thread: enough for the requests one worker has in flight at once.
const KEEP: usize = 32;
/// A map with room for more fields than this is dropped, not kept.
const MAX_CAPACITY: usize = 48;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `capacity` fields: a kept one when there is one.
pub(crate) fn take(capacity: usize) -> HeaderMap {
    let kept = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
    match kept {
        Some(m) if m.capacity() >= capacity => m,
        _ => HeaderMap::with_capacity(capacity),
    }
}

/// Hands a map that is no longer needed back for reuse (or drops it, see [`MAX_CAPACITY`]).
pub(crate) fn give(mut m: HeaderMap) {
    if m.capacity() == 0 || m.capacity() > MAX_CAPACITY {
        return;
    }
    m.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP {
            s.push(m);
        }
    });
}

/// A map that goes back to the pool when dropped.
pub(crate) struct Recycled(pub HeaderMap);

impl Drop for Recycled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

impl std::ops::Deref for Recycled {
    type Target = HeaderMap;
    fn deref(&self) -> &HeaderMap {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ACCEPT, HOST};

    #[test]
    fn a_given_map_comes_back_empty_and_large_ones_are_not_kept() {
        // Drain whatever this thread holds.
        while SPARE.with(|s| s.borrow_mut().pop()).is_some() {}
        let mut m = take(12);
        m.insert(HOST, "a".parse().unwrap());
        m.append(ACCEPT, "b".parse().unwrap());
        let cap = m.capacity();
        give(m);
        let again = take(4);
        assert!(again.is_empty(), "a reused map holds nothing");
        assert_eq!(again.capacity(), cap, "the kept map is the one handed back");
        // A kept map too small for the request is not used.
        give(again);
        assert!(take(cap * 4).capacity() >= cap * 4);
        // A large map is dropped; at most KEEP are held.
        give(HeaderMap::with_capacity(MAX_CAPACITY * 4));
        assert_eq!(SPARE.with(|s| s.borrow().len()), 0);
        for _ in 0..KEEP + 5 {
            give(HeaderMap::with_capacity(8));
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), KEEP);
        {
            let _r = Recycled(take(8));
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), KEEP);
    }
}
