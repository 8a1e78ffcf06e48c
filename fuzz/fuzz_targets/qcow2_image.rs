#![no_main]
//! Fuzz target: tvk_datamover::untrusted_input::walk_image must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tvk_datamover::untrusted_input::walk_image(data);
});
