//! Property tests of the clearing rule (no database needed).
// generated ids and counts are small and non-negative, so the casts are exact
#![allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]
use std::collections::HashSet;

use compute_auction_core::clearing::{bid_order, clear, clear_unsorted, scan, slot_order, Bid, Slot};
use proptest::prelude::*;

fn bids() -> impl Strategy<Value = Vec<Bid>> {
    prop::collection::vec((1i64..1_000_000, 0i64..1_000), 0..40).prop_map(|v| {
        v.into_iter().enumerate().map(|(i, (price, placed_at))| Bid { id: i as i64 + 1, price, placed_at }).collect()
    })
}

fn slots() -> impl Strategy<Value = Vec<Slot>> {
    prop::collection::vec((0i64..200_000, 0i64..1_000), 0..20).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (reserve, available_at))| Slot { id: format!("s{i:03}"), reserve, available_at })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn price_bounds(mut b in bids(), mut s in slots()) {
        let o = clear_unsorted(&mut b, &mut s);
        let k = o.filled;
        prop_assert!(k <= b.len() && k <= s.len());
        match o.price {
            None => prop_assert_eq!(k, 0),
            Some(p) => {
                prop_assert!(p >= 0);
                for w in &b[..k] {
                    prop_assert!(p <= w.price, "price {} above winner bid {}", p, w.price);
                }
                for l in &b[k..] {
                    prop_assert!(p >= l.price, "price {} below losing bid {}", p, l.price);
                }
                for slot in &s[..k] {
                    prop_assert!(p >= slot.reserve, "price {} below filled reserve {}", p, slot.reserve);
                }
            }
        }
        // every filled slot's reserve is met by the bid that wins it
        for i in 0..k {
            prop_assert!(b[i].price >= s[i].reserve);
        }
        // k is maximal: the next pair would not match
        if k < b.len() && k < s.len() {
            prop_assert!(b[k].price < s[k].reserve);
        }
    }

    #[test]
    fn winners_are_exactly_the_top_k(mut b in bids(), mut s in slots()) {
        let o = clear_unsorted(&mut b, &mut s);
        let k = o.filled;
        for w in &b[..k] {
            for l in &b[k..] {
                prop_assert!(bid_order(w, l).is_lt(), "loser {:?} ranks above winner {:?}", l, w);
            }
        }
        let ordered = s.windows(2).all(|p| slot_order(&p[0], &p[1]).is_le());
        prop_assert!(ordered);
    }

    #[test]
    fn a_winner_raising_its_own_bid_pays_the_same(mut b in bids(), mut s in slots(), pick in any::<prop::sample::Index>(), raise in 1i64..1_000_000) {
        let before = clear_unsorted(&mut b, &mut s);
        prop_assume!(before.filled > 0);
        let who = pick.index(before.filled);
        let winner_id = b[who].id;
        let mut raised = b.clone();
        raised[who].price += raise;
        let mut s2 = s.clone();
        let after = clear_unsorted(&mut raised, &mut s2);
        prop_assert_eq!(after.price, before.price);
        prop_assert_eq!(after.filled, before.filled);
        prop_assert!(raised[..after.filled].iter().any(|x| x.id == winner_id));
    }

    #[test]
    fn a_loser_lowering_its_bid_never_raises_the_price(mut b in bids(), mut s in slots(), pick in any::<prop::sample::Index>()) {
        let before = clear_unsorted(&mut b, &mut s);
        prop_assume!(before.filled < b.len());
        let who = before.filled + pick.index(b.len() - before.filled);
        let mut lowered = b.clone();
        lowered[who].price = 1;
        let mut s2 = s.clone();
        let after = clear_unsorted(&mut lowered, &mut s2);
        prop_assert!(after.price.unwrap_or(0) <= before.price.unwrap_or(0));
    }

    #[test]
    fn only_the_first_n_plus_one_bids_matter(b in bids(), s in slots()) {
        let mut b = b; let mut s = s;
        b.sort_by(bid_order); s.sort_by(slot_order);
        let prices: Vec<i64> = b.iter().map(|x| x.price).collect();
        let reserves: Vec<i64> = s.iter().map(|x| x.reserve).collect();
        let full = clear(&prices, &reserves);
        let cut = clear(&prices[..prices.len().min(reserves.len() + 1)], &reserves);
        prop_assert_eq!(full, cut);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn price_to_win_is_the_least_winning_bid(mut b in bids(), mut s in slots()) {
        b.sort_by(bid_order); s.sort_by(slot_order);
        let prices: Vec<i64> = b.iter().map(|x| x.price).collect();
        let reserves: Vec<i64> = s.iter().map(|x| x.reserve).collect();
        let p = compute_auction_core::clearing::price_to_win(&prices, &reserves);
        let newcomer_wins = |x: i64| {
            let mut all = b.clone();
            all.push(Bid { id: 1_000_000, price: x, placed_at: 10_000 });
            let mut s2 = s.clone();
            let o = clear_unsorted(&mut all, &mut s2);
            all[..o.filled].iter().any(|w| w.id == 1_000_000)
        };
        match p {
            None => prop_assert!(s.is_empty()),
            Some(x) => {
                prop_assert!(newcomer_wins(x), "bidding {} should win", x);
                if x > 1 { prop_assert!(!newcomer_wins(x - 1), "bidding {} should lose", x - 1); }
            }
        }
    }

    // ---- bids the round could not lock (issue 13) ----

    #[test]
    fn a_scan_takes_the_top_of_the_lockable_book(b in bids(), lock in prop::collection::vec(any::<bool>(), 40), want in 1usize..12) {
        let locked_out: HashSet<i64> = b.iter().filter(|x| lock[(x.id as usize - 1) % 40]).map(|x| x.id).collect();
        let sc = scan(&b, &locked_out, want);
        let mut lockable: Vec<Bid> = b.iter().filter(|x| !locked_out.contains(&x.id)).cloned().collect();
        lockable.sort_by(bid_order);
        // the candidates are exactly the top `want` of the bids the round could lock
        prop_assert_eq!(&sc.candidates, &lockable[..want.min(lockable.len())].to_vec());
        // no locked-out bid is a candidate, and every skipped bid is locked out
        prop_assert!(sc.candidates.iter().all(|c| !locked_out.contains(&c.id)));
        prop_assert!(sc.skipped.iter().all(|id| locked_out.contains(id)));
        // skipped = the locked-out bids ranked ahead of the last candidate (all of them when the
        // lockable book ran out); the ones deeper in the book were never reached
        let reached_end = sc.candidates.len() < want;
        for x in b.iter().filter(|x| locked_out.contains(&x.id)) {
            let ahead = match sc.candidates.last() {
                Some(last) if !reached_end => bid_order(x, last).is_lt(),
                _ => true,
            };
            prop_assert_eq!(sc.skipped.contains(&x.id), ahead, "bid {:?}", x);
        }
    }

    #[test]
    fn the_price_rule_applies_to_the_lockable_set(b in bids(), mut s in slots(), lock in prop::collection::vec(any::<bool>(), 40)) {
        let locked_out: HashSet<i64> = b.iter().filter(|x| lock[(x.id as usize - 1) % 40]).map(|x| x.id).collect();
        s.sort_by(slot_order);
        let reserves: Vec<i64> = s.iter().map(|x| x.reserve).collect();
        let sc = scan(&b, &locked_out, s.len() + 1);
        let prices: Vec<i64> = sc.candidates.iter().map(|x| x.price).collect();
        let o = clear(&prices, &reserves);
        // the same outcome as clearing the whole lockable book: its k+1 best are enough
        let mut lockable: Vec<Bid> = b.iter().filter(|x| !locked_out.contains(&x.id)).cloned().collect();
        let mut s2 = s.clone();
        let full = clear_unsorted(&mut lockable, &mut s2);
        prop_assert_eq!(o.filled, full.filled);
        prop_assert_eq!(o.price, full.price);
        // no skipped bid wins, however high it bid
        for w in &sc.candidates[..o.filled] {
            prop_assert!(!locked_out.contains(&w.id));
        }
        // with nothing locked out the scan is the plain top of the book
        let none = scan(&b, &HashSet::new(), s.len() + 1);
        let mut all = b.clone();
        all.sort_by(bid_order);
        prop_assert_eq!(none.candidates, all[..(s.len() + 1).min(all.len())].to_vec());
        prop_assert!(none.skipped.is_empty());
    }
}
