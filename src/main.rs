//! `dreamcore-relay [serve]` runs the relay; the other subcommands (`--help` lists them) help a
//! newcomer and the container around it.

mod allocator;
mod cli;
mod telemetry;

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Parser;
use dreamcore_relay::config::Config;
use dreamcore_relay::server::{development_secret, Relay, RelayHandle};
use dreamcore_relay::{auth, config};
use tokio::signal::unix::{signal, SignalKind};
use uuid::Uuid;

use cli::{Cli, Command};
/// Threads for `spawn_blocking` and `tokio::fs` (tokio's default is 512).
const MAX_BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    // Before any configuration: `--help` and `--version` need none.
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Config)) {
        return show_config();
    }
    // A missing .env is normal; variables already set in the environment win.
    let _ = dotenvy::dotenv();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::DevToken { user, email, ttl } => {
            dev_token(&config, user.unwrap_or_else(Uuid::new_v4), &email, ttl)
        }
        Command::Healthcheck => healthcheck(&config),
        Command::Config => show_config(),
    }
}

fn serve(config: Config) -> ExitCode {
    let telemetry = match telemetry::init(&config) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    raise_descriptor_limit();
    // Blocking work here is short (file and git housekeeping), but it comes in bursts when
    // many jobs end together; a small pool queues it instead of creating a thread for each
    // call, and thread creation storms are what delayed other jobs' events.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .on_thread_park(allocator::return_cache_when_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let address = format!("{}:{}", config.server.host, config.server.port);
        let admin_address = config.server.admin_listen.clone();
        let relay = match Relay::build(config).await {
            Ok(relay) => relay,
            Err(e) => {
                tracing::error!("start-up failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(&address).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {address}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("listening on http://{address} (WebSocket on any path)");
        let admin = if admin_address.is_empty() {
            None
        } else {
            match tokio::net::TcpListener::bind(&admin_address).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!("cannot listen on ADMIN_LISTEN {admin_address}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        };
        spawn_reload_on_hangup(relay.handle());
        let served = match admin {
            Some(admin) => {
                tracing::info!(
                    "admin listener on http://{admin_address} (/metrics, /ops, /admin/*)"
                );
                relay
                    .serve_with_admin(listener, admin, shutdown_signal())
                    .await
            }
            None => relay.serve(listener, shutdown_signal()).await,
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("server error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // The runtime first: spans still open in its tasks end when it drops.
    drop(runtime);
    telemetry.shutdown();
    code
}

/// Use every descriptor the hard limit allows: the connection cap derives from the soft
/// limit, whose common default (1024) is far below what 10,000 sockets need.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the descriptor limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the descriptor limit"),
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// SIGHUP re-reads `RELAY_CONFIG` and `.env` (whose values win over the environment the
/// process started with, which cannot change) and applies `USE_MODAL` to new jobs.
fn spawn_reload_on_hangup(relay: RelayHandle) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; use the admin API to switch backends");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let file_env: HashMap<String, String> = dotenvy::from_path_iter(".env")
                .map(|iter| iter.filter_map(Result::ok).collect())
                .unwrap_or_default();
            let file = std::env::var("RELAY_CONFIG").ok().filter(|p| !p.is_empty());
            let reloaded = Config::load_from(file.as_deref(), |key| {
                file_env
                    .get(key)
                    .cloned()
                    .or_else(|| std::env::var(key).ok())
            });
            match reloaded {
                Ok(config) => relay.reload(&config),
                Err(e) => {
                    tracing::error!("SIGHUP: configuration error, nothing changed: {e}");
                    relay.purge_keys();
                }
            }
        }
    });
}

fn dev_token(config: &Config, user: Uuid, email: &str, ttl: i64) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secret = match runtime.block_on(development_secret(config)) {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            eprintln!("no HS256 secret: set SUPABASE_JWT_SECRET (a project using only asymmetric keys cannot mint tokens)");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("cannot read the development secret: {e}");
            return ExitCode::FAILURE;
        }
    };
    let issuer = config
        .auth
        .effective_issuers()
        .into_iter()
        .next()
        .unwrap_or_else(|| config::DEV_ISSUER.to_string());
    println!("{}", auth::mint_hs256(&secret, &issuer, user, email, ttl));
    ExitCode::SUCCESS
}

/// `dreamcore-relay config`: read before `.env` is applied, so each value's layer is known.
fn show_config() -> ExitCode {
    let dotenv: HashMap<String, String> = dotenvy::dotenv_iter()
        .map(|iter| iter.filter_map(Result::ok).collect())
        .unwrap_or_default();
    match config::explain(|name| std::env::var(name).ok(), &dotenv) {
        Ok((file, settings)) => {
            print!("{}", config::render(file.as_deref(), &settings));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("configuration error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Container health probe without curl in the image: `GET /health` on the local port.
fn healthcheck(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    let address = format!("127.0.0.1:{}", config.server.port);
    let timeout = std::time::Duration::from_secs(2);
    let probe = || -> std::io::Result<bool> {
        let addr = address
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.ends_with(b" 200"))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
