//! A terminal client for one generation, speaking the browser's protocol: `init` with a token,
//! `createProject`, then `message`; prints the job's progress lines to stderr and the agent's
//! streamed text to stdout, and exits 0 on `completed`, 1 on `failed` or an error.
//!
//! ```sh
//! TOKEN=$(target/release/dreamcore-relay dev-token)
//! cargo run --release --example ws_client -- --token "$TOKEN" "Make a one-button clicker game"
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Run one generation through the relay and print what happens.
#[derive(Debug, Parser)]
struct Args {
    /// The relay's WebSocket address.
    #[arg(long, default_value = "ws://127.0.0.1:3000/")]
    url: String,
    /// An access token (`dreamcore-relay dev-token` mints one for a development relay).
    #[arg(long)]
    token: String,
    /// Name of the project to create.
    #[arg(long, default_value = "terminal project")]
    project: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// What to ask the agent for.
    prompt: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let limit = Duration::from_secs(args.timeout);
    match tokio::time::timeout(limit, run(&args)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(why)) => {
            eprintln!("ws_client: {why}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("ws_client: no outcome within {} s", args.timeout);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let (mut socket, _) = tokio_tungstenite::connect_async(args.url.as_str())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.url))?;
    let init = json!({"type": "init", "access_token": args.token});
    socket
        .send(Message::text(init.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(frame) = socket.next().await {
        let text = match frame.map_err(|e| format!("connection lost: {e}"))? {
            Message::Text(text) => text,
            Message::Close(close) => {
                return Err(format!("the relay closed the connection: {close:?}"))
            }
            _ => continue,
        };
        let message: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let next = match message["type"].as_str().unwrap_or_default() {
            "init" => Some(json!({"type": "createProject", "name": args.project})),
            "projectCreated" => {
                eprintln!("project {} created", message["project"]["id"]);
                Some(json!({"type": "message", "content": args.prompt}))
            }
            "jobStarted" => {
                eprintln!("job {} started", message["job"]["id"]);
                None
            }
            "progress" => {
                eprintln!(
                    "[{:>3}%] {}",
                    message["progress"],
                    message["message"].as_str().unwrap_or("")
                );
                None
            }
            "stream" => {
                print!("{}", message["content"].as_str().unwrap_or(""));
                None
            }
            "completed" => {
                println!();
                eprintln!(
                    "completed: {}",
                    message["result"]["message"].as_str().unwrap_or("")
                );
                return Ok(());
            }
            "failed" => {
                return Err(format!(
                    "job failed: {} ({})",
                    message["userMessage"].as_str().unwrap_or(""),
                    message["code"].as_str().unwrap_or("")
                ))
            }
            "error" | "limitExceeded" => return Err(format!("refused: {message}")),
            _ => None,
        };
        if let Some(frame) = next {
            socket
                .send(Message::text(frame.to_string()))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Err("the connection ended without an outcome".to_string())
}
