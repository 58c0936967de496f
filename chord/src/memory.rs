//! Estimates of the heap a node's tables hold, from their capacities, for
//! [`crate::LocalNode::state_bytes`]: what the simulator reports per node,
//! so that a change that makes every node larger shows in every run.
//!
//! The estimates follow the layouts of the standard collections: a hash
//! table (`hashbrown`) of `b` buckets holds `b` entries and `b + 16`
//! control bytes; a `Vec` or `VecDeque` holds its capacity; a `BTreeMap`
//! holds nodes of up to 11 entries, each about two thirds full. They leave
//! out the allocator's own overhead (8-16 bytes per allocation).

use std::mem::size_of;

/// Bytes of a hash table that can hold `capacity` entries of `entry` bytes.
pub(crate) fn hash_table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    // hashbrown fills at most 7/8 of its buckets (all but one below 8).
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (entry + 1) + 16
}

/// Bytes of a `Vec` (or `VecDeque`) of `capacity` elements of type `T`.
pub(crate) fn vec_bytes<T>(capacity: usize) -> usize {
    capacity * size_of::<T>()
}

/// Bytes of a `BTreeMap<K, V>` of `len` entries (nodes about two thirds full).
pub(crate) fn btree_bytes<K, V>(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    // A leaf holds 11 keys and 11 values plus about 16 bytes of header.
    let leaf = 11 * (size_of::<K>() + size_of::<V>()) + 16;
    len.div_ceil(7) * leaf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn hash_table_estimate_follows_the_real_capacity() {
        // The estimate must see the doubling of a map that grows.
        let mut m: HashMap<u32, u64> = HashMap::new();
        assert_eq!(hash_table_bytes(m.capacity(), 16), 0);
        m.insert(1, 1);
        let small = hash_table_bytes(m.capacity(), 16);
        for i in 0..100 {
            m.insert(i, i as u64);
        }
        let large = hash_table_bytes(m.capacity(), 16);
        assert!(small > 0 && small < 256, "{small}");
        // 100 entries: 128 buckets of 17 bytes.
        assert_eq!(large, 128 * 17 + 16);
    }
}
