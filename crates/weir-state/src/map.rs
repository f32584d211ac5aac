//! The hash map of in-memory keyed state, shared by the operators and the state backends.

use std::collections::HashMap;

/// Fast, non-cryptographic hash builder for in-memory keyed state. Key-to-subtask assignment uses
/// weir-core's stable hash instead; this one only indexes the local hash table.
pub type StateHasher = foldhash::fast::RandomState;

/// A hash map keyed with [`StateHasher`].
pub type StateMap<K, V> = HashMap<K, V, StateHasher>;
