//! One simulated viewer's HTTP/1.1 connection, as a player keeps one: its
//! requests go one after another on it, and it is opened again after a
//! failure. The load generator runs thousands of these; a pooled client
//! (a pool checkout, a URL parse and a timer per request) would cost the
//! generator more than the requests cost the server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one request (connecting included) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's origin, parsed once: where to connect and what `Host` says.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `host:port`, to connect to.
    address: String,
    /// The `Host` header's value.
    host: String,
}

impl Origin {
    /// From an `http://host[:port]` URL (a path after it is ignored).
    pub(crate) fn parse(url: &str) -> Result<Origin, String> {
        let parsed = reqwest::Url::parse(url).map_err(|err| format!("{url}: {err}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("{url}: only http:// is supported"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{url}: no host"))?
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(80);
        Ok(Origin {
            address: format!("{host}:{port}"),
            host: match parsed.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            },
        })
    }
}

/// A viewer's connection to `origin`, opened on first use.
pub(crate) struct ViewerHttp {
    origin: Origin,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl ViewerHttp {
    pub(crate) fn new(origin: Origin) -> ViewerHttp {
        ViewerHttp {
            origin,
            sender: None,
        }
    }

    /// `GET path` (origin form: `/a/b?c`): the status and the whole body.
    pub(crate) async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.get_now(path)).await {
            Ok(answer) => answer,
            Err(_) => Err("timed out".into()),
        }
    }

    async fn get_now(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        // The connection kept from the last request, unless it closed
        // since (the server's `connection: close`, an idle timeout).
        let mut sender = match self.sender.take() {
            Some(mut kept) if !kept.is_closed() => match kept.ready().await {
                Ok(()) => kept,
                Err(_) => self.connect().await?,
            },
            _ => self.connect().await?,
        };
        let request = Request::get(path)
            .header(header::HOST, &self.origin.host)
            .body(Empty::new())
            .map_err(|err| format!("request: {err}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| err.to_string())?
            .to_bytes();
        self.sender = Some(sender);
        Ok((status, body))
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        let stream = TcpStream::connect(&self.origin.address)
            .await
            .map_err(|err| format!("connect {}: {err}", self.origin.address))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("handshake: {err}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn origins_keep_the_port_they_name() {
        let origin = Origin::parse("http://127.0.0.1:8080/play/x").expect("origin");
        assert_eq!(
            (origin.address.as_str(), origin.host.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080")
        );
        let origin = Origin::parse("http://example.org").expect("origin");
        assert_eq!(
            (origin.address.as_str(), origin.host.as_str()),
            ("example.org:80", "example.org")
        );
        assert!(Origin::parse("https://example.org").is_err());
        assert!(Origin::parse("not a url").is_err());
    }

    /// Requests go one after another on one connection; when the server
    /// closes it, the next request opens another.
    #[tokio::test]
    async fn requests_share_a_connection_and_reconnect_after_a_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for answers_before_close in [2, 1] {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut buffer = Vec::new();
                for _ in 0..answers_before_close {
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut more = [0u8; 1024];
                        let count = socket.read(&mut more).await.expect("read");
                        assert!(count > 0, "the client closed early");
                        buffer.extend_from_slice(&more[..count]);
                    }
                    let end = buffer
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .expect("head")
                        + 4;
                    heads.push(String::from_utf8_lossy(&buffer[..end]).to_string());
                    buffer.drain(..end);
                    let body = format!("answer {}", heads.len());
                    let close = heads.len() == 2;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{body}",
                        body.len(),
                        if close { "connection: close\r\n" } else { "" }
                    );
                    socket.write_all(answer.as_bytes()).await.expect("write");
                }
            }
            heads
        });
        let mut viewer =
            ViewerHttp::new(Origin::parse(&format!("http://{address}")).expect("origin"));
        for (index, path) in ["/a", "/b?x=1", "/c"].iter().enumerate() {
            let (status, body) = viewer.get(path).await.expect("answer");
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, format!("answer {}", index + 1));
        }
        let heads = server.await.expect("server");
        assert!(heads[0].starts_with("GET /a HTTP/1.1\r\n"), "{}", heads[0]);
        assert!(
            heads[1].starts_with("GET /b?x=1 HTTP/1.1\r\n"),
            "{}",
            heads[1]
        );
        assert!(heads[2].starts_with("GET /c HTTP/1.1\r\n"), "{}", heads[2]);
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains(&format!("host: {address}"))
        );
    }
}
