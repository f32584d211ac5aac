//! Times in state: milliseconds, event or processing time (the runtime's timestamps).

/// A time in milliseconds.
pub type Timestamp = i64;
