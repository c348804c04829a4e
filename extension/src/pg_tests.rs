// `#[pg_test]` unit tests: each runs inside a transaction that is rolled back. Commit
// behaviour, concurrency and the full acceptance scenario live in the Python suite (tests/).

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

fn one<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).expect("query failed")
}

fn audit_clean() {
    let n = one::<i64>("SELECT count(*) FROM compute_auction.audit()").unwrap();
    assert_eq!(n, 0, "audit() found problems");
}

#[pg_test]
fn open_deposit_withdraw_balance() {
    assert_eq!(one::<i64>("SELECT compute_auction.open_account('a1', 'agent', 100)"), Some(100));
    assert_eq!(one::<i64>("SELECT compute_auction.deposit('a1', 50, 'good work')"), Some(150));
    assert_eq!(one::<i64>("SELECT compute_auction.withdraw('a1', 30, 'payout')"), Some(120));
    assert_eq!(one::<i64>("SELECT balance_tokens FROM compute_auction.balance('a1')"), Some(120));
    assert_eq!(one::<i64>("SELECT count(*) FROM compute_auction.token_ledger WHERE account_id = 'a1'"), Some(3));
    audit_clean();
}

#[pg_test]
fn open_account_defaults_to_agent_with_zero() {
    assert_eq!(one::<i64>("SELECT compute_auction.open_account('a2')"), Some(0));
    assert_eq!(
        one::<String>("SELECT kind FROM compute_auction.token_accounts WHERE account_id = 'a2'"),
        Some("agent".into())
    );
    assert_eq!(one::<i64>("SELECT count(*) FROM compute_auction.token_ledger"), Some(0));
}

#[pg_test]
fn ids_with_sql_are_stored_literally() {
    let id = "x'); DROP TABLE compute_auction.token_ledger; --";
    Spi::run_with_args(
        "SELECT compute_auction.open_account($1, 'quest', 5)",
        &[id.into()],
    )
    .unwrap();
    let got = Spi::get_one_with_args::<String>(
        "SELECT account_id FROM compute_auction.token_accounts WHERE account_id = $1",
        &[id.into()],
    )
    .unwrap();
    assert_eq!(got.as_deref(), Some(id));
}

#[pg_test(error = "account a3 already exists")]
fn open_account_twice_fails() {
    Spi::run("SELECT compute_auction.open_account('a3')").unwrap();
    Spi::run("SELECT compute_auction.open_account('a3')").unwrap();
}

#[pg_test(error = "account_id must not be NULL")]
fn null_account_is_22004() {
    Spi::run("SELECT compute_auction.open_account(NULL)").unwrap();
}

#[pg_test(error = "amount must be positive, got 0")]
fn zero_deposit_fails() {
    Spi::run("SELECT compute_auction.open_account('a4')").unwrap();
    Spi::run("SELECT compute_auction.deposit('a4', 0, 'x')").unwrap();
}

#[pg_test(error = "insufficient funds in account a5: needs 11 tokens, has 10 spendable")]
fn overdraw_fails() {
    Spi::run("SELECT compute_auction.open_account('a5', 'agent', 10)").unwrap();
    Spi::run("SELECT compute_auction.withdraw('a5', 11, 'x')").unwrap();
}

#[pg_test(error = "balance_tokens would overflow bigint")]
fn deposit_overflow_is_22003() {
    Spi::run("SELECT compute_auction.open_account('a6', 'agent', 9223372036854775000)").unwrap();
    Spi::run("SELECT compute_auction.deposit('a6', 1000, 'x')").unwrap();
}

#[pg_test(error = "kind is out of range: \"robot\" is not one of agent, quest, system")]
fn unknown_kind_fails() {
    Spi::run("SELECT compute_auction.open_account('a7', 'robot')").unwrap();
}

#[pg_test]
fn idempotent_deposit_replays() {
    Spi::run("SELECT compute_auction.open_account('a8', 'agent', 10)").unwrap();
    assert_eq!(one::<i64>("SELECT compute_auction.deposit('a8', 5, 'r', 'k1')"), Some(15));
    assert_eq!(one::<i64>("SELECT compute_auction.deposit('a8', 5, 'r', 'k1')"), Some(15));
    assert_eq!(one::<i64>("SELECT balance_tokens FROM compute_auction.balance('a8')"), Some(15));
    audit_clean();
}

fn market(n_slots: usize, prices: &[i64]) {
    for i in 0..n_slots {
        Spi::run_with_args("SELECT compute_auction.offer_slot($1, now() - interval '1 minute')", &[format!("s{i}").as_str().into()]).unwrap();
    }
    for (i, p) in prices.iter().enumerate() {
        let acct = format!("bidder{i}");
        Spi::run_with_args("SELECT compute_auction.open_account($1, 'agent', 1000000)", &[acct.as_str().into()]).unwrap();
        Spi::run_with_args(
            "SELECT compute_auction.place_bid($1, $2, $3)",
            &[acct.as_str().into(), format!("task{i}").as_str().into(), (*p).into()],
        )
        .unwrap();
    }
}

#[pg_test]
fn place_bid_escrows_and_clear_round_prices_at_k_plus_one() {
    market(2, &[100, 300, 200, 50]);
    assert_eq!(one::<i64>("SELECT held_tokens FROM compute_auction.balance('bidder1')"), Some(300));
    assert_eq!(one::<i64>("SELECT count(*) FROM compute_auction.clear_round()"), Some(2));
    assert_eq!(
        one::<i64>("SELECT clearing_price_tokens FROM compute_auction.compute_auction_rounds ORDER BY round_id DESC LIMIT 1"),
        Some(100)
    );
    assert_eq!(
        one::<String>("SELECT string_agg(bidder_id, ',' ORDER BY bidder_id) FROM compute_auction.compute_auction_bids WHERE status = 'won'"),
        Some("bidder1,bidder2".into())
    );
    assert_eq!(
        one::<String>("SELECT last_result FROM compute_auction.compute_auction_bids WHERE bidder_id = 'bidder0'"),
        Some("outbid at 100".into())
    );
    audit_clean();
}

#[pg_test]
fn settle_charges_clearing_price_and_returns_premium() {
    market(1, &[500, 200]);
    let slot = one::<String>("SELECT slot_id FROM compute_auction.clear_round()").unwrap();
    let charged = Spi::get_one_with_args::<i64>(
        "SELECT compute_auction.settle($1, 10, 2.5)",
        &[slot.as_str().into()],
    )
    .unwrap();
    assert_eq!(charged, Some(200));
    assert_eq!(one::<i64>("SELECT balance_tokens FROM compute_auction.balance('bidder0')"), Some(1_000_000 - 200));
    assert_eq!(one::<i64>("SELECT held_tokens FROM compute_auction.balance('bidder0')"), Some(0));
    assert_eq!(one::<i64>("SELECT total_spent FROM compute_auction.token_accounts WHERE account_id = 'bidder0'"), Some(200));
    assert_eq!(one::<String>("SELECT status FROM compute_auction.compute_slots WHERE slot_id = 's0'"), Some("idle".into()));
    audit_clean();
}

#[pg_test]
fn replace_bid_keeps_id_and_adjusts_escrow() {
    market(0, &[100]);
    let id1 = one::<i64>("SELECT compute_auction.place_bid('bidder0', 'task0', 250)");
    let id0 = one::<i64>("SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'task0'");
    assert_eq!(id1, id0);
    assert_eq!(one::<i64>("SELECT held_tokens FROM compute_auction.balance('bidder0')"), Some(250));
    one::<i64>("SELECT compute_auction.place_bid('bidder0', 'task0', 40)");
    assert_eq!(one::<i64>("SELECT held_tokens FROM compute_auction.balance('bidder0')"), Some(40));
    assert_eq!(one::<i64>("SELECT balance_tokens FROM compute_auction.balance('bidder0')"), Some(1_000_000 - 40));
    audit_clean();
}

#[pg_test]
fn cancel_releases_escrow() {
    market(0, &[100]);
    assert_eq!(one::<i64>("SELECT compute_auction.cancel_bid(id) FROM compute_auction.compute_auction_bids"), Some(100));
    assert_eq!(one::<i64>("SELECT held_tokens FROM compute_auction.balance('bidder0')"), Some(0));
    audit_clean();
}

#[pg_test(error = "bid 999999 does not exist")]
fn cancel_unknown_bid() {
    Spi::run("SELECT compute_auction.cancel_bid(999999)").unwrap();
}

#[pg_test]
fn refund_unfilled_expires_and_refunds() {
    market(0, &[100, 200]);
    let row = Spi::get_two::<i64, i64>(
        "SELECT * FROM compute_auction.refund_unfilled(now() + interval '1 hour')",
    )
    .unwrap();
    assert_eq!(row, (Some(2), Some(300)));
    assert_eq!(one::<i64>("SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'expired'"), Some(2));
    audit_clean();
}

#[pg_test]
fn abort_slot_refunds_fully() {
    market(1, &[500, 200]);
    Spi::run("SELECT * FROM compute_auction.clear_round()").unwrap();
    assert_eq!(one::<i64>("SELECT compute_auction.abort_slot('s0', 'runner died')"), Some(500));
    assert_eq!(one::<i64>("SELECT balance_tokens FROM compute_auction.balance('bidder0')"), Some(1_000_000));
    audit_clean();
}

#[pg_test]
fn order_book_and_stats_shapes() {
    market(2, &[100, 300, 200]);
    let book = one::<pgrx::JsonB>("SELECT compute_auction.order_book(2)").unwrap().0;
    assert_eq!(book["bids"].as_array().unwrap().len(), 2);
    assert_eq!(book["bids"][0]["max_price_tokens"], 300);
    assert_eq!(book["asks"].as_array().unwrap().len(), 2);
    Spi::run("SELECT * FROM compute_auction.clear_round()").unwrap();
    let stats = one::<pgrx::JsonB>("SELECT compute_auction.stats()").unwrap().0;
    assert_eq!(stats["rounds"].as_array().unwrap().len(), 1);
    assert_eq!(stats["fill_rate"], 1.0);
    assert_eq!(stats["top_winners"][0]["max_price_tokens"], 300);
}

#[pg_test(error = "depth is out of range: -1 is not in 0..=10000")]
fn order_book_bad_depth() {
    Spi::run("SELECT compute_auction.order_book(-1)").unwrap();
}

#[pg_test]
fn submit_bids_for_tasks_is_idempotent_and_capped() {
    Spi::run("SELECT compute_auction.open_account('q1', 'quest', 1000)").unwrap();
    let tasks = r#"'[{"task_id":"t1","expected_value_usd":10,"blocked":false},
                    {"task_id":"t2","expected_value_usd":1000,"blocked":false},
                    {"task_id":"t3","expected_value_usd":5,"blocked":true}]'::jsonb"#;
    let sql = format!("SELECT string_agg(task_id || ':' || coalesce(max_price_tokens::text, '-') || ':' || outcome, ',' ORDER BY task_id) FROM compute_auction.submit_bids_for_tasks('q1', {tasks}, 10)");
    // t1: floor(0.6*10*10)=60; t2: capped at floor(1000/2)=500
    assert_eq!(one::<String>(&sql), Some("t1:60:placed,t2:500:placed,t3:-:skipped: blocked".into()));
    assert_eq!(one::<String>(&sql), Some("t1:60:replaced,t2:500:replaced,t3:-:skipped: blocked".into()));
    assert_eq!(one::<i64>("SELECT held_tokens FROM compute_auction.balance('q1')"), Some(560));
    audit_clean();
}

#[pg_test]
fn allocate_proportional_sums_to_budget() {
    let sum = one::<i64>(
        r#"SELECT sum(allocated_tokens)::bigint FROM compute_auction.allocate_proportional('2026-01-01', 1000,
             '[{"quest_id":"a","expected_value":1},{"quest_id":"b","expected_value":1},{"quest_id":"c","expected_value":1}]')"#,
    );
    assert_eq!(sum, Some(1000));
    assert_eq!(one::<i64>("SELECT count(*) FROM compute_auction.quest_budget_allocations"), Some(3));
}

#[pg_test]
fn price_to_win_and_run_cycle() {
    market(2, &[100, 300, 200]);
    let advice = one::<pgrx::JsonB>("SELECT compute_auction.price_to_win()").unwrap().0;
    assert_eq!(advice["slots_available"], 2);
    assert_eq!(advice["price_to_win_now"], 201);
    let cycle = one::<pgrx::JsonB>("SELECT compute_auction.run_cycle()").unwrap().0;
    assert_eq!(cycle["winners"].as_array().unwrap().len(), 2);
    assert_eq!(cycle["round"]["clearing_price_tokens"], 100);
    audit_clean();
}

#[pg_test(error = "pg_cron is not installed in this database")]
fn schedule_clearing_without_pg_cron() {
    Spi::run("SELECT compute_auction.schedule_clearing()").unwrap();
}

// ---- spi::in_subtransaction (issue 10) --------------------------------------------------------
// clear_round's lock retry is the only caller, and once no cycle function waits on a row lock
// there is no easy way to raise inside it from SQL; these tests raise inside it directly.

/// What in_subtransaction must hand back to its caller: the transaction nesting level, memory
/// context and resource owner it was called with.
fn session_state() -> (i32, usize, usize) {
    // SAFETY: plain reads of backend globals.
    unsafe {
        (
            pg_sys::GetCurrentTransactionNestLevel(),
            pg_sys::CurrentMemoryContext as usize,
            pg_sys::CurrentResourceOwner as usize,
        )
    }
}

fn advisory_locks_held() -> i64 {
    one::<i64>("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'").unwrap()
}

fn ledger_rows() -> i64 {
    one::<i64>("SELECT count(*) FROM compute_auction.token_ledger").unwrap()
}

/// Writes (a deposit), takes an advisory lock, then fails with `fail` inside in_subtransaction;
/// returns the SQLSTATE the caller caught.
fn fail_inside_subtransaction(fail: fn(&mut SpiClient<'_>)) -> PgSqlErrorCode {
    PgTryBuilder::new(|| {
        crate::spi::with(|c| {
            crate::spi::in_subtransaction(|| {
                crate::spi::run(c, "SELECT compute_auction.deposit('sub1', 50, 'inside')", &[]);
                crate::spi::run(c, "SELECT pg_catalog.pg_advisory_xact_lock(7, 7)", &[]);
                fail(c);
                (true, ())
            })
        });
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION
    })
    .catch_others(|e| match e {
        pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => {
            r.sql_error_code()
        }
        pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.sql_error_code(),
    })
    .execute()
}

fn assert_subtransaction_undone_after(fail: fn(&mut SpiClient<'_>), code: PgSqlErrorCode) {
    Spi::run("SELECT compute_auction.open_account('sub1', 'agent', 100)").unwrap();
    let before = session_state();
    let rows = ledger_rows();
    assert_eq!(fail_inside_subtransaction(fail), code, "the original error is re-thrown");
    assert_eq!(session_state(), before, "nesting level, memory context and resource owner are restored");
    // everything the subtransaction did is gone, and the session works on
    assert_eq!(one::<i64>("SELECT balance_tokens FROM compute_auction.balance('sub1')"), Some(100));
    assert_eq!(ledger_rows(), rows);
    assert_eq!(advisory_locks_held(), 0);
    assert_eq!(one::<i64>("SELECT compute_auction.deposit('sub1', 1, 'after')"), Some(101));
    audit_clean();
}

#[pg_test]
fn postgres_error_inside_subtransaction_rolls_it_back_and_rethrows() {
    assert_subtransaction_undone_after(
        |c| {
            crate::spi::run(c, "SELECT 1 / 0", &[]);
        },
        PgSqlErrorCode::ERRCODE_DIVISION_BY_ZERO,
    );
}

#[pg_test]
fn extension_raise_inside_subtransaction_rolls_it_back_and_rethrows() {
    assert_subtransaction_undone_after(
        |_| raise!(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, "raised inside", None),
        PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
    );
}

#[pg_test]
fn in_subtransaction_keeps_or_discards_its_work_as_told() {
    Spi::run("SELECT compute_auction.open_account('sub2', 'agent', 100)").unwrap();
    let before = session_state();
    for (keep, want) in [(false, 100), (true, 150)] {
        let got = crate::spi::with(|c| {
            crate::spi::in_subtransaction(|| {
                crate::spi::run(c, "SELECT compute_auction.deposit('sub2', 50, 'inside')", &[]);
                (keep, 42)
            })
        });
        assert_eq!(got, 42);
        assert_eq!(session_state(), before);
        assert_eq!(one::<i64>("SELECT balance_tokens FROM compute_auction.balance('sub2')"), Some(want));
    }
    audit_clean();
}

/// The SQL book order (`book_order_sql!`, used by every query that ranks bids) sorts random
/// books exactly as the clearing rule's `bid_order` does, ties in price and time included.
#[pg_test]
fn sql_book_order_is_the_rule() {
    use compute_auction_core::book_order_sql;
    use compute_auction_core::clearing::{bid_order, Bid};
    Spi::run("CREATE TEMP TABLE book (id bigint, max_price_tokens bigint, placed_at timestamptz)").unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| -> i64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        i64::try_from(seed % n).unwrap()
    };
    for book in 0..40 {
        Spi::run("TRUNCATE book").unwrap();
        let size = 1 + next(30);
        let mut bids = Vec::new();
        for i in 0..size {
            // few distinct prices and times, so ties are common; ids are not in book order
            let b = Bid {
                id: next(1000) * 100 + i,
                price: 1 + next(4),
                placed_at: 1_700_000_000_000_000 + next(3) * 1_000,
            };
            Spi::run_with_args(
                "INSERT INTO book VALUES ($1, $2, to_timestamp($3::float8 / 1000000))",
                &[b.id.into(), b.price.into(), (b.placed_at as f64).into()],
            )
            .unwrap();
            bids.push(b);
        }
        bids.sort_by(bid_order);
        let want: Vec<i64> = bids.iter().map(|b| b.id).collect();
        let got: Vec<i64> = one::<Vec<i64>>(concat!("SELECT array_agg(id ORDER BY ", book_order_sql!(), ") FROM book"))
            .unwrap();
        assert_eq!(got, want, "book {book}");
        let aliased: Vec<i64> =
            one::<Vec<i64>>(concat!("SELECT array_agg(b.id ORDER BY ", book_order_sql!("b"), ") FROM book AS b"))
                .unwrap();
        assert_eq!(aliased, want, "book {book}, aliased");
    }
}

/// The ledger's entry kinds are the ones sql/schema.sql's CHECK allows, and every one of them is
/// accepted.
#[pg_test]
fn entry_kinds_match_the_schema() {
    let check = one::<String>(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
          WHERE conrelid = 'compute_auction.token_ledger'::regclass AND pg_get_constraintdef(oid) LIKE '%entry_kind%'",
    )
    .unwrap();
    let mut listed: Vec<String> = check.split('\'').skip(1).step_by(2).map(str::to_string).collect();
    let mut ours: Vec<String> = crate::ledger::kinds::ALL.iter().map(|k| k.to_string()).collect();
    listed.sort();
    ours.sort();
    assert_eq!(listed, ours);
}

/// market_summary's tokens_refunded_total counts every refund, expired bids and aborted runs,
/// before and after a round folds the counter, and audit() checks it against the ledger.
#[pg_test]
fn tokens_refunded_total_counts_refunds() {
    let refunded = || {
        one::<i64>("SELECT (compute_auction.market_summary() ->> 'tokens_refunded_total')::bigint").unwrap()
    };
    assert_eq!(refunded(), 0);
    Spi::run("SELECT compute_auction.open_account('r1', 'agent', 1000)").unwrap();
    Spi::run("SELECT compute_auction.place_bid('r1', 'rt1', 70, NULL, now() + interval '1 minute')").unwrap();
    Spi::run("SELECT compute_auction.place_bid('r1', 'rt2', 30)").unwrap();
    Spi::run("SELECT compute_auction.cancel_bid(compute_auction.place_bid('r1', 'rt3', 5))").unwrap();
    assert_eq!(refunded(), 0, "a cancel releases, it does not refund");
    Spi::run("SELECT * FROM compute_auction.refund_unfilled(now() + interval '2 minutes')").unwrap();
    assert_eq!(refunded(), 70);
    Spi::run("SELECT compute_auction.offer_slot('rs1', now() - interval '1 minute', 0)").unwrap();
    Spi::run("SELECT * FROM compute_auction.clear_round()").unwrap();
    assert_eq!(refunded(), 70, "folded by the round");
    Spi::run("SELECT compute_auction.abort_slot('rs1', 'test')").unwrap();
    assert_eq!(refunded(), 100);
    audit_clean();
    Spi::run("UPDATE compute_auction.open_bid_count SET tokens_refunded = tokens_refunded + 1").unwrap();
    assert_eq!(one::<String>("SELECT check_name FROM compute_auction.audit()"), Some("refunded_count_mismatch".into()));
}

/// clear_round_summary clears like clear_round and names the round it wrote.
#[pg_test]
fn clear_round_summary_names_its_round() {
    Spi::run("SELECT compute_auction.open_account('c1', 'agent', 1000)").unwrap();
    Spi::run("SELECT compute_auction.place_bid('c1', 'ct1', 50)").unwrap();
    Spi::run("SELECT compute_auction.place_bid('c1', 'ct2', 20)").unwrap();
    Spi::run("SELECT compute_auction.offer_slot('cs1', now() - interval '1 minute', 0)").unwrap();
    let v = one::<pgrx::JsonB>("SELECT compute_auction.clear_round_summary()").unwrap().0;
    let round = one::<i64>("SELECT max(round_id) FROM compute_auction.compute_auction_rounds").unwrap();
    assert_eq!(v["round"]["round_id"], round);
    assert_eq!(v["round"]["slots_filled"], 1);
    assert_eq!(v["round"]["clearing_price_tokens"], 20);
    assert_eq!(v["winners"][0]["task_id"], "ct1");
    assert_eq!(v["winners"][0]["clearing_price_tokens"], 20);
    assert_eq!(v["winners"].as_array().map(Vec::len), Some(1));
    audit_clean();
}
