//! The T4K-compatible API (see lib docs once written).
