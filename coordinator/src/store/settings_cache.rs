//! The grids' shared train/data settings (`trial_settings`), kept in memory
//! by hash: every lease needs its trial's settings, and a settings row is
//! never changed once written (its key is the SHA-256 of its JSON), so a
//! copy read once is never stale and saves a read per lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most this many distinct settings are kept; past it the cache starts
/// over (a coordinator rarely serves more than a few grids at once).
const MAX_ENTRIES: usize = 256;

#[derive(Default)]
pub(crate) struct SettingsCache {
    by_hash: Mutex<HashMap<String, Arc<str>>>,
}

impl SettingsCache {
    pub(crate) fn get(&self, hash: &str) -> Option<Arc<str>> {
        self.lock().get(hash).cloned()
    }

    pub(crate) fn insert(&self, hash: &str, json: Arc<str>) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(hash.to_owned(), json);
    }

    /// A poisoned lock only means another thread panicked while holding it;
    /// the map itself is always whole (every update is one call).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.by_hash.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_it_was_given_and_starts_over_when_full() {
        let cache = SettingsCache::default();
        assert!(cache.get("a").is_none());
        cache.insert("a", Arc::from("{\"train\":{}}"));
        assert_eq!(cache.get("a").as_deref(), Some("{\"train\":{}}"));
        for i in 0..MAX_ENTRIES {
            cache.insert(&i.to_string(), Arc::from("{}"));
        }
        assert!(cache.get("a").is_none(), "the cache was full and started over");
        assert!(cache.lock().len() <= MAX_ENTRIES);
    }
}
