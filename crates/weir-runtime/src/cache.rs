//! The distributed cache: files a job registered (`StreamEnv::register_cached_file`), readable by
//! name from every task of the job, wherever it runs. A task's thread knows its job's files.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use weir_core::{Error, Result};

/// Cached files by name, as this process finds them.
pub type CachedFiles = Arc<BTreeMap<String, PathBuf>>;

thread_local! {
    static FILES: RefCell<Option<CachedFiles>> = const { RefCell::new(None) };
}

/// Makes `files` the cached files of the job whose task runs on this thread.
pub(crate) fn enter(files: CachedFiles) {
    FILES.with(|f| *f.borrow_mut() = Some(files));
}

/// The local path of the job's cached file `name`; call it from a task (a user function).
pub fn cached_file(name: &str) -> Result<PathBuf> {
    FILES.with(|f| match f.borrow().as_ref() {
        None => Err(Error::InvalidJob(format!(
            "cached_file('{name}') was called outside a running task; call it from a function of the job"
        ))),
        Some(files) => files.get(name).cloned().ok_or_else(|| {
            Error::InvalidJob(format!(
                "the job registered no cached file '{name}'; it has: {}",
                files.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        }),
    })
}

/// Checks that every cached file can be read where this process looks for it.
pub(crate) fn check(files: &BTreeMap<String, (String, PathBuf)>) -> Result<CachedFiles> {
    let mut out = BTreeMap::new();
    for (name, (registered, here)) in files {
        std::fs::File::open(here).map_err(|e| {
            Error::InvalidJob(format!(
                "the cached file '{name}' ({registered}) cannot be read at {}: {e}; register a file that exists \
                 where the job is submitted",
                here.display()
            ))
        })?;
        out.insert(name.clone(), here.clone());
    }
    Ok(Arc::new(out))
}
