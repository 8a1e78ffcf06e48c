//! The manager.
