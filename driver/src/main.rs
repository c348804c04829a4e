//! compute-auction-driver: keeps a compute_auction market running.
//!
//! See `compute-auction-driver --help`. All market logic is in the
//! compute_auction PostgreSQL extension; this binary schedules its clearing
//! rounds, serves its data over HTTP, and can generate a demo workload.

mod config;
mod dashboard;
mod db;
mod fields;
mod http;
mod metrics;
mod scheduler;
mod simulate;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::watch;

use config::{Cli, Command, ServeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async_main(cli))
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

async fn async_main(cli: Cli) -> ExitCode {
    if let Command::Fields = cli.command {
        println!("{}", fields::all());
        return ExitCode::SUCCESS;
    }
    let Some(url) = cli.database_url.as_deref() else {
        eprintln!("error: no database given: pass --database-url or set DATABASE_URL");
        return ExitCode::from(2);
    };
    let pg = match db::parse_config(url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Version => version(&pg).await,
        Command::Fields => ExitCode::SUCCESS,
        Command::Clear(args) => clear(&pg, &args).await,
        Command::Serve(args) => serve(pg, args).await,
        Command::Simulate(args) => {
            let pool = db::make_pool(&pg, 4, None);
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("stopping the simulation");
                let _ = tx.send(true);
            });
            match simulate::run(pool, args, rx).await {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn version(pg: &tokio_postgres::Config) -> ExitCode {
    let client = match db::connect(pg).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match db::extension_version(&client).await {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("error: the compute_auction extension is not installed in this database (CREATE EXTENSION compute_auction)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn clear(pg: &tokio_postgres::Config, args: &config::ClearArgs) -> ExitCode {
    let mut client = match db::connect(pg).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match db::check_extension_version(&client).await {
        Ok(Ok(_)) => {}
        Ok(Err(incompatible)) => {
            eprintln!("error: {incompatible}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: cannot read the compute_auction extension's version: {e}");
            return ExitCode::FAILURE;
        }
    }
    let cycle = scheduler::run_cycle(&mut client, args.cycle.assignment_timeout, args.cycle.step_timeouts()).await;
    let out = cycle.to_json();
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string()));
    if let Err(e) = &cycle.clear {
        eprintln!("error: clear_round failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Whether the database has a compute_auction extension this driver works with
/// (db::check_extension_version). Ok(true): checked, it has; Ok(false): the database could not
/// be asked now (the scheduler checks when it first reaches it); Err: it has not, fatal.
async fn startup_check(pg: &tokio_postgres::Config) -> Result<bool, String> {
    let client = match db::connect(pg).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "database unreachable at start-up; retrying, and checking the extension's version once it answers");
            return Ok(false);
        }
    };
    match db::check_extension_version(&client).await {
        Ok(Ok(v)) => {
            tracing::info!(extension_version = %v, minimum = db::MIN_EXTENSION_VERSION, "compute_auction extension version ok");
            Ok(true)
        }
        Ok(Err(incompatible)) => Err(incompatible),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the extension's version at start-up; checking it when the database next answers");
            Ok(false)
        }
    }
}

async fn serve(pg: tokio_postgres::Config, args: ServeArgs) -> ExitCode {
    let version_checked = match startup_check(&pg).await {
        Ok(checked) => checked,
        Err(incompatible) => {
            eprintln!("error: {incompatible}");
            return ExitCode::FAILURE;
        }
    };
    // the HTTP API's pool only: the clearing loop has its own connection
    let pool = db::make_pool(&pg, args.pool_size as usize, Some(http::STATEMENT_TIMEOUT));
    let read = match args.read_database_url.as_deref().map(db::parse_read_config).transpose() {
        Ok(cfg) => cfg.map(|c| {
            let connect = c.get_connect_timeout().copied().unwrap_or(db::READ_CONNECT_TIMEOUT);
            let create = http::ReadDatabase::create_budget(c.get_hosts().len(), connect);
            let size = args.pool_size as usize;
            let pool = db::make_pool_with(&c, size, Some(http::STATEMENT_TIMEOUT), http::READ_POOL_WAIT, create);
            http::ReadDatabase::new(pool)
        }),
        Err(e) => {
            eprintln!("error: --read-database-url: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let (tx, rx) = watch::channel(false);

    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);

    // retention (--retain): the pruner, on a connection of its own, while this driver leads
    if let Some(retain) = args.retain {
        let cfg =
            scheduler::PrunerConfig { retain, every: args.prune_every, step_timeouts: args.cycle.step_timeouts() };
        tokio::spawn(scheduler::run_pruner(pg.clone(), cfg, metrics.clone(), rx.clone()));
    }
    let sched = scheduler::Scheduler::new(
        pg,
        scheduler::SchedulerConfig {
            interval: args.interval,
            assignment_timeout: args.cycle.assignment_timeout,
            fallback_after: args.fallback_after,
            daily_budget_tokens: args.daily_budget_tokens,
            max_backoff: args.max_backoff,
            step_timeouts: args.cycle.step_timeouts(),
            version_checked,
        },
        metrics.clone(),
    );
    let mut sched_task = tokio::spawn(sched.run(rx.clone()));

    let state = Arc::new(http::AppState {
        pool,
        read,
        metrics,
        max_depth: args.order_book_max_depth,
        interval: args.interval,
        fallback_after: args.fallback_after,
    });
    let mut http_rx = rx.clone();
    let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(async move {
        let _ = http_rx.wait_for(|stop| *stop).await;
    });
    let mut server_task = tokio::spawn(async move { server.await });
    tracing::info!(listen = %addr, "dashboard at http://{addr}/resources");

    let mut code = ExitCode::SUCCESS;
    let mut sched_done = false;
    tokio::select! {
        _ = wait_for_signal() => {}
        r = &mut server_task => {
            tracing::error!(result = ?r, "HTTP server stopped unexpectedly");
            code = ExitCode::FAILURE;
        }
        r = &mut sched_task => {
            // the clearing loop only ends early on an incompatible extension
            sched_done = true;
            code = ExitCode::FAILURE;
            match r {
                Ok(Err(incompatible)) => eprintln!("error: {incompatible}"),
                other => tracing::error!(result = ?other, "the clearing loop stopped unexpectedly"),
            }
        }
    }
    tracing::info!("shutting down: finishing the in-flight round");
    let _ = tx.send(true);
    if !sched_done && tokio::time::timeout(args.shutdown_timeout, &mut sched_task).await.is_err() {
        tracing::warn!("the in-flight round did not finish in time; exiting (the database rolls it back)");
    }
    if !server_task.is_finished()
        && tokio::time::timeout(std::time::Duration::from_secs(5), &mut server_task).await.is_err()
    {
        tracing::warn!("HTTP connections still open after 5 s; closing them");
    }
    tracing::info!("stopped");
    code
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
