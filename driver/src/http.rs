//! The HTTP server: read-only JSON API, /healthz, /metrics, /openapi.yaml
//! and the /resources dashboard. Every database read goes through the pool.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::{Object, Pool};
use serde_json::{json, Value};
use tokio::time::timeout;

use compute_auction_core::limits::MAX_ORDER_BOOK_DEPTH;

use crate::dashboard;
use crate::db::{self, DbError};
use crate::metrics::Metrics;
use crate::scheduler;

pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

/// Default `depth` of the order-book endpoint.
pub const DEFAULT_DEPTH: u32 = 100;
/// Largest `hours` of the stats endpoint (30 days).
pub const MAX_HOURS: f64 = 720.0;
/// `max_rounds` of the stats endpoint when the request gives none, and the most it passes on
/// (larger values are capped to it).
pub const DEFAULT_MAX_ROUNDS: i32 = 1000;
pub const MAX_ROUNDS_CAP: i32 = 10_000;

const POOL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for its database work (its request timeout).
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// statement_timeout of the pool's sessions: under QUERY_TIMEOUT, so the server cancels a
/// statement before the request gives up on it, and none outlives its request.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(14);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const METRICS_DB_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a read waits for a free connection of the read database's pool (all busy) before it
/// reads from the primary instead; a busy pool is no failure of the read database.
pub const READ_POOL_WAIT: Duration = Duration::from_secs(1);
/// After the read database failed, reads go to the primary for this long before trying it again.
const READ_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The read database of `serve --read-database-url` (a standby, usually): its pool, and whether
/// reads currently fall back to the primary because it failed.
pub struct ReadDatabase {
    /// Built with `db::make_pool_with(.., READ_POOL_WAIT, <connect budget>)`.
    pub pool: Pool,
    down: std::sync::Mutex<Option<(tokio::time::Instant, String)>>,
}

impl ReadDatabase {
    pub fn new(pool: Pool) -> Self {
        ReadDatabase { pool, down: std::sync::Mutex::new(None) }
    }

    /// The budget of opening one connection to a read database of `hosts` hosts, each given
    /// `connect_timeout`: every host gets its full try.
    pub fn create_budget(hosts: usize, connect_timeout: Duration) -> Duration {
        connect_timeout.saturating_mul(hosts.max(1) as u32) + Duration::from_secs(1)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<(tokio::time::Instant, String)>> {
        self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why reads go to the primary right now, or None while the read database serves them.
    pub fn fallback_reason(&self) -> Option<String> {
        self.state().as_ref().map(|(_, why)| why.clone())
    }

    /// Whether to try the read database for this read (it is up, or its back-off has passed).
    fn worth_trying(&self) -> bool {
        self.state().as_ref().is_none_or(|(since, _)| since.elapsed() >= READ_RETRY_AFTER)
    }

    fn failed(&self, why: String) {
        let mut g = self.state();
        if g.is_none() {
            tracing::warn!(reason = %why, "read database unavailable: reading from the primary");
        }
        *g = Some((tokio::time::Instant::now(), why));
    }

    fn answered(&self) {
        if self.state().take().is_some() {
            tracing::info!("read database answers again: reads go to it");
        }
    }
}

pub struct AppState {
    /// The primary: clearing's database, and every read when there is no read database.
    pub pool: Pool,
    /// `--read-database-url`: reads (order book, bid status, stats, price advice, dashboard) go
    /// here while it answers.
    pub read: Option<ReadDatabase>,
    pub metrics: Arc<Metrics>,
    pub max_depth: u32,
    pub interval: Duration,
    pub fallback_after: u32,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/resources") }))
        .route("/resources", get(resources_page))
        .route("/api/compute-auction/dashboard", get(dashboard_data))
        .route("/api/compute-auction/order-book", get(order_book))
        .route("/api/compute-auction/bids/{id}", get(bid_status))
        .route("/api/compute-auction/tasks/{task_id}", get(task_status))
        .route("/api/compute-auction/accounts/{account_id}", get(wallet))
        .route("/api/compute-auction/stats", get(stats))
        .route("/api/compute-auction/price-to-win", get(price_to_win))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

// --------------------------------------------------------------- errors ---

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match &e {
            DbError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {m}"))
            }
            DbError::Sql { code, message, .. } => match code.as_str() {
                "P0002" => ApiError::new(StatusCode::NOT_FOUND, message.clone()),
                // query_canceled (statement_timeout), lock_not_available, serialization/deadlock
                "57014" | "55P03" | "40001" | "40P01" => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database busy: {message}"))
                }
                c if c.starts_with("22") => ApiError::bad_request(message.clone()),
                _ => {
                    tracing::error!(error = %e, "unexpected database error in API");
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("database error: {message}"))
                }
            },
            // the API only reads; a commit in doubt is the database failing over
            DbError::InDoubt { message, .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {message}"))
            }
            DbError::Internal(m) => {
                tracing::error!(error = %m, "internal error in API");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m.clone())
            }
        }
    }
}

// ------------------------------------------------------ param parsing ---

fn query_map(q: Result<Query<HashMap<String, String>>, QueryRejection>) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m).map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

/// `depth`: an integer in 0..=max; absent means min(100, max).
pub fn parse_depth(raw: Option<&str>, max: u32) -> Result<i32, ApiError> {
    let max = max.min(MAX_ORDER_BOOK_DEPTH.unsigned_abs());
    // max <= MAX_ORDER_BOOK_DEPTH fits an i32
    let Some(raw) = raw else { return Ok(i32::try_from(DEFAULT_DEPTH.min(max)).unwrap_or(i32::MAX)) };
    let msg = || ApiError::bad_request(format!("depth must be an integer between 0 and {max}"));
    let v: i64 = raw.trim().parse().map_err(|_| msg())?;
    if !(0..=i64::from(max)).contains(&v) {
        return Err(msg());
    }
    Ok(v as i32)
}

/// `hours`: a number in (0, 720]; absent means 24.
pub fn parse_hours(raw: Option<&str>) -> Result<f64, ApiError> {
    let Some(raw) = raw else { return Ok(24.0) };
    let msg = || ApiError::bad_request(format!("hours must be a number greater than 0 and at most {MAX_HOURS}"));
    let v: f64 = raw.trim().parse().map_err(|_| msg())?;
    if !v.is_finite() || v <= 0.0 || v > MAX_HOURS {
        return Err(msg());
    }
    Ok(v)
}

/// `include_rounds`: `true` or `false`; absent means false (no per-round list).
pub fn parse_include_rounds(raw: Option<&str>) -> Result<bool, ApiError> {
    match raw.map(str::trim) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::bad_request("include_rounds must be true or false")),
    }
}

/// `max_rounds`: a non-negative integer, capped at MAX_ROUNDS_CAP; absent means
/// DEFAULT_MAX_ROUNDS.
pub fn parse_max_rounds(raw: Option<&str>) -> Result<i32, ApiError> {
    let Some(raw) = raw else { return Ok(DEFAULT_MAX_ROUNDS) };
    let t = raw.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request("max_rounds must be a non-negative integer"));
    }
    // all digits: only too many of them fails to parse, and that is above the cap too
    let v = t.parse::<u64>().unwrap_or(u64::MAX);
    Ok(i32::try_from(v.min(MAX_ROUNDS_CAP as u64)).unwrap_or(MAX_ROUNDS_CAP))
}

/// `slots` of price-to-win: an integer in 1..=MAX_ORDER_BOOK_DEPTH (price_to_win's slots_free);
/// absent means the slots free now (NULL).
pub fn parse_slots(raw: Option<&str>) -> Result<Option<i32>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let msg = || ApiError::bad_request(format!("slots must be an integer between 1 and {MAX_ORDER_BOOK_DEPTH}"));
    let v: i64 = raw.trim().parse().map_err(|_| msg())?;
    if !(1..=i64::from(MAX_ORDER_BOOK_DEPTH)).contains(&v) {
        return Err(msg());
    }
    Ok(Some(i32::try_from(v).map_err(|_| msg())?))
}

/// A bid id: a 64-bit integer.
pub fn parse_bid_id(raw: &str) -> Result<i64, ApiError> {
    raw.trim().parse::<i64>().map_err(|_| ApiError::bad_request("bid id must be a 64-bit integer"))
}

// ------------------------------------------------------------ helpers ---

async fn client(pool: &Pool) -> Result<Object, ApiError> {
    match timeout(POOL_TIMEOUT, pool.get()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(DbError::from(e).into()),
        Err(_) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable: timed out getting a connection"))
        }
    }
}

/// Runs a request's database work on `c` for at most QUERY_TIMEOUT; when the request gives up,
/// whatever `c` is still running on the server is cancelled (the pool's statement_timeout
/// bounds each statement as well).
async fn timed<T>(c: &tokio_postgres::Client, fut: impl Future<Output = Result<T, DbError>>) -> Result<T, ApiError> {
    match within(c, QUERY_TIMEOUT, fut).await {
        Some(r) => r.map_err(ApiError::from),
        None => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database did not answer in time")),
    }
}

/// `fut` (work on `c`) for at most `limit`; None when it did not finish, and then what `c` is
/// still running on the server is cancelled.
async fn within<T>(c: &tokio_postgres::Client, limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let cancel = c.cancel_token();
    match timeout(limit, fut).await {
        Ok(r) => Some(r),
        Err(_) => {
            tokio::spawn(async move {
                if let Err(e) = cancel.cancel_query(tokio_postgres::NoTls).await {
                    tracing::debug!(error = %e, "could not cancel a timed-out API query");
                }
            });
            None
        }
    }
}

/// A jsonb result as the body, as PostgreSQL rendered it, with where it was read.
fn raw_json(body: db::Jsonb, from: db::Provenance) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], from.stamp(&body.0)).into_response()
}

/// A connection of the read database for one read, when there is one and it gives one: None when
/// its pool stays busy for READ_POOL_WAIT, or it cannot connect within its budget (every host's
/// connect_timeout); then the read goes to the primary (a connect failure also leaves the read
/// database alone for READ_RETRY_AFTER).
async fn read_database_connection(st: &AppState) -> Option<Object> {
    let r = st.read.as_ref().filter(|r| r.worth_trying())?;
    pooled(r, r.pool.get().await)
}

/// A connection the read database's pool gave, or None: a busy pool (every connection in use)
/// is no failure of the read database; any other error is recorded as one.
fn pooled(r: &ReadDatabase, got: Result<Object, deadpool_postgres::PoolError>) -> Option<Object> {
    match got {
        Ok(c) => Some(c),
        Err(deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => None,
        Err(e) => {
            r.failed(DbError::from(e).to_string());
            None
        }
    }
}

/// SQLSTATEs from the read database after which this read is done on the primary: a recovery
/// conflict (40001), its statement_timeout (57014), a row it has not replayed yet (P0002: a
/// bid placed a moment ago), and a library it lacks or that does not match the primary's
/// catalog (42883, class 58: a standby whose packages an upgrade has not reached yet, which
/// also leaves it alone for READ_RETRY_AFTER).
fn ask_the_primary(e: &DbError) -> Option<bool> {
    match e.code()? {
        "40001" | "57014" | "P0002" => Some(false),
        code if code == "42883" || code.starts_with("58") => Some(true),
        _ => None,
    }
}

/// Probes the read database for /healthz and /metrics, and records what it found (so their
/// `reads` state is current without read traffic): its data_age_ms, or None.
async fn probe_read_database(r: &ReadDatabase, limit: Duration) -> Option<i64> {
    let started = tokio::time::Instant::now();
    let c = pooled(r, timeout(limit, r.pool.get()).await.ok()?)?;
    match within(&c, limit.saturating_sub(started.elapsed()), db::provenance(&c)).await {
        Some(Ok(p)) => {
            r.answered();
            Some(p.data_age_ms)
        }
        Some(Err(e)) if e.is_unavailable() => {
            r.failed(e.to_string());
            None
        }
        _ => None,
    }
}

/// `read!(st, |c| work)`: runs a read endpoint's database work (`work`, a future using the
/// connection `c`) and evaluates to `(result, db::Provenance)`, which server answered and how
/// old its data is. It reads from the read database while that answers, else from the primary:
/// a read database that cannot connect, loses its connection, or does not answer in time is left
/// alone for READ_RETRY_AFTER and the read is done on the primary at once, so a request never
/// fails because a standby is down; the errors of `ask_the_primary` are read again on the
/// primary too. Any other error is the read's answer. (A macro, not an async closure: the
/// handlers' futures must stay Send.)
macro_rules! read {
    ($st:expr, |$c:ident| $work:expr) => {{
        let st: &AppState = &$st;
        let mut answer = None;
        if let Some(conn) = read_database_connection(st).await {
            let $c: &tokio_postgres::Client = &conn;
            let r = st.read.as_ref().expect("a read database connection comes from a read database");
            match within($c, QUERY_TIMEOUT, async { tokio::try_join!($work, db::provenance($c)) }).await {
                Some(Ok(v)) => {
                    r.answered();
                    answer = Some(v);
                }
                Some(Err(e)) if e.is_unavailable() => r.failed(e.to_string()),
                Some(Err(e)) => match ask_the_primary(&e) {
                    Some(leave_alone) => {
                        tracing::debug!(error = %e, "the read database could not answer this read; reading from the primary");
                        if leave_alone {
                            r.failed(e.to_string());
                        }
                    }
                    None => return Err(ApiError::from(e)),
                },
                None => r.failed("the read database did not answer in time".into()),
            }
        }
        match answer {
            Some(v) => v,
            None => {
                let conn = client(&st.pool).await?;
                let $c: &tokio_postgres::Client = &conn;
                timed($c, async { tokio::try_join!($work, db::provenance($c)) }).await?
            }
        }
    }};
}

fn driver_status(st: &AppState) -> Value {
    json!({
        "leader": st.metrics.is_leader(),
        "degraded": st.metrics.is_degraded(),
        "consecutive_failures": st.metrics.consecutive_failures(),
        "interval_seconds": st.interval.as_secs_f64(),
    })
}

// ----------------------------------------------------------- handlers ---

async fn order_book(
    State(st): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    let depth = parse_depth(q.get("depth").map(String::as_str), st.max_depth)?;
    let (book, from) = read!(st, |c| db::order_book(c, depth));
    Ok(raw_json(book, from))
}

async fn bid_status(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(format!("invalid bid id: {}", e.body_text())))?;
    let id = parse_bid_id(&id)?;
    let (status, from) = read!(st, |c| db::bid_status(c, id));
    if status.is_null() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no bid {id}")));
    }
    Ok(raw_json(status, from))
}

/// A task or account id from the path: 1 to 256 characters, as the extension takes them.
pub fn parse_id(what: &str, raw: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = raw.map_err(|e| ApiError::bad_request(format!("invalid {what}: {}", e.body_text())))?;
    let chars = id.chars().count();
    if chars == 0 || chars > compute_auction_core::limits::MAX_ID_CHARS {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to {} characters",
            compute_auction_core::limits::MAX_ID_CHARS
        )));
    }
    Ok(id)
}

async fn task_status(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id("task id", id)?;
    let (status, from) = read!(st, |c| db::task_status(c, &id));
    Ok(raw_json(status, from))
}

async fn wallet(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id("account id", id)?;
    let (w, from) = read!(st, |c| db::wallet(c, &id));
    Ok(raw_json(w, from))
}

async fn stats(
    State(st): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    let hours = parse_hours(q.get("hours").map(String::as_str))?;
    let include_rounds = parse_include_rounds(q.get("include_rounds").map(String::as_str))?;
    let max_rounds = parse_max_rounds(q.get("max_rounds").map(String::as_str))?;
    let max_rounds = include_rounds.then_some(max_rounds);
    let (stats, from) = read!(st, |c| db::stats(c, hours, max_rounds));
    Ok(raw_json(stats, from))
}

async fn price_to_win(
    State(st): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    let slots = parse_slots(q.get("slots").map(String::as_str))?;
    let (advice, from) = read!(st, |c| db::price_to_win(c, slots));
    Ok(raw_json(advice, from))
}

/// The dashboard's bundle, with where it was read (`served_by`, `data_age_ms`).
async fn dashboard_bundle(st: &AppState) -> Result<Value, ApiError> {
    let driver = driver_status(st);
    let (mut v, from) = read!(*st, |c| dashboard::collect(c, driver.clone()));
    v["served_by"] = json!(from.served_by());
    v["data_age_ms"] = json!(from.data_age_ms);
    Ok(v)
}

async fn dashboard_data(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let v = dashboard_bundle(&st).await?;
    let mut r = Json(v).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn resources_page(State(st): State<Arc<AppState>>) -> Response {
    let data = match dashboard_bundle(&st).await {
        Ok(v) => v,
        Err(e) => json!({ "error": e.message }),
    };
    let mut r = Html(dashboard::render_page(&data)).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Per process: 200 for a leader that is clearing, or a follower that sees a live leader; 503
/// otherwise (database unreachable, clearing failing or stale, missing grants, no leader seen),
/// with the reason. Every answer carries `reads`: where the read endpoints read (a read
/// database that is down makes reads fall back to the primary, and says so here; the market
/// still works, so that alone is no 503).
async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let (status, mut body) = health(&st).await;
    if let Some(r) = &st.read {
        probe_read_database(r, HEALTH_TIMEOUT).await;
    }
    body["reads"] = reads_status(&st);
    let mut r = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}

fn reads_status(st: &AppState) -> Value {
    match &st.read {
        None => json!({"read_database": false, "reading_from": "primary"}),
        Some(r) => match r.fallback_reason() {
            None => json!({"read_database": true, "reading_from": "read_database"}),
            Some(why) => json!({"read_database": true, "reading_from": "primary", "reason": why}),
        },
    }
}

async fn health(st: &AppState) -> (StatusCode, Value) {
    let leader = st.metrics.is_leader();
    let failures = st.metrics.consecutive_failures();
    if !leader {
        let (status, reason) = match st.metrics.not_leading() {
            Some(why) => ("not_leading", why),
            None if st.metrics.leader_seen.load(Relaxed) => {
                let body =
                    json!({"status": "ok", "role": "follower", "leader": false, "consecutive_failures": failures});
                return (StatusCode::OK, body);
            }
            None => ("no_leader", "this driver does not lead and saw no other driver holding the leader lock".into()),
        };
        return unhealthy(json!({
            "status": status, "role": "follower", "leader": false, "consecutive_failures": failures,
            "last_round_at": null, "reason": reason,
        }));
    }
    let started = tokio::time::Instant::now();
    let probe = match timeout(HEALTH_TIMEOUT, st.pool.get()).await {
        Ok(Ok(c)) => {
            let left = HEALTH_TIMEOUT.saturating_sub(started.elapsed());
            within(&c, left, db::last_round_time(&c)).await.ok_or(())
        }
        Ok(Err(e)) => Ok(Err(DbError::from(e))),
        Err(_) => Err(()),
    };
    match probe {
        Ok(Ok(last)) => {
            let status = scheduler::health(failures, st.fallback_after, last.age_seconds, st.interval);
            let mut body = json!({
                "status": status,
                "role": "leader",
                "last_round_at": last.cleared_at,
                "last_round_age_seconds": last.age_seconds,
                "leader": leader,
                "consecutive_failures": failures,
            });
            if status == scheduler::Health::Ok {
                return (StatusCode::OK, body);
            }
            body["reason"] = json!(format!(
                "clearing is failing or stale: {failures} consecutive failures, last round {} s ago",
                last.age_seconds.map_or("never".into(), |a| format!("{a:.0}"))
            ));
            unhealthy(body)
        }
        Ok(Err(e)) => unavailable_health(leader, failures, e.to_string()),
        Err(_) => unavailable_health(leader, failures, "database did not answer within 2 s".into()),
    }
}

fn unhealthy(body: Value) -> (StatusCode, Value) {
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

fn unavailable_health(leader: bool, failures: u64, error: String) -> (StatusCode, Value) {
    unhealthy(json!({
        "status": "unavailable",
        "last_round_at": null,
        "leader": leader,
        "consecutive_failures": failures,
        "error": error.clone(),
        "reason": error,
    }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let started = tokio::time::Instant::now();
    let (market, prices) = match timeout(METRICS_DB_TIMEOUT, st.pool.get()).await {
        Ok(Ok(c)) => {
            let left = METRICS_DB_TIMEOUT.saturating_sub(started.elapsed());
            let market = within(&c, left, db::market_summary(&c)).await.and_then(|r| r.and_then(|j| j.parse()).ok());
            let left = METRICS_DB_TIMEOUT.saturating_sub(started.elapsed());
            let prices = match market {
                Some(_) => {
                    within(&c, left, db::prices_last_hour(&c)).await.and_then(|r| r.and_then(|j| j.parse()).ok())
                }
                None => None,
            };
            (market, prices)
        }
        _ => (None, None),
    };
    let reads = match &st.read {
        None => None,
        Some(r) => {
            let data_age_ms = probe_read_database(r, METRICS_DB_TIMEOUT).await;
            Some(crate::metrics::Reads { on_primary: r.fallback_reason().is_some(), data_age_ms })
        }
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        st.metrics.render(market.as_ref(), prices.as_ref(), reads),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/yaml; charset=utf-8"))], OPENAPI_YAML)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_validation() {
        assert_eq!(parse_depth(None, 1000).unwrap(), 100);
        assert_eq!(parse_depth(None, 50).unwrap(), 50);
        assert_eq!(parse_depth(Some("0"), 1000).unwrap(), 0);
        assert_eq!(parse_depth(Some("1000"), 1000).unwrap(), 1000);
        assert_eq!(parse_depth(Some(" 7 "), 1000).unwrap(), 7);
        for bad in ["-1", "1001", "abc", "", "1.5", "1e3", "99999999999999999999", "NaN"] {
            let e = parse_depth(Some(bad), 1000).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.contains("between 0 and 1000"), "{}", e.message);
        }
        // never more than the extension's own limit
        assert!(parse_depth(Some("10001"), u32::MAX).is_err());
    }

    #[test]
    fn hours_validation() {
        assert_eq!(parse_hours(None).unwrap(), 24.0);
        assert_eq!(parse_hours(Some("1")).unwrap(), 1.0);
        assert_eq!(parse_hours(Some("0.5")).unwrap(), 0.5);
        assert_eq!(parse_hours(Some("720")).unwrap(), 720.0);
        for bad in ["0", "-1", "720.001", "abc", "", "NaN", "inf", "-inf", "1e400"] {
            assert_eq!(parse_hours(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn slots_validation() {
        assert_eq!(parse_slots(None).unwrap(), None);
        assert_eq!(parse_slots(Some("1")).unwrap(), Some(1));
        assert_eq!(parse_slots(Some(" 10000 ")).unwrap(), Some(10_000));
        for bad in ["0", "-1", "10001", "1.5", "abc", "", "99999999999999999999999"] {
            assert_eq!(parse_slots(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn stats_rounds_parameters() {
        assert!(!parse_include_rounds(None).unwrap());
        assert!(parse_include_rounds(Some("true")).unwrap());
        assert!(!parse_include_rounds(Some("false")).unwrap());
        for bad in ["", "1", "yes", "TRUE"] {
            assert_eq!(parse_include_rounds(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(parse_max_rounds(None).unwrap(), 1000);
        assert_eq!(parse_max_rounds(Some("0")).unwrap(), 0);
        assert_eq!(parse_max_rounds(Some("10000")).unwrap(), 10_000);
        assert_eq!(parse_max_rounds(Some("20000")).unwrap(), 10_000);
        assert_eq!(parse_max_rounds(Some("99999999999999999999999")).unwrap(), 10_000);
        for bad in ["", "-1", "1.5", "abc", "1e3", "+5"] {
            assert_eq!(parse_max_rounds(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn bid_id_validation() {
        assert_eq!(parse_bid_id("42").unwrap(), 42);
        assert_eq!(parse_bid_id("-3").unwrap(), -3);
        assert_eq!(parse_bid_id(&i64::MAX.to_string()).unwrap(), i64::MAX);
        for bad in ["abc", "", "1.0", "9223372036854775808", "0x10"] {
            assert_eq!(parse_bid_id(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn db_errors_map_to_statuses() {
        let sql = |code: &str| DbError::Sql { code: code.into(), message: "m".into(), detail: None, hint: None };
        assert_eq!(ApiError::from(sql("P0002")).status, StatusCode::NOT_FOUND);
        assert_eq!(ApiError::from(sql("22023")).status, StatusCode::BAD_REQUEST);
        // an undefined function is no "older extension" case any more: the driver checks the
        // extension's version at start-up
        assert_eq!(ApiError::from(sql("42883")).status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ApiError::from(sql("XX000")).status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ApiError::from(DbError::Unavailable("x".into())).status, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A router whose database refuses connections: everything that must not
    /// need the database (parameter validation, routing) still answers.
    fn offline_router() -> Router {
        let cfg = db::parse_config("postgres://nobody@127.0.0.1:1/none?connect_timeout=1").unwrap();
        router(Arc::new(AppState {
            read: None,
            pool: db::make_pool(&cfg, 2, Some(STATEMENT_TIMEOUT)),
            metrics: Arc::new(Metrics::new()),
            max_depth: 1000,
            interval: Duration::from_secs(1),
            fallback_after: 3,
        }))
    }

    async fn get(path: &str) -> (StatusCode, String, String) {
        use tower::ServiceExt;
        let req = axum::http::Request::builder().uri(path).body(axum::body::Body::empty()).unwrap();
        let resp = offline_router().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype =
            resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn bad_parameters_are_400_json_without_touching_the_database() {
        for path in [
            "/api/compute-auction/order-book?depth=-1",
            "/api/compute-auction/order-book?depth=abc",
            "/api/compute-auction/order-book?depth=1001",
            "/api/compute-auction/stats?hours=0",
            "/api/compute-auction/stats?hours=nan",
            "/api/compute-auction/stats?hours=721",
            "/api/compute-auction/stats?include_rounds=yes",
            "/api/compute-auction/stats?include_rounds=true&max_rounds=-1",
            "/api/compute-auction/bids/abc",
            "/api/compute-auction/bids/1.5",
        ] {
            let (status, ctype, body) = get(path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(ctype, "application/json", "{path}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
        }
        // ids longer than the extension takes
        for path in [
            format!("/api/compute-auction/tasks/{}", "x".repeat(257)),
            format!("/api/compute-auction/accounts/{}", "%C3%A9".repeat(257)),
        ] {
            let (status, _, body) = get(&path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn database_down_is_503_json() {
        for path in [
            "/api/compute-auction/order-book",
            "/api/compute-auction/bids/1",
            "/api/compute-auction/tasks/t-1",
            "/api/compute-auction/accounts/alice",
            "/api/compute-auction/stats",
            "/api/compute-auction/price-to-win",
            "/api/compute-auction/dashboard",
        ] {
            let (status, ctype, body) = get(path).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
            assert_eq!(ctype, "application/json");
            assert!(body.contains("database unavailable"), "{path}: {body}");
        }
        let (status, _, body) = get("/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = serde_json::from_str(&body).unwrap();
        // a driver that never reached the database leads nothing and saw no leader
        assert_eq!(v["status"], "no_leader");
        assert_eq!(v["leader"], false);
        assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    }

    #[tokio::test]
    async fn static_routes_answer_offline() {
        let (status, ctype, body) = get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("compute_auction_database_up 0\n"));
        let (status, _, body) = get("/openapi.yaml").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, OPENAPI_YAML);
        let (status, ctype, body) = get("/resources").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/html"));
        assert!(body.contains("database unavailable") && !body.contains("__INITIAL_DATA__"));
        let (status, ctype, body) = get("/no/such/thing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ctype, "application/json");
        assert_eq!(body, r#"{"error":"not found"}"#);
    }

    #[test]
    fn openapi_document_lists_every_route() {
        for path in [
            "/api/compute-auction/order-book:",
            "/api/compute-auction/bids/{id}:",
            "/api/compute-auction/tasks/{task_id}:",
            "/api/compute-auction/accounts/{account_id}:",
            "/api/compute-auction/stats:",
            "/api/compute-auction/price-to-win:",
            "/api/compute-auction/dashboard:",
            "/healthz:",
            "/metrics:",
        ] {
            assert!(OPENAPI_YAML.contains(path), "openapi.yaml lacks {path}");
        }
        assert!(OPENAPI_YAML.starts_with("openapi: 3."));
    }
}
