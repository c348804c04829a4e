//! Property tests of a bid's story (no database needed): the reason codes derived from a
//! round's O(1) facts agree with the definitions of docs/SQL_API.md, checked against the
//! clearing rule itself on random books.
// generated ids and counts are small and non-negative, so the casts are exact
#![allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]

use compute_auction_core::clearing::{clear_unsorted, Bid, Slot};
use compute_auction_core::story::{reason_in_round, Reason, RoundFacts, Standing};
use proptest::prelude::*;

fn bids() -> impl Strategy<Value = Vec<Bid>> {
    // few distinct prices and times, so ties are common
    prop::collection::vec((1i64..20, 0i64..5), 0..30).prop_map(|v| {
        v.into_iter().enumerate().map(|(i, (price, placed_at))| Bid { id: i as i64 + 1, price, placed_at }).collect()
    })
}

fn slots() -> impl Strategy<Value = Vec<Slot>> {
    prop::collection::vec((0i64..25, 0i64..5), 0..12).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (reserve, available_at))| Slot { id: format!("s{i:03}"), reserve, available_at })
            .collect()
    })
}

fn standing(b: &Bid) -> Standing {
    Standing { price: b.price, placed_at: b.placed_at, id: b.id }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn every_loser_gets_the_reason_its_definition_gives(mut b in bids(), mut s in slots()) {
        let o = clear_unsorted(&mut b, &mut s);
        let k = o.filled;
        let facts = RoundFacts {
            round_id: 1,
            slots_offered: s.len() as i64,
            slots_filled: k as i64,
            price: o.price,
            unfilled_reserve_min: s[k..].iter().map(|x| x.reserve).min(),
            last_winner: k.checked_sub(1).map(|i| standing(&b[i])),
        };
        for w in &b[..k] {
            // a winner, asked as if it had lost, is a bid the round did not see
            prop_assert_eq!(reason_in_round(&facts, &standing(w), false), None);
        }
        for l in &b[k..] {
            let got = reason_in_round(&facts, &standing(l), false);
            let want = if s.is_empty() {
                Reason::NoSlot
            } else if k < s.len() {
                // below the reserve of every slot still free
                prop_assert!(s[k..].iter().all(|x| l.price < x.reserve));
                Reason::BelowReserve
            } else if b[..k].iter().any(|w| w.price == l.price) {
                // a bid of its price placed earlier took the last free slot
                prop_assert_eq!(b[k - 1].price, l.price);
                Reason::TieLostOnTime
            } else {
                // the k above it took every slot, at a price at or above its bid
                prop_assert!(o.price.is_some_and(|p| p >= l.price));
                Reason::Outbid
            };
            prop_assert_eq!(got, Some(want));
            prop_assert_eq!(reason_in_round(&facts, &standing(l), true), Some(Reason::Locked));
        }
    }

    #[test]
    fn a_bid_the_round_did_not_see_is_not_given_a_reason_it_would_not_have(
        mut b in bids(), mut s in slots(), price in 1i64..20, placed_at in 0i64..5,
    ) {
        let o = clear_unsorted(&mut b, &mut s);
        let k = o.filled;
        let facts = RoundFacts {
            round_id: 1,
            slots_offered: s.len() as i64,
            slots_filled: k as i64,
            price: o.price,
            unfilled_reserve_min: s[k..].iter().map(|x| x.reserve).min(),
            last_winner: k.checked_sub(1).map(|i| standing(&b[i])),
        };
        // a bid placed while the round ran: had the round seen it, would it have won?
        let late = Bid { id: 1000, price, placed_at };
        let mut with = b.clone();
        with.push(late.clone());
        let mut s2 = s.clone();
        let o2 = clear_unsorted(&mut with, &mut s2);
        let would_win = with[..o2.filled].iter().any(|x| x.id == late.id);
        let got = reason_in_round(&facts, &standing(&late), false);
        if would_win {
            prop_assert_eq!(got, None, "a bid that would have won is not told it lost");
        } else {
            prop_assert!(got.is_some());
        }
    }
}
