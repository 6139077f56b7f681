//! Bounded, poison-tolerant state: the id-keyed stores the dialects keep
//! runs, executions and tokens in, and the lock every shared table uses.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// How many runs, executions or tokens a dialect keeps before evicting the oldest.
pub(crate) const STORE_CAPACITY: usize = 10_000;

/// Locks `m`, recovering the data if a previous holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An insertion-ordered map that evicts its oldest entry beyond capacity.
#[derive(Debug)]
pub(crate) struct BoundedStore<V> {
    entries: HashMap<String, V>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<V> BoundedStore<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn insert(&mut self, id: String, value: V) {
        if self.entries.insert(id.clone(), value).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<&V> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.entries.get_mut(id)
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<V> {
        let v = self.entries.remove(id)?;
        self.order.retain(|k| k != id);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_store_evicts_oldest() {
        let mut s = BoundedStore::new(2);
        s.insert("a".into(), 1);
        s.insert("b".into(), 2);
        s.insert("c".into(), 3);
        assert!(s.get("a").is_none());
        assert_eq!(s.get("c"), Some(&3));
    }
}
