//! The coordinator's tests: driven with storage ([`Coordinating`]), and the pure core alone.

use super::*;
use crate::io::{Coordinating, copy_snapshot, dispose, latest_completed};
use crate::layout::read_completed;
use crate::storage::CheckpointStorage;

fn ack(id: CheckpointId, head: u32, bytes: u64) -> TaskAck {
    TaskAck {
        checkpoint_id: id,
        file: StateFile { head, subtask: 0, path: format!("{head}-0.state"), bytes, uids: vec![], checkpoint: None },
        references: vec![],
    }
}

#[test]
fn checkpoints_complete_on_the_last_ack_and_a_damaged_one_is_passed_over() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", "/tmp", e))?;
    let storage = CheckpointStorage::open(&dir.path().display().to_string())?;
    let config = CheckpointConfig { interval_ms: Some(10), retained: 2, ..Default::default() };
    let job = JobId(5);
    let core = Coordinator::new(config, job, "j".into(), vec![], 2, storage.location().to_string(), 0);
    let mut c = Coordinating::new(core, storage.clone());
    let t0 = Instant::now();
    assert_eq!(c.poll(t0, 0), vec![], "the first checkpoint waits one interval");
    for id in 1..=3u64 {
        let now = t0 + Duration::from_millis(20 * id);
        assert_eq!(c.poll(now, 0), vec![Command::Trigger { id, last: false, drain: false }]);
        assert_eq!(c.poll(now, 0), vec![], "one at a time");
        for head in 0..2 {
            storage.put(&format!("{}/chk-{id}/{head}-0.state", job_dir(job)), vec![7; 10])?;
        }
        assert_eq!(c.ack(ack(id, 0, 10), 0), vec![]);
        assert_eq!(c.ack(ack(id, 1, 10), 0), vec![Command::Complete { id }]);
    }
    assert_eq!(c.core.stats.completed, 3);
    assert_eq!(storage.list(&job_dir(job))?, vec!["chk-2", "chk-3"], "two retained");
    // chk-3 loses a file's tail: recovery uses chk-2, from the coordinator and from storage alike.
    storage.put(&format!("{}/chk-3/1-0.state", job_dir(job)), vec![7; 4])?;
    assert_eq!(latest_completed(&storage, job)?.map(|c| c.id), Some(2));
    assert_eq!(c.latest_intact().map(|c| c.id), Some(2));
    // A declined checkpoint fails and is counted; the next one starts after the interval.
    let later = t0 + Duration::from_secs(1);
    assert_eq!(c.poll(later, 0), vec![Command::Trigger { id: 4, last: false, drain: false }]);
    c.decline(4, "disk full".into());
    assert_eq!(c.core.stats.failed, 1);
    let history = &c.core.stats.history;
    assert_eq!(history.front().and_then(|h| h.failure_message.clone()).as_deref(), Some("disk full"));
    Ok(())
}

#[test]
fn incremental_checkpoints_list_and_keep_the_files_they_build_on() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", "/tmp", e))?;
    let storage = CheckpointStorage::open(&dir.path().display().to_string())?;
    let config = CheckpointConfig { interval_ms: Some(10), retained: 1, ..Default::default() };
    let job = JobId(6);
    let core = Coordinator::new(config, job, "j".into(), vec![], 1, storage.location().to_string(), 0);
    let mut c = Coordinating::new(core, storage.clone());
    let t0 = Instant::now();
    let jd = job_dir(job);
    // Checkpoint 1 is full; 2 and 3 build on it (and on each other); 4 is full again.
    let links: [&[u64]; 4] = [&[], &[1], &[1, 2], &[]];
    for (i, refs) in links.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(
            c.poll(t0 + Duration::from_millis(20 * id), 0),
            vec![Command::Trigger { id, last: false, drain: false }]
        );
        storage.put(&format!("{jd}/chk-{id}/0-0.state"), vec![1; 10 + id as usize])?;
        let mut a = ack(id, 0, 10 + id);
        a.references = refs.to_vec();
        assert_eq!(c.ack(a, 0), vec![Command::Complete { id }]);
        if id == 3 {
            // Only chk-3 is retained, but it lists and keeps the files of 1 and 2.
            let m = read_completed(&storage, &format!("{jd}/chk-3"))?;
            let linked: Vec<Option<u64>> = m.files.iter().map(|f| f.checkpoint).collect();
            assert_eq!(linked, vec![None, Some(1), Some(2)]);
            assert_eq!(m.bytes(), 13 + 11 + 12);
            assert_eq!(c.core.stats.history.front().map(|h| (h.state_size, h.checkpointed_size)), Some((36, 13)));
            assert_eq!(storage.list(&jd)?, vec!["chk-1", "chk-2", "chk-3"]);
            assert!(storage.list(&format!("{jd}/chk-1"))?.iter().all(|f| f != METADATA_FILE));
            // A savepoint of it holds copies of everything, and reads back on its own.
            let sp = dir.path().join("sp").display().to_string();
            copy_snapshot(&storage, &format!("{jd}/chk-3"), &m, &sp)?;
            let saved = read_completed(&CheckpointStorage::open(&sp)?, "")?;
            assert_eq!((saved.kind, saved.files.len()), (SnapshotKind::Savepoint, 3));
            dispose(&sp)?;
            assert!(!std::path::Path::new(&sp).exists());
        }
    }
    // Once a full checkpoint is the only one retained, the old chain's files are gone.
    assert_eq!(storage.list(&jd)?, vec!["chk-4"]);
    // A chain that refers to a checkpoint no longer retained fails, with the reason.
    assert_eq!(c.poll(t0 + Duration::from_secs(1), 0), vec![Command::Trigger { id: 5, last: false, drain: false }]);
    let mut a = ack(5, 0, 3);
    a.references = vec![2];
    assert_eq!(c.ack(a, 0), vec![]);
    assert!(
        c.core
            .stats
            .history
            .front()
            .and_then(|h| h.failure_message.clone())
            .unwrap_or_default()
            .contains("checkpoint 2")
    );
    Ok(())
}

/// The outputs, with metadata and file lists left out, for comparing.
fn shapes(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Tasks(c) => format!("{c:?}"),
            Output::Storage(StorageWork::WriteMetadata { id, dir, .. }) => format!("write {dir} ({id})"),
            Output::Storage(StorageWork::CopySavepoint { id, target, .. }) => format!("copy {id} to {target}"),
            Output::Storage(StorageWork::Delete(paths)) => format!("delete {}", paths.join(" ")),
            Output::Storage(StorageWork::RemoveDir(dir)) => format!("remove {dir}"),
        })
        .collect()
}

#[test]
fn the_core_asks_for_storage_work_and_completes_only_on_its_outcome() {
    let config = CheckpointConfig { interval_ms: Some(10), retained: 1, ..Default::default() };
    let mut c = Coordinator::new(config, JobId(7), "j".into(), vec![], 1, "mem://".into(), 0);
    let jd = job_dir(JobId(7));
    let t0 = Instant::now();
    c.request_savepoint(SavepointRequest { target: "sp".into(), stop: false, drain: false });
    let trigger = c.poll(t0, 0);
    assert_eq!(shapes(&trigger), vec!["Trigger { id: 1, last: false, drain: false }"]);
    // The last ack asks for the metadata; nothing completes, and nothing starts, until it is written.
    assert_eq!(shapes(&c.ack(ack(1, 0, 5), 0)), vec![format!("write {jd}/chk-1 (1)")]);
    assert!(c.poll(t0 + Duration::from_secs(1), 0).is_empty(), "no checkpoint while one completes");
    assert_eq!(c.stats.completed, 0);
    let done = c.stored(Stored::Metadata { id: 1, result: Ok(()) });
    assert_eq!(shapes(&done), vec![format!("copy 1 to sp"), "Complete { id: 1 }".to_string()]);
    assert_eq!((c.stats.completed, c.latest().map(|l| l.id)), (1, Some(1)));
    assert!(c.take_savepoints().is_empty(), "the savepoint is done once its copy is");
    assert!(c.stored(Stored::Savepoint { id: 1, result: Ok("sp".into()) }).is_empty());
    assert_eq!(
        c.take_savepoints().into_iter().map(|(id, r)| (id, r.ok())).collect::<Vec<_>>(),
        vec![(1, Some("sp".to_string()))]
    );
    // The next completes and the first goes: its metadata and its file, one delete.
    assert_eq!(shapes(&c.poll(t0 + Duration::from_secs(2), 0)), vec!["Trigger { id: 2, last: false, drain: false }"]);
    c.ack(ack(2, 0, 5), 0);
    let done = c.stored(Stored::Metadata { id: 2, result: Ok(()) });
    assert_eq!(
        shapes(&done),
        vec!["Complete { id: 2 }".to_string(), format!("delete {jd}/chk-1/_metadata {jd}/chk-1/0-0.state")]
    );
    // Metadata that cannot be written fails the checkpoint, and a savepoint with it says so.
    c.request_savepoint(SavepointRequest { target: "sp2".into(), stop: false, drain: false });
    c.poll(t0 + Duration::from_secs(3), 0);
    c.ack(ack(3, 0, 5), 0);
    let failed = c.stored(Stored::Metadata { id: 3, result: Err(weir_core::Error::internal("full")) });
    assert_eq!(shapes(&failed), vec![format!("remove {jd}/chk-3")], "its files go");
    assert_eq!((c.stats.completed, c.stats.failed), (2, 1));
    let outcome = c.take_savepoints();
    assert!(matches!(outcome.as_slice(), [(3, Err(_))]), "{outcome:?}");
    // A timed-out checkpoint is failed and its directory removed.
    let started = t0 + Duration::from_secs(4);
    c.poll(started, 0);
    let timed_out = c.poll(started + Duration::from_secs(3600), 0);
    assert_eq!(shapes(&timed_out)[0], format!("remove {jd}/chk-4"));
}
