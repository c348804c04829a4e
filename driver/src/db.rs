//! Connection pool, error classification, and typed wrappers around the
//! compute_auction SQL functions. No market logic lives here: every function
//! below is one call (or one read) of the extension's public SQL API.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use compute_auction_core::limits::locks;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::{AsyncMessage, Client, NoTls, Transaction};

/// Session-level advisory lock held by the leading driver (classid, objid); the key space is
/// `compute_auction_core::limits::locks`, shared with the extension.
pub const LEADER_LOCK: (i32, i32) = (locks::CLASS, locks::DRIVER_LEADER);

pub const APPLICATION_NAME: &str = "compute-auction-driver";

/// A database failure, classified by what the caller should do about it.
#[derive(Debug, Clone)]
pub enum DbError {
    /// The server is unreachable, restarting, refusing connections, or the
    /// connection broke: back off and retry.
    Unavailable(String),
    /// The server answered with an error (SQLSTATE `code`).
    Sql { code: String, message: String, detail: Option<String>, hint: Option<String> },
    /// Anything else (e.g. a result of an unexpected type).
    Internal(String),
    /// A COMMIT whose outcome is not known to be durable: the connection broke while the COMMIT
    /// was in flight (`connection_lost`: it may or may not have committed), or the server
    /// answered it with the WARNING that the transaction "has already committed locally, but
    /// might not have been replicated to the standby" (it committed on this server, and a
    /// failover may lose it). Never counted as done, never retried blindly: the next cycle
    /// decides from the database's state what is still to do.
    InDoubt { message: String, connection_lost: bool },
}

impl DbError {
    pub fn code(&self) -> Option<&str> {
        match self {
            DbError::Sql { code, .. } => Some(code.as_str()),
            _ => None,
        }
    }

    /// The server is unreachable or the connection broke (a COMMIT in doubt because its
    /// connection was lost included): back off and reconnect.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_) | DbError::InDoubt { connection_lost: true, .. })
    }

    /// A COMMIT whose outcome is not known to be durable (see [`DbError::InDoubt`]).
    pub fn is_in_doubt(&self) -> bool {
        matches!(self, DbError::InDoubt { .. })
    }

    /// The message to show to an API client or in a log line.
    pub fn message(&self) -> String {
        match self {
            DbError::Unavailable(m) | DbError::Internal(m) | DbError::InDoubt { message: m, .. } => m.clone(),
            DbError::Sql { message, .. } => message.clone(),
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable(m) => write!(f, "database unavailable: {m}"),
            DbError::Internal(m) => write!(f, "{m}"),
            DbError::InDoubt { message, .. } => write!(f, "commit in doubt: {message}"),
            DbError::Sql { code, message, detail, hint } => {
                write!(f, "{message} (SQLSTATE {code})")?;
                if let Some(d) = detail {
                    write!(f, "; detail: {d}")?;
                }
                if let Some(h) = hint {
                    write!(f, "; hint: {h}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DbError {}

/// SQLSTATEs that mean "the database is not (or no longer) usable right now"
/// rather than "this statement failed".
pub fn sqlstate_is_unavailable(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("28") // invalid authorization
        || code.starts_with("53") // insufficient resources (too many connections, disk full, ...)
        || code == "3D000" // database does not exist
        || code == "57P01" // admin_shutdown
        || code == "57P02" // crash_shutdown
        || code == "57P03" // cannot_connect_now
        || code == "57P05" // idle_session_timeout
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code().to_string();
            if sqlstate_is_unavailable(&code) {
                return DbError::Unavailable(format!("{} (SQLSTATE {code})", db.message()));
            }
            return DbError::Sql {
                code,
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            };
        }
        if e.is_closed() {
            return DbError::Unavailable("connection closed".into());
        }
        let text = error_chain(&e);
        // Walk the source chain: I/O errors and timeouts mean the connection
        // is gone; anything else (type conversions) is our bug.
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(s) = src {
            if s.is::<std::io::Error>() {
                return DbError::Unavailable(text);
            }
            src = s.source();
        }
        if text.contains("error connecting") || text.contains("timeout") || text.contains("timed out") {
            return DbError::Unavailable(text);
        }
        DbError::Internal(text)
    }
}

/// An error and its causes, "outer: inner: innermost" (tokio-postgres keeps
/// the interesting part, e.g. "Connection refused", in the source chain).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        src = s.source();
    }
    text
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => match DbError::from(e) {
                // Any failure while opening or checking a connection means we
                // have no usable connection.
                DbError::Sql { code, message, .. } => DbError::Unavailable(format!("{message} (SQLSTATE {code})")),
                other => DbError::Unavailable(other.message()),
            },
            PoolError::Timeout(t) => DbError::Unavailable(format!("timed out getting a connection ({t:?})")),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

/// Parses the connection string and fills in driver defaults (connect
/// timeout, application_name) where the URL does not set them.
pub fn parse_config(url: &str) -> Result<tokio_postgres::Config, String> {
    let cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("invalid database URL: {e}"))?;
    Ok(with_defaults(cfg))
}

fn with_defaults(mut cfg: tokio_postgres::Config) -> tokio_postgres::Config {
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name(APPLICATION_NAME);
    }
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(30));
    cfg
}

/// `parse_config` for `serve --read-database-url`, which also takes libpq's
/// `target_session_attrs=prefer-standby` and `=standby` (tokio-postgres knows only any,
/// read-write and read-only). Both are read as `read-only`: the first host that answers
/// read-only, which a standby does. When none does, the connection fails and the reads fall back
/// to the primary (--database-url), so either value ends up meaning "a standby if one answers".
pub fn parse_read_config(url: &str) -> Result<tokio_postgres::Config, String> {
    const KEY: &str = "target_session_attrs=";
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find(KEY) {
        let (head, tail) = rest.split_at(i + KEY.len());
        out.push_str(head);
        let end = tail.find(['&', ' ']).unwrap_or(tail.len());
        let value = &tail[..end];
        out.push_str(if value == "prefer-standby" || value == "standby" { "read-only" } else { value });
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut cfg: tokio_postgres::Config = out.parse().map_err(|e| format!("invalid database URL: {e}"))?;
    if cfg.get_connect_timeout().is_none() {
        // per host: a host that does not answer costs this long before the next one is tried
        cfg.connect_timeout(READ_CONNECT_TIMEOUT);
    }
    Ok(with_defaults(cfg))
}

/// connect_timeout of each of the read database's hosts when its URL sets none.
pub const READ_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connecting pool: creating it never touches the network. With `statement_timeout`,
/// every pooled session runs with that statement_timeout (the HTTP API's: no statement outlives
/// the request that started it).
pub fn make_pool(cfg: &tokio_postgres::Config, size: usize, statement_timeout: Option<Duration>) -> Pool {
    make_pool_with(cfg, size, statement_timeout, Duration::from_secs(5), Duration::from_secs(5))
}

/// `make_pool` with its own bounds on waiting for a free connection (`wait`) and on opening a
/// new one (`create`): the read database's pool tells a busy pool from an unreachable server.
pub fn make_pool_with(
    cfg: &tokio_postgres::Config,
    size: usize,
    statement_timeout: Option<Duration>,
    wait: Duration,
    create: Duration,
) -> Pool {
    let mut cfg = cfg.clone();
    if let Some(t) = statement_timeout {
        let set = format!("-c statement_timeout={}", t.as_millis().max(1));
        let options = match cfg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {set}"),
            _ => set,
        };
        cfg.options(&options);
    }
    let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Verified });
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(create))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("pool with a runtime and timeouts always builds")
}

/// The detail PostgreSQL gives with the WARNING on a COMMIT whose wait for a synchronous standby
/// was cancelled or interrupted: "The transaction has already committed locally, but might not
/// have been replicated to the standby." (src/backend/replication/syncrep.c)
pub const UNREPLICATED_DETAIL: &str = "might not have been replicated";

/// Whether a notice is PostgreSQL's warning that a commit "might not have been replicated" to
/// the synchronous standby (the words are in its DETAIL; they are matched in the message too,
/// for servers that put them there).
pub fn is_unreplicated_commit_warning(message: &str, detail: Option<&str>) -> bool {
    message.contains(UNREPLICATED_DETAIL) || detail.is_some_and(|d| d.contains(UNREPLICATED_DETAIL))
}

/// A dedicated connection (outside the pool) that watches its notices: it counts PostgreSQL's
/// warnings that a commit "might not have been replicated" (is_unreplicated_commit_warning), so
/// that a COMMIT answered with one is reported in doubt instead of done ([`commit_step`]). It
/// derefs to the tokio-postgres [`Client`].
pub struct Session {
    client: Client,
    unreplicated: Arc<AtomicU64>,
}

impl Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Opens one dedicated connection (outside the pool) and drives it on a background task that
/// logs the server's notices and counts the unreplicated-commit warnings among them. Used for
/// the leader lock and the cycle, and by one-shot subcommands.
///
/// The task handles a notice before it reads the server's next message, and the server sends
/// the WARNING of a COMMIT before the COMMIT's own answer: so when a COMMIT returns, a warning it
/// caused has been counted.
pub async fn connect(cfg: &tokio_postgres::Config) -> Result<Session, DbError> {
    let (client, mut connection) =
        cfg.connect(NoTls).await.map_err(|e| DbError::Unavailable(DbError::from(e).message()))?;
    let unreplicated = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&unreplicated);
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(n))) => {
                    if is_unreplicated_commit_warning(n.message(), n.detail()) {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tracing::warn!(
                            severity = n.severity(),
                            message = n.message(),
                            detail = n.detail(),
                            "the server warned that a commit might not have been replicated to the standby"
                        );
                    } else {
                        tracing::info!(severity = n.severity(), message = n.message(), "server notice");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "dedicated connection ended");
                    break;
                }
                None => break,
            }
        }
    });
    Ok(Session { client, unreplicated })
}

// ---------------------------------------------------------------- cycle ---

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Refunds {
    pub bids_expired: i64,
    pub tokens_refunded: i64,
}

/// One winner of a round (an element of clear_round_summary's `winners`; its keys are
/// `fields::CLEAR_WINNER`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Assignment {
    pub slot_id: String,
    pub bid_id: i64,
    pub task_id: String,
    pub bidder_id: String,
    pub clearing_price_tokens: i64,
}

/// The round a clear_round_summary call cleared (its `round`; keys `fields::CLEAR_ROUND`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoundInfo {
    pub round_id: i64,
    pub cleared_at: DateTime<Utc>,
    pub slots_offered: i64,
    pub bids_eligible: i64,
    pub slots_filled: i64,
    pub clearing_price_tokens: Option<i64>,
    pub duration_ms: Option<f64>,
}

/// What clear_round_summary returns: the round and its winners.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClearOutcome {
    pub round: RoundInfo,
    #[serde(rename = "winners")]
    pub assignments: Vec<Assignment>,
}

/// The timeouts of each cycle step's transaction (see [`begin_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTimeouts {
    /// `lock_timeout` of the step: how long it may wait for any one lock.
    pub lock: Duration,
    /// `statement_timeout` of the step's statements.
    pub statement: Duration,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        StepTimeouts { lock: Duration::from_secs(2), statement: Duration::from_secs(10) }
    }
}

/// A timeout as a PostgreSQL setting value in milliseconds, never 0 (0 means "no timeout").
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().clamp(1, i32::MAX as u128))
}

/// `BEGIN; SET LOCAL lock_timeout = ...; SET LOCAL statement_timeout = ...`: a step that waits
/// or runs too long fails on the server (55P03 / 57014) and rolls back, and nothing is left
/// running there.
async fn begin_step(client: &mut Client, t: StepTimeouts) -> Result<Transaction<'_>, DbError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}'; SET LOCAL statement_timeout = '{}'",
        millis(t.lock),
        millis(t.statement)
    ))
    .await?;
    Ok(tx)
}

/// COMMIT with no timeout: under synchronous replication a COMMIT cancelled by
/// statement_timeout while it waits for the standby reports success with only a WARNING
/// although the standby may not have the transaction (docs/OPERATIONS.md), so the COMMIT must
/// never be subject to one. Someone else may still cancel it (pg_cancel_backend) or the
/// connection may break during it: both are [`DbError::InDoubt`], never success. `unreplicated`
/// is the session's warning counter ([`Session`]).
async fn commit_step(tx: Transaction<'_>, unreplicated: &AtomicU64) -> Result<(), DbError> {
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0").await?;
    let before = unreplicated.load(Ordering::SeqCst);
    match tx.commit().await.map_err(DbError::from) {
        Ok(()) if unreplicated.load(Ordering::SeqCst) != before => Err(DbError::InDoubt {
            message: "the server committed locally but warned that the transaction might not have been \
                      replicated to the standby; a failover may lose it"
                .into(),
            connection_lost: false,
        }),
        Ok(()) => Ok(()),
        Err(e) if e.is_unavailable() => Err(DbError::InDoubt {
            message: format!("the connection broke during COMMIT ({}); it may or may not have committed", e.message()),
            connection_lost: true,
        }),
        Err(e) => Err(e),
    }
}

/// `refund_unfilled(now())` in its own transaction.
pub async fn refund_unfilled(client: &mut Session, t: StepTimeouts) -> Result<Refunds, DbError> {
    let tx = begin_step(&mut client.client, t).await?;
    let rows = tx
        .query("SELECT bids_expired::bigint, tokens_refunded::bigint FROM compute_auction.refund_unfilled(now())", &[])
        .await?;
    commit_step(tx, &client.unreplicated).await?;
    let mut r = Refunds::default();
    for row in rows {
        r.bids_expired += row.try_get::<_, Option<i64>>(0)?.unwrap_or(0);
        r.tokens_refunded += row.try_get::<_, Option<i64>>(1)?.unwrap_or(0);
    }
    Ok(r)
}

/// `abort_stale(<older_than>, now())` in its own transaction.
pub async fn abort_stale(client: &mut Session, older_than: Duration, t: StepTimeouts) -> Result<i64, DbError> {
    let tx = begin_step(&mut client.client, t).await?;
    let row = tx
        .query_one(
            "SELECT compute_auction.abort_stale(make_interval(secs => $1::float8), now())::bigint",
            &[&older_than.as_secs_f64()],
        )
        .await?;
    commit_step(tx, &client.unreplicated).await?;
    Ok(row.try_get::<_, Option<i64>>(0)?.unwrap_or(0))
}

/// `apply_pending()` in its own transaction: the wallet entries of settlements and aborts whose
/// accounts were held when they were recorded. Returns how many it applied.
pub async fn apply_pending(client: &mut Session, t: StepTimeouts) -> Result<i64, DbError> {
    let tx = begin_step(&mut client.client, t).await?;
    let row = tx.query_one("SELECT compute_auction.apply_pending()::bigint", &[]).await?;
    commit_step(tx, &client.unreplicated).await?;
    Ok(row.try_get::<_, Option<i64>>(0)?.unwrap_or(0))
}

/// `clear_round_summary(now())`: one round, cleared exactly as clear_round clears it, and what
/// it did (the round and its winners), from the extension in one call.
pub async fn clear_round(client: &mut Session, t: StepTimeouts) -> Result<ClearOutcome, DbError> {
    let tx = begin_step(&mut client.client, t).await?;
    let row = tx.query_one("SELECT compute_auction.clear_round_summary(now())::text", &[]).await?;
    commit_step(tx, &client.unreplicated).await?;
    let text: Option<String> = row.try_get(0)?;
    let text = text.ok_or_else(|| DbError::Internal("clear_round_summary returned NULL".into()))?;
    serde_json::from_str(&text)
        .map_err(|e| DbError::Internal(format!("unexpected clear_round_summary result ({e}): {text}")))
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FallbackAllocation {
    pub day: String,
    pub quests: i64,
    pub allocated_tokens: i64,
}

/// `source` of the quest_budget_allocations rows the driver writes.
pub const FALLBACK_SOURCE: &str = "driver-fallback";

/// The issue-5 fallback: `allocate_fallback(current_date, budget, FALLBACK_SOURCE)`, which
/// weights each quest by its open bids inside the extension; returns how many quests got a
/// share and the tokens allocated in all.
pub async fn allocate_fallback(
    client: &mut Session,
    daily_budget_tokens: i64,
    t: StepTimeouts,
) -> Result<FallbackAllocation, DbError> {
    let tx = begin_step(&mut client.client, t).await?;
    let row = tx
        .query_one(
            "SELECT current_date::text, count(*)::bigint, coalesce(sum(a.allocated_tokens), 0)::bigint \
             FROM compute_auction.allocate_fallback(current_date, $1::bigint, $2::text) AS a",
            &[&daily_budget_tokens, &FALLBACK_SOURCE],
        )
        .await?;
    commit_step(tx, &client.unreplicated).await?;
    Ok(FallbackAllocation { day: row.try_get(0)?, quests: row.try_get(1)?, allocated_tokens: row.try_get(2)? })
}

/// What one compute_auction.prune_history call removed, summed over its tables, and whether a
/// table stopped at the call's budget (call again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub rows_removed: i64,
    pub more: bool,
}

/// The statement timeout of one prune_history call: a call removes up to its budget of rows
/// per table, more than a clearing step's few rows, so it gets at least this long.
pub const PRUNE_STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// One compute_auction.prune_history(older_than) call in its own transaction.
pub async fn prune_history(client: &mut Session, older_than: Duration, t: StepTimeouts) -> Result<Pruned, DbError> {
    let t = StepTimeouts { lock: t.lock, statement: t.statement.max(PRUNE_STATEMENT_TIMEOUT) };
    let tx = begin_step(&mut client.client, t).await?;
    let row = tx
        .query_one(
            "SELECT coalesce(sum(rows_removed), 0)::bigint, coalesce(bool_or(more), false) \
             FROM compute_auction.prune_history(pg_catalog.make_interval(secs => $1::float8))",
            &[&older_than.as_secs_f64()],
        )
        .await?;
    commit_step(tx, &client.unreplicated).await?;
    Ok(Pruned { rows_removed: row.try_get(0)?, more: row.try_get(1)? })
}

// ------------------------------------------------------------------ API ---

/// A jsonb result of one of the extension's functions, as the text PostgreSQL rendered it
/// (`null` for SQL NULL). The API sends it on byte for byte; the driver's own reads parse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jsonb(pub String);

impl Jsonb {
    pub fn is_null(&self) -> bool {
        self.0 == "null"
    }

    pub fn parse(&self) -> Result<Value, DbError> {
        serde_json::from_str(&self.0).map_err(|e| DbError::Internal(format!("the database sent invalid JSON: {e}")))
    }
}

/// Runs a query whose one column is a jsonb value (cast to text in the query).
async fn jsonb(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Jsonb, DbError> {
    let row = client.query_one(sql, params).await?;
    Ok(Jsonb(row.try_get::<_, Option<String>>(0)?.unwrap_or_else(|| "null".to_string())))
}

pub async fn order_book(client: &Client, depth: i32) -> Result<Jsonb, DbError> {
    jsonb(client, "SELECT compute_auction.order_book($1::int)::text", &[&depth]).await
}

pub async fn bid_status(client: &Client, bid_id: i64) -> Result<Jsonb, DbError> {
    jsonb(client, "SELECT compute_auction.bid_status($1::bigint)::text", &[&bid_id]).await
}

pub async fn task_status(client: &Client, task_id: &str) -> Result<Jsonb, DbError> {
    jsonb(client, "SELECT compute_auction.task_status($1::text)::text", &[&task_id]).await
}

pub async fn wallet(client: &Client, account_id: &str) -> Result<Jsonb, DbError> {
    jsonb(client, "SELECT compute_auction.wallet($1::text)::text", &[&account_id]).await
}

/// `stats(now() - hours, include_rounds, max_rounds)`: with `max_rounds`, the newest that many
/// rounds of the window; without, no per-round list (`rounds` is null).
pub async fn stats(client: &Client, hours: f64, max_rounds: Option<i32>) -> Result<Jsonb, DbError> {
    jsonb(
        client,
        "SELECT compute_auction.stats(now() - make_interval(secs => $1::float8), $2::bool, $3::int)::text",
        &[&(hours * 3600.0), &max_rounds.is_some(), &max_rounds.unwrap_or(0)],
    )
    .await
}

/// price_to_win(slots_free): `None` for the slots free now (the next one when none is).
pub async fn price_to_win(client: &Client, slots: Option<i32>) -> Result<Jsonb, DbError> {
    jsonb(client, "SELECT compute_auction.price_to_win($1::int)::text", &[&slots]).await
}

/// price_to_win over the last hour: its clearing-price percentiles are /metrics' price gauges.
pub async fn prices_last_hour(client: &Client) -> Result<Jsonb, DbError> {
    jsonb(client, "SELECT compute_auction.price_to_win(NULL, '1 hour')::text", &[]).await
}

/// Which kind of server answered a read, and how old its data is: what every read endpoint
/// reports as `served_by` and `data_age_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The server is a standby (`pg_is_in_recovery()`).
    pub standby: bool,
    /// 0 on a primary, and on a standby that has replayed everything it has received; else how
    /// long ago the last replayed transaction committed on the primary, in milliseconds.
    pub data_age_ms: i64,
}

impl Provenance {
    pub fn served_by(&self) -> &'static str {
        if self.standby {
            "standby"
        } else {
            "primary"
        }
    }

    /// `body`, a JSON object as PostgreSQL rendered it, with `served_by` and `data_age_ms` first
    /// (spliced into the text, so a large result is never parsed again).
    pub fn stamp(&self, body: &str) -> String {
        let keys = format!(r#"{{"served_by": "{}", "data_age_ms": {}"#, self.served_by(), self.data_age_ms);
        match body.trim_start().strip_prefix('{') {
            Some(rest) if rest.trim_start().starts_with('}') => format!("{keys}{rest}"),
            Some(rest) => format!("{keys}, {rest}"),
            None => body.to_string(),
        }
    }
}

const PROVENANCE: &str = "
SELECT pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery()
                 OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(greatest(0, (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
                                       * 1000)::bigint), 0)
       END";

pub async fn provenance(client: &Client) -> Result<Provenance, DbError> {
    let row = client.query_one(PROVENANCE, &[]).await?;
    Ok(Provenance { standby: row.try_get(0)?, data_age_ms: row.try_get(1)? })
}

pub async fn market_summary(client: &Client) -> Result<Jsonb, DbError> {
    jsonb(client, "SELECT compute_auction.market_summary()::text", &[]).await
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRound {
    pub cleared_at: Option<DateTime<Utc>>,
    pub age_seconds: Option<f64>,
}

/// The newest round's time (through the primary key, so O(1)).
pub async fn last_round_time(client: &Client) -> Result<LastRound, DbError> {
    let row = client
        .query_opt(
            "SELECT cleared_at, extract(epoch FROM now() - cleared_at)::float8 \
             FROM compute_auction.compute_auction_rounds ORDER BY round_id DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(match row {
        Some(r) => LastRound { cleared_at: r.try_get(0)?, age_seconds: r.try_get(1)? },
        None => LastRound { cleared_at: None, age_seconds: None },
    })
}

pub async fn extension_version(client: &Client) -> Result<Option<String>, DbError> {
    let row =
        client.query_opt("SELECT extversion::text FROM pg_extension WHERE extname = 'compute_auction'", &[]).await?;
    Ok(match row {
        Some(r) => r.try_get(0)?,
        None => None,
    })
}

/// The oldest compute_auction extension this driver works with: it calls functions (and reads
/// result fields) that earlier versions lack, so it refuses to run against them rather than
/// failing call by call.
pub const MIN_EXTENSION_VERSION: &str = "0.2.0";

/// Whether extension version `found` is at least `min`, comparing dot-separated numbers ("0.10.0"
/// is after "0.9.1"); a version that is not such numbers is not known to be new enough.
pub fn version_at_least(found: &str, min: &str) -> bool {
    fn parts(v: &str) -> Option<Vec<u64>> {
        v.trim().split('.').map(|p| p.parse::<u64>().ok()).collect()
    }
    match (parts(found), parts(min)) {
        (Some(mut f), Some(mut m)) => {
            let n = f.len().max(m.len());
            f.resize(n, 0);
            m.resize(n, 0);
            f >= m
        }
        _ => false,
    }
}

/// The start-up check of `serve` and `clear`: Ok(version) when this database has the extension
/// at MIN_EXTENSION_VERSION or later; Ok(Err(message)) when it lacks it or has an older one, the
/// message saying what was found, what is needed and how to upgrade; Err when the database
/// could not be asked.
pub async fn check_extension_version(client: &Client) -> Result<Result<String, String>, DbError> {
    Ok(match extension_version(client).await? {
        Some(v) if version_at_least(&v, MIN_EXTENSION_VERSION) => Ok(v),
        Some(v) => Err(format!(
            "the compute_auction extension in this database is version {v}, and this driver needs version \
             {MIN_EXTENSION_VERSION} or later: install the new release on the database server, then, as a \
             superuser in this database, run ALTER EXTENSION compute_auction UPDATE (README \"Upgrading\"), \
             and start the driver again"
        )),
        None => Err(format!(
            "the compute_auction extension is not installed in this database, and this driver needs version \
             {MIN_EXTENSION_VERSION} or later: CREATE EXTENSION compute_auction (as a superuser), then start \
             the driver again"
        )),
    })
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PriceBucket {
    pub bucket_start: DateTime<Utc>,
    pub rounds: i64,
    pub avg_price_tokens: Option<i64>,
    pub min_price_tokens: Option<i64>,
    pub max_price_tokens: Option<i64>,
    pub slots_filled: i64,
    pub slots_offered: i64,
}

/// Where a `price_history` window starts.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    /// At this time.
    At(DateTime<Utc>),
    /// This many whole hours before the statement's `now()`: the window is then a whole number of
    /// hours to the microsecond, so a day in 96 buckets has 15-minute buckets on the quarter-hours,
    /// which price_history reads whole from its per-quarter-hour summary.
    HoursAgo(i32),
}

/// price_history's columns from the window that starts at `$since`.
macro_rules! price_history_sql {
    ($since:literal) => {
        concat!(
            "SELECT bucket_start, rounds::bigint, avg_price_tokens::bigint, min_price_tokens::bigint, \
                    max_price_tokens::bigint, slots_filled::bigint, slots_offered::bigint \
             FROM compute_auction.price_history(",
            $since,
            ", $2::int) ORDER BY bucket_start"
        )
    };
}

pub async fn price_history(client: &Client, since: Since, buckets: i32) -> Result<Vec<PriceBucket>, DbError> {
    let rows = match since {
        Since::At(t) => client.query(price_history_sql!("$1::timestamptz"), &[&t, &buckets]).await?,
        Since::HoursAgo(h) => {
            client.query(price_history_sql!("now() - make_interval(hours => $1::int)"), &[&h, &buckets]).await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(PriceBucket {
            bucket_start: r.try_get(0)?,
            rounds: r.try_get::<_, Option<i64>>(1)?.unwrap_or(0),
            avg_price_tokens: r.try_get(2)?,
            min_price_tokens: r.try_get(3)?,
            max_price_tokens: r.try_get(4)?,
            slots_filled: r.try_get::<_, Option<i64>>(5)?.unwrap_or(0),
            slots_offered: r.try_get::<_, Option<i64>>(6)?.unwrap_or(0),
        });
    }
    Ok(out)
}

pub async fn db_now(client: &Client) -> Result<DateTime<Utc>, DbError> {
    Ok(client.query_one("SELECT now()", &[]).await?.try_get(0)?)
}

#[derive(Debug, Clone, Serialize)]
pub struct PricedRound {
    pub round_id: i64,
    pub cleared_at: DateTime<Utc>,
    pub clearing_price_tokens: i64,
}

/// The newest round that filled a slot, looking back at most `lookback`
/// rounds through the primary key (so the cost is bounded).
pub async fn last_priced_round(client: &Client, lookback: i64) -> Result<Option<PricedRound>, DbError> {
    let row = client
        .query_opt(
            "SELECT round_id::bigint, cleared_at, clearing_price_tokens::bigint \
             FROM (SELECT round_id, cleared_at, clearing_price_tokens \
                   FROM compute_auction.compute_auction_rounds ORDER BY round_id DESC LIMIT $1) r \
             WHERE clearing_price_tokens IS NOT NULL ORDER BY round_id DESC LIMIT 1",
            &[&lookback],
        )
        .await?;
    Ok(match row {
        Some(r) => Some(PricedRound {
            round_id: r.try_get(0)?,
            cleared_at: r.try_get(1)?,
            clearing_price_tokens: r.try_get(2)?,
        }),
        None => None,
    })
}

/// The functions a leading driver calls each cycle (and while degraded): it must hold EXECUTE on
/// every one, and USAGE on the schema, before it takes the leader lock.
pub const LEADER_FUNCTIONS: [&str; 5] = [
    "compute_auction.refund_unfilled(timestamp with time zone)",
    "compute_auction.abort_stale(interval, timestamp with time zone)",
    "compute_auction.apply_pending()",
    "compute_auction.clear_round_summary(timestamp with time zone)",
    "compute_auction.allocate_fallback(date, bigint, text)",
];

/// What the connected role lacks to lead, as the GRANT statements that would give it: empty
/// when it may lead. A function that does not exist counts as lacking; the check itself never
/// fails on that.
pub async fn missing_rights(client: &Client) -> Result<Vec<String>, DbError> {
    let fns: &[&str] = &LEADER_FUNCTIONS;
    let rows = client
        .query(
            "SELECT f, p IS NOT NULL AND pg_catalog.has_function_privilege(current_user, p, 'EXECUTE')
               FROM pg_catalog.unnest($1::text[]) AS f,
                    LATERAL (SELECT pg_catalog.to_regprocedure(f) AS p) AS r
             UNION ALL
             SELECT 'schema', pg_catalog.has_schema_privilege(current_user, n.oid, 'USAGE')
               FROM (SELECT (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'compute_auction') AS oid) n
              WHERE n.oid IS NOT NULL",
            &[&fns],
        )
        .await?;
    let mut missing = Vec::new();
    for r in rows {
        let (what, ok): (String, bool) = (r.get(0), r.get(1));
        if !ok {
            missing.push(if what == "schema" {
                "GRANT USAGE ON SCHEMA compute_auction".to_string()
            } else {
                format!("GRANT EXECUTE ON FUNCTION {what}")
            });
        }
    }
    Ok(missing)
}

/// Whether a failed step means this role may not run the market (a missing privilege, or a
/// function it cannot see): the leader then steps down, so that another driver can lead.
pub fn is_rights_error(e: &DbError) -> bool {
    matches!(e.code(), Some("42501") | Some("42883"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_config_takes_libpq_standby_attrs() {
        use tokio_postgres::config::TargetSessionAttrs;
        for url in [
            "postgres://u@h1,h2/db?target_session_attrs=prefer-standby",
            "postgres://u@h1,h2/db?connect_timeout=2&target_session_attrs=standby",
            "host=h1,h2 dbname=db target_session_attrs=prefer-standby",
        ] {
            let c = parse_read_config(url).unwrap();
            assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::ReadOnly, "{url}");
            assert_eq!(c.get_hosts().len(), 2, "{url}");
        }
        let c = parse_read_config("postgres://u@h1/db?target_session_attrs=read-write&application_name=x").unwrap();
        assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert_eq!(c.get_application_name(), Some("x"));
        assert!(parse_read_config("postgres://u@h1/db?target_session_attrs=bogus").is_err());
    }

    #[test]
    fn provenance_stamps_the_object_it_is_given() {
        let p = Provenance { standby: true, data_age_ms: 42 };
        assert_eq!(p.stamp(r#"{"a": 1}"#), r#"{"served_by": "standby", "data_age_ms": 42, "a": 1}"#);
        assert_eq!(p.stamp("{}"), r#"{"served_by": "standby", "data_age_ms": 42}"#);
        let primary = Provenance { standby: false, data_age_ms: 0 };
        let stamped: Value = serde_json::from_str(&primary.stamp(r#"{"bids": [], "asks": []}"#)).unwrap();
        assert_eq!(stamped["served_by"], "primary");
        assert_eq!(stamped["data_age_ms"], 0);
        assert_eq!(stamped["bids"], serde_json::json!([]));
        // not an object: left alone (the caller never passes one)
        assert_eq!(p.stamp("null"), "null");
    }

    #[test]
    fn unavailable_codes() {
        for c in ["08006", "08001", "57P01", "57P03", "53300", "3D000", "28P01"] {
            assert!(sqlstate_is_unavailable(c), "{c}");
        }
        for c in ["P0002", "22023", "23505", "42883", "40001", "57014", "XX000"] {
            assert!(!sqlstate_is_unavailable(c), "{c}");
        }
    }

    #[test]
    fn config_defaults() {
        let c = parse_config("postgres://u@localhost:5432/db").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(c.get_application_name(), Some(APPLICATION_NAME));
        let c = parse_config("host=/tmp dbname=x connect_timeout=2 application_name=me").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(c.get_application_name(), Some("me"));
        assert!(parse_config("postgres://u@h:notaport/db").is_err());
    }

    #[test]
    fn extension_versions() {
        assert!(version_at_least("0.2.0", MIN_EXTENSION_VERSION));
        assert!(version_at_least("0.2.1", "0.2.0"));
        assert!(version_at_least("0.10.0", "0.9.1"));
        assert!(version_at_least("1.0", "0.2.0"));
        assert!(version_at_least("0.2", "0.2.0"));
        assert!(!version_at_least("0.1.0", MIN_EXTENSION_VERSION));
        assert!(!version_at_least("0.1.9", "0.2.0"));
        assert!(!version_at_least("0.2.0-dev", "0.2.0"));
        assert!(!version_at_least("", "0.2.0"));
    }

    #[test]
    fn clear_round_summary_parses() {
        let text = r#"{"round": {"round_id": 7, "cleared_at": "2026-12-01T15:26:09.992499+00:00", "duration_ms": 6.5,
            "slots_filled": 1, "bids_eligible": 2, "slots_offered": 1, "clearing_price_tokens": 50},
            "winners": [{"bid_id": 1, "slot_id": "s1", "task_id": "t1", "bidder_id": "a", "clearing_price_tokens": 50}]}"#;
        let o: ClearOutcome = serde_json::from_str(text).unwrap();
        assert_eq!(o.round.round_id, 7);
        assert_eq!(o.round.clearing_price_tokens, Some(50));
        assert_eq!(o.assignments.len(), 1);
        assert_eq!(o.assignments[0].slot_id, "s1");
        // a round with no price and no winners
        let text = r#"{"round": {"round_id": 8, "cleared_at": "2026-12-01T15:26:10Z", "duration_ms": 0.3,
            "slots_filled": 0, "bids_eligible": 0, "slots_offered": 0, "clearing_price_tokens": null}, "winners": []}"#;
        let o: ClearOutcome = serde_json::from_str(text).unwrap();
        assert_eq!(o.round.clearing_price_tokens, None);
        assert!(o.assignments.is_empty());
        // a required field missing is an error, not a default
        assert!(serde_json::from_str::<ClearOutcome>(r#"{"round": {"round_id": 8}, "winners": []}"#).is_err());
    }

    #[test]
    fn unreplicated_commit_warning() {
        // PostgreSQL 15's words (syncrep.c): a COMMIT whose wait for the standby was cancelled,
        // or interrupted by a termination
        let detail =
            Some("The transaction has already committed locally, but might not have been replicated to the standby.");
        assert!(is_unreplicated_commit_warning(
            "canceling wait for synchronous replication due to user request",
            detail
        ));
        assert!(is_unreplicated_commit_warning(
            "canceling the wait for synchronous replication and terminating connection due to administrator command",
            detail
        ));
        assert!(!is_unreplicated_commit_warning("there is no transaction in progress", None));
        assert!(!is_unreplicated_commit_warning("canceling statement due to statement timeout", Some("")));
    }

    #[test]
    fn in_doubt_is_never_success() {
        let lost = DbError::InDoubt { message: "connection broke".into(), connection_lost: true };
        assert!(lost.is_in_doubt() && lost.is_unavailable(), "a lost connection also means: reconnect");
        let warned = DbError::InDoubt { message: "might not have been replicated".into(), connection_lost: false };
        assert!(warned.is_in_doubt() && !warned.is_unavailable());
        assert_eq!(warned.code(), None);
        assert!(warned.to_string().starts_with("commit in doubt: "));
        assert!(!DbError::Unavailable("x".into()).is_in_doubt());
    }

    #[test]
    fn multi_host_uri() {
        // pg_autoctl show uri's form: every node, and only a writable one will do
        let c = parse_config(
            "postgres://op@10.0.0.1:5432,10.0.0.2:5433/market?target_session_attrs=read-write&sslmode=prefer",
        )
        .unwrap();
        assert_eq!(c.get_hosts().len(), 2);
        assert_eq!(c.get_ports(), &[5432, 5433]);
        assert_eq!(c.get_target_session_attrs(), tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }

    #[test]
    fn error_display() {
        let e = DbError::Sql { code: "P0002".into(), message: "no bid 7".into(), detail: None, hint: Some("h".into()) };
        assert_eq!(e.to_string(), "no bid 7 (SQLSTATE P0002); hint: h");
        assert_eq!(e.code(), Some("P0002"));
        assert!(!e.is_unavailable());
        assert!(DbError::Unavailable("x".into()).is_unavailable());
    }
}
