//! `tvk-metamover`: application discovery and metadata snapshots.
