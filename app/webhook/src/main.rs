//! Admission webhook.

fn main() {}
