#![no_main]
//! Fuzz target: tvk_datamover::crypt::open (the LUKS1 header parser behind every encrypted
//! image) must return an error, never panic, whatever the bytes of the LUKS area.
//!
//! PBKDF2 iteration counts are the one field whose valid values only cost time (up to
//! crypt::MAX_ITERATIONS = 20 000 000 per key slot, seconds per run): counts in
//! 1001..=MAX_ITERATIONS are folded to 1..=1000 before parsing so a run stays short, while 0
//! and counts above the maximum reach the parser unchanged (the refusals being tested).
//! Seeds: the LUKS areas (named by the qcow2 full-disk-encryption header extension) of an
//! image `tvk-datamover image full --encryption-key-file` wrote (260 096 bytes at byte
//! 65 536) and of one `qemu-img create -f qcow2 -o encrypt.format=luks` made (2 068 480
//! bytes, eight slot descriptors), and the first 592 bytes (the header alone). Run with
//! `-max_len=300000`: longer inputs only add key material that is never parsed.

use libfuzzer_sys::fuzz_target;
use tvk_datamover::crypt::{self, EncryptionKey, MAX_ITERATIONS};

/// Offsets of the big-endian iteration counts: the master key digest's, then each of the 8
/// key slots' (slot descriptors of 48 bytes from byte 208, count at +4).
fn iteration_fields() -> impl Iterator<Item = usize> {
    std::iter::once(164).chain((0..8).map(|s| 208 + s * 48 + 4))
}

fuzz_target!(|data: &[u8]| {
    let mut area = data.to_vec();
    for at in iteration_fields() {
        if let Some(field) = area.get_mut(at..at + 4) {
            let n = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            if n > 1000 && n <= MAX_ITERATIONS {
                field.copy_from_slice(&(n % 1000 + 1).to_be_bytes());
            }
        }
    }
    let Ok(key) = EncryptionKey::from_bytes(b"fuzz passphrase".to_vec()) else {
        return;
    };
    let _ = crypt::open("fuzz.qcow2", &area, &key);
});
