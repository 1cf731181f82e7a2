//! Blocks in object storage (`--blockstore s3://bucket/prefix`): every block
//! is written to the bucket (`{prefix}/blocks/{cid}`) before its local write
//! completes, so any node of a cluster reads what any other stored; the
//! data directory's blocks become a cache of hot blocks, bounded by
//! `--blockstore-cache-bytes` (the oldest copies the bucket holds are
//! dropped first). The blockstore's calls are blocking; object storage is
//! asynchronous: each call runs on the server's runtime and the calling
//! thread waits (a runtime worker hands its other tasks over first).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use streamweave_cas::{Blockstore, Cid, RemoteBlocks};
use tracing::{info, warn};

/// A bucket (or a prefix in one) holding blocks by CID.
#[derive(Debug)]
pub struct S3Blocks {
    url: String,
    prefix: String,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
}

impl S3Blocks {
    /// `s3://bucket/prefix`; credentials and region from the usual AWS
    /// variables; `endpoint` names an S3-compatible server (MinIO, Ceph).
    pub fn new(
        url: &str,
        endpoint: Option<&str>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let (store, prefix) = s3_bucket(url, endpoint)?;
        Ok(S3Blocks {
            url: url.to_string(),
            prefix,
            store,
            runtime,
        })
    }

    fn object(&self, cid: &Cid) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(format!("blocks/{cid}"))
        } else {
            ObjectPath::from(format!("{}/blocks/{cid}", self.prefix))
        }
    }

    /// Runs `work` on the server's runtime and waits for it here.
    fn wait<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = done.send(work.await);
        });
        let receive = move || answer.recv().map_err(std::io::Error::other);
        // On a runtime worker, hand its other tasks over before blocking.
        match tokio::runtime::Handle::try_current() {
            Ok(current)
                if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(receive)
            }
            _ => receive(),
        }
    }

    /// Checks the bucket answers (at startup, so a wrong URL fails early).
    pub async fn check(&self) -> anyhow::Result<()> {
        let probe = self.object(&streamweave_cas::file_cid(b""));
        match self.store.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(anyhow::anyhow!("the blockstore bucket {}: {err}", self.url)),
        }
    }
}

/// A bucket from `s3://bucket/prefix` and the prefix; credentials and
/// region from the usual AWS variables, `endpoint` for an S3-compatible
/// server (path-style requests, plain HTTP allowed for `http://`).
pub fn s3_bucket(
    url: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<(Arc<dyn ObjectStore>, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| anyhow::anyhow!("{url}: expected s3://bucket/prefix"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(!bucket.is_empty(), "{url}: no bucket");
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    Ok((
        Arc::new(builder.build()?),
        prefix.trim_matches('/').to_string(),
    ))
}

fn io_error(err: object_store::Error) -> std::io::Error {
    std::io::Error::other(err)
}

impl RemoteBlocks for S3Blocks {
    fn fetch(&self, cid: &Cid) -> std::io::Result<Option<Vec<u8>>> {
        let (store, path) = (self.store.clone(), self.object(cid));
        self.wait(async move {
            match store.get(&path).await {
                Ok(found) => found.bytes().await.map(|b| Some(b.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(err) => Err(err),
            }
        })?
        .map_err(io_error)
    }

    fn store(&self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        let (store, path) = (self.store.clone(), self.object(cid));
        let payload = object_store::PutPayload::from(data.to_vec());
        self.wait(async move { store.put(&path, payload).await })?
            .map(|_| ())
            .map_err(io_error)
    }

    fn contains(&self, cid: &Cid) -> std::io::Result<bool> {
        let (store, path) = (self.store.clone(), self.object(cid));
        self.wait(async move {
            match store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(err) => Err(err),
            }
        })?
        .map_err(io_error)
    }

    fn list(&self) -> std::io::Result<Vec<(Cid, u64, std::time::SystemTime)>> {
        let store = self.store.clone();
        let prefix = if self.prefix.is_empty() {
            ObjectPath::from("blocks")
        } else {
            ObjectPath::from(format!("{}/blocks", self.prefix))
        };
        self.wait(async move {
            use futures_util::TryStreamExt;
            let objects: Vec<object_store::ObjectMeta> =
                store.list(Some(&prefix)).try_collect().await?;
            Ok(objects
                .into_iter()
                .filter_map(|meta| {
                    let cid = meta
                        .location
                        .filename()
                        .and_then(|n| Cid::try_from(n).ok())?;
                    Some((
                        cid,
                        meta.size,
                        std::time::SystemTime::from(meta.last_modified),
                    ))
                })
                .collect())
        })?
        .map_err(io_error)
    }

    fn delete(&self, cid: &Cid) -> std::io::Result<bool> {
        let (store, path) = (self.store.clone(), self.object(cid));
        self.wait(async move {
            match store.head(&path).await {
                Ok(_) => store.delete(&path).await.map(|()| true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(err) => Err(err),
            }
        })?
        .map_err(io_error)
    }
}

/// Keeps the local copies of remote blocks under `max_bytes`, dropping the
/// oldest first, every `period`.
pub async fn bound_cache(blockstore: Arc<Blockstore>, max_bytes: u64, period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = blockstore.clone();
        let evicted = tokio::task::spawn_blocking(
            move || -> Result<(usize, u64), streamweave_cas::CasError> {
                let mut blocks = store.blocks()?;
                let mut total: u64 = blocks.iter().map(|(_, size, _)| size).sum();
                if total <= max_bytes {
                    return Ok((0, total));
                }
                blocks.sort_by_key(|(_, _, modified)| *modified);
                let mut evicted = 0;
                for (cid, size, _) in blocks {
                    if total <= max_bytes {
                        break;
                    }
                    if store.evict_block(&cid)? {
                        total = total.saturating_sub(size);
                        evicted += 1;
                    }
                }
                Ok((evicted, total))
            },
        )
        .await;
        match evicted {
            Ok(Ok((0, _))) => {}
            Ok(Ok((evicted, total))) => {
                info!(
                    evicted,
                    cached_bytes = total,
                    "dropped local copies of remote blocks"
                )
            }
            Ok(Err(err)) => warn!(%err, "bounding the block cache"),
            Err(err) => warn!(%err, "bounding the block cache"),
        }
    }
}
