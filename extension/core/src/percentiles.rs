//! Percentiles of a histogram, exactly as PostgreSQL's `percentile_disc` computes them over the
//! values it counts (price_to_win's clearing-price p50 and p90, from the recent prices'
//! histogram: issue 21). Pure arithmetic, no pgrx types.

use std::collections::BTreeMap;

/// `percentile_disc(fraction)` of the multiset in which each `(value, count)` of `counts`
/// occurs `count` times: the first value, in ascending order, whose cumulative count reaches
/// `max(1, ceil(fraction * total))`, with the very float arithmetic PostgreSQL uses
/// (orderedsetaggs.c). Counts at or below zero are left out (a histogram corrected by rounds
/// that left it). `None` for an empty multiset.
pub fn percentile_disc(counts: &BTreeMap<i64, i64>, fraction: f64) -> Option<i64> {
    let total: i64 = counts.values().filter(|&&n| n > 0).fold(0_i64, |a, &n| a.saturating_add(n));
    if total == 0 {
        return None;
    }
    // as PostgreSQL: (int64) ceil(percentile * rowcount), at least 1
    let row = ((fraction * total as f64).ceil() as i64).max(1);
    let mut seen: i64 = 0;
    for (&value, &n) in counts {
        if n <= 0 {
            continue;
        }
        seen = seen.saturating_add(n);
        if seen >= row {
            return Some(value);
        }
    }
    counts.iter().rev().find(|(_, &n)| n > 0).map(|(&v, _)| v)
}

/// A histogram `(values, counts)` with `adjust` added to it (negative counts take away).
pub fn merge(values: &[i64], counts: &[i64], adjust: &[(i64, i64)]) -> BTreeMap<i64, i64> {
    let mut h: BTreeMap<i64, i64> = values.iter().copied().zip(counts.iter().copied()).collect();
    for &(v, n) in adjust {
        let e = h.entry(v).or_insert(0);
        *e = e.saturating_add(n);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// PostgreSQL's percentile_disc over the expanded, sorted multiset.
    fn reference(mut xs: Vec<i64>, fraction: f64) -> Option<i64> {
        if xs.is_empty() {
            return None;
        }
        xs.sort_unstable();
        let row = ((fraction * xs.len() as f64).ceil() as i64).max(1);
        Some(xs[usize::try_from(row - 1).unwrap()])
    }

    #[test]
    fn small_cases() {
        let h = merge(&[10, 20, 30], &[1, 1, 1], &[]);
        assert_eq!(percentile_disc(&h, 0.5), Some(20));
        assert_eq!(percentile_disc(&h, 0.9), Some(30));
        assert_eq!(percentile_disc(&BTreeMap::new(), 0.5), None);
        let h = merge(&[10, 20], &[2, 2], &[(10, -2)]);
        assert_eq!(percentile_disc(&h, 0.5), Some(20));
        assert_eq!(percentile_disc(&merge(&[5], &[1], &[(5, -1)]), 0.9), None);
        // 0.9 * 10 rounds up to row 9 exactly, not 10
        let h = merge(&(1..=10).collect::<Vec<_>>(), &[1; 10], &[]);
        assert_eq!(percentile_disc(&h, 0.9), Some(9));
    }

    proptest! {
        #[test]
        fn equals_the_sorted_multiset(
            pairs in prop::collection::vec((0_i64..50, 1_i64..5), 0..40),
            adjust in prop::collection::vec((0_i64..50, -3_i64..3), 0..10),
            fraction in prop::sample::select(vec![0.0, 0.1, 0.5, 0.9, 0.99, 1.0]),
        ) {
            let mut hist: BTreeMap<i64, i64> = BTreeMap::new();
            for (v, n) in &pairs {
                *hist.entry(*v).or_insert(0) += n;
            }
            let (values, counts): (Vec<i64>, Vec<i64>) = hist.into_iter().unzip();
            let h = merge(&values, &counts, &adjust);
            let expanded: Vec<i64> = h.iter().filter(|(_, &n)| n > 0)
                .flat_map(|(&v, &n)| std::iter::repeat_n(v, usize::try_from(n).unwrap())).collect();
            prop_assert_eq!(percentile_disc(&h, fraction), reference(expanded, fraction));
        }
    }
}
