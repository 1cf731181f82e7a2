//! Maps looked up on every request (streams, sessions, channels, cached
//! files by CID), hashed with foldhash instead of the standard library's
//! SipHash: a lookup's hash is a few instructions instead of a few
//! hundred. Each map still gets its own random seed; their keys are ids
//! and CIDs the server made or stored, not values a client picks to
//! collide.

/// A `HashMap` with foldhash's randomly seeded hasher.
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with the same hasher.
pub type FastHashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
