//! One HTTP connection, from its first byte to its close.
//!
//! A connection is served by a small HTTP/1.1 loop of our own: httparse
//! reads each request head, the shortcut answers the playback lane's
//! commonest requests (a playlist, a segment, a file by CID, a voucher)
//! and the router the rest, and a media file the blockstore holds goes out
//! with `sendfile(2)` from its leaf blocks ([`super::disk_files`]): the page
//! cache's pages are handed to the socket, not copied from our memory into
//! it, and a small answer (a playlist) is one `writev`. A player's
//! connection carries API calls and media alike (a browser pools its
//! connections to a server), so every route's requests keep the loop.
//! The first request the loop does not take (an upgrade, a chunked,
//! `Expect`ed or larger body than a JSON one, a method beyond the
//! seven the API uses, HTTP/2, a head it cannot parse or one over 16 KiB)
//! hands the connection, with the bytes already read, to hyper for the
//! rest of its life.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use streamweave_cas::Cid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::debug;

use super::MAX_JSON_BODY_BYTES;
use super::disk_files::{DiskFiles, Leaves, ServedFile};
use super::request_fields::{RequestFields, value_text};

/// A request head longer than this goes to hyper (which has its own limit).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers of a request head our loop reads; more go to hyper.
const MAX_HEADERS: usize = 64;

/// Answers some requests of the playback lane without the router, from
/// the request's head as it arrived and its body (empty for a `GET` or
/// `HEAD`): from memory, or by a future of its own ([`Quick::Later`]);
/// `None`: the router answers.
pub type Shortcut =
    Box<dyn Fn(&RequestHead<'_>, &Bytes, SocketAddr) -> Option<Quick> + Send + Sync>;

/// A request head as the shortcut reads it: its method, target and fields
/// are views of the bytes httparse read, with no URI parsed and no header
/// map built (a player's request carries ten fields and the shortcut
/// reads three or four). The shortcut answers only the paths of resident
/// streams, sessions and CIDs, whose characters `http`'s URI takes, and
/// checks only the fields it reads; a head whose URI or fields `http`
/// refuses never reaches the router: it goes to hyper, which refuses it.
pub struct RequestHead<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    head: &'a [u8],
    fields: &'a [FieldSpan],
}

impl RequestHead<'_> {
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The target's path, as it arrived (not percent-decoded).
    pub fn path(&self) -> &str {
        self.path
    }

    /// The target's query, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.query
    }

    /// The bytes of the first field named `name`.
    fn value(&self, name: &header::HeaderName) -> Option<&[u8]> {
        let name = name.as_str().as_bytes();
        self.fields
            .iter()
            .find_map(|&[from, to, value_from, value_to]| {
                self.head[usize::from(from)..usize::from(to)]
                    .eq_ignore_ascii_case(name)
                    .then(|| &self.head[usize::from(value_from)..usize::from(value_to)])
            })
    }
}

impl RequestFields for RequestHead<'_> {
    fn text(&self, name: &header::HeaderName) -> Option<&str> {
        value_text(self.value(name)?)
    }

    fn has(&self, name: &header::HeaderName) -> bool {
        self.value(name).is_some()
    }
}

/// A shortcut's answer.
pub enum Quick {
    /// Any answer, written as the router's are.
    Response(Response<Body>),
    /// `200 OK` written from fixed header lines: [`Quick::ok`],
    /// [`Quick::file`].
    Fixed(Fixed),
    /// The answer once the future is done (a voucher's, after its
    /// recovery and its commit). A peer that leaves meanwhile cancels it,
    /// as it cancels the router's.
    Later(Pin<Box<dyn Future<Output = Quick> + Send>>),
}

/// A shortcut's answer ready to write.
enum Ready {
    Response(Response<Body>),
    Fixed(Fixed),
}

/// A `200 OK` whose head is written from header lines fixed for the
/// process, with no header map built and nothing allocated.
pub struct Fixed {
    fields: Bytes,
    body: Bytes,
    file: Option<Cid>,
}

impl Quick {
    /// `200 OK` with `fields` (whole header lines, each ending in CRLF)
    /// and `body`; the loop adds `Date` and the framing. A playlist
    /// poll's answer.
    pub fn ok(fields: Bytes, body: Bytes) -> Self {
        Quick::Fixed(Fixed {
            fields,
            body,
            file: None,
        })
    }

    /// `200 OK` with the whole file `cid` of the blockstore, whose bytes
    /// are `body`: `fields` as for [`Quick::ok`] (fixed for the file's
    /// type), then the loop adds the file's `ETag`, `Date` and the
    /// framing, and sends the file from disk when its leaves are open
    /// ([`DiskFiles`]). A segment's answer.
    pub fn file(fields: Bytes, cid: Cid, body: Bytes) -> Self {
        Quick::Fixed(Fixed {
            fields,
            body,
            file: Some(cid),
        })
    }
}

/// What every connection of a listener shares.
pub struct Connections {
    router: Router,
    shortcut: Option<Shortcut>,
    hyper: Builder<TokioExecutor>,
    disk_files: Arc<DiskFiles>,
    header_read_timeout: Duration,
}

impl Connections {
    /// Connections answered by `shortcut` or else `router`: a request head
    /// must arrive within `header_read_timeout`; files open in
    /// `disk_files` go out by `sendfile`.
    pub fn new(
        router: Router,
        shortcut: Option<Shortcut>,
        header_read_timeout: Duration,
        disk_files: Arc<DiskFiles>,
    ) -> Arc<Self> {
        let mut hyper = Builder::new(TokioExecutor::new());
        hyper
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        hyper
            .http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        Arc::new(Connections {
            router,
            shortcut,
            hyper,
            disk_files,
            header_read_timeout,
        })
    }
}

/// Serves one accepted connection until it closes, or until `stopping`
/// turns true (after the answer in progress).
pub async fn serve(
    connections: Arc<Connections>,
    mut socket: TcpStream,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
) {
    let mut buffer = BytesMut::with_capacity(4096);
    // The heads of quick answers, written here one after another.
    let mut head = Vec::new();
    // One timer and one wait for the stop a connection, not one a read:
    // each new one would take the runtime's timer lock and the stop
    // signal's lock twice a request. A timer moved later is not
    // registered again.
    let head_deadline = tokio::time::sleep(connections.header_read_timeout);
    tokio::pin!(head_deadline);
    let mut stop_watch = stopping.clone();
    let stopped = async move {
        let _ = stop_watch.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        head_deadline
            .as_mut()
            .reset(Instant::now() + connections.header_read_timeout);
        let request = loop {
            match take_head(&mut buffer) {
                Ok(Some(request)) => break request,
                Err(ToHyper) => {
                    return to_hyper(connections, socket, peer, buffer.freeze(), stopping).await;
                }
                Ok(None) => {}
            }
            let idle = buffer.is_empty();
            if idle && *stopping.borrow() {
                return;
            }
            let stop = idle.then_some(stopped.as_mut());
            match read_until(&mut socket, &mut buffer, head_deadline.as_mut(), stop).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        };
        while buffer.len() < request.body_len {
            let no_stop: Option<Pin<&mut std::future::Pending<()>>> = None;
            match read_until(&mut socket, &mut buffer, head_deadline.as_mut(), no_stop).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
        let body = buffer.split_to(request.body_len).freeze();
        let keep_alive = request.keep_alive;
        let is_head = request.method == Method::HEAD;
        let version = request.version;
        let mut shortcut = match &connections.shortcut {
            Some(shortcut) => request.view().and_then(|head| shortcut(&head, &body, peer)),
            None => None,
        };
        // A later answer awaited here, until it is one to write.
        let shortcut = loop {
            match shortcut {
                Some(Quick::Later(answer)) => {
                    shortcut = tokio::select! {
                        biased;
                        quick = answer => Some(quick),
                        () = peer_gone(&socket) => return,
                    };
                }
                Some(Quick::Response(response)) => break Some(Ready::Response(response)),
                Some(Quick::Fixed(fixed)) => break Some(Ready::Fixed(fixed)),
                None => break None,
            }
        };
        let keep_alive = keep_alive && !*stopping.borrow();
        let answer = Answer {
            is_head,
            version,
            keep_alive,
        };
        let response = match shortcut {
            Some(Ready::Response(response)) => response,
            Some(Ready::Fixed(fixed)) => {
                // Planned first, then awaited here: a call of an async
                // function holding both ways would move its whole state
                // into this one for every playlist poll.
                let written = match fixed_plan(&connections.disk_files, &mut head, fixed, answer) {
                    FixedPlan::Write(body) => {
                        socket.write_all_buf(&mut Buf::chain(&head[..], body)).await
                    }
                    FixedPlan::FromDisk(leaves, served) => {
                        send_leaves(&mut socket, &head, &leaves, served).await
                    }
                };
                match written {
                    Ok(()) if keep_alive => continue,
                    Ok(()) => {
                        let _ = socket.shutdown().await;
                        return;
                    }
                    Err(err) => {
                        debug!(%peer, %err, "writing an answer failed");
                        return;
                    }
                }
            }
            // A peer that leaves while its answer is prepared (a player
            // abandoning a blocking playlist reload) cancels it, as hyper
            // does.
            None => {
                let request = match router_request(request, body) {
                    Ok(request) => request,
                    Err(NotHttp { head, body }) => {
                        // Put back where it was, for hyper to refuse.
                        let mut whole =
                            BytesMut::with_capacity(head.len() + body.len() + buffer.len());
                        for piece in [&head[..], &body[..], &buffer[..]] {
                            whole.extend_from_slice(piece);
                        }
                        return to_hyper(connections, socket, peer, whole.freeze(), stopping).await;
                    }
                };
                tokio::select! {
                    biased;
                    response = route(&connections.router, request, peer) => response,
                    () = peer_gone(&socket) => return,
                }
            }
        };
        match write_response(&connections.disk_files, &mut socket, response, answer).await {
            Ok(true) => {}
            Ok(_) => {
                let _ = socket.shutdown().await;
                return;
            }
            Err(err) => {
                debug!(%peer, %err, "writing an answer failed");
                return;
            }
        }
    }
}

/// The router's request of `request` with `body`, its URI and header
/// values views of the head; [`NotHttp`] when `http` refuses the URI or a
/// field that httparse took.
fn router_request(request: OurRequest, body: Bytes) -> Result<Request<Body>, NotHttp> {
    let fields = &request.fields[..request.field_count];
    let Some((uri, headers)) = head_parts(&request.head, request.target, fields) else {
        return Err(NotHttp {
            head: request.head,
            body,
        });
    };
    let mut http_request = Request::new(if body.is_empty() {
        Body::empty()
    } else {
        Body::from(body)
    });
    *http_request.method_mut() = request.method;
    *http_request.uri_mut() = uri;
    *http_request.version_mut() = request.version;
    *http_request.headers_mut() = headers;
    Ok(http_request)
}

/// A request httparse read and `http` refuses: its head and body, to be
/// put back for hyper.
#[derive(Debug)]
struct NotHttp {
    head: Bytes,
    body: Bytes,
}

/// The router's answer to `request` from `peer`.
async fn route(router: &Router, mut request: Request<Body>, peer: SocketAddr) -> Response<Body> {
    request.extensions_mut().insert(ConnectInfo(peer));
    match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Resolves when the peer closes the connection (or it fails); never
/// when the peer sends more (a pipelined request, read after the answer).
async fn peer_gone(socket: &TcpStream) {
    let mut probe = [0u8; 1];
    match socket.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Reads more bytes into `buffer` before `deadline`: `Ok(false)` when the
/// peer closed, the deadline passed, or `stopped` (waited for between
/// requests only) resolved.
async fn read_until(
    socket: &mut TcpStream,
    buffer: &mut BytesMut,
    deadline: Pin<&mut tokio::time::Sleep>,
    stopped: Option<Pin<&mut impl Future<Output = ()>>>,
) -> io::Result<bool> {
    if buffer.capacity() - buffer.len() < 1024 {
        buffer.reserve(4096);
    }
    let stop = async {
        match stopped {
            Some(stopped) => stopped.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        read = socket.read_buf(buffer) => Ok(read? > 0),
        () = deadline => Ok(false),
        () = stop => Ok(false),
    }
}

/// The head of a request the loop serves, taken off its buffer: where its
/// target and fields lie in it.
#[derive(Debug)]
struct OurRequest {
    method: Method,
    version: Version,
    head: Bytes,
    target: [u16; 2],
    fields: [FieldSpan; MAX_HEADERS],
    field_count: usize,
    body_len: usize,
    keep_alive: bool,
}

impl OurRequest {
    /// The head as the shortcut reads it.
    fn view(&self) -> Option<RequestHead<'_>> {
        let [from, to] = self.target.map(usize::from);
        let target = std::str::from_utf8(&self.head[from..to]).ok()?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        Some(RequestHead {
            method: &self.method,
            path,
            query,
            head: &self.head,
            fields: &self.fields[..self.field_count],
        })
    }
}

/// A request the loop does not serve: hyper serves the connection from
/// here, from the buffer as it was.
#[derive(Debug)]
struct ToHyper;

/// Where a header's name and value lie in its head: the name's start and
/// end, the value's start and end (a head is at most [`MAX_HEAD_BYTES`]).
type FieldSpan = [u16; 4];

/// Takes the request head at the start of `buffer` when the loop serves
/// it (`Ok(None)`: not yet whole): one httparse reads whole, of a method
/// the API uses, with a body of a known length no larger than a JSON
/// one's, which the loop reads. The URI and header map are built later,
/// only for the router ([`router_request`]).
fn take_head(buffer: &mut BytesMut) -> Result<Option<OurRequest>, ToHyper> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD_BYTES => return Ok(None),
        _ => return Err(ToHyper),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(ToHyper);
    };
    let method = match method {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "OPTIONS" => Method::OPTIONS,
        _ => return Err(ToHyper),
    };
    // Origin form only (`/path?query`); hyper takes the other forms.
    if !target.starts_with('/') {
        return Err(ToHyper);
    }
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Offsets in the head, which fit in 16 bits (checked above).
    let start = buffer.as_ptr() as usize;
    let span = |part: &[u8]| {
        let from = part.as_ptr() as usize - start;
        [from as u16, (from + part.len()) as u16]
    };
    let target = span(target.as_bytes());
    let mut spans: [FieldSpan; MAX_HEADERS] = [[0; 4]; MAX_HEADERS];
    let mut body_len = None;
    let (mut close, mut keep_alive) = (false, false);
    for (field, spanned) in parsed.headers.iter().zip(spans.iter_mut()) {
        let name = field.name.as_bytes();
        let is = |known: &header::HeaderName| name.eq_ignore_ascii_case(known.as_str().as_bytes());
        if is(&header::TRANSFER_ENCODING) || is(&header::EXPECT) || is(&header::UPGRADE) {
            return Err(ToHyper);
        }
        if is(&header::CONTENT_LENGTH) {
            let digits = field.value.trim_ascii();
            let len =
                (!digits.is_empty() && digits.len() <= 9 && digits.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(digits).ok()?.parse::<usize>().ok())
                    .flatten();
            match (len, body_len) {
                (Some(len), None) if len <= MAX_JSON_BODY_BYTES => body_len = Some(len),
                _ => return Err(ToHyper),
            }
        }
        if is(&header::CONNECTION) {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        let ([name_start, name_end], [value_start, value_end]) = (span(name), span(field.value));
        *spanned = [name_start, name_end, value_start, value_end];
    }
    let field_count = parsed.headers.len();
    let body_len = body_len.unwrap_or(0);
    if body_len > 0 && (method == Method::GET || method == Method::HEAD) {
        return Err(ToHyper);
    }
    let keep_alive = match version {
        Version::HTTP_11 => !close,
        _ => keep_alive && !close,
    };
    Ok(Some(OurRequest {
        method,
        version,
        head: buffer.split_to(head_len).freeze(),
        target,
        fields: spans,
        field_count,
        body_len,
        keep_alive,
    }))
}

/// The URI and header map of a head, as views of its bytes.
fn head_parts(head: &Bytes, target: [u16; 2], fields: &[FieldSpan]) -> Option<(Uri, HeaderMap)> {
    let range = |from: u16, to: u16| usize::from(from)..usize::from(to);
    let uri = Uri::from_maybe_shared(head.slice(range(target[0], target[1]))).ok()?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for &[name_start, name_end, value_start, value_end] in fields {
        let name = header::HeaderName::from_bytes(&head[range(name_start, name_end)]).ok()?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(range(value_start, value_end))).ok()?;
        headers.append(name, value);
    }
    Some((uri, headers))
}

/// How an answer is framed.
#[derive(Debug, Clone, Copy)]
struct Answer {
    is_head: bool,
    version: Version,
    keep_alive: bool,
}

/// How a fixed answer goes out, once its head is in the buffer.
enum FixedPlan {
    /// The head, then these bytes (none for a `HEAD`).
    Write(Bytes),
    /// The head, then the file from its open leaves.
    FromDisk(Arc<Leaves>, ServedFile),
}

/// Writes a fixed answer's head into `head` and says what follows it.
fn fixed_plan(
    disk_files: &Arc<DiskFiles>,
    head: &mut Vec<u8>,
    fixed: Fixed,
    answer: Answer,
) -> FixedPlan {
    let Fixed { fields, body, file } = fixed;
    let body_len = body.len();
    let after_head = if answer.is_head { Bytes::new() } else { body };
    let Some(cid) = file else {
        fixed_head(head, &fields, &[], body_len, answer);
        return FixedPlan::Write(after_head);
    };
    let served = ServedFile {
        cid,
        start: 0,
        len: body_len as u64,
    };
    // A file goes out from disk once its leaves are open.
    match (!answer.is_head)
        .then(|| disk_files.sendable(&served))
        .flatten()
    {
        Some(leaves) => {
            fixed_head(head, &fields, leaves.etag_field(), body_len, answer);
            FixedPlan::FromDisk(leaves, served)
        }
        None => {
            fixed_head(
                head,
                &fields,
                &super::ranges::etag_field(&cid),
                body_len,
                answer,
            );
            FixedPlan::Write(after_head)
        }
    }
}

/// Writes `response`; answers whether the connection can carry another.
async fn write_response(
    disk_files: &Arc<DiskFiles>,
    socket: &mut TcpStream,
    response: Response<Body>,
    answer: Answer,
) -> io::Result<bool> {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let bodiless = answer.is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let on_disk: Option<(Arc<Leaves>, ServedFile)> = if bodiless {
        None
    } else {
        parts
            .extensions
            .get::<ServedFile>()
            .and_then(|served| Some((disk_files.sendable(served)?, *served)))
    };
    let body_len = match &on_disk {
        Some((_, served)) => Some(served.len),
        None => axum::body::HttpBody::size_hint(&body).exact(),
    };
    let chunked = !bodiless && body_len.is_none() && answer.version == Version::HTTP_11;
    let keep_alive = answer.keep_alive && (bodiless || body_len.is_some() || chunked);

    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if name == header::CONNECTION || (framing && !bodiless) {
            continue;
        }
        push_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        push_header(&mut head, b"date", &http_date());
    }
    if !bodiless {
        match body_len {
            Some(len) => push_header(&mut head, b"content-length", len.to_string().as_bytes()),
            None if chunked => push_header(&mut head, b"transfer-encoding", b"chunked"),
            None => {}
        }
    } else if answer.is_head
        && status.is_success()
        && status != StatusCode::NO_CONTENT
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
        && let Some(len) = body_len
    {
        // A HEAD answer says the length a GET's body would have.
        push_header(&mut head, b"content-length", len.to_string().as_bytes());
    }
    end_head(&mut head, keep_alive, answer.version);

    if bodiless {
        socket.write_all(&head).await?;
        return Ok(keep_alive);
    }
    if let Some((leaves, served)) = on_disk {
        drop(body);
        send_leaves(socket, &head, &leaves, served).await?;
        return Ok(keep_alive);
    }
    let mut head = Some(Bytes::from(head));
    let mut written = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        written += data.len() as u64;
        if body_len.is_some_and(|len| written > len) {
            return Err(io::Error::other("the body is longer than its length"));
        }
        let prefix = head.take().unwrap_or_default();
        if chunked {
            let size = Bytes::from(format!("{:x}\r\n", data.len()));
            let mut out = prefix.chain(size).chain(data).chain(&b"\r\n"[..]);
            socket.write_all_buf(&mut out).await?;
        } else {
            let mut out = prefix.chain(data);
            socket.write_all_buf(&mut out).await?;
        }
    }
    if body_len.is_some_and(|len| written != len) {
        return Err(io::Error::other("the body is shorter than its length"));
    }
    let mut rest = head.take().unwrap_or_default();
    if chunked {
        let mut out = rest.chain(&b"0\r\n\r\n"[..]);
        socket.write_all_buf(&mut out).await?;
    } else if !rest.is_empty() {
        socket.write_all_buf(&mut rest).await?;
    }
    Ok(keep_alive)
}

/// Writes `head`, then the bytes `served` names from `leaves` with
/// `sendfile(2)`.
async fn send_leaves(
    socket: &mut TcpStream,
    head: &[u8],
    leaves: &Leaves,
    served: ServedFile,
) -> io::Result<()> {
    let mut pieces = leaves.pieces(served.start, served.len);
    let Some(first) = pieces.next() else {
        // Nothing follows the head (an empty file): it goes out as is.
        return socket.write_all(head).await;
    };
    // The head waits for the file's bytes (`MSG_MORE`) and one
    // `sendfile` sends them in full packets, the last pushed. Over
    // several leaves (the first piece is not the whole range) the socket
    // is corked instead, so that no leaf's end goes out as a short
    // packet; uncorking sends the last one. (Two calls an answer fewer
    // for a file of one leaf: a 360p segment, a part, an init file.)
    let several = first.2 < served.len;
    let corked = several && rustix::net::sockopt::set_tcp_cork(&*socket, true).is_ok();
    send_more(socket, head).await?;
    for (file, offset, len) in std::iter::once(first).chain(pieces) {
        send_file(socket, file, offset, len).await?;
    }
    if corked {
        rustix::net::sockopt::set_tcp_cork(&*socket, false)?;
    }
    Ok(())
}

/// Writes into `head` the head of a `200 OK` with `fields`, then `more`
/// (header lines too), and a body of `body_len` bytes (a `HEAD` answer
/// says that length too).
fn fixed_head(head: &mut Vec<u8>, fields: &[u8], more: &[u8], body_len: usize, answer: Answer) {
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    head.extend_from_slice(fields);
    head.extend_from_slice(more);
    push_header(head, b"date", &http_date());
    push_header(
        head,
        b"content-length",
        itoa::Buffer::new().format(body_len).as_bytes(),
    );
    end_head(head, answer.keep_alive, answer.version);
}

/// Ends `head`: `Connection` when the default of `version` is not what
/// happens (a close on HTTP/1.1, a kept connection on HTTP/1.0), then the
/// blank line.
fn end_head(head: &mut Vec<u8>, keep_alive: bool, version: Version) {
    if !keep_alive {
        push_header(head, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        push_header(head, b"connection", b"keep-alive");
    }
    head.extend_from_slice(b"\r\n");
}

fn push_header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// The `Date` header's value, formatted once a second per thread.
fn http_date() -> [u8; 29] {
    thread_local! {
        static LAST: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    LAST.with(|last| {
        let (cached_second, cached) = last.get();
        if cached_second == second {
            return cached;
        }
        let mut formatted = [0u8; 29];
        let text = httpdate::fmt_http_date(now);
        if text.len() == formatted.len() {
            formatted.copy_from_slice(text.as_bytes());
        }
        last.set((second, formatted));
        formatted
    })
}

/// Writes `bytes` telling the kernel that more follows (`MSG_MORE`), so
/// that an answer's head and the start of its file share packets.
async fn send_more(socket: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        socket.writable().await?;
        let rest = &bytes[sent..];
        let written = write_some(socket, rest.len(), || {
            rustix::net::send(socket, rest, rustix::net::SendFlags::MORE)
        })?;
        sent += written.unwrap_or(0);
    }
    Ok(())
}

/// Sends bytes `offset..offset + len` of `file` with `sendfile(2)`.
async fn send_file(
    socket: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    let mut offset = offset;
    let end = offset + len;
    while offset < end {
        socket.writable().await?;
        let wanted = usize::try_from(end - offset)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        let written = write_some(socket, wanted, || {
            rustix::fs::sendfile(socket, file, Some(&mut offset), wanted)
        })?;
        if written == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a block file ended before its length",
            ));
        }
    }
    Ok(())
}

/// One non-blocking write of up to `wanted` bytes to `socket`: how many
/// it wrote, `None` when the socket was full. A write shorter than
/// wanted filled the socket's buffer, so the socket's readiness is
/// cleared then too (as tokio's own writes do, and nginx's): the next
/// write waits for room instead of finding none in one more call.
fn write_some(
    socket: &TcpStream,
    wanted: usize,
    mut write: impl FnMut() -> rustix::io::Result<usize>,
) -> io::Result<Option<usize>> {
    let mut written = None;
    match socket.try_io(Interest::WRITABLE, || {
        let count = write().map_err(io::Error::from)?;
        written = Some(count);
        if 0 < count && count < wanted {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }) {
        Ok(()) => Ok(written),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(written),
        Err(err) => Err(err),
    }
}

/// Hands the connection to hyper, `read` being the bytes already read.
async fn to_hyper(
    connections: Arc<Connections>,
    socket: TcpStream,
    peer: SocketAddr,
    read: Bytes,
    mut stopping: watch::Receiver<bool>,
) {
    let service = connections
        .router
        .clone()
        .map_request(move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            request.map(Body::new)
        });
    let io = TokioIo::new(Prefixed {
        prefix: read,
        inner: socket,
    });
    let connection = connections
        .hyper
        .serve_connection_with_upgrades(io, TowerToHyperService::new(service));
    tokio::pin!(connection);
    let stop = async {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stop => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        debug!(%peer, %err, "HTTP connection ended with an error");
    }
}

/// A socket whose first bytes were already read: reads give those first.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let count = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..count]);
            self.prefix.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, post};
    use streamweave_cas::Blockstore;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::http::request_fields::X_FORWARDED_FOR;

    /// One answer as read off the socket.
    #[derive(Debug)]
    struct Read {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Read {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one answer from `buffer` (filled from `socket` as needed);
    /// `head_only` for a HEAD request's.
    async fn read_answer(socket: &mut TcpStream, buffer: &mut Vec<u8>, head_only: bool) -> Read {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(head_len) = parsed.parse(buffer).expect("a head") {
                let status = parsed.code.expect("status");
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect();
                let length = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse::<usize>().expect("length"));
                let body_len = if head_only || status == 304 {
                    0
                } else {
                    length.expect("answers here have a length")
                };
                while buffer.len() < head_len + body_len {
                    read_more(socket, buffer).await;
                }
                let body = buffer[head_len..head_len + body_len].to_vec();
                buffer.drain(..head_len + body_len);
                return Read {
                    status,
                    headers,
                    body,
                };
            }
            read_more(socket, buffer).await;
        }
    }

    async fn read_more(socket: &mut TcpStream, buffer: &mut Vec<u8>) {
        let mut more = vec![0u8; 64 * 1024];
        let count = socket.read(&mut more).await.expect("read");
        assert!(count > 0, "closed before the whole answer");
        buffer.extend_from_slice(&more[..count]);
    }

    struct Fixture {
        address: SocketAddr,
        file: Vec<u8>,
        disk_files: Arc<DiskFiles>,
        cid: streamweave_cas::Cid,
        stop: watch::Sender<bool>,
        slow_dropped: Arc<tokio::sync::Notify>,
        _dir: tempfile::TempDir,
    }

    /// A listener whose `/live/x/file` answers zeros naming a stored file
    /// (so an answer holding the file's bytes came from disk), `/live/x/range`
    /// bytes 262,134..262,154 of it the same way (across two leaves),
    /// `/live/x/start` its first 20 bytes (in one), `/live/x/slow` only after
    /// a minute (signalling when its handler is dropped), `/healthz` outside
    /// the lane, and whose voucher route of channel `d` echoes the length
    /// of what was posted.
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let blockstore = Arc::new(Blockstore::open(dir.path()).expect("open"));
        let file: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8 + 1).collect();
        let cid = blockstore.put_file(&file).expect("put");
        let len = file.len() as u64;
        let dropped = Arc::new(tokio::sync::Notify::new());
        let slow_dropped = dropped.clone();
        // Zeros naming 20 bytes of the file from `start`.
        let twenty_from = move |start: u64| {
            get(move || async move {
                let served = ServedFile {
                    cid,
                    start,
                    len: 20,
                };
                (
                    StatusCode::PARTIAL_CONTENT,
                    axum::Extension(served),
                    vec![0u8; 20],
                )
            })
        };
        let router = Router::new()
            .route(
                "/live/x/file",
                get(move || async move {
                    let served = ServedFile { cid, start: 0, len };
                    (axum::Extension(served), vec![0u8; len as usize])
                }),
            )
            .route("/live/x/range", twenty_from(262_134))
            .route("/live/x/start", twenty_from(0))
            .route(
                "/api/v1/channels/d/vouchers",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/live/x/slow",
                get(move || async move {
                    let _dropped = DropSignal(slow_dropped.clone());
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            );
        let disk_files = DiskFiles::new(blockstore, 64);
        // The shortcut answers `/live/x/short` (which the router does not
        // know) with the method and the peer's address, `/live/x/quick`
        // the same as a fixed answer, `/live/x/whole` zeros naming the
        // stored file as a whole file's answer, the voucher route of
        // channel `c` later with the length of what was posted (channel
        // `never` never, signalling when its future is dropped), and
        // nothing else.
        let never_dropped = dropped.clone();
        let shortcut: Shortcut = Box::new(move |head, posted, peer| {
            let body = format!("{} {peer}", head.method());
            if head.path() == "/api/v1/channels/c/vouchers" {
                let len = posted.len();
                return Some(Quick::Later(Box::pin(async move {
                    tokio::task::yield_now().await;
                    Quick::ok(
                        Bytes::from_static(b"x-kind: later\r\n"),
                        Bytes::from(format!("later {len}")),
                    )
                })));
            }
            if head.path() == "/api/v1/channels/never/vouchers" {
                let dropped = DropSignal(never_dropped.clone());
                return Some(Quick::Later(Box::pin(async move {
                    let _dropped = dropped;
                    std::future::pending().await
                })));
            }
            if head.path() == "/live/x/whole" {
                return Some(Quick::file(
                    Bytes::from_static(b"x-kind: whole\r\n"),
                    cid,
                    Bytes::from(vec![0u8; len as usize]),
                ));
            }
            if head.path() == "/live/x/quick" {
                return Some(Quick::ok(
                    Bytes::from_static(b"x-kind: quick\r\ncache-control: no-cache\r\n"),
                    Bytes::from(body),
                ));
            }
            (head.path() == "/live/x/short")
                .then(|| Quick::Response(Response::new(Body::from(body))))
        });
        let connections = Connections::new(
            router,
            Some(shortcut),
            Duration::from_secs(5),
            disk_files.clone(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopping) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((socket, peer)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(connections.clone(), socket, peer, stopping.clone()));
            }
        });
        Fixture {
            address,
            file,
            disk_files,
            cid,
            stop,
            slow_dropped: dropped,
            _dir: dir,
        }
    }

    impl Fixture {
        /// Waits until the stored file's leaves are open (it then goes
        /// out from disk).
        async fn wait_until_open(&self) {
            let served = ServedFile {
                cid: self.cid,
                start: 0,
                len: self.file.len() as u64,
            };
            for _ in 0..500 {
                if self.disk_files.sendable(&served).is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Signals when dropped (a handler's future cancelled).
    struct DropSignal(Arc<tokio::sync::Notify>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }

    #[tokio::test]
    async fn a_peer_that_leaves_cancels_its_answer_in_progress() {
        let fixture = fixture().await;
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        socket
            .write_all(b"GET /live/x/slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(socket);
        tokio::time::timeout(Duration::from_secs(5), fixture.slow_dropped.notified())
            .await
            .expect("the handler was dropped when the peer left");
        // The same for a shortcut's later answer.
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        socket
            .write_all(b"POST /api/v1/channels/never/vouchers HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(socket);
        tokio::time::timeout(Duration::from_secs(5), fixture.slow_dropped.notified())
            .await
            .expect("the later answer was dropped when the peer left");
    }

    #[tokio::test]
    async fn media_goes_out_from_disk_once_its_blocks_are_open() {
        let fixture = fixture().await;
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        let mut buffer = Vec::new();
        let get_file = b"GET /live/x/file HTTP/1.1\r\nhost: x\r\n\r\n";
        socket.write_all(get_file).await.expect("write");
        let first = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(first.status, 200);
        assert!(
            first.body.iter().all(|&b| b == 0),
            "the answer's own bytes, at first"
        );
        fixture.wait_until_open().await;
        // The same connection, then two requests in one write (pipelined).
        socket.write_all(get_file).await.expect("write");
        let from_disk = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(from_disk.status, 200);
        assert!(
            from_disk.body == fixture.file,
            "the file's bytes, from disk"
        );
        assert!(from_disk.header("date").is_some());
        socket
            .write_all(b"GET /live/x/range HTTP/1.1\r\nhost: x\r\n\r\nHEAD /live/x/file HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let range = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(range.status, 206);
        assert_eq!(range.body, &fixture.file[262_134..262_154]);
        let head = read_answer(&mut socket, &mut buffer, true).await;
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(fixture.file.len().to_string().as_str())
        );
        // Within one leaf: the head and the bytes without corking.
        socket
            .write_all(b"GET /live/x/start HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let start = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(start.status, 206);
        assert_eq!(start.body, &fixture.file[..20]);
        // Nothing more was sent: a HEAD answer has no body.
        socket
            .write_all(b"POST /api/v1/channels/d/vouchers HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .expect("write");
        let posted = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!((posted.status, posted.body.as_slice()), (200, &b"5"[..]));
        fixture.stop.send_replace(true);
    }

    #[tokio::test]
    async fn a_whole_file_goes_out_from_fixed_lines_then_from_disk() {
        let fixture = fixture().await;
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        let mut buffer = Vec::new();
        let etag = format!("\"{}\"", fixture.cid);
        let length = fixture.file.len().to_string();
        let get_whole = b"GET /live/x/whole HTTP/1.1\r\nhost: x\r\n\r\n";
        socket.write_all(get_whole).await.expect("write");
        let first = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(first.status, 200);
        assert!(
            first.body.len() == fixture.file.len() && first.body.iter().all(|&b| b == 0),
            "the answer's own bytes, at first"
        );
        assert_eq!(first.header("x-kind"), Some("whole"));
        assert_eq!(first.header("etag"), Some(etag.as_str()));
        fixture.wait_until_open().await;
        // From disk, then a HEAD (no body, the length a GET's has), then
        // from disk again on the same connection.
        let mut pipelined = get_whole.to_vec();
        pipelined.extend_from_slice(b"HEAD /live/x/whole HTTP/1.1\r\nhost: x\r\n\r\n");
        pipelined.extend_from_slice(get_whole);
        socket.write_all(&pipelined).await.expect("write");
        let from_disk = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(from_disk.status, 200);
        assert!(
            from_disk.body == fixture.file,
            "the file's bytes, from disk"
        );
        assert_eq!(from_disk.header("etag"), Some(etag.as_str()));
        assert_eq!(from_disk.header("content-length"), Some(length.as_str()));
        assert_eq!(from_disk.header("date").map(str::len), Some(29));
        let head = read_answer(&mut socket, &mut buffer, true).await;
        assert_eq!(
            (
                head.status,
                head.header("content-length"),
                head.header("etag")
            ),
            (200, Some(length.as_str()), Some(etag.as_str()))
        );
        let again = read_answer(&mut socket, &mut buffer, false).await;
        assert!(again.body == fixture.file, "the file's bytes, from disk");
        fixture.stop.send_replace(true);
    }

    #[tokio::test]
    async fn the_shortcut_answers_what_it_knows_and_the_router_the_rest() {
        let fixture = fixture().await;
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        let local = socket.local_addr().expect("local address");
        let mut buffer = Vec::new();
        socket
            .write_all(b"GET /live/x/short HTTP/1.1\r\nhost: x\r\n\r\nHEAD /live/x/short HTTP/1.1\r\nhost: x\r\n\r\nGET /live/x/range HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let short = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(short.status, 200);
        assert_eq!(short.body, format!("GET {local}").into_bytes());
        let head = read_answer(&mut socket, &mut buffer, true).await;
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(format!("HEAD {local}").len().to_string().as_str())
        );
        // Not the shortcut's: the router's, on the same connection.
        let routed = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(routed.status, 206);
        // A request with a body: the shortcut's answer when it is ready,
        // and the router's when the shortcut does not take it.
        socket
            .write_all(b"POST /api/v1/channels/c/vouchers HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nhi!POST /api/v1/channels/d/vouchers HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
            .await
            .expect("write");
        let later = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(
            (later.status, later.body.as_slice(), later.header("x-kind")),
            (200, &b"later 3"[..], Some("later"))
        );
        let posted = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!((posted.status, posted.body.as_slice()), (200, &b"2"[..]));
        // A fixed answer: its fields, the date, its length; a HEAD's says
        // the length without the body; HTTP/1.0 without keep-alive closes.
        socket
            .write_all(b"GET /live/x/quick HTTP/1.1\r\nhost: x\r\n\r\nHEAD /live/x/quick HTTP/1.1\r\nhost: x\r\n\r\nGET /live/x/quick HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let quick = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(quick.status, 200);
        assert_eq!(quick.body, format!("GET {local}").into_bytes());
        assert_eq!(
            (quick.header("x-kind"), quick.header("cache-control")),
            (Some("quick"), Some("no-cache"))
        );
        assert_eq!(quick.header("date").map(str::len), Some(29));
        assert_eq!(quick.header("connection"), None);
        let head = read_answer(&mut socket, &mut buffer, true).await;
        assert_eq!(
            (head.status, head.header("content-length")),
            (
                200,
                Some(format!("HEAD {local}").len().to_string().as_str())
            )
        );
        let closing = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(closing.body, format!("GET {local}").into_bytes());
        assert_eq!(closing.header("connection"), Some("close"));
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
            .await
            .expect("closed");
        assert_eq!((read.expect("read"), rest.len()), (0, 0));
        fixture.stop.send_replace(true);
    }

    #[tokio::test]
    async fn every_routes_requests_keep_the_loop() {
        let fixture = fixture().await;
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        let local = socket.local_addr().expect("local address");
        let mut buffer = Vec::new();
        // A player's API calls on the connection its media then takes:
        // the router answers them through the loop, which keeps the
        // connection (the shortcut answers after them).
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nDELETE /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}OPTIONS /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /live/x/short HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let health = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));
        let deleted = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(deleted.status, 405);
        let options = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(options.status, 405);
        let short = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(short.status, 200);
        assert_eq!(short.body, format!("GET {local}").into_bytes());
        // A body larger than a JSON one's is hyper's to read (and the
        // connection hyper's from then on).
        let large = MAX_JSON_BODY_BYTES + 1;
        let mut request = format!(
            "POST /api/v1/channels/d/vouchers HTTP/1.1\r\nhost: x\r\ncontent-length: {large}\r\n\r\n"
        )
        .into_bytes();
        request.resize(request.len() + large, b'x');
        request.extend_from_slice(b"GET /live/x/short HTTP/1.1\r\nhost: x\r\n\r\n");
        socket.write_all(&request).await.expect("write");
        let posted = read_answer(&mut socket, &mut buffer, false).await;
        let len = large.to_string().into_bytes();
        assert_eq!((posted.status, posted.body), (200, len));
        let short = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(short.status, 404);
        fixture.stop.send_replace(true);
    }

    #[tokio::test]
    async fn other_requests_hand_the_connection_to_hyper() {
        let fixture = fixture().await;
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        let mut buffer = Vec::new();
        // A chunked body is hyper's to read; the lane's routes still answer.
        socket
            .write_all(b"POST /api/v1/channels/d/vouchers HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
            .await
            .expect("write");
        let posted = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!((posted.status, posted.body.as_slice()), (200, &b"7"[..]));
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /live/x/range HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let health = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));
        let range = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(range.status, 206);
        assert_eq!(
            range.body,
            vec![0u8; 20],
            "hyper sends the answer's own bytes"
        );
        // Hyper's for good: the shortcut answers no more.
        socket
            .write_all(b"GET /live/x/short HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let short = read_answer(&mut socket, &mut buffer, false).await;
        assert_eq!(short.status, 404);
        // A head that is not HTTP: hyper answers it with an error.
        let mut other = TcpStream::connect(fixture.address).await.expect("connect");
        other
            .write_all(b"GET /live/x/file HTTP/9\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        other.read_to_end(&mut answer).await.expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 4"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        // A target httparse reads and `http` refuses, after one the
        // shortcut answered: not the router's, hyper refuses it.
        let mut refused = TcpStream::connect(fixture.address).await.expect("connect");
        refused
            .write_all(b"GET /live/x/short HTTP/1.1\r\nhost: x\r\n\r\nGET /live/x/<a> HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buffer = Vec::new();
        let short = read_answer(&mut refused, &mut buffer, false).await;
        assert_eq!(short.status, 200);
        let bad = read_answer(&mut refused, &mut buffer, false).await;
        assert_eq!(bad.status, 400);
        fixture.stop.send_replace(true);
    }

    #[tokio::test]
    async fn http_1_0_closes_unless_kept_alive_and_stopping_closes_idle_connections() {
        let fixture = fixture().await;
        let mut socket = TcpStream::connect(fixture.address).await.expect("connect");
        socket
            .write_all(b"GET /live/x/range HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        socket
            .read_to_end(&mut answer)
            .await
            .expect("closed after the answer");
        assert!(answer.starts_with(b"HTTP/1.1 206"));
        assert!(String::from_utf8_lossy(&answer).contains("connection: close"));

        let mut kept = TcpStream::connect(fixture.address).await.expect("connect");
        let mut buffer = Vec::new();
        kept.write_all(b"GET /live/x/range HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await
            .expect("write");
        let first = read_answer(&mut kept, &mut buffer, false).await;
        assert_eq!(first.header("connection"), Some("keep-alive"));
        fixture.stop.send_replace(true);
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0))),
            "an idle connection closes on stop"
        );
    }

    #[tokio::test]
    async fn a_short_write_waits_for_room_before_the_next() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sender = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (mut receiver, _) = listener.accept().await.expect("accept");
        let bytes = vec![7u8; 64 << 20];
        sender.writable().await.expect("writable");
        let written = write_some(&sender, bytes.len(), || {
            rustix::net::send(&sender, &bytes, rustix::net::SendFlags::empty())
        })
        .expect("write");
        let written = written.expect("some room at first");
        assert!(0 < written && written < bytes.len(), "the buffer filled");
        // No room: the next write waits instead of trying (and failing).
        let soon = tokio::time::timeout(Duration::from_millis(200), sender.writable()).await;
        assert!(soon.is_err(), "a full socket is not writable");
        // The reader drains it: room again.
        let mut drained = vec![0u8; written];
        receiver.read_exact(&mut drained).await.expect("read");
        tokio::time::timeout(Duration::from_secs(5), sender.writable())
            .await
            .expect("writable once drained")
            .expect("writable");
    }

    #[test]
    fn heads_are_ours_only_when_simple() {
        let take = |head: &[u8]| {
            let mut buffer = BytesMut::from(head);
            let taken = take_head(&mut buffer);
            if !matches!(taken, Ok(Some(_))) {
                assert_eq!(&buffer[..], head, "a head not taken stays in the buffer");
            }
            taken
        };
        let ours = |head: &[u8]| matches!(take(head), Ok(Some(_)));
        assert!(ours(b"GET /live/a/720p/1.m4s HTTP/1.1\r\n\r\n"));
        assert!(ours(
            b"GET /play/s/720p/index.m3u8?_HLS_msn=3 HTTP/1.1\r\n\r\n"
        ));
        assert!(ours(
            b"POST /api/v1/channels/c/vouchers HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"
        ));
        // Any route's, of the methods the API uses.
        assert!(ours(b"GET /api/v1/streams HTTP/1.1\r\n\r\n"));
        assert!(ours(b"DELETE /live/a/1.m4s HTTP/1.1\r\n\r\n"));
        assert!(ours(
            b"PATCH /api/v1/me HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"
        ));
        assert!(ours(b"OPTIONS /api/v1/uploads HTTP/1.1\r\n\r\n"));
        assert!(matches!(
            take(b"GET /live/a/720p/1.m4s HTTP/1.1\r\nhost"),
            Ok(None)
        ));
        for hyper in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"TRACE /api/v1/streams HTTP/1.1\r\n\r\n",
            b"HEAD /live/a/1.m4s HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
            b"GET http://x/live/a/1.m4s HTTP/1.1\r\n\r\n",
            b"GET /live/a/1.m4s HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /live/a/1.m4s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /live/a/1.m4s HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
            b"POST /api/v1/channels/c/vouchers HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
            b"POST /api/v1/channels/c/vouchers HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            b"POST /api/v1/channels/c/vouchers HTTP/1.1\r\ncontent-length: +2\r\n\r\n",
            b"POST /api/v1/channels/c/vouchers HTTP/1.1\r\ncontent-length: 9999999\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert!(
                matches!(take(hyper), Err(ToHyper)),
                "{:?}",
                String::from_utf8_lossy(hyper)
            );
        }
        let mut long = b"GET /live/a/1.m4s HTTP/1.1\r\nx: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 1, b'a');
        assert!(matches!(take(&long), Err(ToHyper)), "an overlong head");
        let Ok(Some(closing)) = take(b"GET /live/a/1.m4s HTTP/1.1\r\nconnection: Close\r\n\r\n")
        else {
            panic!("ours");
        };
        assert!(!closing.keep_alive);
        // Taken off the buffer: what follows (a pipelined request, a
        // body) stays; the head's parts are its own.
        let mut buffer = BytesMut::from(
            &b"GET /live/a/1.m4s?x=1 HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\naccept: */*\r\naccept: video/mp4\r\nx-bin: \xff\r\n\r\nGET /next"[..],
        );
        let Ok(Some(request)) = take_head(&mut buffer) else {
            panic!("ours");
        };
        assert_eq!(&buffer[..], b"GET /next");
        // As the shortcut reads it.
        let head = request.view().expect("a text target");
        assert_eq!(
            (head.method(), head.path(), head.query()),
            (&Method::GET, "/live/a/1.m4s", Some("x=1"))
        );
        assert_eq!(head.text(&header::HOST), Some("h"));
        assert_eq!(head.text(&X_FORWARDED_FOR), Some("1.2.3.4"));
        assert_eq!(head.text(&header::ACCEPT), Some("*/*"), "the first");
        let binary = header::HeaderName::from_static("x-bin");
        assert!(head.has(&binary) && head.text(&binary).is_none());
        assert!(!head.has(&header::RANGE));
        // As the router reads it.
        let request = router_request(request, Bytes::new()).expect("http takes it");
        assert_eq!(
            (request.uri().path(), request.uri().query()),
            ("/live/a/1.m4s", Some("x=1"))
        );
        let headers = request.headers();
        assert_eq!(headers["host"], "h");
        assert_eq!(headers["x-forwarded-for"], "1.2.3.4");
        let accepted: Vec<_> = headers.get_all("accept").iter().collect();
        assert_eq!(accepted, ["*/*", "video/mp4"]);
        // A path httparse reads and `http`'s URI does not: the router
        // never sees it, and the head and body are given back whole.
        let refused = b"POST /api/v1/channels/<c>/vouchers HTTP/1.1\r\ncontent-length: 2\r\n\r\n";
        let mut buffer = BytesMut::from(&refused[..]);
        let Ok(Some(request)) = take_head(&mut buffer) else {
            panic!("ours until the router reads it");
        };
        let Err(NotHttp { head, body }) = router_request(request, Bytes::from_static(b"{}")) else {
            panic!("refused");
        };
        assert_eq!((&head[..], &body[..]), (&refused[..], &b"{}"[..]));
    }

    proptest::proptest! {
        /// Any bytes: a head is taken with nothing else, or the buffer
        /// is left as it was (for more bytes, or for hyper).
        #[test]
        fn a_head_is_taken_whole_or_not_at_all(
            line in proptest::sample::select(vec![
                "GET /live/a/720p/1.m4s HTTP/1.1\r\n",
                "HEAD /ipfs/bafy HTTP/1.0\r\n",
                "POST /api/v1/channels/c/vouchers HTTP/1.1\r\n",
                "GET /live/<a> HTTP/1.1\r\n",
            ]),
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["host", "Connection", "content-length", "x-a", "Accept", "upgrade"]),
                 proptest::collection::vec(proptest::num::u8::ANY, 0..12)),
                0..6,
            ),
            end in proptest::sample::select(vec!["\r\n", "", "\r\nGET /next"]),
        ) {
            let mut bytes = line.as_bytes().to_vec();
            for (name, value) in &fields {
                bytes.extend_from_slice(name.as_bytes());
                bytes.extend_from_slice(b": ");
                bytes.extend_from_slice(value);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(end.as_bytes());
            let mut buffer = BytesMut::from(&bytes[..]);
            match take_head(&mut buffer) {
                Ok(Some(request)) => {
                    let head_len = bytes.len() - buffer.len();
                    proptest::prop_assert_eq!(&bytes[head_len..], &buffer[..]);
                    // A head ends with its blank line (httparse takes a bare LF too).
                    proptest::prop_assert!(bytes[..head_len].ends_with(b"\n"));
                    proptest::prop_assert!(request.field_count <= fields.len());
                    // The shortcut reads each field as the router would.
                    let names = ["host", "connection", "content-length", "x-a", "accept", "upgrade"]
                        .map(header::HeaderName::from_static);
                    let seen: Vec<_> = {
                        let head = request.view();
                        names
                            .iter()
                            .map(|name| {
                                head.as_ref()
                                    .map(|head| (head.has(name), head.text(name).map(str::to_owned)))
                            })
                            .collect()
                    };
                    let head_bytes = request.head.clone();
                    match router_request(request, Bytes::new()) {
                        Ok(routed) => {
                            for (name, seen) in names.iter().zip(seen) {
                                let headers = routed.headers();
                                let expected = (headers.has(name), headers.text(name).map(str::to_owned));
                                proptest::prop_assert_eq!(seen, Some(expected));
                            }
                        }
                        Err(NotHttp { head, .. }) => {
                            proptest::prop_assert_eq!(&head[..], &head_bytes[..]);
                        }
                    }
                }
                Ok(None) | Err(ToHyper) => proptest::prop_assert_eq!(&bytes[..], &buffer[..]),
            }
        }
    }
}
