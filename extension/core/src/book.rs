//! The states of a bid, defined once.
//!
//! ```text
//!   open --win--> won --settle--> settled
//!    |              \---abort---> aborted
//!    |--cancel--> cancelled
//!    \--expire--> expired
//! ```
//!
//! A bid is *live* while open or won: it escrows its `max_price_tokens`, and a task has at most
//! one live bid. The extension's `book` module is the only code that moves a bid between these
//! states. SQL names a state with [`bid_status_sql!`], which expands to the quoted literal (a
//! literal rather than a parameter, so the planner can match the partial indexes on
//! `status = 'open'`); sql/schema.sql's CHECK and partial indexes repeat the names, and
//! `tests::schema_lists_every_status` checks that they match.

/// The name of a bid status, as stored in `compute_auction_bids.status`.
#[macro_export]
macro_rules! bid_status_name {
    (open) => {
        "open"
    };
    (won) => {
        "won"
    };
    (settled) => {
        "settled"
    };
    (aborted) => {
        "aborted"
    };
    (cancelled) => {
        "cancelled"
    };
    (expired) => {
        "expired"
    };
}

/// A bid status as a SQL literal (`'open'`), `live` for the SQL list `('open', 'won')`, or
/// `finished` for the final states `('settled', 'expired', 'cancelled', 'aborted')`.
#[macro_export]
macro_rules! bid_status_sql {
    (live) => {
        concat!("(", $crate::bid_status_sql!(open), ", ", $crate::bid_status_sql!(won), ")")
    };
    (finished) => {
        concat!(
            "(",
            $crate::bid_status_sql!(settled),
            ", ",
            $crate::bid_status_sql!(expired),
            ", ",
            $crate::bid_status_sql!(cancelled),
            ", ",
            $crate::bid_status_sql!(aborted),
            ")"
        )
    };
    ($s:ident) => {
        concat!("'", $crate::bid_status_name!($s), "'")
    };
}

/// Where a bid is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BidStatus {
    Open,
    Won,
    Settled,
    Aborted,
    Cancelled,
    Expired,
}

impl BidStatus {
    pub const ALL: [BidStatus; 6] = [
        BidStatus::Open,
        BidStatus::Won,
        BidStatus::Settled,
        BidStatus::Aborted,
        BidStatus::Cancelled,
        BidStatus::Expired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            BidStatus::Open => bid_status_name!(open),
            BidStatus::Won => bid_status_name!(won),
            BidStatus::Settled => bid_status_name!(settled),
            BidStatus::Aborted => bid_status_name!(aborted),
            BidStatus::Cancelled => bid_status_name!(cancelled),
            BidStatus::Expired => bid_status_name!(expired),
        }
    }

    /// The status stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<BidStatus> {
        BidStatus::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Open or won: the bid escrows its price and holds its task.
    pub const fn is_live(self) -> bool {
        matches!(self, BidStatus::Open | BidStatus::Won)
    }

    /// The states a bid in this state may move to.
    pub const fn next(self) -> &'static [BidStatus] {
        match self {
            BidStatus::Open => &[BidStatus::Won, BidStatus::Cancelled, BidStatus::Expired],
            BidStatus::Won => &[BidStatus::Settled, BidStatus::Aborted],
            _ => &[],
        }
    }
}

impl std::fmt::Display for BidStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../../sql/schema.sql");

    /// The text between `start` and the next `)` after it.
    fn list_after<'a>(text: &'a str, start: &str) -> Vec<&'a str> {
        let i = text.find(start).unwrap_or_else(|| panic!("{start} not in sql/schema.sql")) + start.len();
        let end = text[i..].find(')').unwrap();
        text[i..i + end].split(',').map(|s| s.trim().trim_matches('\'')).collect()
    }

    #[test]
    fn schema_lists_every_status() {
        let mut listed = list_after(SCHEMA, "CHECK (status IN ('open', 'won'");
        listed.splice(0..0, ["open", "won"]);
        listed.retain(|s| !s.is_empty());
        let mut ours: Vec<&str> = BidStatus::ALL.iter().map(|s| s.as_str()).collect();
        listed.sort_unstable();
        ours.sort_unstable();
        assert_eq!(listed, ours);
    }

    #[test]
    fn schema_partial_indexes_use_the_live_list() {
        // the unique live-bid index and the bidder index say `status IN ('open', 'won')`
        let live = concat!("WHERE status IN ", bid_status_sql!(live), ";");
        assert_eq!(SCHEMA.matches(live).count(), 2, "{live}");
        let open = concat!("WHERE status = ", bid_status_sql!(open), ";");
        assert_eq!(SCHEMA.matches(open).count(), 2, "{open}");
    }

    #[test]
    fn finished_is_every_state_that_is_not_live() {
        let finished = bid_status_sql!(finished);
        for s in BidStatus::ALL {
            let quoted = format!("'{s}'");
            assert_eq!(finished.contains(&quoted), !s.is_live(), "{s}");
        }
        // the retention index of sql/schema.sql names the same list
        let index = concat!("WHERE status IN ", bid_status_sql!(finished), ";");
        assert_eq!(SCHEMA.matches(index).count(), 1, "{index}");
    }

    #[test]
    fn names_round_trip() {
        for s in BidStatus::ALL {
            assert_eq!(BidStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BidStatus::parse("pending"), None);
        assert_eq!(bid_status_sql!(open), "'open'");
        assert_eq!(bid_status_sql!(live), "('open', 'won')");
        assert_eq!(bid_status_sql!(finished), "('settled', 'expired', 'cancelled', 'aborted')");
    }

    #[test]
    fn only_open_and_won_are_live_and_move_on() {
        for s in BidStatus::ALL {
            assert_eq!(s.is_live(), !s.next().is_empty(), "{s}");
            for n in s.next() {
                assert_ne!(*n, BidStatus::Open, "nothing returns to open");
            }
        }
    }
}
