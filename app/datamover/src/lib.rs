//! The datamover.
