//! A bid's story (bid_status): the reason it did or did not win each round it took part in,
//! derived when it is read, never written per losing bid.
//!
//! clear_round writes O(1) facts per round ([`RoundFacts`]: what the rounds table holds, the
//! last winner's price and time priority, the lowest reserve of the slots it left unfilled) and
//! one row per bid it skipped because another transaction held it (`round_skips`). A bid's
//! price and time priority in a round come from its own price history ([`Segment`]s: its
//! escrow and release ledger rows). From these, [`reason_in_round`] says why the bid did not
//! win a round, in one documented set of codes ([`Reason`]), or that the round did not see it.

use std::cmp::Ordering;

/// Why a bid did or did not win: one set of codes for the rounds of its story and for the bid
/// itself (docs/SQL_API.md, "Reason codes", lists them; a test checks the two agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It won a slot in the round, at the round's clearing price.
    Won,
    /// The k bids ranked above it took every free slot, at a price at or above its bid, and
    /// none of them had its price.
    Outbid,
    /// A bid of the same price placed earlier took the last free slot.
    TieLostOnTime,
    /// Its price was below the reserve of every slot still free.
    BelowReserve,
    /// No slot was free in the round.
    NoSlot,
    /// Its row was being changed by another transaction during the round, so it was skipped.
    Locked,
    /// Its TTL passed before it won (the bid's own reason, not a round's).
    Expired,
    /// Its bidder cancelled it (the bid's own reason, not a round's).
    Cancelled,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Won,
        Reason::Outbid,
        Reason::TieLostOnTime,
        Reason::BelowReserve,
        Reason::NoSlot,
        Reason::Locked,
        Reason::Expired,
        Reason::Cancelled,
    ];

    /// The code as bid_status returns it.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Won => "won",
            Reason::Outbid => "outbid",
            Reason::TieLostOnTime => "tie_lost_on_time",
            Reason::BelowReserve => "below_reserve",
            Reason::NoSlot => "no_slot",
            Reason::Locked => "locked",
            Reason::Expired => "expired",
            Reason::Cancelled => "cancelled",
        }
    }

    /// The round's outcome for this bid in words (bid_status's `last_result` and `why_not_won`).
    pub fn describe(self, round: &RoundFacts) -> String {
        let id = round.round_id;
        let price = round.price.map_or_else(|| "no price".to_string(), |p| p.to_string());
        match self {
            Reason::Won => format!("won at {price} in round {id}"),
            Reason::Outbid => format!("outbid at {price} in round {id}"),
            Reason::TieLostOnTime => {
                format!(
                    "tie lost on time at {price} in round {id} (an earlier bid of the same price took the last slot)"
                )
            }
            Reason::BelowReserve => match round.unfilled_reserve_min {
                Some(r) => format!("below reserve ({r}) in round {id}"),
                None => format!("below reserve in round {id}"),
            },
            Reason::NoSlot => format!("no slot was available in round {id}"),
            Reason::Locked => format!("locked during round {id} (another transaction held it)"),
            Reason::Expired => "expired".to_string(),
            Reason::Cancelled => "cancelled".to_string(),
        }
    }
}

/// A bid's place in the book order: price, then time priority, then id (the clearing rule's
/// order, [`crate::clearing::bid_order`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub price: i64,
    /// microseconds since any fixed epoch
    pub placed_at: i64,
    pub id: i64,
}

impl Standing {
    /// Whether `self` ranks after `other` in the book (it would be filled later).
    pub fn ranks_after(&self, other: &Standing) -> bool {
        other.price.cmp(&self.price).then(self.placed_at.cmp(&other.placed_at)).then(self.id.cmp(&other.id))
            == Ordering::Greater
    }
}

/// What clear_round wrote about one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundFacts {
    pub round_id: i64,
    pub slots_offered: i64,
    pub slots_filled: i64,
    pub price: Option<i64>,
    /// The lowest reserve among the slots offered but left unfilled (None when every slot was
    /// filled, or for a round written before 0.2.0).
    pub unfilled_reserve_min: Option<i64>,
    /// The k-th winner, the last one filled (None when nothing was filled, or for a round whose
    /// facts are not known).
    pub last_winner: Option<Standing>,
}

/// Why `bid` (its standing in the round) did not win `round`, which it did not win; None when
/// the round cannot have seen it (it would have won, so it was placed or changed while the
/// round ran, or its facts say nothing about it).
pub fn reason_in_round(round: &RoundFacts, bid: &Standing, skipped: bool) -> Option<Reason> {
    if skipped {
        return Some(Reason::Locked);
    }
    if round.slots_offered <= 0 {
        return Some(Reason::NoSlot);
    }
    let unfilled = round.slots_filled < round.slots_offered;
    // a bid at or above the lowest unfilled reserve would have been given that slot
    let meets_unfilled = round.unfilled_reserve_min.is_some_and(|r| bid.price >= r);
    if round.slots_filled <= 0 {
        return if meets_unfilled { None } else { Some(Reason::BelowReserve) };
    }
    match &round.last_winner {
        Some(w) => {
            if !bid.ranks_after(w) {
                None
            } else if unfilled {
                if meets_unfilled {
                    None
                } else {
                    Some(Reason::BelowReserve)
                }
            } else if bid.price == w.price {
                Some(Reason::TieLostOnTime)
            } else {
                Some(Reason::Outbid)
            }
        }
        // a round whose winners are not known (written before 0.2.0 and not backfilled)
        None => {
            if unfilled {
                Some(Reason::BelowReserve)
            } else if round.price.is_some_and(|p| bid.price > p) {
                None
            } else {
                Some(Reason::Outbid)
            }
        }
    }
}

/// One stretch of a bid's price history: from `from` on (microseconds), the bid had `price` with
/// time priority `placed_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub from: i64,
    pub price: i64,
    pub placed_at: i64,
}

/// The bid's price history from its escrow and release ledger rows, oldest first: `changes` are
/// (at, the bid's price after that row) in ledger order (the caller works the prices out
/// backwards from the current one, so a read of only the newest rows is exact). The last stretch
/// has the bid's current `placed_at`; earlier ones took their ledger row's time as their time
/// priority (a new price takes a new time priority). Without ledger rows (compacted by
/// prune_history) the bid had its current price from `placed_at` on.
pub fn price_history(changes: &[(i64, i64)], price_now: i64, placed_at_now: i64) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(changes.len());
    for &(at, price) in changes {
        if price > 0 {
            out.push(Segment { from: at, price, placed_at: at });
        }
    }
    match out.last_mut() {
        Some(last) if last.price == price_now => last.placed_at = placed_at_now,
        _ => out.push(Segment { from: placed_at_now, price: price_now, placed_at: placed_at_now }),
    }
    out
}

/// The bid's standing at time `t`: the latest stretch that began at or before `t`, or the first
/// one for a round a moment before its ledger row's time (a round's `now` and a ledger row's
/// time are both their transaction's start).
pub fn standing_at(history: &[Segment], t: i64, id: i64) -> Option<Standing> {
    let seg = history.iter().rev().find(|s| s.from <= t).or_else(|| history.first())?;
    Some(Standing { price: seg.price, placed_at: seg.placed_at, id })
}

/// An estimate of how many open bids rank ahead of a bid of `price`, when more than the exact
/// count's limit do: the share of bids above `price` by the planner's statistics of
/// `max_price_tokens` (most common values and their frequencies, then the histogram's
/// equal-frequency bounds, interpolated within a bucket) times the open bids. Never below
/// `at_least`, the count already seen.
pub fn estimate_ahead(price: i64, mcv: &[(i64, f64)], bounds: &[i64], open_bids: i64, at_least: i64) -> i64 {
    let mcv_above: f64 = mcv.iter().filter(|(v, _)| *v > price).map(|(_, f)| *f).sum();
    let mcv_total: f64 = mcv.iter().map(|(_, f)| *f).sum();
    let rest = (1.0 - mcv_total).max(0.0);
    let hist_above = if bounds.len() < 2 {
        0.0
    } else {
        let buckets = (bounds.len() - 1) as f64;
        let mut above = 0.0;
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0] as f64, w[1] as f64);
            let p = price as f64;
            if p < lo {
                above += 1.0;
            } else if p < hi {
                above += (hi - p) / (hi - lo);
            }
        }
        above / buckets
    };
    let share = (mcv_above + rest * hist_above).clamp(0.0, 1.0);
    let est = (share * open_bids.max(0) as f64).round();
    // a share of at most i64::MAX bids: the cast saturates
    (est as i64).max(at_least)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(
        offered: i64,
        filled: i64,
        price: Option<i64>,
        unfilled: Option<i64>,
        w: Option<(i64, i64, i64)>,
    ) -> RoundFacts {
        RoundFacts {
            round_id: 7,
            slots_offered: offered,
            slots_filled: filled,
            price,
            unfilled_reserve_min: unfilled,
            last_winner: w.map(|(price, placed_at, id)| Standing { price, placed_at, id }),
        }
    }

    fn bid(price: i64, placed_at: i64, id: i64) -> Standing {
        Standing { price, placed_at, id }
    }

    #[test]
    fn codes_are_distinct_snake_case() {
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert!(codes.iter().all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn each_round_reason() {
        let full = round(2, 2, Some(400), None, Some((500, 10, 1)));
        assert_eq!(reason_in_round(&full, &bid(400, 5, 2), false), Some(Reason::Outbid));
        assert_eq!(reason_in_round(&full, &bid(500, 20, 2), false), Some(Reason::TieLostOnTime));
        // same price and time, higher id: still after the winner
        assert_eq!(reason_in_round(&full, &bid(500, 10, 2), false), Some(Reason::TieLostOnTime));
        assert_eq!(reason_in_round(&full, &bid(400, 5, 2), true), Some(Reason::Locked));
        let none = round(0, 0, None, None, None);
        assert_eq!(reason_in_round(&none, &bid(400, 5, 2), false), Some(Reason::NoSlot));
        let reserve = round(1, 0, None, Some(300), None);
        assert_eq!(reason_in_round(&reserve, &bid(299, 5, 2), false), Some(Reason::BelowReserve));
        let partly = round(2, 1, Some(250), Some(300), Some((900, 1, 1)));
        assert_eq!(reason_in_round(&partly, &bid(250, 5, 2), false), Some(Reason::BelowReserve));
    }

    #[test]
    fn a_round_that_cannot_have_seen_the_bid_is_not_in_its_story() {
        // ranks ahead of the last winner but did not win
        let full = round(1, 1, Some(400), None, Some((500, 10, 1)));
        assert_eq!(reason_in_round(&full, &bid(600, 50, 2), false), None);
        assert_eq!(reason_in_round(&full, &bid(500, 5, 2), false), None);
        // meets the reserve of a slot left unfilled
        let reserve = round(1, 0, None, Some(300), None);
        assert_eq!(reason_in_round(&reserve, &bid(300, 5, 2), false), None);
        let partly = round(2, 1, Some(250), Some(300), Some((900, 1, 1)));
        assert_eq!(reason_in_round(&partly, &bid(300, 5, 2), false), None);
    }

    #[test]
    fn rounds_without_facts_fall_back_to_their_counts() {
        let old = round(2, 2, Some(400), None, None);
        assert_eq!(reason_in_round(&old, &bid(400, 5, 2), false), Some(Reason::Outbid));
        assert_eq!(reason_in_round(&old, &bid(401, 5, 2), false), None);
        let old_partly = round(2, 1, Some(0), None, None);
        assert_eq!(reason_in_round(&old_partly, &bid(1, 5, 2), false), Some(Reason::BelowReserve));
    }

    #[test]
    fn price_history_and_standing() {
        // escrow 100 at t=10, raised by 50 at t=20 (now placed at 21), a round at 15 and at 30
        let h = price_history(&[(10, 100), (20, 150)], 150, 21);
        assert_eq!(
            h,
            vec![Segment { from: 10, price: 100, placed_at: 10 }, Segment { from: 20, price: 150, placed_at: 21 }]
        );
        assert_eq!(standing_at(&h, 15, 9), Some(bid(100, 10, 9)));
        assert_eq!(standing_at(&h, 30, 9), Some(bid(150, 21, 9)));
        // a round a moment before the first row's time
        assert_eq!(standing_at(&h, 5, 9), Some(bid(100, 10, 9)));
        // compacted ledger: the current price throughout
        assert_eq!(price_history(&[], 80, 3), vec![Segment { from: 3, price: 80, placed_at: 3 }]);
        // a cancel's release (the price drops to 0) is not a stretch
        let h = price_history(&[(10, 100), (40, 0)], 100, 11);
        assert_eq!(h, vec![Segment { from: 10, price: 100, placed_at: 11 }]);
        // three changes: 300, raised to 600, lowered to 450
        let h = price_history(&[(10, 300), (20, 600), (30, 450)], 450, 31);
        assert_eq!(standing_at(&h, 25, 9), Some(bid(600, 20, 9)));
        assert_eq!(standing_at(&h, 35, 9), Some(bid(450, 31, 9)));
        let h = price_history(&[(10, 100), (40, 0)], 100, 11);
        assert_eq!(h, vec![Segment { from: 10, price: 100, placed_at: 11 }]);
    }

    #[test]
    fn estimates() {
        // no statistics: the count already seen
        assert_eq!(estimate_ahead(50, &[], &[], 1_000_000, 10_000), 10_000);
        // uniform histogram 0..100, a price at 25: three quarters of a million rank ahead
        assert_eq!(estimate_ahead(25, &[], &[0, 50, 100], 1_000_000, 10_000), 750_000);
        // half the rows are the value 90, above the price
        assert_eq!(estimate_ahead(80, &[(90, 0.5)], &[0, 100], 1_000_000, 10_000), 600_000);
        assert_eq!(estimate_ahead(200, &[], &[0, 100], 1_000_000, 10_000), 10_000);
    }
}
