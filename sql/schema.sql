-- compute_auction schema: the token ledger, the order book, the rounds and their clears.
-- Included first (bootstrap) by the extension; every object is schema-qualified.
-- Tokens are bigint everywhere. Rows change only through the extension's functions.

---------------------------------------------------------------------------------------------
-- The schema must be the installer's own and empty (docs/SECURITY.md). CREATE EXTENSION uses a
-- schema compute_auction that exists already; one created by someone else could hold objects
-- (an operator, a function) that the SECURITY DEFINER functions, owned by the installing
-- superuser, would otherwise find. Refused with 42501: nothing is installed.
---------------------------------------------------------------------------------------------
DO $owner$
DECLARE
    ns    pg_catalog.oid;
    owner pg_catalog.oid;
BEGIN
    SELECT n.oid, n.nspowner INTO ns, owner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'compute_auction';
    IF owner IS DISTINCT FROM (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'schema compute_auction is owned by role %, not by the installing role %',
                        owner::pg_catalog.regrole, current_user
            USING ERRCODE = '42501',
                  HINT = 'Drop the schema (or let the installing role own it, empty) before CREATE EXTENSION compute_auction.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = ns)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE pronamespace = ns)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_operator WHERE oprnamespace = ns)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_type WHERE typnamespace = ns)
    THEN
        RAISE EXCEPTION 'schema compute_auction is not empty'
            USING ERRCODE = '42501',
                  HINT = 'Install into a new schema: drop the existing compute_auction schema first.';
    END IF;
END
$owner$;

---------------------------------------------------------------------------------------------
-- Token accounts (wallets) and their append-only ledger
---------------------------------------------------------------------------------------------
CREATE TABLE compute_auction.token_accounts (
    account_id      text        PRIMARY KEY
                                CHECK (length(account_id) BETWEEN 1 AND 256),
    kind            text        NOT NULL DEFAULT 'agent'
                                CHECK (kind IN ('agent', 'quest', 'system')),
    -- spendable
    balance_tokens  bigint      NOT NULL DEFAULT 0 CHECK (balance_tokens >= 0),
    -- escrowed in live (open or won) bids
    held_tokens     bigint      NOT NULL DEFAULT 0 CHECK (held_tokens >= 0),
    total_deposited bigint      NOT NULL DEFAULT 0 CHECK (total_deposited >= 0),
    total_spent     bigint      NOT NULL DEFAULT 0 CHECK (total_spent >= 0),
    total_withdrawn bigint      NOT NULL DEFAULT 0 CHECK (total_withdrawn >= 0),
    -- the name of the role that owns the wallet, as given to open_account/set_account_owner
    -- (docs/SECURITY.md); NULL: no owner, operators only
    owner_role      text        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- that role's OID when it was named: the owner's members may act for the wallet only while
    -- this OID resolves to a role whose name is still owner_role (pg_dump writes the name, a
    -- restore resolves it again)
    owner_oid       regrole     NULL,
    -- (0.2.0) a wallet change that takes balance_tokens from at or above this to below it is
    -- announced on compute_auction_low_balance (set_low_balance_threshold); NULL: never
    low_balance_threshold bigint NULL CHECK (low_balance_threshold > 0)
);
COMMENT ON TABLE compute_auction.token_accounts IS
    'Wallets of agents, quests and the system. balance_tokens is spendable, held_tokens is escrowed in live bids.';

CREATE TABLE compute_auction.token_ledger (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    account_id      text        NOT NULL REFERENCES compute_auction.token_accounts (account_id),
    delta_balance   bigint      NOT NULL,
    delta_held      bigint      NOT NULL,
    entry_kind      text        NOT NULL CHECK (entry_kind IN (
                                    'open',      -- initial tokens of a new account
                                    'deposit',   -- credit (refill through good work)
                                    'withdraw',  -- debit out of the market
                                    'escrow',    -- balance -> held for a bid (new or raised)
                                    'release',   -- held -> balance: bid cancelled or lowered
                                    'refund',    -- held -> balance: bid expired unfilled or run aborted
                                    'charge',    -- held -> gone: the clearing price of a settled win
                                    'premium',   -- held -> balance: max price minus clearing price
                                    'checkpoint' -- prune_history: the account's compacted entries, summed
                                )),
    bid_id          bigint      NULL,
    slot_id         text        NULL,
    round_id        bigint      NULL,
    reason          text        NULL,
    -- the account's balances right after this entry
    balance_after   bigint      NOT NULL,
    held_after      bigint      NOT NULL,
    -- retry key of deposit/withdraw: a repeated key returns the first call's result
    idempotency_key text        NULL,
    CHECK (delta_balance <> 0 OR delta_held <> 0)
);
COMMENT ON TABLE compute_auction.token_ledger IS
    'Journal of every wallet change, appended to by each change: for every account, balance_tokens = sum(delta_balance) and held_tokens = sum(delta_held). prune_history is the only other writer: it replaces the oldest entries of an account, those before its horizon up to the account''s first entry of a live bid or of a bid with pending entries, by one checkpoint entry with their summed deltas and the id, at, balance_after and held_after of the newest entry it replaces, so every sum, the id order and every later entry (balance_after included) stay as they were.';
CREATE INDEX token_ledger_account_idx ON compute_auction.token_ledger (account_id, id);
CREATE INDEX token_ledger_bid_idx ON compute_auction.token_ledger (bid_id) WHERE bid_id IS NOT NULL;
CREATE UNIQUE INDEX token_ledger_idempotency_idx
    ON compute_auction.token_ledger (account_id, entry_kind, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

---------------------------------------------------------------------------------------------
-- Slots (the asks)
---------------------------------------------------------------------------------------------
CREATE TABLE compute_auction.compute_slots (
    slot_id              text        PRIMARY KEY CHECK (length(slot_id) BETWEEN 1 AND 256),
    status               text        NOT NULL DEFAULT 'idle'
                                     CHECK (status IN ('idle', 'assigned', 'retired')),
    available_at         timestamptz NOT NULL DEFAULT now(),
    reserve_price_tokens bigint      NOT NULL DEFAULT 0 CHECK (reserve_price_tokens >= 0),
    -- retire_slot on an assigned slot: it retires when its run settles or aborts
    retire_requested     boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- the role whose members (holding the runner rights) claim, settle and abort the slot: its
    -- name and OID, resolved as token_accounts.owner_role/owner_oid are; NULL: operators only
    runner_role          text        NULL,
    runner_oid           regrole     NULL
);
CREATE INDEX compute_slots_idle_idx
    ON compute_auction.compute_slots (available_at, slot_id) WHERE status = 'idle';

---------------------------------------------------------------------------------------------
-- Bids
---------------------------------------------------------------------------------------------
CREATE TABLE compute_auction.compute_auction_bids (
    id                 bigserial        PRIMARY KEY,
    bidder_id          text             NOT NULL REFERENCES compute_auction.token_accounts (account_id),
    task_id            text             NOT NULL CHECK (length(task_id) BETWEEN 1 AND 256),
    max_price_tokens   bigint           NOT NULL CHECK (max_price_tokens > 0),
    expected_value_usd double precision NULL
                                        CHECK (expected_value_usd IS NULL
                                               OR expected_value_usd NOT IN ('NaN', 'Infinity', '-Infinity')),
    ttl_at             timestamptz      NOT NULL,
    status             text             NOT NULL DEFAULT 'open'
                                        CHECK (status IN ('open', 'won', 'settled', 'expired', 'cancelled', 'aborted')),
    placed_at          timestamptz      NOT NULL DEFAULT now(),
    last_result        text             NULL,
    -- the round this bid won, once it has
    round_id           bigint           NULL,
    updated_at         timestamptz      NOT NULL DEFAULT now()
);
-- the original design's index
CREATE INDEX compute_auction_bids_status_price_idx
    ON compute_auction.compute_auction_bids (status, max_price_tokens DESC);
-- the book in clearing order: clear_round reads the top k+1 from here
CREATE INDEX compute_auction_bids_book_idx
    ON compute_auction.compute_auction_bids (max_price_tokens DESC, placed_at, id) WHERE status = 'open';
-- expiry: refund_unfilled and the eligible count read only the expired part of the book
CREATE INDEX compute_auction_bids_ttl_idx
    ON compute_auction.compute_auction_bids (ttl_at) WHERE status = 'open';
-- at most one live bid per task
CREATE UNIQUE INDEX compute_auction_bids_live_task_idx
    ON compute_auction.compute_auction_bids (task_id) WHERE status IN ('open', 'won');
-- (0.2.0) task_status: a task's bids, newest first
CREATE INDEX compute_auction_bids_task_idx
    ON compute_auction.compute_auction_bids (task_id, id);
CREATE INDEX compute_auction_bids_bidder_idx
    ON compute_auction.compute_auction_bids (bidder_id) WHERE status IN ('open', 'won');
-- retention: prune_history reads the finished bids oldest first from here
CREATE INDEX compute_auction_bids_finished_idx
    ON compute_auction.compute_auction_bids (updated_at, id) WHERE status IN ('settled', 'expired', 'cancelled', 'aborted');

-- The market's counters without scanning the book or the ledger and without a hot counter
-- row: the open-bid count and the tokens refunded so far (ledger entries of kind 'refund').
-- Writers append deltas (no row locks, no contention), each stamped with its transaction's ID;
-- clear_round folds the deltas of finished transactions into the single base row under its
-- clearing lock and advances folded_below past them. Every reader adds only the deltas at or
-- above folded_below, read through the xid index, so the rows earlier folds deleted (dead until
-- vacuum) are never read again: the counters' cost does not depend on vacuum (issue 21).
CREATE TABLE compute_auction.open_bid_count (
    id        int    PRIMARY KEY CHECK (id = 1),
    open_bids bigint NOT NULL,
    tokens_refunded bigint NOT NULL DEFAULT 0,
    -- every delta of a transaction below this ID is in open_bids/tokens_refunded
    folded_below xid8 NOT NULL DEFAULT '0'
);
-- (the base row is created by the first clear_round, so a restored dump never collides with it)
CREATE TABLE compute_auction.open_bid_count_deltas (
    delta bigint NOT NULL,
    tokens_refunded bigint NOT NULL DEFAULT 0,
    xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
CREATE INDEX open_bid_count_deltas_xid_idx ON compute_auction.open_bid_count_deltas (xid);

---------------------------------------------------------------------------------------------
-- Rounds and clears
---------------------------------------------------------------------------------------------
CREATE TABLE compute_auction.compute_auction_rounds (
    round_id              bigserial        PRIMARY KEY,
    cleared_at            timestamptz      NOT NULL,
    slots_offered         int              NOT NULL,
    bids_eligible         int              NOT NULL,
    slots_filled          int              NOT NULL,
    clearing_price_tokens bigint           NULL,
    duration_ms           double precision NULL,
    -- O(1) facts of the round for the bids' stories (bid_status derives why each bid that took
    -- part did not win from them, so a round writes nothing per losing bid): the lowest reserve
    -- among the slots it offered but left unfilled (NULL when it filled every slot), and its
    -- last winner, the k-th in book order (NULL when it filled none; for rounds cleared before
    -- 0.2.0 the upgrade fills the winner in from the clears, and the reserve stays NULL)
    unfilled_reserve_min  bigint           NULL,
    last_winner_bid_id    bigint           NULL,
    last_winner_price_tokens bigint        NULL,
    last_winner_placed_at timestamptz      NULL
);
CREATE INDEX compute_auction_rounds_cleared_at_idx ON compute_auction.compute_auction_rounds (cleared_at);

CREATE TABLE compute_auction.compute_auction_clears (
    slot_id               text             NOT NULL REFERENCES compute_auction.compute_slots (slot_id),
    round_id              bigint           NOT NULL REFERENCES compute_auction.compute_auction_rounds (round_id),
    bid_id                bigint           NOT NULL UNIQUE REFERENCES compute_auction.compute_auction_bids (id),
    bidder_id             text             NOT NULL,
    winning_task_id       text             NOT NULL,
    runner_up_task_id     text             NULL,
    clearing_price_tokens bigint           NOT NULL CHECK (clearing_price_tokens >= 0),
    max_price_tokens      bigint           NOT NULL,
    slot_started_at       timestamptz      NOT NULL,
    slot_finished_at      timestamptz      NULL,
    actual_cost_tokens    bigint           NULL,
    actual_impact         double precision NULL,
    status                text             NOT NULL DEFAULT 'assigned'
                                           CHECK (status IN ('assigned', 'settled', 'aborted')),
    claimed_at            timestamptz      NULL,
    abort_reason          text             NULL,
    PRIMARY KEY (round_id, slot_id),
    CHECK (clearing_price_tokens <= max_price_tokens)
);
-- no slot is assigned to two live clears
CREATE UNIQUE INDEX compute_auction_clears_live_slot_idx
    ON compute_auction.compute_auction_clears (slot_id) WHERE status = 'assigned';
CREATE INDEX compute_auction_clears_stale_idx
    ON compute_auction.compute_auction_clears (slot_started_at) WHERE status = 'assigned';

-- the window's top winners (stats) start from the highest-priced clears of all time
CREATE INDEX compute_auction_clears_price_idx
    ON compute_auction.compute_auction_clears (max_price_tokens DESC, bid_id);

-- Summaries of the rounds, kept by clear_round in the round's own transaction (issue 21;
-- extension/src/summaries.rs), so that reports over a window cost what its quarter-hours or its
-- distinct prices cost, not what its rounds cost. Exact, never estimates:
-- rebuild_round_summaries() recomputes them from the rounds, and audit() reports any difference.
-- Per minute of cleared_at (floor(epoch / 60)): price_history and stats' fill rate.
CREATE TABLE compute_auction.round_minutes (
    minute        bigint  PRIMARY KEY,
    rounds        bigint  NOT NULL CHECK (rounds > 0),
    priced_rounds bigint  NOT NULL CHECK (priced_rounds BETWEEN 0 AND rounds),
    price_sum     numeric NOT NULL,
    price_min     bigint  NULL,
    price_max     bigint  NULL,
    slots_offered bigint  NOT NULL,
    slots_filled  bigint  NOT NULL
);
-- The same per quarter-hour of cleared_at (floor(epoch / 900)), so that a day is 96 rows.
CREATE TABLE compute_auction.round_quarters (
    quarter       bigint  PRIMARY KEY,
    rounds        bigint  NOT NULL CHECK (rounds > 0),
    priced_rounds bigint  NOT NULL CHECK (priced_rounds BETWEEN 0 AND rounds),
    price_sum     numeric NOT NULL,
    price_min     bigint  NULL,
    price_max     bigint  NULL,
    slots_offered bigint  NOT NULL,
    slots_filled  bigint  NOT NULL
);
-- The clearing prices per quarter-hour of cleared_at: price_to_win's exact p50 and p90 over a
-- window other than its default 24 hours (up to 7 days) read the window's whole quarter-hours
-- here and only the rounds of the quarter-hour its start cuts.
CREATE TABLE compute_auction.round_quarter_prices (
    quarter               bigint NOT NULL,
    clearing_price_tokens bigint NOT NULL,
    rounds                bigint NOT NULL CHECK (rounds > 0),
    PRIMARY KEY (quarter, clearing_price_tokens)
);
-- The clearing prices of every priced round with cleared_at >= recent_prices_since.since, which
-- each round moves up to its now() - 24 hours: price_to_win's percentiles.
CREATE TABLE compute_auction.recent_prices (
    clearing_price_tokens bigint PRIMARY KEY,
    rounds                bigint NOT NULL CHECK (rounds > 0)
);
-- (created by the first round or by rebuild_round_summaries(), like open_bid_count's row)
CREATE TABLE compute_auction.recent_prices_since (
    id    int         PRIMARY KEY CHECK (id = 1),
    since timestamptz NOT NULL,
    -- the newest round the summaries are known to count: a round below the next one's id but
    -- above this was written by someone else (a 0.1.0 call that outlived the upgrade, SQL by
    -- hand), and the next round rebuilds the summaries from the rounds
    through_round_id bigint NOT NULL DEFAULT 0
);

---------------------------------------------------------------------------------------------
-- Autovacuum for the hot tables: bids change status (leaving the open-book indexes with dead
-- entries that clear_round's index scan must step over), the delta log is emptied every round
-- and the counter row is rewritten every round. Vacuum them early rather than at 20% churn.
---------------------------------------------------------------------------------------------
ALTER TABLE compute_auction.compute_auction_bids
    SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE compute_auction.open_bid_count_deltas
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.open_bid_count
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200);
ALTER TABLE compute_auction.compute_slots
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
-- the round summaries' rows are rewritten every round
ALTER TABLE compute_auction.round_minutes
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.round_quarters
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.round_quarter_prices
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.recent_prices
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.recent_prices_since
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200);

-- The bids a round could not lock while it scanned the top of the book (another transaction
-- held their rows): the round skipped them instead of waiting, so they were not candidates of
-- that round (docs/SQL_API.md, "The clearing rule"). One row per skipped bid: O(skipped).
-- No foreign key to the bid: checking one would lock the very row that is held.
CREATE TABLE compute_auction.round_skips (
    round_id bigint NOT NULL REFERENCES compute_auction.compute_auction_rounds (round_id),
    bid_id   bigint NOT NULL,
    PRIMARY KEY (round_id, bid_id)
);
CREATE INDEX round_skips_bid_id_idx ON compute_auction.round_skips (bid_id);

-- Wallet entries that a settlement or abort has decided but not yet applied: settle and
-- abort_slot record the outcome at once without touching the winner's account row (its owner
-- may hold it), and apply_pending (run_cycle, the driver's cycle, or settle itself when the
-- account is free) applies them in entry_id order, writing their token_ledger rows in the same
-- transaction as the wallet change, and deletes them. Until then audit() and pending_balance()
-- count them as applied. No foreign key to the account: checking one would lock its row.
CREATE TABLE compute_auction.pending_entries (
    entry_id      bigserial   PRIMARY KEY,
    account_id    text        NOT NULL,
    bid_id        bigint      NOT NULL,
    slot_id       text        NOT NULL,
    round_id      bigint      NOT NULL,
    entry_kind    text        NOT NULL CHECK (entry_kind IN ('charge', 'premium', 'refund')),
    delta_balance bigint      NOT NULL,
    delta_held    bigint      NOT NULL,
    reason        text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_entries_account_idx ON compute_auction.pending_entries (account_id, entry_id);

-- Retention (prune_history). The idempotency keys of deposit and withdraw entries that a prune
-- compacted into a checkpoint, with the first call's result, so that a retry still returns it
-- (deposit and withdraw look here after the ledger); kept until older than both the horizon and
-- the key window (7 days). No foreign key to the account: checking one would lock its row.
CREATE TABLE compute_auction.idempotency_keys (
    account_id      text        NOT NULL,
    entry_kind      text        NOT NULL CHECK (entry_kind IN ('deposit', 'withdraw')),
    idempotency_key text        NOT NULL,
    delta_balance   bigint      NOT NULL,
    balance_after   bigint      NOT NULL,
    at              timestamptz NOT NULL,
    PRIMARY KEY (account_id, entry_kind, idempotency_key)
);
CREATE INDEX idempotency_keys_at_idx ON compute_auction.idempotency_keys (at);

-- What compaction took out of the ledger that a check still counts: the tokens of the refund
-- entries compacted into checkpoints (audit's refunded_count_mismatch adds them to the refund
-- entries left). One row, written only by prune_history under its lock.
CREATE TABLE compute_auction.compacted_totals (
    id              int    PRIMARY KEY CHECK (id = 1),
    tokens_refunded bigint NOT NULL DEFAULT 0,
    entries         bigint NOT NULL DEFAULT 0
);

---------------------------------------------------------------------------------------------
-- pg_dump keeps the market's data (extension member tables are skipped otherwise)
---------------------------------------------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('compute_auction.token_accounts', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.token_ledger', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.token_ledger_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compute_slots', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compute_auction_bids', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compute_auction_bids_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.open_bid_count', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.open_bid_count_deltas', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compute_auction_rounds', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compute_auction_rounds_round_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compute_auction_clears', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_skips', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.pending_entries', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.pending_entries_entry_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_minutes', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_quarters', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_quarter_prices', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.recent_prices', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.recent_prices_since', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compacted_totals', '');

-- Nobody but the owner writes these tables directly; access is through the functions.
REVOKE ALL ON ALL TABLES IN SCHEMA compute_auction FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA compute_auction FROM PUBLIC;

---------------------------------------------------------------------------------------------
-- The proportional split: the old central plan, kept as the fallback when the auction fails
---------------------------------------------------------------------------------------------
CREATE TABLE compute_auction.quest_budget_allocations (
    day              date             NOT NULL,
    quest_id         text             NOT NULL CHECK (length(quest_id) BETWEEN 1 AND 256),
    allocated_tokens bigint           NOT NULL CHECK (allocated_tokens >= 0),
    share            double precision NOT NULL CHECK (share >= 0 AND share <= 1),
    source           text             NOT NULL DEFAULT 'proportional',
    created_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (day, quest_id)
);
SELECT pg_catalog.pg_extension_config_dump('compute_auction.quest_budget_allocations', '');
REVOKE ALL ON compute_auction.quest_budget_allocations FROM PUBLIC;
