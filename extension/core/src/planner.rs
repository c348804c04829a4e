//! The quest planner: what submit_bids_for_tasks does with each task of a quest's backlog.
//!
//! - another bidder's live bid on the task, or the quest's own won bid: skip it;
//! - a blocked task, or a price of 0: cancel the quest's own open bid on it, if any;
//! - otherwise place a bid at [`tokens::quest_bid_price`], replacing the quest's open bid.
//!
//! The budget is the quest's spendable balance plus what its own open bids on these tasks hold
//! (so submitting the same backlog twice prices it the same), and the cap is the budget split
//! evenly over the unblocked tasks, so all the places together never cost more than the budget.
//! Cancels run first and lowered bids before raises and new bids, so the wallet never needs
//! more than it holds at any step.

pub use crate::book::BidStatus;
use std::collections::HashMap;

use crate::tokens;
use crate::validate::Invalid;

/// One task of the backlog, in the caller's order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Task<'a> {
    pub id: &'a str,
    pub expected_value_usd: f64,
    pub blocked: bool,
}

/// A live bid on one of the tasks. A task has at most one (the unique index on live bids per
/// task); should a task be listed with several, the first one decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveBid<'a> {
    pub id: i64,
    pub task_id: &'a str,
    /// Whether the quest placed it.
    pub own: bool,
    pub status: BidStatus,
    pub max_price_tokens: i64,
}

/// Why a task gets no new bid. The texts are the `outcome` column of submit_bids_for_tasks, a
/// public contract (docs/SQL_API.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    LiveBidByAnother,
    AlreadyWon,
    Blocked,
    CancelledBlocked,
    /// Also the outcome of cancelling the quest's open bid because the price came to 0.
    ZeroPrice,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::LiveBidByAnother => "skipped: live bid by another bidder",
            Outcome::AlreadyWon => "skipped: already won",
            Outcome::Blocked => "skipped: blocked",
            Outcome::CancelledBlocked => "cancelled: blocked",
            Outcome::ZeroPrice => "skipped: zero price",
        }
    }
}

/// The quest's own open bid that a place replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replaces {
    pub bid_id: i64,
    pub old_price: i64,
}

/// What to do with one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Leave the task alone; `bid_id` is the won bid for [`Outcome::AlreadyWon`].
    Skip { outcome: Outcome, bid_id: Option<i64> },
    /// Cancel the quest's own open bid.
    Cancel { bid_id: i64, outcome: Outcome },
    /// Place a bid at `price` (> 0), replacing the quest's open bid if there is one.
    Place { price: i64, replaces: Option<Replaces> },
}

impl Decision {
    /// A place that releases tokens or moves none: it may run before the wallet is debited.
    fn lowers(&self) -> bool {
        matches!(self, Decision::Place { price, replaces: Some(r) } if *price <= r.old_price)
    }
}

/// The plan for one backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub budget: i64,
    pub cap: i64,
    /// One per task, in task order.
    pub decisions: Vec<Decision>,
    /// The indexes of the [`Decision::Place`] tasks in the order to place them, after every
    /// cancel: lowered bids first, then raises and new bids, each by task index.
    pub place_order: Vec<usize>,
}

/// Plans a backlog. `tasks` have distinct ids (the caller checks); bids on other tasks are
/// ignored. Errs (22003) only when the budget would overflow.
pub fn plan(
    tasks: &[Task<'_>],
    bids: &[LiveBid<'_>],
    balance: i64,
    tokens_per_usd: f64,
    bid_fraction: f64,
) -> Result<Plan, Invalid> {
    let mut live: HashMap<&str, Option<&LiveBid<'_>>> = tasks.iter().map(|t| (t.id, None)).collect();
    let mut budget = balance;
    for b in bids {
        let Some(slot) = live.get_mut(b.task_id) else { continue };
        if b.own && b.status == BidStatus::Open {
            budget = tokens::add("budget", budget, b.max_price_tokens)?;
        }
        slot.get_or_insert(b);
    }
    let unblocked = tokens::count(tasks.iter().filter(|t| !t.blocked).count());
    let cap = if unblocked > 0 { budget / unblocked } else { 0 };

    let decisions: Vec<Decision> = tasks
        .iter()
        .map(|t| {
            let bid = live.get(t.id).copied().flatten();
            let own_open = bid.filter(|b| b.own && b.status == BidStatus::Open);
            match bid {
                Some(b) if !b.own => return Decision::Skip { outcome: Outcome::LiveBidByAnother, bid_id: None },
                Some(b) if b.status == BidStatus::Won => {
                    return Decision::Skip { outcome: Outcome::AlreadyWon, bid_id: Some(b.id) }
                }
                _ => {}
            }
            let release = |outcome: Outcome, skipped: Outcome| match own_open {
                Some(b) => Decision::Cancel { bid_id: b.id, outcome },
                None => Decision::Skip { outcome: skipped, bid_id: None },
            };
            if t.blocked {
                return release(Outcome::CancelledBlocked, Outcome::Blocked);
            }
            let price = tokens::quest_bid_price(bid_fraction, t.expected_value_usd, tokens_per_usd, cap);
            if price == 0 {
                return release(Outcome::ZeroPrice, Outcome::ZeroPrice);
            }
            Decision::Place {
                price,
                replaces: own_open.map(|b| Replaces { bid_id: b.id, old_price: b.max_price_tokens }),
            }
        })
        .collect();

    let mut place_order: Vec<usize> =
        (0..decisions.len()).filter(|&i| matches!(decisions[i], Decision::Place { .. })).collect();
    place_order.sort_by_key(|&i| (!decisions[i].lowers(), i));
    Ok(Plan { budget, cap, decisions, place_order })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(id: &str, ev: f64, blocked: bool) -> Task<'_> {
        Task { id, expected_value_usd: ev, blocked }
    }

    fn bid(id: i64, task_id: &str, own: bool, status: BidStatus, price: i64) -> LiveBid<'_> {
        LiveBid { id, task_id, own, status, max_price_tokens: price }
    }

    #[test]
    fn outcome_texts_are_the_public_ones() {
        let texts: Vec<&str> = [
            Outcome::LiveBidByAnother,
            Outcome::AlreadyWon,
            Outcome::Blocked,
            Outcome::CancelledBlocked,
            Outcome::ZeroPrice,
        ]
        .iter()
        .map(|o| o.as_str())
        .collect();
        assert_eq!(
            texts,
            [
                "skipped: live bid by another bidder",
                "skipped: already won",
                "skipped: blocked",
                "cancelled: blocked",
                "skipped: zero price"
            ]
        );
    }

    #[test]
    fn one_backlog_of_every_kind() {
        use BidStatus::{Open, Won};
        let tasks = [
            task("new", 5.0, false),     // 0.5 * 5 * 100 = 250
            task("lower", 10.0, false),  // 500, capped at 325, below its 600
            task("raise", 4.0, false),   // 200, above its 100
            task("blocked", 9.0, true),  // its open bid is cancelled
            task("theirs", 10.0, false), // another bidder's
            task("won", 10.0, false),
            task("free", 0.0, false), // price 0: its open bid is cancelled
            task("idle", 1.0, true),  // blocked, no bid
        ];
        let bids = [
            bid(3, "theirs", false, Open, 999),
            bid(5, "won", true, Won, 300),
            bid(7, "lower", true, Open, 600),
            bid(8, "raise", true, Open, 100),
            bid(9, "blocked", true, Open, 200),
            bid(10, "free", true, Open, 50),
        ];
        let p = plan(&tasks, &bids, 1000, 100.0, 0.5).unwrap();
        // 1000 + 600 + 100 + 200 + 50 (the won bid's 300 is not the quest's to spend)
        assert_eq!(p.budget, 1950);
        // six unblocked tasks
        assert_eq!(p.cap, 325);
        assert_eq!(
            p.decisions,
            [
                Decision::Place { price: 250, replaces: None },
                Decision::Place { price: 325, replaces: Some(Replaces { bid_id: 7, old_price: 600 }) },
                Decision::Place { price: 200, replaces: Some(Replaces { bid_id: 8, old_price: 100 }) },
                Decision::Cancel { bid_id: 9, outcome: Outcome::CancelledBlocked },
                Decision::Skip { outcome: Outcome::LiveBidByAnother, bid_id: None },
                Decision::Skip { outcome: Outcome::AlreadyWon, bid_id: Some(5) },
                Decision::Cancel { bid_id: 10, outcome: Outcome::ZeroPrice },
                Decision::Skip { outcome: Outcome::Blocked, bid_id: None },
            ]
        );
        // the lowered bid first, then the new one and the raise by index
        assert_eq!(p.place_order, [1, 0, 2]);
    }

    #[test]
    fn a_lowered_bid_funds_a_new_one_at_zero_balance() {
        use BidStatus::Open;
        // budget 100 over two tasks: cap 50; "b" must give back 50 before "a" takes 50
        let tasks = [task("a", 1.0, false), task("b", 1.0, false)];
        let bids = [bid(1, "b", true, Open, 100)];
        let p = plan(&tasks, &bids, 0, 1000.0, 1.0).unwrap();
        assert_eq!(p.cap, 50);
        assert_eq!(
            p.decisions,
            [
                Decision::Place { price: 50, replaces: None },
                Decision::Place { price: 50, replaces: Some(Replaces { bid_id: 1, old_price: 100 }) },
            ]
        );
        assert_eq!(p.place_order, [1, 0]);
    }

    #[test]
    fn an_unchanged_price_counts_as_lowered() {
        use BidStatus::Open;
        let tasks = [task("a", 1.0, false), task("b", 1.0, false)];
        let bids = [bid(1, "b", true, Open, 40)];
        let p = plan(&tasks, &bids, 1000, 40.0, 1.0).unwrap();
        assert_eq!(
            p.decisions[1],
            Decision::Place { price: 40, replaces: Some(Replaces { bid_id: 1, old_price: 40 }) }
        );
        assert_eq!(p.place_order, [1, 0]);
    }

    #[test]
    fn no_unblocked_task_means_cap_zero_and_no_place() {
        let tasks = [task("a", 1.0, true)];
        let p = plan(&tasks, &[], 1000, 100.0, 1.0).unwrap();
        assert_eq!(p.cap, 0);
        assert_eq!(p.decisions, [Decision::Skip { outcome: Outcome::Blocked, bid_id: None }]);
        assert!(p.place_order.is_empty());
        let p = plan(&[], &[], 1000, 100.0, 1.0).unwrap();
        assert!(p.decisions.is_empty() && p.place_order.is_empty());
    }

    #[test]
    fn the_first_bid_on_a_task_decides_and_other_tasks_bids_are_ignored() {
        use BidStatus::Open;
        // cannot come from the database (one live bid per task), but the result is defined:
        // "a"'s own open bid still counts toward the budget, "x" is not in the backlog
        let tasks = [task("a", 1.0, false), task("b", 1.0, false)];
        let bids = [bid(1, "a", false, Open, 10), bid(2, "a", true, Open, 30), bid(3, "x", true, Open, 5000)];
        let p = plan(&tasks, &bids, 70, 1000.0, 1.0).unwrap();
        assert_eq!(p.budget, 100);
        assert_eq!(p.decisions[0], Decision::Skip { outcome: Outcome::LiveBidByAnother, bid_id: None });
        assert_eq!(p.decisions[1], Decision::Place { price: 50, replaces: None });
    }

    #[test]
    fn budget_overflow_is_an_error() {
        let tasks = [task("a", 1.0, false)];
        let bids = [bid(1, "a", true, BidStatus::Open, 1)];
        assert_eq!(plan(&tasks, &bids, i64::MAX, 1.0, 1.0), Err(Invalid::Overflow { what: "budget" }));
        // a won bid is not spendable, so it does not count
        let bids = [bid(1, "a", true, BidStatus::Won, 1)];
        assert!(plan(&tasks, &bids, i64::MAX, 1.0, 1.0).is_ok());
    }

    /// The live bid a generated task has, if any.
    #[derive(Clone, Copy, Debug)]
    enum Live {
        None,
        Theirs(BidStatus),
        Own(BidStatus, i64),
    }

    #[derive(Clone, Debug)]
    struct Backlog {
        /// (id, ev, blocked, live bid)
        tasks: Vec<(String, f64, bool, Live)>,
        /// The order the bids are handed to the planner in.
        bid_order: Vec<usize>,
        balance: i64,
        tokens_per_usd: f64,
        bid_fraction: f64,
    }

    impl Backlog {
        fn tasks(&self) -> Vec<Task<'_>> {
            self.tasks.iter().map(|(id, ev, blocked, _)| task(id, *ev, *blocked)).collect()
        }

        /// Task `i`'s bid, with id `100 + i`.
        fn bid(&self, i: usize) -> Option<LiveBid<'_>> {
            let (id, .., live) = &self.tasks[i];
            let n = 100 + i64::try_from(i).unwrap();
            match *live {
                Live::None => None,
                Live::Theirs(s) => Some(bid(n, id, false, s, 1_000)),
                Live::Own(s, price) => Some(bid(n, id, true, s, price)),
            }
        }

        fn bids(&self) -> Vec<LiveBid<'_>> {
            self.bid_order.iter().filter_map(|&i| self.bid(i)).collect()
        }

        fn plan(&self) -> Result<Plan, Invalid> {
            plan(&self.tasks(), &self.bids(), self.balance, self.tokens_per_usd, self.bid_fraction)
        }

        fn own_open(&self, i: usize) -> Option<(i64, i64)> {
            self.bid(i).filter(|b| b.own && b.status == BidStatus::Open).map(|b| (b.id, b.max_price_tokens))
        }

        /// The cap, computed apart from the planner.
        fn cap(&self) -> i64 {
            let held: i64 = (0..self.tasks.len()).filter_map(|i| self.own_open(i)).map(|(_, p)| p).sum();
            let n = self.tasks.iter().filter(|t| !t.2).count();
            if n == 0 {
                0
            } else {
                (self.balance + held) / i64::try_from(n).unwrap()
            }
        }
    }

    fn live() -> impl Strategy<Value = Live> {
        prop_oneof![
            3 => Just(Live::None),
            1 => Just(Live::Theirs(BidStatus::Open)),
            1 => Just(Live::Theirs(BidStatus::Won)),
            3 => (1i64..100_000).prop_map(|p| Live::Own(BidStatus::Open, p)),
            1 => (1i64..100_000).prop_map(|p| Live::Own(BidStatus::Won, p)),
        ]
    }

    fn backlog() -> impl Strategy<Value = Backlog> {
        let ev = prop_oneof![1 => Just(0.0f64), 1 => 0.0f64..0.01, 6 => 0.0f64..200.0, 1 => 0.0f64..1e12];
        let task = (ev, prop::bool::weighted(0.25), live());
        let balance = prop_oneof![1 => Just(0i64), 4 => 0i64..300_000, 1 => 0i64..i64::MAX / 2];
        (prop::collection::vec(task, 0..24), balance, 0.01f64..2000.0, 0.001f64..=1.0).prop_flat_map(
            |(tasks, balance, tokens_per_usd, bid_fraction)| {
                let order: Vec<usize> = (0..tasks.len()).collect();
                (Just(tasks), Just(order).prop_shuffle(), Just(balance), Just(tokens_per_usd), Just(bid_fraction))
                    .prop_map(|(tasks, bid_order, balance, tokens_per_usd, bid_fraction)| Backlog {
                        tasks: tasks
                            .into_iter()
                            .enumerate()
                            .map(|(i, (ev, blocked, live))| (format!("t{i}"), ev, blocked, live))
                            .collect(),
                        bid_order,
                        balance,
                        tokens_per_usd,
                        bid_fraction,
                    })
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// (a) Executed in its order, the plan never takes the wallet below zero.
        #[test]
        fn the_wallet_never_goes_negative(b in backlog()) {
            let p = b.plan().unwrap();
            let mut wallet = i128::from(b.balance);
            for (i, d) in p.decisions.iter().enumerate() {
                if let Decision::Cancel { bid_id, .. } = *d {
                    let (id, old) = b.own_open(i).unwrap();
                    prop_assert_eq!(bid_id, id);
                    wallet += i128::from(old);
                }
            }
            for &i in &p.place_order {
                let Decision::Place { price, replaces } = p.decisions[i] else {
                    return Err(TestCaseError::fail(format!("task {i} in the order is not placed")));
                };
                prop_assert_eq!(replaces.map(|r| (r.bid_id, r.old_price)), b.own_open(i));
                wallet -= i128::from(price) - i128::from(replaces.map_or(0, |r| r.old_price));
                prop_assert!(wallet >= 0, "wallet {} after placing task {}", wallet, i);
            }
        }

        /// (b) Every price is quest_bid_price at the cap: positive, never above the cap.
        #[test]
        fn prices_are_the_formula_under_the_cap(b in backlog()) {
            let p = b.plan().unwrap();
            let cap = b.cap();
            prop_assert_eq!(p.cap, cap);
            for (i, d) in p.decisions.iter().enumerate() {
                if let Decision::Place { price, .. } = *d {
                    let (_, ev, ..) = b.tasks[i];
                    prop_assert!(price > 0 && price <= cap, "price {} cap {}", price, cap);
                    prop_assert_eq!(price, tokens::quest_bid_price(b.bid_fraction, ev, b.tokens_per_usd, cap));
                }
            }
        }

        /// (c) Blocked tasks are never placed; another bidder's bid or a won bid means a skip
        /// with its text.
        #[test]
        fn blocked_theirs_and_won_are_never_placed(b in backlog()) {
            let p = b.plan().unwrap();
            for (i, d) in p.decisions.iter().enumerate() {
                let (_, _, blocked, live) = b.tasks[i];
                let id = b.bid(i).map(|x| x.id);
                let expected = match live {
                    Live::Theirs(_) => Some(Decision::Skip { outcome: Outcome::LiveBidByAnother, bid_id: None }),
                    Live::Own(BidStatus::Won, _) => Some(Decision::Skip { outcome: Outcome::AlreadyWon, bid_id: id }),
                    Live::Own(BidStatus::Open, _) if blocked => {
                        Some(Decision::Cancel { bid_id: id.unwrap(), outcome: Outcome::CancelledBlocked })
                    }
                    Live::None if blocked => Some(Decision::Skip { outcome: Outcome::Blocked, bid_id: None }),
                    _ => None,
                };
                if let Some(e) = expected {
                    prop_assert_eq!(*d, e, "task {}", i);
                }
                prop_assert!(!(blocked && matches!(d, Decision::Place { .. })), "blocked task {} placed", i);
            }
        }

        /// (d) One decision per task, in task order: reversing the backlog reverses the plan.
        #[test]
        fn one_decision_per_task_in_task_order(b in backlog()) {
            let p = b.plan().unwrap();
            prop_assert_eq!(p.decisions.len(), b.tasks.len());
            for (i, d) in p.decisions.iter().enumerate() {
                // each decision names the bid of its own task
                let named = match *d {
                    Decision::Skip { bid_id, .. } => bid_id,
                    Decision::Cancel { bid_id, .. } => Some(bid_id),
                    Decision::Place { replaces, .. } => replaces.map(|r| r.bid_id),
                };
                if let Some(id) = named {
                    prop_assert_eq!(Some(id), b.bid(i).map(|x| x.id), "task {}", i);
                }
            }
            let mut tasks = b.tasks();
            tasks.reverse();
            let r = plan(&tasks, &b.bids(), b.balance, b.tokens_per_usd, b.bid_fraction).unwrap();
            let mut reversed = r.decisions.clone();
            reversed.reverse();
            prop_assert_eq!(reversed, p.decisions);
        }

        /// (e) The order holds exactly the places, lowered bids before the others, each group
        /// by task index.
        #[test]
        fn the_order_is_the_places_lowered_first(b in backlog()) {
            let p = b.plan().unwrap();
            let places: Vec<usize> =
                (0..p.decisions.len()).filter(|&i| matches!(p.decisions[i], Decision::Place { .. })).collect();
            let lowered = |i: usize| match p.decisions[i] {
                Decision::Place { price, replaces: Some(r) } => price <= r.old_price,
                _ => false,
            };
            let mut expected: Vec<usize> = places.iter().copied().filter(|&i| lowered(i)).collect();
            expected.extend(places.iter().copied().filter(|&i| !lowered(i)));
            prop_assert_eq!(&p.place_order, &expected);
        }

        /// Open bids of the quest are always either cancelled or replaced, and nothing else
        /// decides a task with no live bid: a price of 0 is a skip, otherwise a new bid.
        #[test]
        fn own_open_bids_are_cancelled_or_replaced(b in backlog()) {
            let p = b.plan().unwrap();
            for (i, d) in p.decisions.iter().enumerate() {
                let (_, ev, blocked, live) = b.tasks[i];
                let price = tokens::quest_bid_price(b.bid_fraction, ev, b.tokens_per_usd, p.cap);
                let expected = match (live, blocked, price) {
                    (Live::Own(BidStatus::Open, _), false, 0) => {
                        Decision::Cancel { bid_id: b.bid(i).unwrap().id, outcome: Outcome::ZeroPrice }
                    }
                    (Live::Own(BidStatus::Open, old), false, _) => Decision::Place {
                        price,
                        replaces: Some(Replaces { bid_id: b.bid(i).unwrap().id, old_price: old }),
                    },
                    (Live::None, false, 0) => Decision::Skip { outcome: Outcome::ZeroPrice, bid_id: None },
                    (Live::None, false, _) => Decision::Place { price, replaces: None },
                    _ => continue,
                };
                prop_assert_eq!(*d, expected, "task {}", i);
            }
        }
    }
}
