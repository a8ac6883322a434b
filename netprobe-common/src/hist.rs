//! The kernel-side latency histogram: log-linear buckets, 16 per power of
//! two (relative bucket width at most 1/16), exact below 16 ns, clamped at
//! 2^40 ns (about 18 minutes). The kernel increments buckets; the loader
//! turns them into HdrHistograms using [`bucket_bounds`].

/// Sub-buckets per power of two, as bits.
pub const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Highest power of two with its own buckets; larger values land in the last bucket.
pub const MAX_EXP: u32 = 39;
pub const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) << SUB_BITS;

/// One latency histogram, the value of a hop-pair aggregate (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Hist {
    pub count: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
    pub min_ns: u64,
    pub buckets: [u64; BUCKETS],
}

impl Hist {
    pub const fn zeroed() -> Self {
        Hist { count: 0, sum_ns: 0, max_ns: 0, min_ns: 0, buckets: [0; BUCKETS] }
    }

    /// Adds `other`'s samples (another CPU's, or another key's) to `self`.
    pub fn merge(&mut self, other: &Hist) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.min_ns < self.min_ns {
            self.min_ns = other.min_ns;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        if other.max_ns > self.max_ns {
            self.max_ns = other.max_ns;
        }
        let mut i = 0;
        while i < BUCKETS {
            self.buckets[i] += other.buckets[i];
            i += 1;
        }
    }
}

/// Index of the highest set bit (0 for 0), branch-only so the BPF
/// verifier needs no loop.
#[inline(always)]
pub fn msb(v: u64) -> u32 {
    let mut x = v;
    let mut r = 0;
    if x >= 1 << 32 {
        x >>= 32;
        r += 32;
    }
    if x >= 1 << 16 {
        x >>= 16;
        r += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        r += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        r += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        r += 2;
    }
    if x >= 1 << 1 {
        r += 1;
    }
    r
}

/// The bucket a value (ns) falls in; always `< BUCKETS`.
#[inline(always)]
pub fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = msb(v);
    if e > MAX_EXP {
        return BUCKETS - 1;
    }
    let idx = ((e - SUB_BITS + 1) as usize) << SUB_BITS;
    idx + ((v >> (e - SUB_BITS)) & (SUB - 1)) as usize
}

/// The half-open range `[lo, hi)` of values (ns) that land in bucket `idx`.
pub fn bucket_bounds(idx: usize) -> (u64, u64) {
    let sub = SUB as usize;
    if idx < sub {
        return (idx as u64, idx as u64 + 1);
    }
    let e = (idx >> SUB_BITS) as u32 + SUB_BITS - 1;
    let m = (idx & (sub - 1)) as u64;
    let shift = e - SUB_BITS;
    ((SUB + m) << shift, (SUB + m + 1) << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_its_bucket_bounds() {
        let mut v = 0u64;
        while v < (1u64 << (MAX_EXP + 1)) {
            let b = bucket_of(v);
            let (lo, hi) = bucket_bounds(b);
            assert!(lo <= v && v < hi, "v={v} b={b} lo={lo} hi={hi}");
            // relative width bound: at most 1/16 of the lower bound
            assert!(hi - lo <= (lo / SUB).max(1), "bucket {b} too wide");
            v = v * 17 / 16 + 1;
        }
    }

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut prev_hi = 0;
        for b in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(b);
            assert_eq!(lo, prev_hi, "gap before bucket {b}");
            assert!(hi > lo);
            prev_hi = hi;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(prev_hi - 1), BUCKETS - 1);
    }

    #[test]
    fn msb_matches_leading_zeros() {
        for s in 0..64 {
            let v = 1u64 << s;
            assert_eq!(msb(v), 63 - v.leading_zeros());
            assert_eq!(msb(v | (v - 1)), 63 - v.leading_zeros());
        }
        assert_eq!(msb(0), 0);
    }
}
