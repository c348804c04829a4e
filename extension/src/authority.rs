//! Who may do what: the one home of the market's authority rules (docs/SECURITY.md).
//!
//! Rights come from this database's grants, never from role names: a session is an
//! *operator* when it may EXECUTE `deposit` here (superusers may), a *runner* when it may
//! EXECUTE `settle`, an *agent* when it may EXECUTE `place_bid`. Authority over a wallet or a
//! slot goes to operators, and to members of the role stored as its owner (or runner) while
//! that stored OID still resolves to a role of the stored name. An account or slot without an
//! owner (or runner), or whose role no longer resolves, is operators-only: authority fails
//! closed. All checks read `session_user`, the login role, without locking anything.

use pgrx::spi::SpiClient;

use compute_auction_core::validate;

use crate::errors::Code;
use crate::spi;

/// The SQL test that the session is an operator: it holds EXECUTE on `deposit` in this database.
macro_rules! is_operator_sql {
    () => {
        "pg_catalog.has_function_privilege(session_user,
            'compute_auction.deposit(text, bigint, text, text)'::pg_catalog.regprocedure, 'EXECUTE')"
    };
}

/// The SQL test that the session has the runner rights: EXECUTE on `settle` in this database.
macro_rules! is_runner_sql {
    () => {
        "pg_catalog.has_function_privilege(session_user,
            'compute_auction.settle(text, bigint, double precision)'::pg_catalog.regprocedure, 'EXECUTE')"
    };
}

/// The SQL test that the session is a member of the role stored as (`$oid`, `$name`), and that
/// the OID still resolves to a role of that name (a dropped role's wallet never passes to a new
/// role of the same name).
macro_rules! holds_role_sql {
    ($oid:literal, $name:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = ",
            $oid,
            "::pg_catalog.oid AND r.rolname = ",
            $name,
            " AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER'))"
        )
    };
}

/// Whether the session may act for the `token_accounts` row in scope (bid, cancel, submit,
/// withdraw): an operator, or a member of the account's resolving owner.
macro_rules! may_act_sql {
    () => {
        concat!("(", is_operator_sql!(), " OR ", holds_role_sql!("owner_oid", "owner_role"), ")")
    };
}

/// Whether the session may run the `compute_slots` row in scope (claim, settle, abort): an
/// operator, or a session with the runner rights that is a member of the slot's resolving runner.
macro_rules! may_run_sql {
    () => {
        concat!(
            "(",
            is_operator_sql!(),
            " OR (",
            is_runner_sql!(),
            " AND ",
            holds_role_sql!("runner_oid", "runner_role"),
            "))"
        )
    };
}

const MAY_RUN: &str = concat!("SELECT ", may_run_sql!(), " FROM compute_auction.compute_slots WHERE slot_id = $1");

const IS_OPERATOR: &str = concat!("SELECT ", is_operator_sql!());

/// Checks, without locking anything, that the session is an operator (42501 otherwise): the
/// operator-only functions that hold no other check (prune_history, schedule_pruning,
/// unschedule_pruning) call it first, so a grant of EXECUTE on them alone gives nothing.
pub fn check_operator(c: &mut SpiClient<'_>, what: &str) {
    if spi::first::<bool>(spi::run(c, IS_OPERATOR, &[]), 1) != Some(true) {
        raise!(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("{what} is for operators"),
            Some("Only operators (sessions that may EXECUTE compute_auction.deposit here) may call it (docs/SECURITY.md)."),
        );
    }
}

const ROLE_OID: &str = "SELECT oid::pg_catalog.int8 FROM pg_catalog.pg_roles WHERE rolname = $1";

/// Checks, without locking anything, that the slot exists (P0002) and that the session may run
/// it (42501): claim_slot, settle and abort_slot call it before they lock the slot's rows.
pub fn check_may_run(c: &mut SpiClient<'_>, slot: &str) {
    match spi::first::<bool>(spi::run(c, MAY_RUN, &[slot.into()]), 1) {
        None => not_found!("slot", slot),
        Some(false) => not_runner!(slot),
        Some(true) => {}
    }
}

/// The OID of the existing role `name`, for storing beside the name; 22023 if there is none (a
/// typo must not leave a wallet to whoever later creates a role of that name).
pub fn role_oid(c: &mut SpiClient<'_>, arg: &str, name: &str) -> i64 {
    match spi::first::<i64>(spi::run(c, ROLE_OID, &[name.into()]), 1) {
        Some(oid) => oid,
        None => raise!(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{arg} {name:?} is not a role of this cluster"),
            Some("Create the role first (CREATE ROLE), then name it."),
        ),
    }
}

/// Names (or, with None, clears) the role stored with one row, the one rule for owners and
/// runners: the role name must be a valid id (22023/22001), `exists` ($1: the row's id) must
/// find the row (P0002 `what`), the role must exist (22023), then `update` ($1 id, $2 name,
/// $3 OID as bigint) stores its name and OID.
pub fn name_role(
    c: &mut SpiClient<'_>,
    what: &str,
    id: &str,
    arg: &'static str,
    role: Option<&str>,
    exists: &'static str,
    update: &'static str,
) {
    if let Some(r) = role {
        or_raise!(validate::id(arg, r));
    }
    if spi::run(c, exists, &[id.into()]).is_empty() {
        not_found!(what, id);
    }
    let oid = role.map(|r| role_oid(c, arg, r));
    if spi::run(c, update, &[id.into(), role.into(), oid.into()]).is_empty() {
        not_found!(what, id);
    }
}
