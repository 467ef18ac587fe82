//! `dreamcore-relay [serve]` runs the relay; `dreamcore-relay dev-token` mints a token a
//! newcomer can connect with.

use std::collections::HashMap;
use std::process::ExitCode;

use dreamcore_relay::config::{Config, LogFormat};
use dreamcore_relay::server::{development_secret, Relay, RelayHandle};
use dreamcore_relay::{auth, config};
use tokio::signal::unix::{signal, SignalKind};
use uuid::Uuid;

/// Threads for `spawn_blocking` and `tokio::fs` (tokio's default is 512).
const MAX_BLOCKING_THREADS: usize = 16;

const USAGE: &str = "usage:
  dreamcore-relay [serve]
  dreamcore-relay dev-token [--user <uuid>] [--email <address>] [--ttl <seconds>]
  dreamcore-relay healthcheck        (exit 0 when GET /health on PORT answers 200; for Docker)
Configuration comes from config/default.toml (embedded), RELAY_CONFIG, .env and the environment;
see .env.example.";

fn main() -> ExitCode {
    // A missing .env is normal; variables already set in the environment win.
    let _ = dotenvy::dotenv();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(config),
        Some("dev-token") => dev_token(&config, &args[1..]),
        Some("healthcheck") => healthcheck(&config),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: Config) -> ExitCode {
    init_tracing(config.server.log_format);
    raise_descriptor_limit();
    // Blocking work here is short (file and git housekeeping), but it comes in bursts when
    // many jobs end together; a small pool queues it instead of creating a thread for each
    // call, and thread creation storms are what delayed other jobs' events.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let address = format!("{}:{}", config.server.host, config.server.port);
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
        spawn_reload_on_hangup(relay.handle());
        match relay.serve(listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("server error: {e}");
                ExitCode::FAILURE
            }
        }
    })
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

fn dev_token(config: &Config, args: &[String]) -> ExitCode {
    let mut user = Uuid::new_v4();
    let mut email = String::from("dev@example.com");
    let mut ttl: i64 = 3600;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next();
        let ok = match (flag.as_str(), value) {
            ("--user", Some(v)) => Uuid::parse_str(v).map(|u| user = u).is_ok(),
            ("--email", Some(v)) => {
                email = v.clone();
                true
            }
            ("--ttl", Some(v)) => v.parse().map(|t| ttl = t).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("bad argument {flag}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
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
    println!("{}", auth::mint_hs256(&secret, &issuer, user, &email, ttl));
    ExitCode::SUCCESS
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
