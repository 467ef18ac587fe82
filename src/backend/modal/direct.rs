//! `generate_game`'s HTTP/1.1 exchange on a connection of its own, driven by the task that
//! reads the stream. A pooled client runs each connection in a task of its own and hands
//! every chunk over to the reader through a channel, a wake-up per event; here the
//! connection is polled inside the body's stream, so a chunk goes from the socket to the
//! SSE decoder in one task. (Measured on `loadgen jobs`: about a quarter less relay CPU per
//! event.) A generation holds its connection for minutes and Modal serves each function on
//! a host of its own, so a pool had nothing to reuse for this call anyway.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why an exchange failed: connecting, the TLS handshake or HTTP itself.
pub(super) type ExchangeError = Box<dyn std::error::Error + Send + Sync>;

/// A plain or a TLS connection.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Conn = Connection<TokioIo<Box<dyn Io>>, Full<Bytes>>;

/// How connections to the endpoint are opened.
pub(super) struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl Connector {
    /// Verifying servers against the same public roots as the relay's other HTTP calls.
    pub(super) fn new(connect_timeout: Duration) -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(roots, connect_timeout)
    }

    fn with_roots(
        roots: rustls::RootCertStore,
        connect_timeout: Duration,
    ) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout,
        })
    }

    /// A connection to `uri`'s host, TLS for `https`.
    async fn connect(&self, uri: &Uri) -> Result<Box<dyn Io>, ExchangeError> {
        let host = uri.host().ok_or("the endpoint names no host")?;
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        // A bracketed IPv6 literal connects and is verified without its brackets.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| format!("connect to {host}:{port} timed out"))??;
        tcp.set_nodelay(true)?;
        if !tls {
            return Ok(Box::new(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
        let handshake = self.tls.connect(name, tcp);
        let stream = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| format!("TLS handshake with {host}:{port} timed out"))??;
        Ok(Box::new(stream))
    }

    /// POST `body` to `uri` with `headers`: the response's status and its body.
    pub(super) async fn post(
        &self,
        uri: &Uri,
        headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<(StatusCode, ResponseBody), ExchangeError> {
        let io = self.connect(uri).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await?;
        let mut connection = Connecting {
            conn: Some(Box::pin(conn)),
        };
        let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()));
        if let Some(authority) = uri.authority() {
            request = request.header(HOST, authority.as_str());
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut sending = Box::pin(sender.send_request(request.body(Full::new(body))?));
        let response = std::future::poll_fn(|cx| {
            if let Poll::Ready(response) = sending.as_mut().poll(cx) {
                return Poll::Ready(response);
            }
            match connection.poll_conn(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await?;
        drop(sending);
        let (head, body) = response.into_parts();
        let body = ResponseBody {
            connection,
            _sender: sender,
            body,
        };
        Ok((head.status, body))
    }
}

/// The connection an exchange runs on, polled by whoever waits for the exchange.
struct Connecting {
    /// `None` once the connection is done (the body read to its end, or an error).
    conn: Option<Pin<Box<Conn>>>,
}

impl Connecting {
    /// Move the connection on: it reads the socket into the body and writes the request.
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Result<(), hyper::Error> {
        if let Some(conn) = &mut self.conn {
            match conn.as_mut().poll(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => self.conn = None,
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// A response's body as chunks of bytes, its connection driven by whoever polls it.
/// Dropping it closes the connection.
pub(super) struct ResponseBody {
    connection: Connecting,
    /// Held while the body is read: without its sender a connection winds down when idle.
    _sender: SendRequest<Full<Bytes>>,
    body: Incoming,
}

impl Stream for ResponseBody {
    type Item = Result<Bytes, ExchangeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Err(e) = this.connection.poll_conn(cx) {
            return Poll::Ready(Some(Err(e.into())));
        }
        loop {
            return match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => Poll::Ready(Some(Ok(data))),
                    // An empty chunk or trailers: nothing for the decoder.
                    _ => continue,
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// Whether reqwest would send calls to `scheme` URLs through a proxy the environment (`var`)
/// names; such deployments keep the pooled client, which knows proxies.
pub(super) fn proxy_in_environment(
    scheme: &str,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> bool {
    let names: [&str; 4] = if scheme == "https" {
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    names
        .iter()
        .any(|name| var(name).is_some_and(|value| !value.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-request HTTPS server for `localhost` with a fresh self-signed certificate: it
    /// answers any POST with a chunked SSE body of `lines`, and reports the request head.
    async fn tls_server(
        lines: &'static [&'static str],
    ) -> (u16, rustls::RootCertStore, tokio::task::JoinHandle<String>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(tls.read_u8().await.unwrap());
            }
            let head = String::from_utf8(head).unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            tls.read_exact(&mut body).await.unwrap();
            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            for line in lines {
                let chunk = format!("data: {line}\n\n");
                tls.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                    .await
                    .unwrap();
                tls.flush().await.unwrap();
            }
            tls.write_all(b"0\r\n\r\n").await.unwrap();
            tls.shutdown().await.unwrap();
            format!("{head}{}", String::from_utf8(body).unwrap())
        });
        (port, roots, served)
    }

    #[tokio::test]
    async fn streams_a_response_over_tls_verified_against_the_roots() {
        let (port, roots, served) = tls_server(&["{\"n\":1}", "{\"n\":2}"]).await;
        let connector = Connector::with_roots(roots, Duration::from_secs(5)).unwrap();
        let uri: Uri = format!("https://localhost:{port}/generate?x=1")
            .parse()
            .unwrap();
        let headers = vec![(
            HeaderName::from_static("x-modal-secret"),
            HeaderValue::from_static("s3cret"),
        )];
        let (status, body) = connector
            .post(&uri, headers, Bytes::from_static(b"{\"prompt\":\"p\"}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let chunks: Vec<Bytes> = body.map(|chunk| chunk.unwrap()).collect().await;
        assert_eq!(chunks.concat(), b"data: {\"n\":1}\n\ndata: {\"n\":2}\n\n");
        let request = served.await.unwrap();
        assert!(
            request.starts_with("POST /generate?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(
            lower.contains(&format!("host: localhost:{port}\r\n")),
            "{request}"
        );
        assert!(lower.contains("x-modal-secret: s3cret\r\n"), "{request}");
        assert!(request.ends_with("{\"prompt\":\"p\"}"), "{request}");
    }

    #[tokio::test]
    async fn a_certificate_outside_the_roots_is_refused() {
        let (port, _roots, _served) = tls_server(&[]).await;
        let connector = Connector::new(Duration::from_secs(5)).unwrap();
        let uri: Uri = format!("https://localhost:{port}/").parse().unwrap();
        let refused = connector.post(&uri, Vec::new(), Bytes::new()).await;
        let error = refused
            .err()
            .expect("a self-signed certificate was accepted");
        assert!(error.to_string().contains("certificate"), "{error}");
    }

    #[test]
    fn a_proxy_for_the_scheme_keeps_the_pooled_client() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| std::ffi::OsString::from(value))
            }
        };
        assert!(!proxy_in_environment("https", env(&[])));
        assert!(proxy_in_environment(
            "https",
            env(&[("https_proxy", "http://p:3128")])
        ));
        assert!(proxy_in_environment(
            "http",
            env(&[("ALL_PROXY", "socks5://p")])
        ));
        assert!(!proxy_in_environment(
            "https",
            env(&[("HTTP_PROXY", "http://p:3128")])
        ));
        assert!(!proxy_in_environment("http", env(&[("HTTP_PROXY", "")])));
    }
}
