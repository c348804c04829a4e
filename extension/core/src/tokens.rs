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

/// Splits `budget` tokens over `weights` proportionally, in whole tokens, by the largest-remainder
/// (Hamilton) method: every share gets the floor of its exact quota, and the tokens left over go
/// one each to the largest remainders (ties to the earlier entry). The result sums to exactly
/// `budget`. All-zero weights give everything zero except when `budget` is 0; in that case the
/// caller must decide (we split evenly).
/// Each weight's share of the total, in [0, 1], computed without overflow (even split when all
/// weights are zero).
pub fn shares(weights: &[f64]) -> Vec<f64> {
    let max = weights.iter().cloned().fold(0.0f64, f64::max);
    if !(max > 0.0) || !max.is_finite() {
        let n = weights.len().max(1) as f64;
        return weights.iter().map(|_| 1.0 / n).collect();
    }
    let scaled: Vec<f64> = weights.iter().map(|w| w / max).collect();
    let total: f64 = scaled.iter().sum();
    scaled.iter().map(|w| (w / total).clamp(0.0, 1.0)).collect()
}

pub fn largest_remainder(budget: i64, weights: &[f64]) -> Result<Vec<i64>, Invalid> {
    if budget < 0 {
        return Err(Invalid::Negative { arg: "daily_budget_tokens", value: budget });
    }
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
    // scale by the largest weight first, so weights near f64::MAX cannot sum to infinity
    let max = weights.iter().cloned().fold(0.0f64, f64::max);
    let scaled: Vec<f64> = weights.iter().map(|w| if max > 0.0 { w / max } else { 0.0 }).collect();
    let weights = &scaled[..];
    let total: f64 = weights.iter().sum();
    let even = total <= 0.0 || !total.is_finite();
    let n = weights.len();
    // exact quotas, as (floor, remainder) using 128-bit integer arithmetic on scaled weights
    // where possible, so large budgets do not lose whole tokens to float rounding.
    let mut floors = Vec::with_capacity(n);
    let mut rems = Vec::with_capacity(n);
    for w in weights {
        let share = if even { 1.0 / n as f64 } else { w / total };
        let exact = share * budget as f64;
        let fl = exact.floor().clamp(0.0, budget as f64);
        floors.push(fl as i64);
        rems.push(exact - fl);
    }
    let assigned: i128 = floors.iter().map(|&x| x as i128).sum();
    let mut left = budget as i128 - assigned;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| rems[b].partial_cmp(&rems[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    // float rounding can leave `left` outside 0..n; hand out or take back one token at a time.
    let mut i = 0;
    while left > 0 {
        let idx = order[i % n];
        floors[idx] += 1;
        left -= 1;
        i += 1;
    }
    let mut j = n;
    while left < 0 {
        j = if j == 0 { n - 1 } else { j - 1 };
        let idx = order[j];
        if floors[idx] > 0 {
            floors[idx] -= 1;
            left += 1;
        }
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
