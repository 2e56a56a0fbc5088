//! Per-thread pools of emptied per-transaction buffers (the numbered values, the TX map).
//!
//! A transaction lives from the request head until its log phase, so on a busy worker many
//! are alive at once: one thread serves dozens of connections, and a batch of requests is read
//! before their responses come back. A pool of one would be empty for all but the first of
//! each batch. The pool keeps up to `max` spares within `budget` bytes; when full, the oldest
//! spare is let go first (after a reload, the previous rule set's spares age out that way).

pub(crate) struct Spares<T> {
    /// Spares with their sizes in bytes, oldest first.
    items: Vec<(T, usize)>,
    bytes: usize,
}

impl<T> Spares<T> {
    pub const fn new() -> Self {
        Spares {
            items: Vec::new(),
            bytes: 0,
        }
    }

    /// The most recently returned spare that `fits` (its buffers are the likeliest to be in
    /// cache).
    pub fn take(&mut self, fits: impl Fn(&T) -> bool) -> Option<T> {
        let i = self.items.iter().rposition(|(t, _)| fits(t))?;
        let (t, n) = self.items.remove(i);
        self.bytes -= n;
        Some(t)
    }

    /// Keep `t` (holding `size` bytes), letting the oldest spares go to stay within `max`
    /// spares and `budget` bytes. A spare larger than the whole budget is let go itself.
    pub fn put(&mut self, t: T, size: usize, max: usize, budget: usize) {
        if size > budget || max == 0 {
            return;
        }
        while !self.items.is_empty() && (self.items.len() >= max || self.bytes + size > budget) {
            let (_, n) = self.items.remove(0);
            self.bytes -= n;
        }
        self.items.push((t, size));
        self.bytes += size;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Spares;

    #[test]
    fn spares_are_taken_newest_first_and_bounded() {
        let mut s = Spares::new();
        s.put(1, 10, 3, 100);
        s.put(2, 10, 3, 100);
        s.put(3, 10, 3, 100);
        assert_eq!(s.take(|_| true), Some(3), "newest first");
        assert_eq!(s.take(|&t| t == 1), Some(1), "the one that fits");
        assert_eq!(s.take(|&t| t == 1), None);
        s.put(4, 10, 3, 100);
        s.put(5, 10, 3, 100);
        s.put(6, 10, 3, 100);
        assert_eq!(s.len(), 3, "at most `max`: the oldest (2) went");
        assert_eq!(s.take(|&t| t == 2), None);
        s.put(7, 95, 3, 100);
        assert_eq!(s.len(), 1, "within the byte budget: older spares went");
        s.put(8, 101, 3, 100);
        assert_eq!(
            s.take(|_| true),
            Some(7),
            "a spare above the budget is not kept"
        );
        assert_eq!(s.take(|_| true), None);
    }
}
