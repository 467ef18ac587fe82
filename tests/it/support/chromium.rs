//! Test harness: a real headless Chromium (Debian's `/usr/bin/chromium`) driven over the
//! Chrome DevTools Protocol with tokio-tungstenite. The browser runs in its own process
//! group with a throwaway profile, and the whole group is killed when the handle is dropped.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Generous: a cold Chromium start on a busy two-core machine takes seconds.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Chromium {
    port: u16,
    child: Child,
    profile: tempfile::TempDir,
}

impl Chromium {
    /// Start the browser on `about:blank`; returns once its DevTools endpoint is up.
    pub async fn start() -> Chromium {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run scripts/install-test-deps.sh (installs chromium)"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            // Its own group, so Drop can kill the wrapper script, the browser and every
            // helper process at once.
            .process_group(0);
        // If the test process dies without dropping the handle, the browser goes too.
        // SAFETY: prctl is async-signal-safe, as required between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().expect("spawn chromium");
        let mut browser = Chromium {
            port: 0,
            child,
            profile,
        };
        browser.port = browser.wait_for_port().await;
        browser
    }

    /// Chromium writes the port it chose to `<user-data-dir>/DevToolsActivePort`.
    async fn wait_for_port(&mut self) -> u16 {
        let file = self.profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromium exited ({status}): {}", self.log());
            }
            let port = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse::<u16>().ok());
            if let Some(port) = port.filter(|p| *p != 0) {
                return port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The browser's own output so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// A CDP session on the first page target (the `about:blank` tab).
    pub async fn page(&self) -> Page {
        let list = format!("http://127.0.0.1:{}/json/list", self.port);
        let deadline = tokio::time::Instant::now() + WAIT;
        let url = loop {
            let targets: Vec<Value> = match reqwest::get(&list).await {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let page = targets
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str());
            if let Some(url) = page {
                break url.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no page target in {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("CDP connect");
        let mut page = Page { ws, next_id: 0 };
        // Dialog events let a call fail fast instead of hanging behind an alert().
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

pub struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    /// Send one CDP command and return its `result`; events in between are skipped.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("CDP send");
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no CDP answer to {method}"));
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => panic!("CDP connection ended during {method}: {other:?}"),
            };
            let message: Value = serde_json::from_str(&text).expect("CDP json");
            if message["method"] == "Page.javascriptDialogOpening" {
                panic!("the page opened a dialog: {}", message["params"]["message"]);
            }
            if message["method"] == "Runtime.exceptionThrown" {
                panic!(
                    "uncaught exception in the page: {}",
                    message["params"]["exceptionDetails"]
                );
            }
            if message["id"] != id {
                continue;
            }
            if !message["error"].is_null() {
                panic!("CDP {method} failed: {}", message["error"]);
            }
            return message["result"].clone();
        }
    }

    /// Navigate and wait until the document finished loading.
    pub async fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url})).await;
        assert!(
            result["errorText"].is_null(),
            "navigation to {url} failed: {}",
            result["errorText"]
        );
        let check = format!(
            "document.readyState === 'complete' && location.href === {}",
            json!(url)
        );
        self.wait_for(&check, |v| v == &json!(true)).await;
    }

    /// Evaluate `expression` in the page (promises awaited) and return its value as JSON.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if !result["exceptionDetails"].is_null() {
            panic!(
                "evaluating {expression:?} threw: {}",
                result["exceptionDetails"]
            );
        }
        result["result"]["value"].clone()
    }

    /// Evaluate `expression` until `done` accepts its value; panics with the last value at
    /// the deadline.
    pub async fn wait_for(&mut self, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.eval(expression).await;
            if done(&value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never reached the expected state; last: {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
