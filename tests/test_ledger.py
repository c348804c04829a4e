"""Issue 2: the token ledger (wallets), used the way an existing Python application uses it.

Covers every ledger function's success paths (open_account and its defaults, initial tokens,
deposit, withdraw, balance, set_account_owner, the journal rows each call writes, idempotency
keys) and every bad input of the issue: for each error the SQLSTATE is asserted AND a snapshot
of every extension table is compared before/after, because bad input must change nothing.
Tests that move tokens end with assert_audit_clean().
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import assert_audit_clean, snapshot, sqlstate_of

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)

# The public contract, with explicit casts so NULLs and big numbers reach the functions typed.
OPEN = "SELECT compute_auction.open_account(%s::text, %s::text, %s::bigint)"
OPEN_OWNED = "SELECT compute_auction.open_account(%s::text, %s::text, %s::bigint, %s::text)"
DEPOSIT = "SELECT compute_auction.deposit(%s::text, %s::bigint, %s::text)"
DEPOSIT_KEY = "SELECT compute_auction.deposit(%s::text, %s::bigint, %s::text, %s::text)"
DEPOSIT_NUMERIC = "SELECT compute_auction.deposit(%s::text, %s::numeric::bigint, %s::text)"
WITHDRAW = "SELECT compute_auction.withdraw(%s::text, %s::bigint, %s::text)"
WITHDRAW_KEY = "SELECT compute_auction.withdraw(%s::text, %s::bigint, %s::text, %s::text)"
BALANCE = "SELECT * FROM compute_auction.balance(%s::text)"
SET_OWNER = "SELECT compute_auction.set_account_owner(%s::text, %s::text)"


# ----------------------------------------------------------------- helpers --


def value(conn: psycopg.Connection, sql: str, params=None):
    """The single value a call returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None and len(row) == 1, row
    return row[0]


def open_account(conn, account: str, kind: str = "agent", initial: int = 0) -> int:
    return value(conn, OPEN, (account, kind, initial))


def deposit(conn, account: str, amount: int, reason: str = "good work", key: str | None = None) -> int:
    return value(conn, DEPOSIT_KEY, (account, amount, reason, key))


def withdraw(conn, account: str, amount: int, reason: str = "cash out", key: str | None = None) -> int:
    return value(conn, WITHDRAW_KEY, (account, amount, reason, key))


def balance(conn, account: str) -> tuple[int, int]:
    rows = conn.execute(BALANCE, (account,)).fetchall()
    assert len(rows) == 1, rows
    return tuple(rows[0])


def account_row(conn, account: str) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM compute_auction.token_accounts WHERE account_id = %s", (account,)).fetchone()


def ledger_rows(conn, account: str) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM compute_auction.token_ledger WHERE account_id = %s ORDER BY id", (account,)
        ).fetchall()


def assert_journal_matches(conn, account: str) -> None:
    """The account equals the sum of its journal, and each row's balance_after is the running sum."""
    bal = held = 0
    for r in ledger_rows(conn, account):
        bal += r["delta_balance"]
        held += r["delta_held"]
        assert (r["balance_after"], r["held_after"]) == (bal, held), r
    assert balance(conn, account) == (bal, held)


def assert_rejected(conn, sql: str, params, sqlstate: str) -> None:
    """The call fails with exactly `sqlstate` and leaves every extension table unchanged."""
    before = snapshot(conn)
    assert sqlstate_of(conn, sql, params) == sqlstate
    assert snapshot(conn) == before


@pytest.fixture
def book(conn):
    """A small ledger every error case runs against (so 'changes nothing' is meaningful):
    alice (agent, 1005 after a keyed deposit and a keyed withdrawal), bob (quest, empty),
    rich (system, the largest bigint)."""
    open_account(conn, "alice", "agent", 1000)
    deposit(conn, "alice", 10, key="dep-1")
    withdraw(conn, "alice", 5, key="wd-1")
    open_account(conn, "bob", "quest", 0)
    open_account(conn, "rich", "system", BIGINT_MAX)
    assert balance(conn, "alice") == (1005, 0)
    return conn


@pytest.fixture
def other_role(cluster, conn):
    """A login role that is not a superuser, allowed to call the functions in this database."""
    role = "ca_role_" + uuid.uuid4().hex[:10]
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute(f"GRANT USAGE ON SCHEMA compute_auction TO {role}")
    # only the owner check, not a missing privilege, may refuse it
    conn.execute(f"GRANT EXECUTE ON FUNCTION compute_auction.withdraw(text, bigint, text, text) TO {role}")
    yield role
    conn.execute("RESET SESSION AUTHORIZATION")
    conn.execute(f"DROP OWNED BY {role}")
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")


# ------------------------------------------------------------ open_account --


def test_open_account_defaults(conn):
    assert value(conn, "SELECT compute_auction.open_account(%s)", ("agent-1",)) == 0
    a = account_row(conn, "agent-1")
    assert a["kind"] == "agent"
    assert (a["balance_tokens"], a["held_tokens"]) == (0, 0)
    assert (a["total_deposited"], a["total_spent"]) == (0, 0)
    assert a["owner_role"] is None
    assert a["created_at"] is not None and a["updated_at"] is not None
    assert balance(conn, "agent-1") == (0, 0)
    # nothing moved, so nothing is journalled with a non-zero amount
    assert all(r["delta_balance"] == 0 and r["delta_held"] == 0 for r in ledger_rows(conn, "agent-1"))
    assert_journal_matches(conn, "agent-1")
    assert_audit_clean(conn)


@pytest.mark.parametrize(
    "kind, initial",
    [("agent", 0), ("agent", 1), ("quest", 5_000), ("system", 123_456_789), ("agent", BIGINT_MAX)],
)
def test_open_account_with_kind_and_initial_tokens(conn, kind, initial):
    assert open_account(conn, "acct", kind, initial) == initial
    a = account_row(conn, "acct")
    assert a["kind"] == kind
    assert (a["balance_tokens"], a["held_tokens"], a["total_deposited"]) == (initial, 0, initial)
    assert balance(conn, "acct") == (initial, 0)
    moving = [r for r in ledger_rows(conn, "acct") if r["delta_balance"] or r["delta_held"]]
    if initial == 0:
        assert moving == []
    else:
        assert len(moving) == 1
        r = moving[0]
        assert (r["entry_kind"], r["delta_balance"], r["delta_held"]) == ("open", initial, 0)
        assert (r["balance_after"], r["held_after"]) == (initial, 0)
        assert r["bid_id"] is None and r["slot_id"] is None and r["round_id"] is None
    assert_journal_matches(conn, "acct")
    assert_audit_clean(conn)


def test_open_account_named_arguments_and_owner_role(conn, other_role):
    assert (
        value(
            conn,
            "SELECT compute_auction.open_account(account_id => %s, initial_tokens => %s, kind => %s)",
            ("q-1", 70, "quest"),
        )
        == 70
    )
    assert value(conn, OPEN_OWNED, ("owned", "agent", 5, other_role)) == 5
    assert account_row(conn, "owned")["owner_role"] == other_role
    assert account_row(conn, "q-1")["kind"] == "quest"
    assert_audit_clean(conn)


# ----------------------------------------------------------------- deposit --


def test_deposit_credits_and_journals(conn):
    open_account(conn, "alice", "agent", 100)
    assert value(conn, DEPOSIT, ("alice", 250, "quest 7 shipped")) == 350
    assert deposit(conn, "alice", 1, "tiny") == 351
    assert balance(conn, "alice") == (351, 0)
    a = account_row(conn, "alice")
    assert a["total_deposited"] == 351
    assert a["updated_at"] >= a["created_at"]
    rows = ledger_rows(conn, "alice")
    assert [(r["entry_kind"], r["delta_balance"], r["delta_held"], r["balance_after"]) for r in rows] == [
        ("open", 100, 0, 100),
        ("deposit", 250, 0, 350),
        ("deposit", 1, 0, 351),
    ]
    assert [r["reason"] for r in rows[1:]] == ["quest 7 shipped", "tiny"]
    assert all(r["at"] is not None for r in rows)
    assert_journal_matches(conn, "alice")
    assert_audit_clean(conn)


def test_deposit_up_to_the_largest_bigint(conn):
    open_account(conn, "big", "system", BIGINT_MAX - 1)
    assert deposit(conn, "big", 1) == BIGINT_MAX
    assert balance(conn, "big") == (BIGINT_MAX, 0)
    assert_journal_matches(conn, "big")
    assert_audit_clean(conn)


# ---------------------------------------------------------------- withdraw --


def test_withdraw_debits_and_journals(conn):
    open_account(conn, "alice", "agent", 500)
    assert value(conn, WITHDRAW, ("alice", 120, "moved to another market")) == 380
    assert withdraw(conn, "alice", 380, "all the rest") == 0
    assert balance(conn, "alice") == (0, 0)
    rows = ledger_rows(conn, "alice")
    assert [(r["entry_kind"], r["delta_balance"], r["delta_held"], r["balance_after"]) for r in rows] == [
        ("open", 500, 0, 500),
        ("withdraw", -120, 0, 380),
        ("withdraw", -380, 0, 0),
    ]
    assert [r["reason"] for r in rows[1:]] == ["moved to another market", "all the rest"]
    assert account_row(conn, "alice")["total_deposited"] == 500
    assert_journal_matches(conn, "alice")
    assert_audit_clean(conn)


def test_deposit_after_withdrawing_everything(conn):
    open_account(conn, "a", "agent", 10)
    withdraw(conn, "a", 10)
    assert deposit(conn, "a", 7) == 7
    assert withdraw(conn, "a", 7) == 0
    assert_journal_matches(conn, "a")
    assert_audit_clean(conn)


# ----------------------------------------------------------------- balance --


def test_balance_returns_one_row_with_named_columns(conn):
    open_account(conn, "alice", "agent", 42)
    cur = conn.execute(BALANCE, ("alice",))
    assert [d.name for d in cur.description] == ["balance_tokens", "held_tokens"]
    assert cur.fetchall() == [(42, 0)]
    with conn.cursor(row_factory=dict_row) as c:
        row = c.execute(
            "SELECT b.balance_tokens, b.held_tokens FROM compute_auction.balance(%s) AS b", ("alice",)
        ).fetchone()
    assert row == {"balance_tokens": 42, "held_tokens": 0}


def test_balance_is_read_only(conn):
    open_account(conn, "alice", "agent", 42)
    before = snapshot(conn)
    balance(conn, "alice")
    assert snapshot(conn) == before


# ----------------------------------------------------- journal invariants --


def test_every_change_is_journalled_and_sums_to_the_balance(conn):
    open_account(conn, "a", "agent", 1_000)
    open_account(conn, "b", "quest", 0)
    for i in range(1, 6):
        deposit(conn, "a", 10 * i)
        deposit(conn, "b", 3 * i)
        withdraw(conn, "a", 7 * i)
    withdraw(conn, "b", 45)
    assert balance(conn, "a") == (1_000 + 150 - 105, 0)
    assert balance(conn, "b") == (0, 0)
    assert len(ledger_rows(conn, "a")) == 11
    assert len(ledger_rows(conn, "b")) == 6
    for acct in ("a", "b"):
        assert_journal_matches(conn, acct)
    assert_audit_clean(conn)


def test_a_failed_call_inside_a_transaction_leaves_nothing_half_done(fresh_db_url, conn):
    open_account(conn, "a", "agent", 100)
    before = snapshot(conn)
    with psycopg.connect(fresh_db_url) as tx:  # not autocommit: one application transaction
        assert deposit(tx, "a", 50) == 150
        with pytest.raises(psycopg.errors.CheckViolation):
            withdraw(tx, "a", 1_000)
        tx.rollback()
    assert snapshot(conn) == before
    assert_audit_clean(conn)


# ------------------------------------------------------------- idempotency --


def test_deposit_idempotency_key_replays_without_moving_tokens(conn):
    open_account(conn, "alice", "agent", 100)
    open_account(conn, "bob", "agent", 0)
    assert deposit(conn, "alice", 50, key="job-17") == 150
    after_first = snapshot(conn)
    # the retry returns the first call's result and changes nothing
    assert deposit(conn, "alice", 50, key="job-17") == 150
    assert deposit(conn, "alice", 50, "another reason", key="job-17") == 150
    assert snapshot(conn) == after_first
    # other movements in between: a replay still returns the first result and moves nothing
    assert deposit(conn, "alice", 5) == 155
    assert deposit(conn, "alice", 50, key="job-17") == 150
    assert balance(conn, "alice") == (155, 0)
    # a new key moves tokens; keys are per account
    assert deposit(conn, "alice", 50, key="job-18") == 205
    assert deposit(conn, "bob", 50, key="job-17") == 50
    # the same key names a different operation for withdraw
    assert withdraw(conn, "alice", 50, key="job-17") == 155
    keyed = [r for r in ledger_rows(conn, "alice") if r["idempotency_key"] == "job-17"]
    assert [(r["entry_kind"], r["delta_balance"]) for r in keyed] == [("deposit", 50), ("withdraw", -50)]
    for acct in ("alice", "bob"):
        assert_journal_matches(conn, acct)
    assert_audit_clean(conn)


def test_withdraw_idempotency_key_replays_without_moving_tokens(conn):
    open_account(conn, "alice", "agent", 100)
    assert withdraw(conn, "alice", 60, key="payout-1") == 40
    after_first = snapshot(conn)
    assert withdraw(conn, "alice", 60, key="payout-1") == 40
    assert snapshot(conn) == after_first
    # even when the balance could no longer cover it, a retry is a replay, not a new debit
    assert withdraw(conn, "alice", 40, key="payout-2") == 0
    assert withdraw(conn, "alice", 60, key="payout-1") == 40
    assert balance(conn, "alice") == (0, 0)
    assert [r["entry_kind"] for r in ledger_rows(conn, "alice")] == ["open", "withdraw", "withdraw"]
    assert_journal_matches(conn, "alice")
    assert_audit_clean(conn)


# ------------------------------------------------ ids are ordinary strings --

LITERAL_IDS = [
    "o'brien",
    "'; DROP TABLE compute_auction.token_accounts; --",
    'robert"); DELETE FROM compute_auction.token_ledger; --',
    "x' OR '1'='1",
    "back\\slash \\x00 $1 %s %(name)s",
    "$$; SELECT pg_sleep(10); $$",
    "  padded  ",
    "ünïcödé agent 🤖",
    "z" * 256,
    "é" * 256,  # 256 characters (512 bytes): the limit counts characters
]


@pytest.mark.parametrize("account", LITERAL_IDS, ids=range(len(LITERAL_IDS)))
def test_ids_with_quotes_and_sql_are_stored_literally(conn, account):
    reason = "reason with 'quotes'; DROP TABLE x; --"
    assert open_account(conn, account, "quest", 10) == 10
    assert deposit(conn, account, 5, reason, key=account) == 15
    assert withdraw(conn, account, 3, reason) == 12
    assert balance(conn, account) == (12, 0)
    assert value(conn, "SELECT account_id FROM compute_auction.token_accounts") == account
    assert {r["account_id"] for r in ledger_rows(conn, account)} == {account}
    assert [r["reason"] for r in ledger_rows(conn, account)][1:] == [reason, reason]
    # nothing was executed: every table is still there and holds only this account
    assert value(conn, "SELECT count(*) FROM compute_auction.token_accounts") == 1
    assert value(conn, "SELECT count(*) FROM compute_auction.token_ledger") == 3
    # a lookalike id is a different account
    assert sqlstate_of(conn, BALANCE, (("'" + account)[:256],)) == "P0002"
    assert_journal_matches(conn, account)
    assert_audit_clean(conn)


# ------------------------------------------------------- set_account_owner --


def test_set_account_owner_sets_and_clears(conn, other_role):
    open_account(conn, "alice", "agent", 10)
    conn.execute(SET_OWNER, ("alice", other_role))
    assert account_row(conn, "alice")["owner_role"] == other_role
    assert account_row(conn, "alice")["owner_oid"] == other_role  # regrole reads back as the name
    conn.execute(SET_OWNER, ("alice", None))
    assert account_row(conn, "alice")["owner_role"] is None
    assert account_row(conn, "alice")["owner_oid"] is None
    assert balance(conn, "alice") == (10, 0)
    assert_audit_clean(conn)


def test_owner_role_guards_withdrawals(conn, other_role):
    open_account(conn, "alice", "agent", 100)
    conn.execute(SET_OWNER, ("alice", "postgres"))  # another role: other_role is not its member
    before = snapshot(conn)
    conn.execute(f"SET SESSION AUTHORIZATION {other_role}")
    state = sqlstate_of(conn, WITHDRAW, ("alice", 10, "not mine"))
    conn.execute("RESET SESSION AUTHORIZATION")
    assert state == "42501"
    assert snapshot(conn) == before
    # the owner role itself may
    conn.execute(SET_OWNER, ("alice", other_role))
    conn.execute(f"SET SESSION AUTHORIZATION {other_role}")
    assert withdraw(conn, "alice", 10) == 90
    conn.execute("RESET SESSION AUTHORIZATION")
    assert_audit_clean(conn)


# ---------------------------------------------------------- bad input: all --

LONG = "x" * 257
LONG_MB = "é" * 257

BAD_INPUTS = [
    # open_account(account_id, kind, initial_tokens[, owner_role])
    pytest.param(OPEN, (None, "agent", 0), "22004", id="open-null-account"),
    pytest.param(OPEN, ("n", None, 0), "22004", id="open-null-kind"),
    pytest.param(OPEN, ("n", "agent", None), "22004", id="open-null-initial"),
    pytest.param(OPEN, ("", "agent", 0), "22023", id="open-empty-account"),
    pytest.param(OPEN, (LONG, "agent", 0), "22001", id="open-257-char-account"),
    pytest.param(OPEN, (LONG_MB, "agent", 0), "22001", id="open-257-multibyte-char-account"),
    pytest.param(OPEN, ("n", "robot", 0), "22023", id="open-unknown-kind"),
    pytest.param(OPEN, ("n", "", 0), "22023", id="open-empty-kind"),
    pytest.param(OPEN, ("n", "Agent", 0), "22023", id="open-kind-wrong-case"),
    pytest.param(OPEN, ("n", "agent", -1), "22023", id="open-negative-initial"),
    pytest.param(OPEN, ("n", "agent", BIGINT_MIN), "22023", id="open-min-bigint-initial"),
    pytest.param(OPEN, ("alice", "agent", 0), "23505", id="open-existing-account"),
    pytest.param(OPEN, ("alice", "quest", 99), "23505", id="open-existing-account-other-kind"),
    pytest.param(OPEN_OWNED, ("n", "agent", 0, ""), "22023", id="open-empty-owner-role"),
    pytest.param(OPEN_OWNED, ("n", "agent", 0, LONG), "22001", id="open-257-char-owner-role"),
    pytest.param(
        "SELECT compute_auction.open_account(%s::text, %s::text, %s::numeric::bigint)",
        ("n", "agent", 2**63),
        "22003",
        id="open-initial-beyond-bigint",
    ),
    # deposit(account_id, amount, reason[, idempotency_key])
    pytest.param(DEPOSIT, (None, 1, "r"), "22004", id="deposit-null-account"),
    pytest.param(DEPOSIT, ("alice", None, "r"), "22004", id="deposit-null-amount"),
    pytest.param(DEPOSIT, ("alice", 1, None), "22004", id="deposit-null-reason"),
    pytest.param(DEPOSIT, ("", 1, "r"), "22023", id="deposit-empty-account"),
    pytest.param(DEPOSIT, (LONG, 1, "r"), "22001", id="deposit-257-char-account"),
    pytest.param(DEPOSIT, ("alice", 0, "r"), "22023", id="deposit-zero"),
    pytest.param(DEPOSIT, ("alice", -1, "r"), "22023", id="deposit-negative"),
    pytest.param(DEPOSIT, ("alice", BIGINT_MIN, "r"), "22023", id="deposit-min-bigint"),
    pytest.param(DEPOSIT, ("nobody", 1, "r"), "P0002", id="deposit-unknown-account"),
    pytest.param(DEPOSIT, ("Alice", 1, "r"), "P0002", id="deposit-unknown-account-case"),
    pytest.param(DEPOSIT, ("alice", BIGINT_MAX, "r"), "22003", id="deposit-overflows-balance"),
    pytest.param(DEPOSIT, ("rich", 1, "r"), "22003", id="deposit-overflows-max-initial-account"),
    pytest.param(DEPOSIT_NUMERIC, ("alice", 2**63, "r"), "22003", id="deposit-amount-beyond-bigint"),
    pytest.param(DEPOSIT_KEY, ("alice", 1, "r", ""), "22023", id="deposit-empty-key"),
    pytest.param(DEPOSIT_KEY, ("alice", 1, "r", LONG), "22001", id="deposit-257-char-key"),
    pytest.param(DEPOSIT_KEY, ("alice", 11, "r", "dep-1"), "22023", id="deposit-key-reused-other-amount"),
    pytest.param(DEPOSIT_KEY, ("nobody", 10, "r", "dep-1"), "P0002", id="deposit-key-unknown-account"),
    # withdraw(account_id, amount, reason[, idempotency_key])
    pytest.param(WITHDRAW, (None, 1, "r"), "22004", id="withdraw-null-account"),
    pytest.param(WITHDRAW, ("alice", None, "r"), "22004", id="withdraw-null-amount"),
    pytest.param(WITHDRAW, ("alice", 1, None), "22004", id="withdraw-null-reason"),
    pytest.param(WITHDRAW, ("", 1, "r"), "22023", id="withdraw-empty-account"),
    pytest.param(WITHDRAW, (LONG, 1, "r"), "22001", id="withdraw-257-char-account"),
    pytest.param(WITHDRAW, ("alice", 0, "r"), "22023", id="withdraw-zero"),
    pytest.param(WITHDRAW, ("alice", -5, "r"), "22023", id="withdraw-negative"),
    pytest.param(WITHDRAW, ("alice", BIGINT_MIN, "r"), "22023", id="withdraw-min-bigint"),
    pytest.param(WITHDRAW, ("nobody", 1, "r"), "P0002", id="withdraw-unknown-account"),
    pytest.param(WITHDRAW, ("alice", 1006, "r"), "23514", id="withdraw-more-than-balance"),
    pytest.param(WITHDRAW, ("bob", 1, "r"), "23514", id="withdraw-from-empty-account"),
    pytest.param(WITHDRAW, ("alice", BIGINT_MAX, "r"), "23514", id="withdraw-max-bigint"),
    pytest.param(WITHDRAW_KEY, ("alice", 1, "r", ""), "22023", id="withdraw-empty-key"),
    pytest.param(WITHDRAW_KEY, ("alice", 1, "r", LONG), "22001", id="withdraw-257-char-key"),
    pytest.param(WITHDRAW_KEY, ("alice", 6, "r", "wd-1"), "22023", id="withdraw-key-reused-other-amount"),
    # balance(account_id)
    pytest.param(BALANCE, (None,), "22004", id="balance-null-account"),
    pytest.param(BALANCE, ("",), "22023", id="balance-empty-account"),
    pytest.param(BALANCE, (LONG,), "22001", id="balance-257-char-account"),
    pytest.param(BALANCE, ("nobody",), "P0002", id="balance-unknown-account"),
    # set_account_owner(account_id, owner_role)
    pytest.param(SET_OWNER, (None, "r"), "22004", id="owner-null-account"),
    pytest.param(SET_OWNER, ("", "r"), "22023", id="owner-empty-account"),
    pytest.param(SET_OWNER, (LONG, "r"), "22001", id="owner-257-char-account"),
    pytest.param(SET_OWNER, ("nobody", "r"), "P0002", id="owner-unknown-account"),
    pytest.param(SET_OWNER, ("alice", ""), "22023", id="owner-empty-role"),
    pytest.param(SET_OWNER, ("alice", "no_such_role_x"), "22023", id="owner-unknown-role"),
    pytest.param(OPEN_OWNED, ("new", "agent", 5, "no_such_role_x"), "22023", id="open-unknown-owner-role"),
    pytest.param(SET_OWNER, ("alice", LONG), "22001", id="owner-257-char-role"),
]


@pytest.mark.parametrize("sql, params, sqlstate", BAD_INPUTS)
def test_bad_input_is_rejected_and_changes_nothing(book, sql, params, sqlstate):
    assert_rejected(book, sql, params, sqlstate)
    assert_audit_clean(book)


def test_overflow_of_lifetime_deposits_is_rejected(conn):
    # open_account + deposit: the balance fits, but total_deposited would leave bigint
    open_account(conn, "a", "agent", BIGINT_MAX)
    withdraw(conn, "a", BIGINT_MAX)
    assert balance(conn, "a") == (0, 0)
    assert_rejected(conn, DEPOSIT, ("a", 1, "r"), "22003")
    assert_audit_clean(conn)


def test_rejections_do_not_consume_idempotency_keys(book):
    # a failed keyed call must not burn its key: the same key works once the input is valid
    assert_rejected(book, WITHDRAW_KEY, ("alice", 5_000, "r", "wd-2"), "23514")
    assert withdraw(book, "alice", 5, key="wd-2") == 1000
    assert_rejected(book, DEPOSIT_KEY, ("alice", BIGINT_MAX, "r", "dep-2"), "22003")
    assert deposit(book, "alice", 5, key="dep-2") == 1005
    assert_journal_matches(book, "alice")
    assert_audit_clean(book)
