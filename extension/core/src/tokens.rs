//! Token arithmetic. Tokens are whole numbers (`i64`, SQL `bigint`); every operation is checked
//! because release builds wrap on overflow.

use crate::validate::Invalid;

pub fn add(what: &'static str, a: i64, b: i64) -> Result<i64, Invalid> {
    a.checked_add(b).ok_or(Invalid::Overflow { what })
}

pub fn sub(what: &'static str, a: i64, b: i64) -> Result<i64, Invalid> {
    a.checked_sub(b).ok_or(Invalid::Overflow { what })
}

/// The winning premium a settled winner gets back: its escrow minus the clearing price.
pub fn premium(max_price: i64, clearing_price: i64) -> Result<i64, Invalid> {
    sub("premium", max_price, clearing_price)
}

/// Each weight's share of the total, in [0, 1], computed without overflow (even split when all
/// weights are zero).
pub fn shares(weights: &[f64]) -> Vec<f64> {
    let max = weights.iter().cloned().fold(0.0f64, f64::max);
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        let n = weights.len().max(1) as f64;
        return weights.iter().map(|_| 1.0 / n).collect();
    }
    let scaled: Vec<f64> = weights.iter().map(|w| w / max).collect();
    let total: f64 = scaled.iter().sum();
    scaled.iter().map(|w| (w / total).clamp(0.0, 1.0)).collect()
}

/// A count of rows or slots as a bigint: exact, since no slice holds more than i64::MAX items.
pub fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count as an integer column (rounds' slots_offered, slots_filled): saturates at i32::MAX.
pub fn count_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A non-negative finite f64 as an exact `mantissa * 2^exponent`.
fn decompose(x: f64) -> (u64, i32) {
    if x == 0.0 {
        return (0, 0);
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    }
}

/// Splits `budget` tokens over `weights` proportionally, in whole tokens, by the largest-remainder
/// (Hamilton) method: every share gets the floor of its exact quota `budget * w / sum(w)`, and
/// the tokens left over go one each to the largest remainders (ties to the earlier entry). The
/// quotas are computed exactly (each f64 weight is an exact binary fraction; the arithmetic is
/// on big integers), so every share is within one token of its quota at any budget, and the
/// shares sum to exactly `budget`. All-zero weights split evenly.
pub fn largest_remainder(budget: i64, weights: &[f64]) -> Result<Vec<i64>, Invalid> {
    use num_bigint::BigUint;

    let Ok(budget_u) = u64::try_from(budget) else {
        return Err(Invalid::Negative { arg: "daily_budget_tokens", value: budget });
    };
    if weights.is_empty() {
        return Ok(Vec::new());
    }
    for w in weights {
        if !w.is_finite() {
            return Err(Invalid::NotFinite { arg: "expected_value" });
        }
        if *w < 0.0 {
            return Err(Invalid::OutOfRange { arg: "expected_value", detail: format!("{w} is negative") });
        }
    }
    let n = weights.len();
    let parts: Vec<(u64, i32)> = if weights.iter().all(|w| *w == 0.0) {
        vec![(1, 0); n]
    } else {
        weights.iter().map(|w| decompose(*w)).collect()
    };
    let min_exp = parts.iter().filter(|p| p.0 != 0).map(|p| p.1).min().unwrap_or(0);
    let big: Vec<BigUint> = parts
        .iter()
        // e >= min_exp for every non-zero mantissa, so the shift is the plain difference
        .map(|&(m, e)| if m == 0 { BigUint::from(0u32) } else { BigUint::from(m) << (e - min_exp).unsigned_abs() })
        .collect();
    let total: BigUint = big.iter().sum();
    let budget_big = BigUint::from(budget_u);
    let mut floors = Vec::with_capacity(n);
    let mut rems = Vec::with_capacity(n);
    for w in &big {
        let product = &budget_big * w;
        let q = &product / &total;
        rems.push(product - &q * &total);
        // q <= budget <= i64::MAX, so it fits
        floors.push(u64::try_from(q).ok().and_then(|q| i64::try_from(q).ok()).unwrap_or(budget));
    }
    let assigned: i128 = floors.iter().map(|&x| i128::from(x)).sum();
    // 0 <= left < n: the floors sum to at most the budget and lose less than one token each
    let left = usize::try_from(i128::from(budget) - assigned).unwrap_or(0);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| rems[b].cmp(&rems[a]).then(a.cmp(&b)));
    for &idx in order.iter().take(left) {
        floors[idx] += 1;
    }
    Ok(floors)
}

/// The bid a quest places for one task: `clamp(floor(bid_fraction * ev * tokens_per_usd), 0, cap)`.
pub fn quest_bid_price(bid_fraction: f64, ev_usd: f64, tokens_per_usd: f64, cap: i64) -> i64 {
    let raw = (bid_fraction * ev_usd * tokens_per_usd).floor();
    if raw.is_nan() || raw <= 0.0 {
        return 0;
    }
    let cap = cap.max(0);
    if raw >= cap as f64 {
        cap
    } else {
        raw as i64
    }
}

#[cfg(test)]
// generated test inputs are in range; the casts build exact reference values
#[allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn premium_and_overflow() {
        assert_eq!(premium(100, 40), Ok(60));
        assert!(add("x", i64::MAX, 1).is_err());
        assert!(sub("x", i64::MIN, 1).is_err());
    }

    #[test]
    fn largest_remainder_examples() {
        assert_eq!(largest_remainder(10, &[1.0, 1.0, 1.0]).unwrap(), vec![4, 3, 3]);
        assert_eq!(largest_remainder(100, &[3.0, 1.0]).unwrap(), vec![75, 25]);
        assert_eq!(largest_remainder(7, &[0.0, 0.0]).unwrap(), vec![4, 3]);
        assert_eq!(largest_remainder(0, &[1.0, 2.0]).unwrap(), vec![0, 0]);
        assert!(largest_remainder(5, &[f64::NAN]).is_err());
        assert!(largest_remainder(5, &[-1.0]).is_err());
        assert_eq!(largest_remainder(10, &[1e308, 1e308]).unwrap(), vec![5, 5]);
        // exact at the largest budget (the floats' exact binary values, by big integers)
        assert_eq!(
            largest_remainder(i64::MAX, &[3.0, 1e-300, 7.0]).unwrap(),
            vec![2767011611056432742, 0, 6456360425798343065]
        );
    }

    #[test]
    fn quest_price_clamps() {
        assert_eq!(quest_bid_price(0.6, 10.0, 100.0, 1_000), 600);
        assert_eq!(quest_bid_price(0.6, 10.0, 100.0, 500), 500);
        assert_eq!(quest_bid_price(0.6, 0.0, 100.0, 500), 0);
        assert_eq!(quest_bid_price(1.0, 1e300, 1e300, 42), 42);
    }

    proptest! {
        #[test]
        fn largest_remainder_sums_to_budget(budget in 0i64..i64::MAX / 4, w in prop::collection::vec(0.0f64..1e9, 1..50)) {
            let shares = largest_remainder(budget, &w).unwrap();
            prop_assert_eq!(shares.iter().map(|&x| x as i128).sum::<i128>(), budget as i128);
            prop_assert!(shares.iter().all(|&x| x >= 0));
        }

        #[test]
        fn largest_remainder_is_within_one_of_quota_at_any_budget(budget in 0i64..i64::MAX, w in prop::collection::vec(0.0f64..1e12, 1..20)) {
            // exact check with 128-bit integers on integer-valued weights
            let w: Vec<f64> = w.iter().map(|x| x.floor()).collect();
            prop_assume!(w.iter().any(|x| *x > 0.0));
            let shares = largest_remainder(budget, &w).unwrap();
            let total: u128 = w.iter().map(|x| *x as u128).sum();
            for (s, wi) in shares.iter().zip(&w) {
                let num = budget as u128 * (*wi as u128);
                let fl = (num / total) as i64;
                prop_assert!(*s == fl || *s == fl + 1, "share {} quota floor {}", s, fl);
            }
        }

        #[test]
        fn largest_remainder_is_within_one_of_quota(budget in 0i64..1_000_000_000, w in prop::collection::vec(0.001f64..1e6, 1..30)) {
            let shares = largest_remainder(budget, &w).unwrap();
            let total: f64 = w.iter().sum();
            for (s, wi) in shares.iter().zip(&w) {
                let quota = wi / total * budget as f64;
                prop_assert!((*s as f64 - quota).abs() <= 1.0 + quota * 1e-9, "share {} quota {}", s, quota);
            }
        }
    }
}
