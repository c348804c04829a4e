//! Slots: the asks. An agent slot runs one task at a time; it is `idle` (offered), `assigned`
//! (won by a bid, until settled or aborted) or `retired`.

use compute_auction_core::validate;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::authority;

use crate::ledger::check_id;
use crate::spi;
use crate::times;

const OFFER: &str = "
INSERT INTO compute_auction.compute_slots (slot_id, available_at, reserve_price_tokens, runner_role, runner_oid)
VALUES ($1, $2, $3, $4, $5::pg_catalog.oid::pg_catalog.regrole)
ON CONFLICT (slot_id) DO UPDATE
   SET available_at         = EXCLUDED.available_at,
       reserve_price_tokens = EXCLUDED.reserve_price_tokens,
       status               = 'idle',
       retire_requested     = false,
       runner_role          = coalesce(EXCLUDED.runner_role, compute_slots.runner_role),
       runner_oid           = CASE WHEN EXCLUDED.runner_role IS NULL THEN compute_slots.runner_oid
                                   ELSE EXCLUDED.runner_oid END,
       updated_at           = now()
 WHERE compute_slots.status IN ('idle', 'retired')
RETURNING 1";

/// Registers a slot, or re-offers an idle (or retired) one with a new time and reserve.
/// An assigned slot cannot be re-offered (55000) until its run settles or aborts.
/// `runner_role` names the existing role (22023 otherwise) whose members, holding the runner
/// rights, claim, settle and abort the slot; NULL keeps the slot's current runner (a new slot
/// then has none: operators run it).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn offer_slot(
    slot_id: Option<&str>,
    available_at: default!(Option<TimestampWithTimeZone>, "now()"),
    reserve_price_tokens: default!(Option<i64>, 0),
    runner_role: default!(Option<&str>, "NULL"),
) {
    let slot = check_id("slot_id", slot_id);
    let at = times::timestamp("available_at", or_raise!(validate::required("available_at", available_at)));
    let reserve = or_raise!(validate::required("reserve_price_tokens", reserve_price_tokens));
    or_raise!(validate::non_negative("reserve_price_tokens", reserve));
    if let Some(r) = runner_role {
        or_raise!(validate::id("runner_role", r));
    }
    spi::with(|c| {
        let runner_oid = runner_role.map(|r| authority::role_oid(c, "runner_role", r));
        let args: [DatumWithOid<'_>; 5] =
            [slot.into(), at.into(), reserve.into(), runner_role.into(), runner_oid.into()];
        if spi::run(c, OFFER, &args).is_empty() {
            wrong_state!(
                format!("slot {slot} is assigned"),
                Some("Settle or abort its run first: it can be re-offered once idle."),
            );
        }
    })
}

/// Names (or clears, with NULL) the existing role whose members run the slot (22023 if no role
/// has that name). A slot without a runner is claimed, settled and aborted by operators only.
/// Takes effect at once, for an assigned slot too: the new runner settles the current run.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn set_slot_runner(slot_id: Option<&str>, runner_role: Option<&str>) {
    let slot = check_id("slot_id", slot_id);
    spi::with(|c| {
        authority::name_role(
            c,
            "slot",
            slot,
            "runner_role",
            runner_role,
            "SELECT 1 FROM compute_auction.compute_slots WHERE slot_id = $1",
            "UPDATE compute_auction.compute_slots
                SET runner_role = $2, runner_oid = $3::pg_catalog.oid::pg_catalog.regrole, updated_at = now()
              WHERE slot_id = $1 RETURNING 1",
        )
    })
}

/// Takes a slot out of later rounds. An assigned slot retires when its run settles or aborts.
/// Retiring a retired slot does nothing.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn retire_slot(slot_id: Option<&str>) {
    let slot = check_id("slot_id", slot_id);
    spi::with(|c| {
        let t = spi::run(
            c,
            "UPDATE compute_auction.compute_slots
                SET status = CASE WHEN status = 'assigned' THEN 'assigned' ELSE 'retired' END,
                    retire_requested = (status = 'assigned'),
                    updated_at = now()
              WHERE slot_id = $1
             RETURNING 1",
            &[slot.into()],
        );
        if t.is_empty() {
            not_found!("slot", slot);
        }
    })
}

/// (bid_id, task_id, bidder_id, clearing_price_tokens) of a claimed assignment.
type Claim = (i64, String, String, i64);

/// The slot's assigned clear, read without a lock, and whether it was claimed already.
const ASSIGNED: &str = "
SELECT bid_id, winning_task_id, bidder_id, clearing_price_tokens, claimed_at IS NOT NULL
  FROM compute_auction.compute_auction_clears
 WHERE slot_id = $1 AND status = 'assigned'";

/// The first claim: takes the clear row without waiting (NOWAIT raises 55P03).
const FIRST_CLAIM: &str = "
WITH l AS (
    SELECT round_id FROM compute_auction.compute_auction_clears
     WHERE slot_id = $1 AND status = 'assigned'
       FOR UPDATE NOWAIT
)
UPDATE compute_auction.compute_auction_clears AS c
   SET claimed_at = coalesce(c.claimed_at, now())
  FROM l
 WHERE c.slot_id = $1 AND c.round_id = l.round_id AND c.status = 'assigned'
RETURNING c.bid_id, c.winning_task_id, c.bidder_id, c.clearing_price_tokens";

/// What an agent runner calls before asking for other work: the task its slot won, or no row.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn claim_slot(
    slot_id: Option<&str>,
) -> TableIterator<
    'static,
    (name!(bid_id, i64), name!(task_id, String), name!(bidder_id, String), name!(clearing_price_tokens, i64)),
> {
    let slot = check_id("slot_id", slot_id);
    let rows = spi::with(|c| {
        // the slot exists (P0002) and is ours to run (42501), checked before any lock
        authority::check_may_run(c, slot);
        // runners poll: a repeat claim is a pure read (no lock, no new row version)
        let t = spi::run(c, ASSIGNED, &[slot.into()]);
        if t.is_empty() {
            return Vec::new();
        }
        let row = t.first();
        let claim: Claim = (spi::get_req(&row, 1), spi::get_req(&row, 2), spi::get_req(&row, 3), spi::get_req(&row, 4));
        if spi::get_req::<bool>(&row, 5) {
            return vec![claim];
        }
        // the first claim records itself, never waiting for the clear row (55P03: retry)
        spi::run(c, FIRST_CLAIM, &[slot.into()])
            .map(|r| (spi::req(&r, 1), spi::req(&r, 2), spi::req(&r, 3), spi::req(&r, 4)))
            .collect::<Vec<Claim>>()
    });
    TableIterator::new(rows)
}
