//! Where part files go and how they become visible: on S3 as multipart uploads, completed when
//! their checkpoint completes (nothing is visible before, nothing is renamed); on a file system as
//! hidden files, renamed to their final names when their checkpoint completes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use weir_core::{Error, Result};
use weir_storage::{Spawned, block, spawn, store_error};

/// Flink's `s3.upload.min.part.size` default, and S3's least part size but for the last.
pub const MIN_PART_BYTES: usize = 5 << 20;

/// Upload parts in flight at once per part file.
const PARTS_IN_FLIGHT: usize = 2;

/// Bytes a local part file gathers before it writes them.
const LOCAL_BUFFER: usize = 64 << 10;

/// The base path of a sink, parsed.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// A directory of a local or shared file system.
    Local(PathBuf),
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// `path`: a directory, a `file://` URL or an `s3://BUCKET/PREFIX` URL.
    pub(crate) fn parse(path: &str) -> Result<Location> {
        let p = path.trim();
        match p.split_once("://") {
            None if p.is_empty() => {
                Err(Error::Config("the file sink's path is empty; give a directory or a URL".into()))
            }
            None => Ok(Location::Local(PathBuf::from(p))),
            Some(("file", rest)) => Ok(Location::Local(PathBuf::from(rest))),
            Some(("s3" | "s3a" | "s3p", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::Config(format!(
                        "the file sink's path '{p}' names no bucket; write s3://BUCKET/PATH"
                    )));
                }
                Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() })
            }
            Some((scheme, _)) => Err(Error::Config(format!(
                "the file sink's path '{p}': the scheme '{scheme}' is not supported; use a directory, a file:// URL or \
                 an s3:// URL"
            ))),
        }
    }
}

/// Flink's `s3.*` keys as `object_store` settings.
fn s3_key(key: &str) -> Option<AmazonS3ConfigKey> {
    Some(match key {
        "s3.endpoint" => AmazonS3ConfigKey::Endpoint,
        "s3.access-key" | "s3.access.key" => AmazonS3ConfigKey::AccessKeyId,
        "s3.secret-key" | "s3.secret.key" => AmazonS3ConfigKey::SecretAccessKey,
        "s3.region" => AmazonS3ConfigKey::Region,
        _ => return None,
    })
}

/// A destination opened for writing: the base path and, for S3, the client.
#[derive(Clone)]
pub(crate) struct Target {
    location: Location,
    s3: Option<Arc<AmazonS3>>,
    min_part: usize,
    /// The base path as written, for messages.
    shown: String,
}

impl Target {
    /// Opens `location`; for S3 with the standard AWS environment variables of the process
    /// overridden by Flink's `s3.*` keys in `options` (`s3.endpoint`, `s3.access-key`,
    /// `s3.secret-key`, `s3.path.style.access`, `s3.upload.min.part.size`).
    pub(crate) fn open(shown: &str, location: &Location, options: &[(String, String)]) -> Result<Target> {
        let mut min_part = MIN_PART_BYTES;
        for (k, v) in options {
            if k == "s3.upload.min.part.size" {
                min_part = v.trim().parse::<usize>().ok().filter(|n| *n >= MIN_PART_BYTES).ok_or_else(|| {
                    Error::Config(format!(
                        "s3.upload.min.part.size: '{v}' is not a byte count of at least {MIN_PART_BYTES} (S3's least part \
                         size)"
                    ))
                })?;
            }
        }
        let s3 = match location {
            Location::Local(_) => None,
            Location::S3 { bucket, .. } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (k, v) in options {
                    if let Some(key) = s3_key(k) {
                        if key == AmazonS3ConfigKey::Endpoint && v.starts_with("http://") {
                            b = b.with_allow_http(true);
                        }
                        b = b.with_config(key, v);
                    } else if k == "s3.path.style.access" {
                        b = b.with_virtual_hosted_style_request(v.trim() != "true");
                    } else if k.starts_with("s3.") && k != "s3.upload.min.part.size" {
                        return Err(Error::Config(format!(
                            "the file sink does not know the option '{k}'; it takes s3.endpoint, s3.access-key, \
                             s3.secret-key, s3.region, s3.path.style.access and s3.upload.min.part.size"
                        )));
                    }
                }
                let s3 = b.build().map_err(|e| {
                    Error::Config(format!(
                        "cannot write to {shown}: {e}; set s3.endpoint, s3.access-key and s3.secret-key on the sink, or \
                         AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (and AWS_ENDPOINT_URL) in the environment \
                         of every weir process"
                    ))
                })?;
                Some(Arc::new(s3))
            }
        };
        Ok(Target { location: location.clone(), s3, min_part, shown: shown.trim().to_string() })
    }

    /// The base path as written.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// The object key (S3) or path (local) of `name` in `bucket`.
    fn key(&self, bucket: &str, name: &str) -> String {
        let rel = if bucket.is_empty() { name.to_string() } else { format!("{}/{name}", bucket.trim_matches('/')) };
        match &self.location {
            Location::Local(dir) => dir.join(rel).to_string_lossy().into_owned(),
            Location::S3 { prefix, .. } if prefix.is_empty() => rel,
            Location::S3 { prefix, .. } => format!("{prefix}/{rel}"),
        }
    }

    fn url(&self, key: &str) -> String {
        match &self.location {
            Location::Local(_) => key.to_string(),
            Location::S3 { bucket, .. } => format!("s3://{bucket}/{key}"),
        }
    }

    /// Checks, before the job starts, that the base path can be written: a local directory is
    /// created and probed; an S3 bucket is listed (a missing bucket or refused credentials fail
    /// here, with the store's answer, rather than in every subtask).
    pub(crate) fn check(&self) -> Result<()> {
        match (&self.location, &self.s3) {
            (Location::Local(dir), _) => {
                if dir.is_file() {
                    return Err(Error::Config(format!(
                        "the file sink writes a directory of buckets and part files, but {} is a file; give a directory",
                        dir.display()
                    )));
                }
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("cannot create the file sink's directory", dir, e))?;
                let probe = dir.join(".weir-write-probe");
                File::create(&probe).map_err(|e| Error::io("cannot write into the file sink's directory", dir, e))?;
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            (Location::S3 { prefix, .. }, Some(s3)) => {
                let s3 = s3.clone();
                let path = StorePath::from(prefix.as_str());
                match block(async move { s3.list_with_delimiter(Some(&path)).await })? {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(store_error("the file sink cannot list its base path", self.shown.clone(), e)),
                }
            }
            (Location::S3 { .. }, None) => Err(Error::internal("an S3 file sink without its client")),
        }
    }

    /// Starts the part file `name` in `bucket`: invisible until committed.
    pub(crate) fn begin(&self, bucket: &str, name: &str) -> Result<PartFile> {
        let key = self.key(bucket, name);
        match &self.s3 {
            None => {
                let fin = PathBuf::from(&key);
                let dir = fin.parent().map(PathBuf::from).unwrap_or_default();
                std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create a bucket directory", &dir, e))?;
                let tmp = dir.join(format!(".{name}.inprogress"));
                let file = File::create(&tmp).map_err(|e| Error::io("cannot create a part file", &tmp, e))?;
                Ok(PartFile::Local { file, tmp, fin })
            }
            Some(s3) => {
                let (store, path) = (s3.clone(), StorePath::from(key.as_str()));
                let upload = block(async move { store.create_multipart(&path).await })?
                    .map_err(|e| store_error("the file sink cannot start a multipart upload", self.url(&key), e))?;
                Ok(PartFile::S3 {
                    store: s3.clone(),
                    url: self.url(&key),
                    key,
                    upload,
                    min_part: self.min_part,
                    in_flight: VecDeque::new(),
                    parts: Vec::new(),
                })
            }
        }
    }

    /// Makes a pending part file visible. Idempotent: a part file committed already (by an
    /// attempt that failed before its checkpoint said so) counts as committed.
    pub(crate) fn commit(&self, p: &Pending) -> Result<Option<Spawned<Result<()>>>> {
        match &p.file {
            PendingFile::Local { tmp, fin } => {
                match std::fs::rename(tmp, fin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::path::Path::new(fin).exists() => {}
                    Err(e) => return Err(Error::io("cannot commit a part file (rename)", tmp, e)),
                }
                if let Some(dir) = std::path::Path::new(fin).parent() {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| Error::io("cannot make a committed part file durable (fsync)", dir, e))?;
                }
                Ok(None)
            }
            PendingFile::S3 { key, upload, parts } => {
                let Some(s3) = self.s3.clone() else {
                    return Err(Error::internal("an S3 part file restored into a file system sink"));
                };
                let (path, upload) = (StorePath::from(key.as_str()), upload.clone());
                let parts: Vec<PartId> = parts.iter().map(|c| PartId { content_id: c.clone() }).collect();
                let url = self.url(key);
                Ok(Some(spawn(async move {
                    match s3.complete_multipart(&path, &upload, parts).await {
                        Ok(_) => Ok(()),
                        // Completed before (the upload is gone, the object is there).
                        Err(first) => match s3.head(&path).await {
                            Ok(_) => Ok(()),
                            Err(_) => Err(store_error("the file sink cannot commit a part file", url, first)),
                        },
                    }
                })?))
            }
        }
    }
}

/// A part file being written.
pub(crate) enum PartFile {
    Local {
        file: File,
        tmp: PathBuf,
        fin: PathBuf,
    },
    S3 {
        store: Arc<AmazonS3>,
        key: String,
        url: String,
        upload: String,
        min_part: usize,
        /// Parts being uploaded, oldest first.
        in_flight: VecDeque<Spawned<object_store::Result<PartId>>>,
        /// Uploaded parts' ids, in order.
        parts: Vec<String>,
    },
}

impl PartFile {
    /// Takes what is in `buf` when it is enough to write (a part's worth on S3), or everything when
    /// `all`.
    pub(crate) fn drain(&mut self, buf: &mut Vec<u8>, all: bool) -> Result<()> {
        match self {
            PartFile::Local { file, tmp, .. } => {
                if (all && !buf.is_empty()) || buf.len() >= LOCAL_BUFFER {
                    file.write_all(buf).map_err(|e| Error::io("cannot write a part file", &*tmp, e))?;
                    buf.clear();
                }
                Ok(())
            }
            PartFile::S3 { store, key, url, upload, min_part, in_flight, parts } => {
                if buf.len() < *min_part && (!all || buf.is_empty()) {
                    return Ok(());
                }
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    Self::settle_one(in_flight, parts, url)?;
                }
                let (store, path, upload) = (store.clone(), StorePath::from(key.as_str()), upload.clone());
                let index = parts.len() + in_flight.len();
                let payload = PutPayload::from(std::mem::take(buf));
                in_flight.push_back(spawn(async move { store.put_part(&path, &upload, index, payload).await })?);
                Ok(())
            }
        }
    }

    fn settle_one(
        in_flight: &mut VecDeque<Spawned<object_store::Result<PartId>>>,
        parts: &mut Vec<String>,
        url: &str,
    ) -> Result<()> {
        if let Some(next) = in_flight.pop_front() {
            let id = next.wait()?.map_err(|e| store_error("the file sink cannot upload a part", url, e))?;
            parts.push(id.content_id);
        }
        Ok(())
    }

    /// Ends the file with the rest of `buf`: written and durable (local), or every part uploaded
    /// (S3); what commits it later.
    pub(crate) fn close(mut self, buf: &mut Vec<u8>) -> Result<PendingFile> {
        self.drain(buf, true)?;
        match self {
            PartFile::Local { file, tmp, fin } => {
                file.sync_all().map_err(|e| Error::io("cannot make a part file durable (fsync)", &tmp, e))?;
                Ok(PendingFile::Local {
                    tmp: tmp.to_string_lossy().into_owned(),
                    fin: fin.to_string_lossy().into_owned(),
                })
            }
            PartFile::S3 { key, url, upload, mut in_flight, mut parts, .. } => {
                while !in_flight.is_empty() {
                    Self::settle_one(&mut in_flight, &mut parts, &url)?;
                }
                Ok(PendingFile::S3 { key, upload, parts })
            }
        }
    }

    /// Gives the file up (the writer failed or was cancelled): a local file is removed, an upload
    /// aborted in the background.
    pub(crate) fn abandon(self) {
        match self {
            PartFile::Local { tmp, .. } => {
                let _ = std::fs::remove_file(tmp);
            }
            PartFile::S3 { store, key, upload, .. } => {
                let path = StorePath::from(key.as_str());
                let _ = spawn(async move { store.abort_multipart(&path, &upload).await });
            }
        }
    }
}

/// A closed part file, ready to be made visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PendingFile {
    /// Written under the hidden name `tmp`, to be renamed to `fin`.
    Local { tmp: String, fin: String },
    /// A multipart upload of `key` with its parts' ids (ETags), to be completed.
    S3 { key: String, upload: String, parts: Vec<String> },
}

/// A pending part file and the checkpoint that covers it, as kept in the sink's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) checkpoint: u64,
    pub(crate) file: PendingFile,
}
