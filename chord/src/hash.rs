//! 256-bit identifiers on the Chord ring and the arithmetic on them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A 256-bit identifier: a node id or a key, a point on the ring `[0, 2^256)`.
///
/// Ordering is numeric (big-endian). Arithmetic wraps modulo `2^256`, as the
/// ring does.
///
/// ```
/// use chord::Hash;
/// let a = Hash::of(b"127.0.0.1:5000");
/// let b: Hash = a.to_string().parse().unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.distance_to(&a), Hash::ZERO);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash([u64; 4]); // limb 0 is the most significant

impl Hash {
    /// The identifier 0.
    pub const ZERO: Hash = Hash([0; 4]);
    /// The largest identifier, `2^256 - 1`.
    pub const MAX: Hash = Hash([u64::MAX; 4]);
    /// Number of bits in an identifier.
    pub const BITS: u32 = 256;

    /// SHA-256 of `data`: how ids of nodes and keys of values are made.
    pub fn of(data: impl AsRef<[u8]>) -> Hash {
        let digest = Sha256::digest(data.as_ref());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&digest);
        Hash::from_bytes(bytes)
    }

    /// Takes 32 big-endian bytes as the identifier, unhashed.
    pub const fn from_bytes(bytes: [u8; 32]) -> Hash {
        let mut limbs = [0u64; 4];
        let mut i = 0;
        while i < 4 {
            let mut limb = 0u64;
            let mut j = 0;
            while j < 8 {
                limb = (limb << 8) | bytes[i * 8 + j] as u64;
                j += 1;
            }
            limbs[i] = limb;
            i += 1;
        }
        Hash(limbs)
    }

    /// The identifier as 32 big-endian bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_be_bytes());
        }
        out
    }

    /// `2^bit`, for `bit < 256`.
    ///
    /// # Panics
    /// If `bit >= 256` (a programming error, never driven by input).
    pub fn pow2(bit: u32) -> Hash {
        assert!(bit < Self::BITS, "bit {bit} out of range");
        let mut limbs = [0u64; 4];
        limbs[3 - (bit / 64) as usize] = 1u64 << (bit % 64);
        Hash(limbs)
    }

    /// `self + other` modulo `2^256`.
    pub fn wrapping_add(&self, other: &Hash) -> Hash {
        let mut out = [0u64; 4];
        let mut carry = false;
        for i in (0..4).rev() {
            let (s1, c1) = self.0[i].overflowing_add(other.0[i]);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            out[i] = s2;
            carry = c1 || c2;
        }
        Hash(out)
    }

    /// `self - other` modulo `2^256`.
    pub fn wrapping_sub(&self, other: &Hash) -> Hash {
        let mut out = [0u64; 4];
        let mut borrow = false;
        for i in (0..4).rev() {
            let (d1, b1) = self.0[i].overflowing_sub(other.0[i]);
            let (d2, b2) = d1.overflowing_sub(borrow as u64);
            out[i] = d2;
            borrow = b1 || b2;
        }
        Hash(out)
    }

    /// Clockwise distance from `self` to `other`: `(other - self) mod 2^256`.
    pub fn distance_to(&self, other: &Hash) -> Hash {
        other.wrapping_sub(self)
    }

    /// Position of the highest set bit (`floor(log2(self))`), `None` for zero.
    pub fn log2(&self) -> Option<u32> {
        for (i, limb) in self.0.iter().enumerate() {
            if *limb != 0 {
                return Some(255 - (i as u32 * 64 + limb.leading_zeros()));
            }
        }
        None
    }

    /// The finger bucket of `other` as seen from `self`: `floor(log2(distance))`.
    /// Finger `i` of a node is the first node in bucket `i` or above.
    /// `None` when the two are equal.
    pub fn bucket_of(&self, other: &Hash) -> Option<u32> {
        self.distance_to(other).log2()
    }

    /// Short form for logs: the first 8 hex digits.
    pub fn short(&self) -> String {
        format!("{:08x}", (self.0[0] >> 32) as u32)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for limb in &self.0 {
            write!(f, "{limb:016x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({}…)", self.short())
    }
}

/// Error from parsing a [`Hash`](struct@Hash) out of text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a hash is 64 hexadecimal digits, got {0:?}")]
pub struct ParseHashError(pub String);

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Hash, ParseHashError> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return Err(ParseHashError(s.to_string()));
        }
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            *limb = u64::from_str_radix(&s[i * 16..i * 16 + 16], 16)
                .map_err(|_| ParseHashError(s.to_string()))?;
        }
        Ok(Hash(limbs))
    }
}

/// On the wire a `Hash` is a byte string of length 32 (in postcard: the
/// length byte `0x20`, then the 32 bytes big-endian). As bytes, not as a
/// 32-tuple, so that postcard copies it in one go: element by element it
/// was an eighth of the core's work per message (wire version 2).
impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Hash, D::Error> {
        deserializer.deserialize_bytes(HashVisitor)
    }
}

/// Reads a `Hash` from 32 bytes, given as a byte string or (from formats
/// without one, such as JSON) as a sequence of 32 numbers.
struct HashVisitor;

impl<'de> serde::de::Visitor<'de> for HashVisitor {
    type Value = Hash;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("32 bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Hash, E> {
        <[u8; 32]>::try_from(v)
            .map(Hash::from_bytes)
            .map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Hash, S::Error> {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(serde::de::Error::invalid_length(33, &self));
        }
        Ok(Hash::from_bytes(bytes))
    }
}

/// An arc of the ring from `start` clockwise to `end`, each end open or
/// closed. It wraps around zero when `end < start`.
///
/// When `start == end` the arc is the whole ring: with both ends open it
/// leaves out that one point, otherwise it holds every point. This is the
/// convention Chord needs for a lone node, whose `(n, n]` is everything.
///
/// ```
/// use chord::{Hash, Interval};
/// let a = Hash::pow2(255);
/// let b = Hash::pow2(3);
/// let arc = Interval::open_closed(a, b); // wraps over zero
/// assert!(arc.contains(&Hash::ZERO));
/// assert!(arc.contains(&b));
/// assert!(!arc.contains(&a));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Where the arc begins.
    pub start: Hash,
    /// Where the arc ends, clockwise from `start`.
    pub end: Hash,
    /// Whether `start` itself belongs to the arc.
    pub start_closed: bool,
    /// Whether `end` itself belongs to the arc.
    pub end_closed: bool,
}

impl Interval {
    /// `(start, end)`.
    pub fn open(start: Hash, end: Hash) -> Interval {
        Interval {
            start,
            end,
            start_closed: false,
            end_closed: false,
        }
    }

    /// `[start, end]`.
    pub fn closed(start: Hash, end: Hash) -> Interval {
        Interval {
            start,
            end,
            start_closed: true,
            end_closed: true,
        }
    }

    /// `(start, end]`: the keys a node `end` with predecessor `start` owns.
    pub fn open_closed(start: Hash, end: Hash) -> Interval {
        Interval {
            start,
            end,
            start_closed: false,
            end_closed: true,
        }
    }

    /// `[start, end)`.
    pub fn closed_open(start: Hash, end: Hash) -> Interval {
        Interval {
            start,
            end,
            start_closed: true,
            end_closed: false,
        }
    }

    /// Whether `x` lies on the arc.
    pub fn contains(&self, x: &Hash) -> bool {
        let d = self.start.distance_to(x);
        if self.start == self.end {
            return d != Hash::ZERO || self.start_closed || self.end_closed;
        }
        let span = self.start.distance_to(&self.end);
        if d == Hash::ZERO {
            self.start_closed
        } else if d == span {
            self.end_closed
        } else {
            d < span
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(n: u64) -> Hash {
        Hash([0, 0, 0, n])
    }

    fn arb_hash() -> impl Strategy<Value = Hash> {
        any::<[u64; 4]>().prop_map(Hash)
    }

    #[test]
    fn sha256_of_address_matches_known_vector() {
        // sha256("abc") from FIPS 180-2.
        assert_eq!(
            Hash::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_rejects_bad_text() {
        assert!("xyz".parse::<Hash>().is_err());
        assert!("g".repeat(64).parse::<Hash>().is_err());
        assert!("é".repeat(32).parse::<Hash>().is_err());
    }

    #[test]
    fn pow2_and_log2() {
        for bit in [0, 1, 63, 64, 127, 128, 200, 255] {
            assert_eq!(Hash::pow2(bit).log2(), Some(bit));
        }
        assert_eq!(Hash::ZERO.log2(), None);
    }

    #[test]
    fn wrapping_arithmetic_wraps() {
        assert_eq!(Hash::MAX.wrapping_add(&h(1)), Hash::ZERO);
        assert_eq!(Hash::ZERO.wrapping_sub(&h(1)), Hash::MAX);
        assert_eq!(h(10).distance_to(&h(3)), Hash::ZERO.wrapping_sub(&h(7)));
    }

    #[test]
    fn intervals_at_the_edges() {
        let i = Interval::open_closed(h(5), h(10));
        assert!(!i.contains(&h(5)));
        assert!(i.contains(&h(6)));
        assert!(i.contains(&h(10)));
        assert!(!i.contains(&h(11)));
        // Lone node: (n, n] is the whole ring, (n, n) all but n.
        assert!(Interval::open_closed(h(5), h(5)).contains(&h(5)));
        assert!(Interval::open_closed(h(5), h(5)).contains(&h(99)));
        assert!(!Interval::open(h(5), h(5)).contains(&h(5)));
        assert!(Interval::open(h(5), h(5)).contains(&h(4)));
        // Wrapping arc.
        let w = Interval::closed_open(Hash::MAX, h(2));
        assert!(w.contains(&Hash::MAX));
        assert!(w.contains(&Hash::ZERO));
        assert!(w.contains(&h(1)));
        assert!(!w.contains(&h(2)));
    }

    proptest! {
        #[test]
        fn bytes_round_trip(x in arb_hash()) {
            prop_assert_eq!(Hash::from_bytes(x.to_bytes()), x);
            prop_assert_eq!(x.to_string().parse::<Hash>().unwrap(), x);
        }

        #[test]
        fn add_then_sub_is_identity(a in arb_hash(), b in arb_hash()) {
            prop_assert_eq!(a.wrapping_add(&b).wrapping_sub(&b), a);
            prop_assert_eq!(a.distance_to(&b).wrapping_add(&a), b);
        }

        #[test]
        fn distances_around_the_ring_sum_to_zero(a in arb_hash(), b in arb_hash()) {
            // d(a,b) + d(b,a) == 0 mod 2^256
            prop_assert_eq!(a.distance_to(&b).wrapping_add(&b.distance_to(&a)), Hash::ZERO);
        }

        #[test]
        fn open_interval_excludes_ends_and_splits_ring(a in arb_hash(), b in arb_hash(), x in arb_hash()) {
            prop_assume!(a != b);
            let inside = Interval::open(a, b).contains(&x);
            let other = Interval::open(b, a).contains(&x);
            let at_end = x == a || x == b;
            // Every point is in exactly one of (a,b), (b,a), {a, b}.
            prop_assert_eq!(inside as u8 + other as u8 + at_end as u8, 1);
            prop_assert_eq!(Interval::open_closed(a, b).contains(&x), inside || x == b);
            prop_assert_eq!(Interval::closed_open(a, b).contains(&x), inside || x == a);
            prop_assert_eq!(Interval::closed(a, b).contains(&x), inside || at_end);
        }

        #[test]
        fn membership_matches_distance_order(a in arb_hash(), b in arb_hash(), x in arb_hash()) {
            prop_assume!(a != b);
            let expected = a.distance_to(&x) > Hash::ZERO && a.distance_to(&x) < a.distance_to(&b);
            prop_assert_eq!(Interval::open(a, b).contains(&x), expected);
        }

        #[test]
        fn bucket_bounds_distance(a in arb_hash(), b in arb_hash()) {
            prop_assume!(a != b);
            let bucket = a.bucket_of(&b).unwrap();
            let d = a.distance_to(&b);
            prop_assert!(d >= Hash::pow2(bucket));
            if bucket < 255 {
                prop_assert!(d < Hash::pow2(bucket + 1));
            }
        }
    }
}
