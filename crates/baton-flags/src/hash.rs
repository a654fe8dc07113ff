//! Stickiness: how a context is put in a stable bucket, so the same user
//! keeps the same answer. This module owns Unleash's exact recipe (MurmurHash3
//! x86 32-bit over `"groupId:identifier"`, then `hash % modulus + 1`) and the
//! fallback randomness used when a context has nothing to stick to. It must
//! never change a constant or the key format: every bucket ever handed out by
//! Baton or by an Unleash SDK depends on them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;

/// Seed for rollout percentages (the bucket is compared with 1..=100).
pub const ROLLOUT_SEED: u32 = 0;
/// Seed for variant selection, so a user's variant is independent of whether
/// they fell inside the rollout.
pub const VARIANT_SEED: u32 = 86_028_157;

/// MurmurHash3 x86 32-bit of `group_id:identifier`, without building the key.
pub fn murmur3_32(group_id: &str, identifier: &str, seed: u32) -> u32 {
    // Chaining readers hashes the key in place; the crate copes with the
    // short reads at the seams.
    let mut key = group_id
        .as_bytes()
        .chain(&b":"[..])
        .chain(identifier.as_bytes());
    // Reading from byte slices cannot fail; 0 keeps this total all the same.
    murmur3::murmur3_32(&mut key, seed).unwrap_or(0)
}

/// The bucket Unleash puts `identifier` in, in `1..=modulus` (0 when
/// `modulus` is 0, which no caller should ask for).
pub fn normalized_hash(group_id: &str, identifier: &str, modulus: u32, seed: u32) -> u32 {
    if modulus == 0 {
        return 0;
    }
    murmur3_32(group_id, identifier, seed) % modulus + 1
}

/// The rollout bucket (1..=100) of `identifier` within `group_id`.
pub fn rollout_bucket(group_id: &str, identifier: &str) -> u32 {
    normalized_hash(group_id, identifier, 100, ROLLOUT_SEED)
}

/// A random number in `1..=modulus`, for contexts with nothing to stick to.
///
/// Flag evaluation needs no cryptographic quality, only an even spread; the
/// standard library's per-instance random hash keys give that without a
/// dependency or a lock.
pub(crate) fn random_bucket(modulus: u32) -> u32 {
    if modulus == 0 {
        return 0;
    }
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(modulus);
    (hasher.finish() % u64::from(modulus)) as u32 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values computed with an independent MurmurHash3 x86_32
    // implementation (Python's mmh3), unsigned.
    #[test]
    fn murmur3_matches_reference_vectors() {
        assert_eq!(murmur3::murmur3_32(&mut &b""[..], 0).ok(), Some(0));
        assert_eq!(
            murmur3::murmur3_32(&mut &b"hello"[..], 0).ok(),
            Some(613_153_351)
        );
        assert_eq!(murmur3_32("AB12A", "122", 0), 1_062_108_722);
        assert_eq!(murmur3_32("AB12A", "155", 0), 3_268_232_399);
        assert_eq!(
            murmur3_32("The quick brown fox jumps over the", "lazy dog", 0),
            murmur3::murmur3_32(&mut &b"The quick brown fox jumps over the:lazy dog"[..], 0)
                .unwrap_or(1)
        );
    }

    #[test]
    fn rollout_buckets_match_unleash() {
        // From the client specification: user 122 is inside a 50% rollout of
        // group AB12A, user 155 is not.
        assert_eq!(rollout_bucket("AB12A", "122"), 23);
        assert_eq!(rollout_bucket("AB12A", "155"), 100);
        assert_eq!(rollout_bucket("Feature.flexibleRollout.10", "174"), 10);
        assert_eq!(rollout_bucket("Feature.flexibleRollout.10", "499"), 32);
    }

    #[test]
    fn variant_normalisation_uses_its_own_seed() {
        // Three variants of weight 33: users 232, 607 and 656 land in each.
        let bucket = |user| normalized_hash("Feature.Variants.C", user, 99, VARIANT_SEED);
        assert_eq!(bucket("232"), 18);
        assert_eq!(bucket("607"), 58);
        assert_eq!(bucket("656"), 94);
    }

    #[test]
    fn buckets_stay_in_range() {
        assert_eq!(normalized_hash("g", "id", 0, 0), 0);
        assert_eq!(normalized_hash("g", "id", 1, 0), 1);
        for modulus in [1, 2, 7, 100, 1000] {
            for _ in 0..200 {
                let bucket = random_bucket(modulus);
                assert!((1..=modulus).contains(&bucket), "{bucket} of {modulus}");
            }
        }
        assert_eq!(random_bucket(0), 0);
    }
}
