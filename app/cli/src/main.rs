//! kubectl-tvk.

fn main() {}
