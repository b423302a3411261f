//! Lanes keep work of one key in the order it was queued: each place in a
//! lane waits until the one ahead is done (its `Turn` dropped). Keys do not
//! wait for each other.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Lanes whose last place finished are swept now and then, so that they do
/// not pile up; scanning on every call would cost O(keys).
const SWEEP_AT: usize = 1024;

#[derive(Debug)]
pub struct Lanes<K> {
    /// The last place queued per key: the next one waits for it.
    last: Mutex<HashMap<K, oneshot::Receiver<()>>>,
}

impl<K> Default for Lanes<K> {
    fn default() -> Self {
        Self { last: Mutex::default() }
    }
}

/// A place in a lane: `wait` until the place ahead is done; dropping the
/// turn lets the next one go.
#[derive(Debug)]
pub struct Turn {
    ahead: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    /// Cancel-safe: waiting again after a cancelled wait goes on waiting.
    pub async fn wait(&mut self) {
        if let Some(ahead) = &mut self.ahead {
            // An error means the place ahead was dropped: it is done too.
            let _ = ahead.await;
            self.ahead = None;
        }
    }
}

impl<K: Eq + Hash + Clone> Lanes<K> {
    /// Takes the next place in the lane of `key`; call in the order the
    /// work must happen.
    pub fn queue(&self, key: K) -> Turn {
        let (done, next) = oneshot::channel();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() >= SWEEP_AT {
            last.retain(|_, place| {
                matches!(place.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
        }
        let ahead = last.insert(key, next);
        Turn { ahead, _done: done }
    }

    /// Whether the last place queued for `key` is not done yet.
    pub fn is_busy(&self, key: &K) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get_mut(key).is_some_and(|place| {
            matches!(place.try_recv(), Err(oneshot::error::TryRecvError::Empty))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn lanes_release_in_queue_order() {
        let lanes = Lanes::default();
        let mut first = lanes.queue(b"k".to_vec());
        let mut second = lanes.queue(b"k".to_vec());
        let mut other_key = lanes.queue(b"other".to_vec());
        first.wait().await;
        other_key.wait().await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), second.wait()).await;
        assert!(waiting.is_err(), "the second waits for the first");
        assert!(lanes.is_busy(&b"k".to_vec()));
        drop(first);
        second.wait().await;
        drop(second);
        assert!(!lanes.is_busy(&b"k".to_vec()), "the lane is done");
    }
}
