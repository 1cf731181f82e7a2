//! `/ipfs/{cid}[/path]`: an IPFS gateway over the blockstore, speaking the
//! trustless gateway protocol. Plain requests answer file bytes (UnixFS
//! paths resolved through archive directories, content types, ranges);
//! `Accept: application/vnd.ipld.raw` (or `?format=raw`) answers one block;
//! `Accept: application/vnd.ipld.car` (or `?format=car`) a CAR of the path's
//! blocks and the target's DAG (`dag-scope` = all, entity or block).
//!
//! Access follows the streams': a free stream's media and archive are
//! public, and so is a paid stream's archive (with its blocks) once its
//! creator makes it public; otherwise a paid stream's answer 402 (watch
//! through a session), except to its owner and the admins.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use streamweave_cas::{CasError, Cid, DagScope, PathError, UnixFsType};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, Problem};
use super::ranges::{FileAnswer, immutable_file, load_file};
use super::request_fields::RequestFields;
use crate::fast_map::FastHashMap;
use crate::model::{AccessMode, StreamRecord};

pub fn routes() -> OpenApiRouter<AppState> {
    // The path form takes any depth (`{*path}`), which OpenAPI cannot spell:
    // `/ipfs/{cid}` documents it.
    OpenApiRouter::new()
        .routes(routes!(get_cid))
        .route("/ipfs/{cid}/{*path}", axum::routing::get(get_path))
}

/// Largest CAR the gateway builds for one request; bigger DAGs are exported
/// with `streamweave archive export`.
const MAX_GATEWAY_CAR_BYTES: u64 = 512 * 1024 * 1024;
/// Deepest path resolved.
const MAX_PATH_SEGMENTS: usize = 32;
/// How long a CID found public is served as public without asking the
/// database again.
const PUBLIC_VERDICT_TTL: Duration = Duration::from_secs(10);
/// Most CIDs remembered as public.
const MAX_PUBLIC_VERDICTS: usize = 65_536;

/// CIDs lately found readable by anyone (a free stream's media, a public
/// archive's blocks, a collectible's metadata), so that serving them again
/// asks the database nothing. A stream's change of access on this node
/// forgets them all; on another node of a cluster, a verdict holds at most
/// [`PUBLIC_VERDICT_TTL`] (its answers already let caches keep them:
/// `immutable`).
#[derive(Default)]
pub struct PublicCids {
    until: Mutex<FastHashMap<Cid, Instant>>,
}

impl PublicCids {
    pub fn is_public(&self, cid: &Cid, now: Instant) -> bool {
        let until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until.get(cid).is_some_and(|until| *until > now)
    }

    pub fn remember(&self, cid: Cid, now: Instant) {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.len() >= MAX_PUBLIC_VERDICTS && !until.contains_key(&cid) {
            until.retain(|_, at| *at > now);
            if until.len() >= MAX_PUBLIC_VERDICTS {
                until.clear();
            }
        }
        until.insert(cid, now + PUBLIC_VERDICT_TTL);
    }

    /// Forgets every verdict (a stream's access changed).
    pub fn forget(&self) {
        self.until.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct GatewayQuery {
    /// `raw` (one block) or `car` (a CAR); plain file bytes when absent.
    pub format: Option<String>,
    /// For CARs: `all` (default), `entity` or `block`.
    #[serde(rename = "dag-scope")]
    #[param(rename = "dag-scope")]
    pub dag_scope: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    File,
    Raw,
    Car(DagScope),
}

fn response_format(query: &GatewayQuery, headers: &impl RequestFields) -> Result<Format, ApiError> {
    let accept = headers.text(&header::ACCEPT).unwrap_or_default();
    let wanted = match query.format.as_deref() {
        Some("raw") => "raw",
        Some("car") => "car",
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format {other:?}: use raw or car"
            )));
        }
        None if accept.contains("application/vnd.ipld.raw") => "raw",
        None if accept.contains("application/vnd.ipld.car") => "car",
        None => "file",
    };
    Ok(match wanted {
        "raw" => Format::Raw,
        "car" => Format::Car(match query.dag_scope.as_deref() {
            None | Some("all") => DagScope::All,
            Some("entity") => DagScope::Entity,
            Some("block") => DagScope::Block,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dag-scope {other:?}: use all, entity or block"
                )));
            }
        }),
        _ => Format::File,
    })
}

/// A stored file or archive by CID. `/ipfs/{cid}/{path...}` resolves a path
/// inside an archive directory (`/ipfs/{root}/master.m3u8` plays a
/// recording) and takes the same query and `Accept` forms.
#[utoipa::path(
    get,
    path = "/ipfs/{cid}",
    tag = "content",
    params(("cid" = String, Path, description = "CIDv1 (raw or dag-pb, sha2-256)"), GatewayQuery),
    responses(
        (status = 200, description = "File bytes, a raw block, or a CAR"),
        (status = 206, description = "Partial content"),
        (status = 400, description = "Not a supported CID or format", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Media of a paid stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not stored here", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_cid(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(cid): Path<String>,
    Query(query): Query<GatewayQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, caller, &cid, "", &query, &headers).await
}

/// `/ipfs/{cid}/{*path}`: a file inside an archive directory, by path from its root.
async fn get_path(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path((cid, path)): Path<(String, String)>,
    Query(query): Query<GatewayQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, caller, &cid, &path, &query, &headers).await
}

fn paid_refusal() -> ApiError {
    ApiError::custom(
        StatusCode::PAYMENT_REQUIRED,
        "session-required",
        "Payment required",
        "this belongs to a paid stream: watch it through a session",
    )
}

/// Whether the caller holds the collectible of the event whose recording
/// this is: the prize is the recording itself.
async fn holds_the_recording(
    state: &AppState,
    stream: &StreamRecord,
    caller: Option<&Caller>,
) -> Result<bool, ApiError> {
    let Some(address) = caller.and_then(Caller::address) else {
        return Ok(false);
    };
    if stream.access != AccessMode::Ticket {
        return Ok(false);
    }
    let Some(event) = state.db.event_of_stream(&stream.id).await? else {
        return Ok(false);
    };
    Ok(state
        .db
        .collectible_of_event(&event.id)
        .await?
        .is_some_and(|c| c.owner == address))
}

fn may_read(stream: &StreamRecord, caller: Option<&Caller>) -> bool {
    stream.access == AccessMode::Free
        || stream.archive_public
        || caller.is_some_and(|caller| {
            caller.is_admin()
                || stream
                    .owner
                    .as_deref()
                    .and_then(|o| o.parse().ok())
                    .is_some_and(|owner| caller.may_act_for(owner))
        })
}

/// A file of unknown type (any by CID alone).
pub const FILE_CONTENT_TYPE: &str = "application/octet-stream";

fn content_type_of(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        _ => FILE_CONTENT_TYPE,
    }
}

fn block_of(state: &AppState, cid: &Cid) -> Result<Vec<u8>, ApiError> {
    state
        .blockstore
        .get_block(cid)
        .map_err(|err| ApiError::from(anyhow::Error::from(err)))?
        .ok_or_else(|| ApiError::not_found(format!("block {cid} is not stored here")))
}

/// Whether `cid` is a UnixFS directory (reads its block when it is dag-pb).
fn is_directory(state: &AppState, cid: &Cid) -> Result<bool, ApiError> {
    if cid.codec() != streamweave_cas::DAG_PB_CODEC {
        return Ok(false);
    }
    Ok(streamweave_cas::decode_dag_pb(&block_of(state, cid)?)
        .ok()
        .and_then(|node| node.data)
        .and_then(|d| streamweave_cas::decode_unixfs(&d).ok())
        .is_some_and(|d| d.kind == UnixFsType::Directory))
}

/// Whether the caller may read `root`: an archive root's or archived
/// block's stream rules, or a stored file's streams'. Remembers a verdict
/// that holds for anyone.
async fn check_access(
    state: &AppState,
    caller: Option<&Caller>,
    root: &Cid,
    now: Instant,
) -> Result<(), ApiError> {
    let key = root.to_string();
    if let Some(stream) = state.db.archive_stream(&key).await? {
        if may_read(&stream, None) {
            state.public_cids.remember(*root, now);
        } else if !may_read(&stream, caller) && !holds_the_recording(state, &stream, caller).await?
        {
            return Err(paid_refusal());
        }
        return Ok(());
    }
    match state.db.cid_is_free(&key).await? {
        None => Err(ApiError::not_found("nothing with this CID is stored here")),
        Some(true) => {
            state.public_cids.remember(*root, now);
            Ok(())
        }
        Some(false) if caller.is_some_and(Caller::is_admin) => Ok(()),
        Some(false) => Err(paid_refusal()),
    }
}

async fn serve(
    state: &AppState,
    caller: Option<Caller>,
    cid: &str,
    path: &str,
    query: &GatewayQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let root =
        streamweave_cas::parse_cid(cid).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let format = response_format(query, headers)?;
    let now = Instant::now();
    if !state.public_cids.is_public(&root, now) {
        check_access(state, caller.as_ref(), &root, now).await?;
    }
    // Resolve the path through directory nodes.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() > MAX_PATH_SEGMENTS {
        return Err(ApiError::bad_request("path too deep"));
    }
    let (walked, target) = streamweave_cas::resolve_path(root, &segments, |cid| {
        state
            .blockstore
            .get_block(cid)?
            .ok_or(CasError::MissingBlock(*cid))
    })
    .map_err(|err| match err {
        PathError::NotADirectory(cid) => ApiError::not_found(format!("{cid} is not a directory")),
        PathError::Missing { name, directory } => {
            ApiError::not_found(format!("no {name:?} in {directory}"))
        }
        PathError::Block(CasError::MissingBlock(cid)) => {
            ApiError::not_found(format!("block {cid} is not stored here"))
        }
        PathError::Block(err) => ApiError::from(anyhow::Error::from(err)),
    })?;
    let immutable = HeaderValue::from_static("public, max-age=31536000, immutable");
    let etag = HeaderValue::from_str(&format!("\"{target}\"")).ok();
    match format {
        Format::Raw => {
            let block = block_of(state, &target)?;
            let mut response =
                ([(header::CONTENT_TYPE, "application/vnd.ipld.raw")], block).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, immutable);
            if let Some(etag) = etag {
                response.headers_mut().insert(header::ETAG, etag);
            }
            Ok(response)
        }
        Format::Car(scope) => {
            let blockstore = state.blockstore.clone();
            let car = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let mut total = 0u64;
                streamweave_cas::write_car_scoped(
                    &root,
                    &walked,
                    &target,
                    scope,
                    |cid| {
                        let block = blockstore
                            .get_block(cid)?
                            .ok_or(CasError::MissingBlock(*cid))?;
                        total += block.len() as u64;
                        if total > MAX_GATEWAY_CAR_BYTES {
                            return Err(CasError::Malformed(
                                "the CAR is too large for the gateway: use streamweave archive export",
                            ));
                        }
                        Ok(block)
                    },
                    &mut out,
                )
                .map(|_| out)
            })
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|err| match err {
                CasError::MissingBlock(cid) => {
                    ApiError::not_found(format!("block {cid} is not stored here"))
                }
                CasError::Malformed(why) => ApiError::bad_request(why),
                other => ApiError::from(anyhow::Error::from(other)),
            })?;
            let mut response = (
                [(header::CONTENT_TYPE, "application/vnd.ipld.car; version=1")],
                car,
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, immutable);
            Ok(response)
        }
        Format::File => {
            // The cache holds files only (a directory is refused before it
            // is loaded), so a file found there is answered without reading
            // its root block again.
            let bytes = match state.cache.get(&target) {
                Some(bytes) => bytes,
                None => {
                    if is_directory(state, &target)? {
                        return Err(ApiError::not_found(format!(
                            "{target} is a directory: ask for a file in it (master.m3u8), or ?format=car"
                        )));
                    }
                    load_file(state, target).await?.ok_or_else(|| {
                        ApiError::not_found("nothing with this CID is stored here")
                    })?
                }
            };
            let name = segments.last().copied().unwrap_or_default();
            Ok(immutable_file(
                headers,
                &target,
                content_type_of(name),
                bytes,
            ))
        }
    }
}

/// A file by its CID (`/ipfs/{cid}`, no query) answered from memory,
/// without awaiting anything: the CID was found public within the
/// verdict's lifetime, the request asks for the file (not a raw block or
/// a CAR), and its bytes are in the file cache (which holds files only).
/// The same answer [`serve`] gives; `None` when the router must answer.
pub fn resident_file(
    state: &AppState,
    cid: &str,
    headers: &impl RequestFields,
) -> Option<FileAnswer> {
    let root = streamweave_cas::parse_cid(cid).ok()?;
    let no_query = GatewayQuery {
        format: None,
        dag_scope: None,
    };
    if response_format(&no_query, headers).ok()? != Format::File
        || !state.public_cids.is_public(&root, Instant::now())
    {
        return None;
    }
    let bytes = state.cache.get(&root)?;
    Some(FileAnswer::for_request(
        headers,
        &root,
        FILE_CONTENT_TYPE,
        bytes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_verdict_lasts_its_ttl_and_is_forgotten_on_change() {
        let cids = PublicCids::default();
        let cid = streamweave_cas::file_cid(b"segment");
        let now = Instant::now();
        assert!(!cids.is_public(&cid, now));
        cids.remember(cid, now);
        assert!(cids.is_public(&cid, now + PUBLIC_VERDICT_TTL / 2));
        assert!(!cids.is_public(&cid, now + PUBLIC_VERDICT_TTL));
        cids.remember(cid, now);
        cids.forget();
        assert!(!cids.is_public(&cid, now));
    }

    #[test]
    fn public_verdicts_stay_within_their_bound() {
        let cids = PublicCids::default();
        let now = Instant::now();
        for i in 0..MAX_PUBLIC_VERDICTS as u32 {
            cids.remember(streamweave_cas::file_cid(&i.to_le_bytes()), now);
        }
        let newest = streamweave_cas::file_cid(b"one more");
        cids.remember(newest, now);
        let held = cids.until.lock().unwrap().len();
        assert!(held <= MAX_PUBLIC_VERDICTS, "{held}");
        assert!(cids.is_public(&newest, now));
    }
}
