//! The `process` target: TaskManagers as child processes of the JobManager, started from its own
//! program.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_core::{Error, Result};

use crate::{BoxFuture, ResourceProvider, blocking, in_background};

/// TaskManagers as child processes of the JobManager, started from its own program.
#[derive(Debug)]
pub struct ProcessProvider {
    program: PathBuf,
    prefix: Vec<String>,
    settings: Vec<String>,
    dir: PathBuf,
    quiet: bool,
    children: Mutex<HashMap<String, Child>>,
}

impl ProcessProvider {
    /// A provider that runs `program PREFIX... taskmanager --id ID SETTINGS... -D ...`; `settings`
    /// are arguments every TaskManager gets (`-D key=value` pairs). Artifact caches go under a
    /// directory of its own, removed at [`ResourceProvider::shutdown`]. The TaskManagers' output
    /// (print sinks) goes where the JobManager's goes, or nowhere when `quiet`.
    pub fn new(program: PathBuf, prefix: Vec<String>, settings: Vec<String>, quiet: bool) -> Result<ProcessProvider> {
        let dir = std::env::temp_dir().join(format!("weir-taskmanagers-{}", uuid::Uuid::new_v4().simple()));
        weir_core::blob::private_dir(&dir)
            .map_err(|e| Error::io("cannot create a directory for the TaskManagers it starts", &dir, e))?;
        Ok(ProcessProvider { program, prefix, settings, dir, quiet, children: Mutex::new(HashMap::new()) })
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits up to `grace` for a child to exit, then kills it; reaps it either way.
fn end(id: &str, mut child: Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => break,
        }
    }
    warn!(taskmanager = id, pid = child.id(), "a TaskManager did not stop when asked; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

impl ResourceProvider for ProcessProvider {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn start(self: Arc<Self>, id: String, slots: u32, rpc: String) -> BoxFuture<'static, Result<()>> {
        blocking(move || self.start_now(&id, slots, &rpc))
    }

    fn stop(self: Arc<Self>, id: String) -> BoxFuture<'static, ()> {
        in_background(move || self.stop_now(&id))
    }

    fn shutdown(&self) {
        let children: Vec<(String, Child)> = self.children().drain().collect();
        for (id, child) in children {
            end(&id, child, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ProcessProvider {
    fn start_now(&self, id: &str, slots: u32, rpc: &str) -> Result<()> {
        let (host, port) = rpc.rsplit_once(':').unwrap_or((rpc, "6123"));
        let cache = self.dir.join(id);
        let mut command = Command::new(&self.program);
        command
            .args(&self.prefix)
            .args(["taskmanager", "--id", id])
            .args(&self.settings)
            .args(["-D", &format!("jobmanager.rpc.address={host}")])
            .args(["-D", &format!("jobmanager.rpc.port={port}")])
            .args(["-D", &format!("taskmanager.numberOfTaskSlots={slots}")])
            .args(["-D", &format!("blob.storage.directory={}", cache.display())])
            .stdin(Stdio::null());
        if self.quiet {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn().map_err(|e| {
            Error::io("the process resource provider cannot start a TaskManager from", &self.program, e)
        })?;
        info!(taskmanager = id, pid = child.id(), slots, "TaskManager process started");
        self.children().insert(id.to_string(), child);
        Ok(())
    }

    fn stop_now(&self, id: &str) {
        if let Some(child) = self.children().remove(id) {
            end(id, child, Duration::from_secs(5));
        }
    }
}

impl Drop for ProcessProvider {
    fn drop(&mut self) {
        self.shutdown();
    }
}
