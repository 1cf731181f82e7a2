//! One simulated viewer's HTTP/1.1 connection, as a player keeps one: its
//! requests go one after another on it, and it is opened again after a
//! failure. The load generator runs thousands of these; a pooled client
//! (a pool checkout, a URL parse and a timer per request) would cost the
//! generator more than the requests cost the server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one request (connecting included) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The size of every read from a connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;

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
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// What a request reads of its answer's body.
#[derive(Clone, Copy)]
enum Read {
    /// All of it, kept (playlists, JSON).
    Whole,
    /// All of it, counted and dropped as it arrives (media: a 200 KB
    /// segment kept whole would cost the generator a fresh allocation, its
    /// pages cleared by the kernel, per request).
    Counted,
}

/// An answer's status and body (empty when counted) and its body's length.
type Answer = (StatusCode, Bytes, u64);

impl ViewerHttp {
    pub(crate) fn new(origin: Origin) -> ViewerHttp {
        ViewerHttp {
            origin,
            sender: None,
        }
    }

    /// `GET path` (origin form: `/a/b?c`): the status and the whole body.
    pub(crate) async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let request = self.request(Method::GET, path, None)?;
        let (status, body, _) = self.send(request, Read::Whole).await?;
        Ok((status, body))
    }

    /// `GET path`, its body read to the end and dropped: the status and
    /// the body's length.
    pub(crate) async fn get_counted(&mut self, path: &str) -> Result<(StatusCode, u64), String> {
        let request = self.request(Method::GET, path, None)?;
        let (status, _, length) = self.send(request, Read::Counted).await?;
        Ok((status, length))
    }

    /// `POST path` with a JSON body: the status and the whole answer.
    pub(crate) async fn post_json(
        &mut self,
        path: &str,
        json: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let request = self.request(Method::POST, path, Some(json))?;
        let (status, body, _) = self.send(request, Read::Whole).await?;
        Ok((status, body))
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.origin.host);
        if json.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(json.unwrap_or_default()))
            .map_err(|err| format!("request: {err}"))
    }

    async fn send(&mut self, request: Request<Full<Bytes>>, read: Read) -> Result<Answer, String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send_now(request, read)).await {
            Ok(answer) => answer,
            Err(_) => Err("timed out".into()),
        }
    }

    async fn send_now(
        &mut self,
        request: Request<Full<Bytes>>,
        read: Read,
    ) -> Result<Answer, String> {
        // The connection kept from the last request, unless it closed
        // since (the server's `connection: close`, an idle timeout).
        let mut sender = match self.sender.take() {
            Some(mut kept) if !kept.is_closed() => match kept.ready().await {
                Ok(()) => kept,
                Err(_) => self.connect().await?,
            },
            _ => self.connect().await?,
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        let mut body = response.into_body();
        let answer = match read {
            Read::Whole => {
                let whole = body.collect().await.map_err(|err| err.to_string())?;
                let bytes = whole.to_bytes();
                let length = bytes.len() as u64;
                (status, bytes, length)
            }
            Read::Counted => {
                let mut length = 0u64;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|err| err.to_string())?;
                    if let Some(data) = frame.data_ref() {
                        length += data.len() as u64;
                    }
                }
                (status, Bytes::new(), length)
            }
        };
        self.sender = Some(sender);
        Ok(answer)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.origin.address)
            .await
            .map_err(|err| format!("connect {}: {err}", self.origin.address))?;
        let _ = stream.set_nodelay(true);
        // Reads of one fixed size into a buffer reused from one response to
        // the next: a buffer growing through each 200 KB segment
        // allocated fresh pages every time (a fifth of the generator's CPU
        // at 10,000 viewers went to clearing pages and the allocator).
        let (sender, connection) = http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUFFER_BYTES))
            .handshake(TokioIo::new(stream))
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

    /// A POST carries its JSON body and type; a counted body is read to
    /// its end (the next request on the connection is answered) and only
    /// its length kept.
    #[tokio::test]
    async fn posts_carry_their_body_and_counted_bodies_are_read_through() {
        const SEGMENT_BYTES: usize = 300_000;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            let mut requests = Vec::new();
            while requests.len() < 3 {
                let mut more = [0u8; 4096];
                let count = socket.read(&mut more).await.expect("read");
                assert!(count > 0, "the client closed early");
                received.extend_from_slice(&more[..count]);
                while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length: "))
                        .map_or(0, |value| value.trim().parse().expect("length"));
                    if received.len() < end + 4 + length {
                        break;
                    }
                    let body =
                        String::from_utf8_lossy(&received[end + 4..end + 4 + length]).to_string();
                    received.drain(..end + 4 + length);
                    let answer = if head.starts_with("post") {
                        format!("echo {body}").into_bytes()
                    } else {
                        vec![7u8; SEGMENT_BYTES]
                    };
                    let mut reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    )
                    .into_bytes();
                    reply.extend_from_slice(&answer);
                    socket.write_all(&reply).await.expect("write");
                    requests.push(head);
                }
            }
            requests
        });
        let mut viewer =
            ViewerHttp::new(Origin::parse(&format!("http://{address}")).expect("origin"));
        let (status, answer) = viewer
            .post_json("/vouchers", Bytes::from_static(br#"{"amount":"5"}"#))
            .await
            .expect("post");
        assert_eq!(
            (status, answer.as_ref()),
            (StatusCode::OK, &br#"echo {"amount":"5"}"#[..])
        );
        let (status, length) = viewer.get_counted("/0.m4s").await.expect("segment");
        assert_eq!((status, length), (StatusCode::OK, SEGMENT_BYTES as u64));
        let (status, body) = viewer.get("/1.m4s").await.expect("segment");
        assert_eq!((status, body.len()), (StatusCode::OK, SEGMENT_BYTES));
        let requests = server.await.expect("server");
        assert!(
            requests[0].starts_with("post /vouchers http/1.1"),
            "{}",
            requests[0]
        );
        assert!(
            requests[0].contains("content-type: application/json"),
            "{}",
            requests[0]
        );
        assert!(requests[1].starts_with("get /0.m4s"), "{}", requests[1]);
        assert!(requests[2].starts_with("get /1.m4s"), "{}", requests[2]);
    }
}
