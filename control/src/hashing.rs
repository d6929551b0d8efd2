//! Hashing serialized values without building them first, and a hash that is the same
//! on every build and every replica.

use std::hash::Hasher;

/// Hash `value` as serialized JSON, streamed into `hasher`. The types apigate hashes
/// always serialize; a failure would only end the input early.
pub(crate) fn hash_serialized<H: Hasher>(hasher: &mut H, value: &impl serde::Serialize) {
    let _ = serde_json::to_writer(HashWriter(hasher), value);
}

/// A hasher as a writer.
struct HashWriter<'a, H>(&'a mut H);

impl<H: Hasher> std::io::Write for HashWriter<'_, H> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// FNV-1a: the same on every build and every replica, unlike the standard library's
/// hasher. Not a security boundary: it names things, it does not authenticate them.
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
