//! A unix socket of the test's own in front of a server's (PostgreSQL's), which the test can
//! cut: a relay that connects through it loses that server alone, while the other relays keep
//! their own connections to it.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

/// Forwards every connection made to `dir()/name` to the target socket, until cut.
pub struct SocketLink {
    dir: tempfile::TempDir,
    forwarding: JoinHandle<()>,
}

impl SocketLink {
    /// Listen on a socket named like `target`'s file, in a directory of its own.
    pub fn start(target: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let name = target.file_name().expect("a socket file");
        let listener = UnixListener::bind(dir.path().join(name)).unwrap();
        let forwarding = tokio::spawn(async move {
            // Dropped with the task: every forwarded connection ends at once.
            let mut links = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                links.spawn(async move {
                    if let Ok(mut outbound) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { dir, forwarding }
    }

    /// The directory to name as the socket's host.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Close every connection made through the link; new ones are refused (nobody listens).
    pub async fn cut(&mut self) {
        self.forwarding.abort();
        let _ = (&mut self.forwarding).await;
    }
}

impl Drop for SocketLink {
    fn drop(&mut self) {
        self.forwarding.abort();
    }
}
