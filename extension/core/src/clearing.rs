//! The uniform-price clearing rule.
//!
//! Given the eligible bids and the available slots of one round:
//! - bids are ordered by `max_price_tokens DESC, placed_at ASC, id ASC`;
//! - slots are ordered by `reserve_price_tokens ASC, available_at ASC, slot_id ASC`;
//! - `k` is the largest `q` such that the q-th bid's price is at least the q-th slot's reserve
//!   (bid prices fall and reserves rise along the orders, so the condition holds exactly for
//!   `q = 1..=k`);
//! - the price is `max(reserve of the k-th slot, price of the (k+1)-th bid or 0)`;
//! - the i-th bid wins the i-th slot.
//!
//! Every winner pays the same price, which never exceeds its own bid: the (k+1)-th bid is at
//! most the k-th, and the k-th slot's reserve is at most the k-th bid. Because a winner's own
//! bid never sets the price, bidding one's true value is a dominant strategy.

use std::cmp::Ordering;
use std::collections::HashSet;

/// A bid as the clearing rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bid {
    pub id: i64,
    pub price: i64,
    /// Time priority, in microseconds since any fixed epoch.
    pub placed_at: i64,
}

/// A slot (an ask) as the clearing rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub id: String,
    pub reserve: i64,
    /// In microseconds since any fixed epoch.
    pub available_at: i64,
}

/// The book order of bids as a SQL `ORDER BY` list over `compute_auction_bids` columns (the
/// book index's order). [`bid_order`] is the rule; a #[pg_test] (`sql_book_order_is_the_rule`)
/// checks that this list sorts random books exactly as it does.
#[macro_export]
macro_rules! book_order_sql {
    () => {
        "max_price_tokens DESC, placed_at, id"
    };
    ($alias:literal) => {
        concat!($alias, ".max_price_tokens DESC, ", $alias, ".placed_at, ", $alias, ".id")
    };
}

/// The order slots are filled in, as a SQL `ORDER BY` list over `compute_slots` columns
/// ([`slot_order`] is the rule).
#[macro_export]
macro_rules! slot_order_sql {
    () => {
        "reserve_price_tokens, available_at, slot_id"
    };
}

/// The book order of bids: best first.
pub fn bid_order(a: &Bid, b: &Bid) -> Ordering {
    b.price.cmp(&a.price).then(a.placed_at.cmp(&b.placed_at)).then(a.id.cmp(&b.id))
}

/// The order in which slots are filled: cheapest reserve first, then soonest, then by id.
pub fn slot_order(a: &Slot, b: &Slot) -> Ordering {
    a.reserve.cmp(&b.reserve).then(a.available_at.cmp(&b.available_at)).then_with(|| a.id.cmp(&b.id))
}

/// Why the (k+1)-th bid, the best loser, did not win.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerUpReason {
    /// Every available slot was filled by better bids at this price.
    Outbid(i64),
    /// The next slot's reserve was above this bid.
    BelowReserve,
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// k: how many slots are filled; bid `i` wins slot `i` for `i < k`.
    pub filled: usize,
    /// The uniform clearing price; `None` when nothing is filled.
    pub price: Option<i64>,
    /// Index of the (k+1)-th bid in the bid order, if there is one and a slot was offered.
    pub runner_up: Option<usize>,
    pub runner_up_reason: Option<RunnerUpReason>,
}

/// Clears one round. `bid_prices` must be in [`bid_order`] and `reserves` in [`slot_order`].
///
/// Only the first `reserves.len() + 1` bids can matter, so callers fetch no more than that.
pub fn clear(bid_prices: &[i64], reserves: &[i64]) -> Outcome {
    let mut k = 0;
    while k < bid_prices.len() && k < reserves.len() && bid_prices[k] >= reserves[k] {
        k += 1;
    }
    let next_bid = bid_prices.get(k).copied();
    let price = if k == 0 { None } else { Some(reserves[k - 1].max(next_bid.unwrap_or(0))) };
    let (runner_up, runner_up_reason) = match next_bid {
        Some(_) if !reserves.is_empty() => {
            let reason = if k < reserves.len() {
                RunnerUpReason::BelowReserve
            } else {
                // k == reserves.len() > 0, so the price is set.
                RunnerUpReason::Outbid(price.unwrap_or(0))
            };
            (Some(k), Some(reason))
        }
        _ => (None, None),
    };
    Outcome { filled: k, price, runner_up, runner_up_reason }
}

/// What a round takes from the book when some bids are locked by other transactions: the round
/// never waits for them, so **the winners are the top k of the open, unexpired bids that this
/// round could lock, and the price rule applies to that set**.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The first `want` bids of the book without the locked-out ones, in [`bid_order`]: the bids
    /// that can matter (`want` = slots + 1).
    pub candidates: Vec<Bid>,
    /// The locked-out bids the round passed over while it scanned for its candidates: those
    /// ranked ahead of the last candidate, or all of them when the book ran out first. They are
    /// recorded and not counted as eligible; a locked-out bid deeper in the book was never
    /// reached and counts as eligible.
    pub skipped: Vec<i64>,
}

/// Scans `book` (any order) for a round's `want` candidates, passing over `locked_out`.
pub fn scan(book: &[Bid], locked_out: &HashSet<i64>, want: usize) -> Scan {
    let mut sorted: Vec<&Bid> = book.iter().collect();
    sorted.sort_by(|a, b| bid_order(a, b));
    let mut candidates = Vec::with_capacity(want);
    let mut skipped = Vec::new();
    for b in sorted {
        if candidates.len() == want {
            break;
        }
        if locked_out.contains(&b.id) {
            skipped.push(b.id);
        } else {
            candidates.push(b.clone());
        }
    }
    Scan { candidates, skipped }
}

/// Sorts both sides into their clearing orders and clears them.
pub fn clear_unsorted(bids: &mut [Bid], slots: &mut [Slot]) -> Outcome {
    bids.sort_by(bid_order);
    slots.sort_by(slot_order);
    let prices: Vec<i64> = bids.iter().map(|b| b.price).collect();
    let reserves: Vec<i64> = slots.iter().map(|s| s.reserve).collect();
    clear(&prices, &reserves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bids_fills_nothing() {
        let o = clear(&[], &[0, 0]);
        assert_eq!(o, Outcome { filled: 0, price: None, runner_up: None, runner_up_reason: None });
    }

    #[test]
    fn no_slots_fills_nothing_and_names_no_runner_up() {
        let o = clear(&[10, 5], &[]);
        assert_eq!(o.filled, 0);
        assert_eq!(o.price, None);
        assert_eq!(o.runner_up, None);
    }

    #[test]
    fn price_is_the_k_plus_first_bid() {
        // ten bids, five free slots: the sixth-highest bid sets the price
        let bids: Vec<i64> = (1..=10).rev().map(|i| i * 10_000).collect();
        let o = clear(&bids, &[0; 5]);
        assert_eq!(o.filled, 5);
        assert_eq!(o.price, Some(50_000));
        assert_eq!(o.runner_up, Some(5));
        assert_eq!(o.runner_up_reason, Some(RunnerUpReason::Outbid(50_000)));
    }

    #[test]
    fn fewer_bids_than_slots_pays_the_reserve_or_zero() {
        assert_eq!(clear(&[100, 50], &[0, 0, 0]).price, Some(0));
        assert_eq!(clear(&[100, 50], &[7, 9, 11]).price, Some(9));
        assert_eq!(clear(&[100, 50], &[7, 9, 11]).runner_up, None);
    }

    #[test]
    fn reserves_leave_slots_unfilled() {
        // second bid is below the second slot's reserve
        let o = clear(&[100, 30, 20], &[10, 40, 50]);
        assert_eq!(o.filled, 1);
        // max(reserve of slot 1 = 10, next bid = 30)
        assert_eq!(o.price, Some(30));
        assert_eq!(o.runner_up, Some(1));
        assert_eq!(o.runner_up_reason, Some(RunnerUpReason::BelowReserve));
    }

    #[test]
    fn all_bids_below_reserve() {
        let o = clear(&[5, 4], &[10]);
        assert_eq!(o.filled, 0);
        assert_eq!(o.price, None);
        assert_eq!(o.runner_up, Some(0));
        assert_eq!(o.runner_up_reason, Some(RunnerUpReason::BelowReserve));
    }

    #[test]
    fn ties_at_the_boundary_go_to_the_earlier_bid_at_the_tied_price() {
        let mut bids = vec![
            Bid { id: 3, price: 50, placed_at: 20 },
            Bid { id: 1, price: 90, placed_at: 30 },
            Bid { id: 2, price: 50, placed_at: 10 },
        ];
        let mut slots = vec![
            Slot { id: "b".into(), reserve: 0, available_at: 0 },
            Slot { id: "a".into(), reserve: 0, available_at: 0 },
        ];
        let o = clear_unsorted(&mut bids, &mut slots);
        assert_eq!(o.filled, 2);
        assert_eq!(o.price, Some(50));
        assert_eq!(bids[0].id, 1);
        assert_eq!(bids[1].id, 2, "the earlier of the tied bids wins");
        assert_eq!(slots[0].id, "a");
    }

    #[test]
    fn equal_time_ties_break_by_id() {
        let mut bids = [Bid { id: 9, price: 50, placed_at: 10 }, Bid { id: 4, price: 50, placed_at: 10 }];
        bids.sort_by(bid_order);
        assert_eq!(bids[0].id, 4);
    }

    #[test]
    fn slots_fill_cheapest_reserve_then_soonest() {
        let mut slots = [
            Slot { id: "late".into(), reserve: 0, available_at: 20 },
            Slot { id: "pricey".into(), reserve: 5, available_at: 0 },
            Slot { id: "soon".into(), reserve: 0, available_at: 10 },
        ];
        slots.sort_by(slot_order);
        let ids: Vec<&str> = slots.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["soon", "late", "pricey"]);
    }
}

/// The smallest bid that would win a slot if the round cleared now, for a newcomer that ranks
/// after every existing bid of the same price (it is placed last). `bid_prices` and `reserves`
/// are in clearing order; only the first `reserves.len()` bids matter. `None` when no slot is
/// available.
pub fn price_to_win(bid_prices: &[i64], reserves: &[i64]) -> Option<i64> {
    if reserves.is_empty() {
        return None;
    }
    let n = reserves.len();
    let top = &bid_prices[..bid_prices.len().min(n)];
    let wins = |x: i64| -> bool {
        // the newcomer goes after every existing bid >= x
        let pos = top.partition_point(|&p| p >= x);
        if pos >= n {
            return false;
        }
        let mut with: Vec<i64> = Vec::with_capacity(top.len() + 1);
        with.extend_from_slice(&top[..pos]);
        with.push(x);
        with.extend_from_slice(&top[pos..]);
        clear(&with, reserves).filled > pos
    };
    // wins() is monotone in x; the answer is at most max(top bid + 1, largest reserve) <= i64::MAX
    let mut hi = top.first().map_or(0, |&p| p.saturating_add(1)).max(reserves[n - 1]).max(1);
    if !wins(hi) {
        // cannot happen: a bid above every other bid and every reserve wins the first slot
        hi = i64::MAX;
    }
    let mut lo = 1;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if wins(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The advice of price_to_win(slots_free => n): the smallest bid that would be among the top `n`
/// of the book and meet the reserve of every one of the `n` slots that would be free
/// (`reserves`, any order). A newcomer ranks after every existing bid of its price, so among
/// the top n it must beat the n-th bid (`top` holds the book's first bids in clearing order);
/// a book shallower than n asks nothing of it. The slots free up one by one as runs end, so a
/// bid may meet any of them alone: it must meet the highest reserve. Never below 1 (the
/// smallest bid): an empty book and no reserve give 1.
pub fn price_for_slots(top: &[i64], n: usize, reserves: &[i64]) -> i64 {
    let book = if n > 0 && top.len() >= n { top[n - 1].saturating_add(1) } else { 1 };
    book.max(reserves.iter().copied().max().unwrap_or(0)).max(1)
}

#[cfg(test)]
mod price_to_win_tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(price_to_win(&[], &[]), None);
        assert_eq!(price_to_win(&[], &[0]), Some(1));
        assert_eq!(price_to_win(&[], &[50]), Some(50));
        // two slots, bids 100 and 80: must beat 80 (ties lose to the earlier bid)
        assert_eq!(price_to_win(&[100, 80, 10], &[0, 0]), Some(81));
        // one free slot above the only bid's reserve
        assert_eq!(price_to_win(&[100], &[0, 120]), Some(101));
        assert_eq!(price_to_win(&[100], &[0, 0]), Some(1));
    }

    #[test]
    fn price_for_slots_edges() {
        // empty book: the highest reserve among the slots, or 1
        assert_eq!(price_for_slots(&[], 3, &[0, 40, 25]), 40);
        assert_eq!(price_for_slots(&[], 1, &[0]), 1);
        assert_eq!(price_for_slots(&[], 2, &[]), 1);
        // a book shallower than n: any bid is among the top n
        assert_eq!(price_for_slots(&[500], 2, &[0, 0]), 1);
        assert_eq!(price_for_slots(&[500], 2, &[0, 30]), 30);
        // a full book: beat the n-th bid (ties lose on time)
        assert_eq!(price_for_slots(&[500, 400, 300], 2, &[0, 0]), 401);
        assert_eq!(price_for_slots(&[500, 400, 300], 2, &[0, 450]), 450);
        assert_eq!(price_for_slots(&[i64::MAX], 1, &[0]), i64::MAX);
    }
}
