//! A thin layer over SPI: every statement is prepared once per backend and kept (like
//! PL/pgSQL's plan cache), arguments are always passed as SPI parameters (never formatted into
//! SQL), and SPI-level failures map to `errors::internal`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use std::ffi::CStr;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData, SpiTupleTable};
use pgrx::PgTryBuilder;

/// Plans are keyed by the statement's address: every statement is a `&'static str` constant, so
/// its address identifies it without hashing its text on every call. Each key keeps the plans of
/// the argument-type lists it was called with (in practice exactly one).
type PlanList = Vec<(Vec<u32>, Rc<OwnedPreparedStatement>)>;

#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by a statement's address and length.
type ByStatement<V> = HashMap<(usize, usize), V, std::hash::BuildHasherDefault<AddressHasher>>;
/// (statement address, statement length, mutating) -> its plans.
type PlanCache = HashMap<(usize, usize, bool), PlanList, std::hash::BuildHasherDefault<AddressHasher>>;

thread_local! {
    static PLANS: RefCell<PlanCache> = RefCell::new(HashMap::default());
}

/// The kept plan of `sql` for these argument types; `mutating` plans run read-write (`run`),
/// the others read-only (`read`).
fn plan_for(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    mutating: bool,
) -> Rc<OwnedPreparedStatement> {
    let key = (sql.as_ptr() as usize, sql.len(), mutating);
    let same_types =
        |oids: &[u32]| oids.len() == args.len() && oids.iter().zip(args).all(|(o, a)| *o == a.oid().to_u32());
    let cached = PLANS.with(|m| {
        m.borrow().get(&key).and_then(|list| list.iter().find(|(oids, _)| same_types(oids)).map(|(_, p)| p.clone()))
    });
    if let Some(p) = cached {
        return p;
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    let prepared = if mutating { client.prepare_mut(sql, &types) } else { client.prepare(sql, &types) };
    let plan = match prepared {
        Ok(p) => Rc::new(p.keep()),
        Err(e) => internal!(format!("preparing statement: {e}")),
    };
    let oids: Vec<u32> = args.iter().map(|a| a.oid().to_u32()).collect();
    PLANS.with(|m| m.borrow_mut().entry(key).or_default().push((oids, plan.clone())));
    plan
}

/// Runs one statement (reading or writing) with its cached plan. Like every read-write SPI
/// call, it gives the caller's transaction a transaction id (pgrx marks it mutable) even when
/// the statement only reads: the functions that only read use [`read`] instead.
pub fn run<'conn>(client: &mut SpiClient<'conn>, sql: &'static str, args: &[DatumWithOid<'_>]) -> SpiTupleTable<'conn> {
    let plan = plan_for(client, sql, args, true);
    match client.update(&*plan, None, args) {
        Ok(t) => t,
        Err(e) => internal!(format!("executing statement: {e}")),
    }
}

/// Runs one read-only statement with its cached plan, inside [`with_read`]. It assigns no
/// transaction id, so a function that only reads keeps its caller's transaction read-only: it
/// runs on a hot standby (where assigning one is an error) and commits without writing WAL.
/// (SPI runs it read-only unless the transaction has written already; then it sees those
/// writes, as a read-write statement would.)
pub fn read<'conn>(client: &SpiClient<'conn>, sql: &'static str, args: &[DatumWithOid<'_>]) -> SpiTupleTable<'conn> {
    let plan = plan_for(client, sql, args, false);
    match client.select(&*plan, None, args) {
        Ok(t) => t,
        Err(e) => internal!(format!("executing statement: {e}")),
    }
}

/// Runs `f` inside an SPI connection that only reads ([`read`]), with `jit` off: the readers'
/// statements take milliseconds, and the planner's guess for a window it cannot see (a range
/// of parameters) can be high enough to make PostgreSQL compile them first, which cost 0.5 s
/// per price_history call on a day of rounds (issue 21).
pub fn with_read<R>(f: impl FnOnce(&SpiClient<'_>) -> R) -> R {
    with_setting(c"jit", c"off", || Spi::connect(|c| f(c)))
}

/// A kept plan's generic plan is made once, from the statistics and the size its tables had
/// then, and kept until an invalidation (ANALYZE, DDL). Made while a table was tiny (a fresh
/// install, a book of a few bids that autovacuum has just analyzed) it reads that table with a
/// sequential scan, the cheapest plan for one page, and keeps reading it that way while the
/// table grows, until the next ANALYZE: every call then scans the whole table (issue 21).
/// [`run_sized`] forgets such a plan when one of the tables it names has doubled in size since
/// the plan was made, so that it is made again for the table's new size; once every table was
/// at least this many pages when the plan was made (an index scan wins long before that), the
/// check stops: it costs nothing on a real book.
const SIZE_GUARD_BLOCKS: u32 = 64;

thread_local! {
    /// The sizes (pages) of a sized statement's tables when its plan was prepared.
    static PLAN_SIZES: RefCell<ByStatement<Vec<u32>>> = RefCell::new(HashMap::default());
}

/// Pages in the main fork of table `compute_auction.<name>`, or u32::MAX when there is no
/// such table (nothing to guard).
fn table_pages(name: &CStr) -> u32 {
    // SAFETY: catalog look-ups by name, then the table opened with AccessShareLock (the lock
    // the statement about to run takes anyway, held to the end of the transaction) for the
    // page count and closed again; pgrx turns an ERROR in any of them into a Rust panic that
    // is re-raised as the same ERROR at the function's boundary.
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"compute_auction".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            return u32::MAX;
        }
        let oid = pg_sys::get_relname_relid(name.as_ptr(), ns);
        if oid == pg_sys::InvalidOid {
            return u32::MAX;
        }
        let rel = pg_sys::table_open(oid, pg_sys::AccessShareLock.cast_signed());
        let n = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::table_close(rel, pg_sys::NoLock.cast_signed());
        n
    }
}

/// Like [`run`] for a statement whose plan must follow the size of `tables` (names in the
/// schema compute_auction): see [`SIZE_GUARD_BLOCKS`].
pub fn run_sized<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    tables: &[&'static CStr],
) -> SpiTupleTable<'conn> {
    let key = (sql.as_ptr() as usize, sql.len());
    let recorded = PLAN_SIZES.with(|m| m.borrow().get(&key).cloned());
    let stale = match &recorded {
        None => true,
        Some(sizes) => sizes.iter().zip(tables).any(|(was, t)| {
            *was < SIZE_GUARD_BLOCKS && table_pages(t) >= was.saturating_mul(2).max(was.saturating_add(1))
        }),
    };
    if stale {
        // forget the plan (dropping the last Rc frees it) and note the sizes it is made for
        PLANS.with(|m| m.borrow_mut().remove(&(key.0, key.1, true)));
        let sizes: Vec<u32> = tables.iter().map(|t| table_pages(t)).collect();
        PLAN_SIZES.with(|m| m.borrow_mut().insert(key, sizes));
    }
    run(client, sql, args)
}

/// Runs `f` with `enable_seqscan` off, restored on the way out (see [`with_setting`]). For the
/// statements that read the counter deltas: a sequential scan of that table would read every
/// row the folds deleted since the last vacuum, which is what issue 21 removed; with it off the
/// planner keeps the xid index's range scan whatever the statistics say.
pub fn without_seqscan<R>(f: impl FnOnce() -> R) -> R {
    with_setting(c"enable_seqscan", c"off", f)
}

/// Runs `f` with `plan_cache_mode = force_custom_plan`: its statements are planned for their
/// actual arguments. For a statement whose best plan depends on them and that runs once per
/// round (clear_round's scan of the bids ahead of its last candidate): a generic plan cannot
/// tell that `ttl_at > now` keeps nearly the whole book and a price bound only its top, and
/// read the whole book (issue 21's benchmark: 0.6 s a round at 1M open bids).
pub fn with_custom_plan<R>(f: impl FnOnce() -> R) -> R {
    with_setting(c"plan_cache_mode", c"force_custom_plan", f)
}

/// Runs `f` with the setting `name` = `value`, restored on the way out, as a function's `SET`
/// clause does (an ERROR on the way aborts the (sub)transaction, which restores it too).
fn with_setting<R>(name: &CStr, value: &CStr, f: impl FnOnce() -> R) -> R {
    // SAFETY: the same calls fmgr_security_definer makes for a function's SET clause; the GUC
    // nest level is ours and is popped below (or by the abort of an ERROR).
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        level
    };
    let r = f();
    // SAFETY: pops the nest level pushed above, restoring the setting.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    r
}

/// Column `ordinal` (1-based) of the first row, or None when there is no row or it is NULL.
pub fn first<T: FromDatum + IntoDatum>(table: SpiTupleTable<'_>, ordinal: usize) -> Option<T> {
    if table.is_empty() {
        return None;
    }
    match table.first().get::<T>(ordinal) {
        Ok(v) => v,
        Err(e) => internal!(format!("reading column {ordinal}: {e}")),
    }
}

/// Column `ordinal` of the current row of an iterated table; NULL becomes None.
pub fn col<T: FromDatum + IntoDatum>(row: &SpiHeapTupleData<'_>, ordinal: usize) -> Option<T> {
    match row.get::<T>(ordinal) {
        Ok(v) => v,
        Err(e) => internal!(format!("reading column {ordinal}: {e}")),
    }
}

/// Like [`col`] for a column that is NOT NULL by schema.
pub fn req<T: FromDatum + IntoDatum>(row: &SpiHeapTupleData<'_>, ordinal: usize) -> T {
    match col::<T>(row, ordinal) {
        Some(v) => v,
        None => internal!(format!("column {ordinal} is unexpectedly NULL")),
    }
}

/// Runs `f` inside an SPI connection that may write.
pub fn with<R>(f: impl FnOnce(&mut SpiClient<'_>) -> R) -> R {
    Spi::connect_mut(|c| f(c))
}

/// Column `ordinal` (1-based) of the table's current row; NULL becomes None.
pub fn get<T: FromDatum + IntoDatum>(t: &SpiTupleTable<'_>, ordinal: usize) -> Option<T> {
    match t.get::<T>(ordinal) {
        Ok(v) => v,
        Err(e) => internal!(format!("reading column {ordinal}: {e}")),
    }
}

/// Like [`get`] for a column that is NOT NULL by schema.
pub fn get_req<T: FromDatum + IntoDatum>(t: &SpiTupleTable<'_>, ordinal: usize) -> T {
    match get::<T>(t, ordinal) {
        Some(v) => v,
        None => internal!(format!("column {ordinal} is unexpectedly NULL")),
    }
}

/// Runs `f` in an internal subtransaction (like a PL/pgSQL block with an EXCEPTION clause).
/// When `f` returns `(true, v)` the subtransaction is released into the parent, keeping its row
/// locks; with `(false, v)` it is rolled back, which releases every row lock taken inside it.
/// `f` must not keep SPI tuple tables past its return.
///
/// When an ERROR is raised inside `f` (a lock or statement timeout, a cancel, a deadlock, or the
/// extension's own `raise`), the subtransaction is rolled back, the caller's memory context and
/// resource owner are restored, and the same ERROR is re-thrown, as PL/pgSQL's
/// `exec_stmt_block` does. The caller's transaction then aborts (or its own EXCEPTION block
/// catches the error) at the level it started: nothing of the subtransaction is left behind.
pub fn in_subtransaction<R>(f: impl FnOnce() -> (bool, R)) -> R {
    // The same sequence PL/pgSQL's exec_stmt_block uses: remember the caller's memory context
    // and resource owner, begin, and on every way out (release, rollback, or ERROR) end the
    // subtransaction and restore both.
    // SAFETY: plain reads of backend globals, on the backend's only thread.
    let (ctx, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    // SAFETY: we are inside a transaction (every caller is a SQL function); `ctx` is live.
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(ctx);
    }
    // SAFETY: `ctx` and `owner` are the caller's, which outlive this call.
    let restore = move || unsafe {
        pg_sys::MemoryContextSwitchTo(ctx);
        pg_sys::CurrentResourceOwner = owner;
    };
    // `f`'s captures are dropped on unwind and never observed half-updated afterwards.
    let body = AssertUnwindSafe(f);
    let (keep, r) = PgTryBuilder::new(body)
        .catch_others(move |error| {
            // SAFETY: we are still inside the subtransaction begun above: the ERROR raised in it
            // was caught, and its error state flushed, at pgrx's FFI boundary.
            unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
            restore();
            error.rethrow()
        })
        .execute();
    // SAFETY: `f` returned normally, so its subtransaction is still the current one.
    unsafe {
        if keep {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
    }
    restore();
    r
}
