//! [`Invalid`]: a value a user wrote (a flag, a setting, an exclude
//! pattern, a descriptor field) that cannot be used, and why: the one type
//! both binaries use (`cache_proto::Invalid`). A command turns it into a
//! usage error (exit 2) naming where the value came from.

pub use cache_proto::Invalid;
