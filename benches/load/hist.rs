//! A small log-linear latency histogram (about 3 % resolution), mergeable across processes.

use serde::{Deserialize, Serialize};

const LINEAR: u64 = 64;
const SUB_BITS: u32 = 5;
const BUCKETS: usize = 64 + 40 * 32;

/// Counts of values (microseconds) in log-linear buckets.
#[derive(Clone, Debug)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// The sparse form that travels as JSON between processes.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct SparseHist {
    /// (bucket, count) pairs.
    pub buckets: Vec<(u32, u64)>,
    /// Largest value recorded.
    pub max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let mantissa = (v >> (e - SUB_BITS)) & 31;
    let idx = 64 + (e as usize - 6) * 32 + mantissa as usize;
    idx.min(BUCKETS - 1)
}

fn value(idx: usize) -> u64 {
    if idx < LINEAR as usize {
        return idx as u64;
    }
    let e = (idx - 64) / 32 + 6;
    let mantissa = ((idx - 64) % 32) as u64;
    // the middle of the bucket
    ((32 + mantissa) << (e - 5)) + (1 << (e - 5)) / 2
}

impl Hist {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    /// Largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &SparseHist) {
        for &(i, c) in &other.buckets {
            if let Some(slot) = self.counts.get_mut(i as usize) {
                *slot += c;
                self.total += c;
            }
        }
        self.max = self.max.max(other.max);
    }

    /// The sparse form.
    pub fn sparse(&self) -> SparseHist {
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i as u32, c))
            .collect();
        SparseHist { buckets, max: self.max }
    }
}

/// Checks quantiles and merging; run before every comparison.
pub mod selftest {
    use super::*;

    /// Quantiles of 1..=100 000 are within 4 %.
    pub fn quantiles_are_within_a_few_percent() {
        let mut h = Hist::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.04, "q{q}: {got}");
        }
        assert_eq!(h.max(), 100_000);
        let mut merged = Hist::default();
        merged.merge(&h.sparse());
        assert_eq!(merged.quantile(0.5), h.quantile(0.5));
    }
}
