//! Command line: every flag of every subcommand, with its help text.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use compute_auction_core::limits::MAX_ORDER_BOOK_DEPTH;

/// Keeps a compute_auction market running: clears rounds on a schedule and
/// serves the market's JSON API and the /resources dashboard.
///
/// All market logic lives in the compute_auction PostgreSQL extension; this
/// program only calls its SQL functions. It needs the extension at version
/// 0.2.0 or later: `serve` and `clear` refuse to run against an older one (or
/// none) and say how to upgrade.
///
/// Every option of `serve` and `clear` can also be set by an environment
/// variable, COMPUTE_AUCTION_ and the option's name in capitals with `_` for
/// `-` (--listen: COMPUTE_AUCTION_LISTEN); the database by DATABASE_URL. A
/// flag on the command line wins over its variable.
#[derive(Debug, Parser)]
#[command(name = "compute-auction-driver", version, about, long_about)]
pub struct Cli {
    /// PostgreSQL connection string of the database where the compute_auction
    /// extension is installed (postgres://user:pass@host:port/db or
    /// "host=... dbname=..." key/value form).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the clearing loop (with leader election) and the HTTP server
    /// (JSON API, /healthz, /metrics, /resources dashboard) in one process.
    Serve(ServeArgs),
    /// Run one cycle now (refund_unfilled, abort_stale, apply_pending,
    /// clear_round_summary) without taking the leader lock, and print its
    /// result as JSON.
    Clear(ClearArgs),
    /// Generate a lively demo workload: wallets, slots, bids, claims and
    /// settlements with made-up cost and impact.
    Simulate(SimulateArgs),
    /// Connect and print the installed compute_auction extension version.
    Version,
    /// Print, as JSON, the fields of the extension's results that the driver reads (for the
    /// test suite, which checks each against the real functions).
    #[command(hide = true)]
    Fields,
}

/// Flags shared by everything that runs clearing cycles.
#[derive(Debug, Clone, Args)]
pub struct CycleArgs {
    /// Assignments not settled this long after their round are aborted with a
    /// full refund (passed to compute_auction.abort_stale). Accepts "90s",
    /// "30m", "1h", or plain seconds.
    #[arg(long, env = "COMPUTE_AUCTION_ASSIGNMENT_TIMEOUT", default_value = "1h", value_parser = parse_duration_arg)]
    pub assignment_timeout: Duration,

    /// lock_timeout of each cycle step (refund_unfilled, abort_stale,
    /// apply_pending, clear_round): a step that waits longer than this for a
    /// lock is rolled back, logged, and retried next interval; the other steps
    /// still run.
    #[arg(long, env = "COMPUTE_AUCTION_STEP_LOCK_TIMEOUT", default_value = "2s", value_parser = parse_interval_arg)]
    pub step_lock_timeout: Duration,

    /// statement_timeout of each cycle step (its COMMIT runs with none).
    #[arg(long, env = "COMPUTE_AUCTION_STEP_STATEMENT_TIMEOUT", default_value = "10s", value_parser = parse_interval_arg)]
    pub step_statement_timeout: Duration,
}

impl CycleArgs {
    pub fn step_timeouts(&self) -> crate::db::StepTimeouts {
        crate::db::StepTimeouts { lock: self.step_lock_timeout, statement: self.step_statement_timeout }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub cycle: CycleArgs,

    /// Time between clearing cycles. Accepts "10s", "500ms", "1m", or plain
    /// seconds ("2", "0.5").
    #[arg(long, env = "COMPUTE_AUCTION_INTERVAL", default_value = "10s", value_parser = parse_interval_arg)]
    pub interval: Duration,

    /// Retention: prune the market's finished history older than this (rounds, finished bids
    /// and clears; ledger entries compacted into one checkpoint per account) with
    /// compute_auction.prune_history, once on leading and then every --prune-every, while
    /// leading, on a connection of its own (a prune never delays a round). Accepts "30d",
    /// "12h", or plain seconds. Default: off (nothing is pruned).
    #[arg(long, env = "COMPUTE_AUCTION_RETAIN", value_parser = parse_duration_arg)]
    pub retain: Option<Duration>,

    /// With --retain: time between prunes.
    #[arg(long, env = "COMPUTE_AUCTION_PRUNE_EVERY", default_value = "1h", value_parser = parse_interval_arg)]
    pub prune_every: Duration,

    /// Address the HTTP server listens on.
    #[arg(long, env = "COMPUTE_AUCTION_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest `depth` accepted by GET /api/compute-auction/order-book
    /// (larger values get a 400). At most 10000, the extension's own limit
    /// (compute_auction_core::limits::MAX_ORDER_BOOK_DEPTH).
    #[arg(long, env = "COMPUTE_AUCTION_ORDER_BOOK_MAX_DEPTH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_ORDER_BOOK_DEPTH)))]
    pub order_book_max_depth: u32,

    /// After this many consecutive failed clear_round calls the market is
    /// reported degraded (/healthz, /metrics) and the proportional fallback
    /// allocation is written (see --daily-budget-tokens). A successful round
    /// returns it to normal.
    #[arg(long, env = "COMPUTE_AUCTION_FALLBACK_AFTER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub fallback_after: u32,

    /// Daily token budget split among quests by compute_auction.allocate_fallback
    /// (in proportion to each quest's open bids) when the market is degraded.
    /// Without it, a degraded market is only reported, no fallback allocation
    /// is written.
    #[arg(long, env = "COMPUTE_AUCTION_DAILY_BUDGET_TOKENS", value_parser = clap::value_parser!(i64).range(0..))]
    pub daily_budget_tokens: Option<i64>,

    /// Longest wait between reconnection attempts while the database is
    /// unreachable (retries start fast and double up to this cap).
    #[arg(long, env = "COMPUTE_AUCTION_MAX_BACKOFF", default_value = "5s", value_parser = parse_interval_arg)]
    pub max_backoff: Duration,

    /// Connection string of a database to serve the read endpoints from (order book, bid
    /// status, stats, price advice, the dashboard): a streaming standby of the primary, or
    /// several hosts (e.g. "postgres://h1,h2/db?target_session_attrs=prefer-standby"). Clearing
    /// and every write always use the primary (--database-url). When it is unreachable, reads
    /// fall back to the primary and /healthz says so. Every read answer says where it was read
    /// (`served_by`) and how old the data is (`data_age_ms`). Without it, everything reads from
    /// the primary.
    #[arg(long, env = "COMPUTE_AUCTION_READ_DATABASE_URL", hide_env_values = true)]
    pub read_database_url: Option<String>,

    /// Size of the connection pool of the HTTP API (the clearing cycle has its
    /// own dedicated connection). Its sessions run with a statement_timeout just
    /// under the API's 15 s request timeout.
    #[arg(long, env = "COMPUTE_AUCTION_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=256))]
    pub pool_size: u32,

    /// On SIGTERM/SIGINT, wait at most this long for an in-flight round to
    /// finish; after that the process exits and the database rolls it back.
    #[arg(long, env = "COMPUTE_AUCTION_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_interval_arg)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ClearArgs {
    #[command(flatten)]
    pub cycle: CycleArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Number of agent wallets (sim-agent-NNN).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub agents: u32,

    /// Number of quest wallets (sim-quest-NN); quests bid with an expected value.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub quests: u32,

    /// Number of compute slots (sim-slot-NN) to offer and run.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub slots: u32,

    /// How long to run; 0 means until SIGINT/SIGTERM. Accepts "90s", "5m", or
    /// plain seconds.
    #[arg(long, default_value = "0", value_parser = parse_duration_arg)]
    pub duration: Duration,

    /// Seed of the random generator (same seed, same sequence of decisions).
    /// Defaults to one taken from the clock.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Tokens each new wallet starts with.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub initial_tokens: i64,

    /// Centre of the drifting bid price, in tokens.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(i64).range(10..))]
    pub mean_price: i64,

    /// Average number of bids placed per second.
    #[arg(long, default_value_t = 4.0)]
    pub bids_per_second: f64,

    /// Time between simulation steps (bids, claims, settlements).
    #[arg(long, default_value = "250ms", value_parser = parse_interval_arg)]
    pub tick: Duration,
}

/// Parses "1s", "500ms", "1h 30m" (humantime) or plain (fractional) seconds.
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("invalid duration {t:?}: must be a non-negative number of seconds"));
        }
        if secs > 100.0 * 365.0 * 86_400.0 {
            return Err(format!("invalid duration {t:?}: too large"));
        }
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {t:?}: {e} (examples: 10s, 500ms, 1h, 2.5)"))
}

/// Like [`parse_duration_arg`] but rejects zero (a clearing interval or tick
/// of 0 would spin).
pub fn parse_interval_arg(s: &str) -> Result<Duration, String> {
    let d = parse_duration_arg(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("invalid interval {s:?}: must be at least 10ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_names_the_minimum_extension_version() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains(&format!("version {} or later", crate::db::MIN_EXTENSION_VERSION)), "{help}");
        // the test suite's subcommand stays out of the help
        assert!(!help.contains("fields"), "{help}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_arg("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration_arg("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration_arg("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration_arg("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration_arg("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration_arg("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration_arg("0").unwrap(), Duration::ZERO);
        assert!(parse_duration_arg("").is_err());
        assert!(parse_duration_arg("-1").is_err());
        assert!(parse_duration_arg("NaN").is_err());
        assert!(parse_duration_arg("inf").is_err());
        assert!(parse_duration_arg("soon").is_err());
        assert!(parse_interval_arg("0").is_err());
        assert!(parse_interval_arg("1ms").is_err());
        assert_eq!(parse_interval_arg("10ms").unwrap(), Duration::from_millis(10));
    }

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["x", "--database-url", "postgres://a/b", "serve"]).unwrap();
        let Command::Serve(s) = cli.command else { panic!("not serve") };
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.cycle.assignment_timeout, Duration::from_secs(3600));
        assert_eq!(s.cycle.step_timeouts(), crate::db::StepTimeouts::default());
        assert_eq!(s.order_book_max_depth, 1000);
        assert_eq!(s.fallback_after, 3);
        assert_eq!(s.daily_budget_tokens, None);
        // retention is off unless asked for
        assert_eq!(s.retain, None);
        assert_eq!(s.prune_every, Duration::from_secs(3600));
        assert_eq!(cli.database_url.as_deref(), Some("postgres://a/b"));
    }

    #[test]
    fn serve_flags_after_subcommand() {
        let cli = Cli::try_parse_from([
            "x",
            "serve",
            "--interval",
            "1s",
            "--listen",
            "127.0.0.1:9",
            "--database-url",
            "postgres://h/d",
            "--order-book-max-depth",
            "50",
            "--assignment-timeout",
            "90s",
            "--fallback-after",
            "2",
            "--daily-budget-tokens",
            "1000",
            "--step-lock-timeout",
            "300ms",
            "--step-statement-timeout",
            "1m",
            "--retain",
            "30d",
            "--prune-every",
            "10m",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else { panic!("not serve") };
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.listen.port(), 9);
        assert_eq!(s.order_book_max_depth, 50);
        assert_eq!(s.cycle.assignment_timeout, Duration::from_secs(90));
        assert_eq!(s.fallback_after, 2);
        assert_eq!(s.daily_budget_tokens, Some(1000));
        assert_eq!(s.cycle.step_lock_timeout, Duration::from_millis(300));
        assert_eq!(s.cycle.step_statement_timeout, Duration::from_secs(60));
        assert_eq!(s.retain, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(s.prune_every, Duration::from_secs(600));
        assert_eq!(cli.database_url.as_deref(), Some("postgres://h/d"));
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(Cli::try_parse_from(["x", "serve", "--order-book-max-depth", "10001"]).is_err());
        assert!(Cli::try_parse_from(["x", "serve", "--interval", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "serve", "--retain", "soon"]).is_err());
        assert!(Cli::try_parse_from(["x", "serve", "--retain", "30d", "--prune-every", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "serve", "--fallback-after", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "serve", "--step-lock-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "clear", "--step-statement-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "serve", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["x", "simulate", "--agents", "0"]).is_err());
    }

    /// The prefix of the environment variable of every `serve` and `clear` option.
    const ENV_PREFIX: &str = "COMPUTE_AUCTION_";

    #[test]
    fn every_serve_and_clear_option_has_its_environment_variable() {
        let cli = Cli::command();
        for sub in ["serve", "clear"] {
            let cmd = cli.find_subcommand(sub).unwrap();
            let mut n = 0;
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "database_url" {
                    continue;
                }
                let want = format!("{ENV_PREFIX}{}", id.to_uppercase());
                assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(want.as_str()), "{sub} --{id}");
                n += 1;
            }
            assert!(n >= 3, "{sub} has {n} options");
        }
        let db = cli.get_arguments().find(|a| a.get_id() == "database_url").unwrap();
        assert_eq!(db.get_env().and_then(|e| e.to_str()), Some("DATABASE_URL"));
        // --help names each variable
        let mut serve = Cli::command().find_subcommand("serve").unwrap().clone();
        let help = serve.render_long_help().to_string();
        assert!(help.contains("[env: COMPUTE_AUCTION_LISTEN="), "{help}");
    }

    #[test]
    fn serve_reads_options_from_the_environment() {
        // Variables no other test reads a value of (the tests run in parallel, in one process).
        std::env::set_var("COMPUTE_AUCTION_SHUTDOWN_TIMEOUT", "7s");
        std::env::set_var("COMPUTE_AUCTION_MAX_BACKOFF", "750ms");
        let from_env = Cli::try_parse_from(["x", "serve"]);
        let flag_wins = Cli::try_parse_from(["x", "serve", "--shutdown-timeout", "9s"]);
        std::env::remove_var("COMPUTE_AUCTION_SHUTDOWN_TIMEOUT");
        std::env::remove_var("COMPUTE_AUCTION_MAX_BACKOFF");
        let Command::Serve(s) = from_env.unwrap().command else { panic!("not serve") };
        assert_eq!(s.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(s.max_backoff, Duration::from_millis(750));
        let Command::Serve(s) = flag_wins.unwrap().command else { panic!("not serve") };
        assert_eq!(s.shutdown_timeout, Duration::from_secs(9));
        assert_eq!(s.max_backoff, Duration::from_millis(750));
    }

    #[test]
    fn simulate_defaults() {
        let cli = Cli::try_parse_from(["x", "simulate", "--seed", "7"]).unwrap();
        let Command::Simulate(s) = cli.command else { panic!("not simulate") };
        assert_eq!((s.agents, s.quests, s.slots), (30, 6, 6));
        assert_eq!(s.duration, Duration::ZERO);
        assert_eq!(s.seed, Some(7));
    }
}
