//! Slot placement: which TaskManagers run a waiting job's parts, and the deployment that sends
//! each part there with the addresses of the others.

use tracing::info;
use weir_core::protocol::{Assignment, Deployment, ToTaskManager};
use weir_core::{JobId, JobStatus};

use crate::state::{Part, State, deployed};

/// Which TaskManagers give a job of `slots` slots how many: one TaskManager if one has room
/// (records then never leave the process), else the fewest that do, the emptiest first; with
/// `spread`, one slot at a time round the TaskManagers with room.
fn choose_slots(s: &State, slots: u32, spread: bool) -> Option<Vec<(String, u32)>> {
    let mut free: Vec<(String, u32)> =
        s.taskmanagers.values().filter(|t| t.slots > t.used).map(|t| (t.id.clone(), t.slots - t.used)).collect();
    if free.iter().map(|(_, f)| *f).sum::<u32>() < slots {
        return None;
    }
    // Emptiest first; ids break ties so placement is reproducible.
    free.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if spread {
        let mut given: Vec<(String, u32)> = free.iter().map(|(id, _)| (id.clone(), 0)).collect();
        let mut left = slots;
        while left > 0 {
            for (i, (_, room)) in free.iter().enumerate() {
                if left > 0 && given[i].1 < *room {
                    given[i].1 += 1;
                    left -= 1;
                }
            }
        }
        given.retain(|(_, n)| *n > 0);
        return Some(given);
    }
    if let Some((id, _)) = free.first().filter(|(_, f)| *f >= slots) {
        return Some(vec![(id.clone(), slots)]);
    }
    let mut left = slots;
    let mut given = Vec::new();
    for (id, room) in free {
        if left == 0 {
            break;
        }
        let n = room.min(left);
        given.push((id, n));
        left -= n;
    }
    Some(given)
}

/// Places waiting jobs, oldest first, where their slots are free (see `choose_slots`), and
/// deploys every part with the addresses of the others.
pub fn schedule(s: &mut State) {
    let spread = s.spread_out_slots;
    // A job whose checkpointing still handles the end of its previous run waits: what the next run
    // restores from is known once that is done.
    let waiting: Vec<JobId> = s
        .jobs
        .values()
        .filter(|j| j.status() == JobStatus::Created && !j.checkpoints.as_ref().is_some_and(|c| c.busy()))
        .map(|j| j.id)
        .collect();
    for id in waiting {
        let Some(slots) = s.jobs.get(&id).map(|j| j.slots) else { continue };
        let Some(given) = choose_slots(s, slots, spread) else { continue };
        let mut parts = Vec::with_capacity(given.len());
        let mut addresses = Vec::with_capacity(given.len());
        let mut slot_parts = Vec::with_capacity(slots as usize);
        for (k, (tm, n)) in given.iter().enumerate() {
            let first = slot_parts.len() as u32;
            slot_parts.extend(std::iter::repeat_n(k as u32, *n as usize));
            addresses.push(s.taskmanagers.get(tm).map(|t| t.data_address.clone()).unwrap_or_default());
            parts.push(Part {
                taskmanager: tm.clone(),
                slots: (first..first + n).collect(),
                status: JobStatus::Created,
                result: None,
                progress: Vec::new(),
            });
        }
        let Some(job) = s.jobs.get_mut(&id) else { continue };
        let attempt = job.deployments;
        job.deployments += 1;
        let (graph, config, cached_files) = (job.graph.clone(), job.config.clone(), job.cached_files.clone());
        let restore = job.checkpoints.as_ref().and_then(|cp| cp.restore_for_run());
        for (k, part) in parts.iter().enumerate() {
            let assignment = Assignment {
                attempt,
                part: k as u32,
                slot_parts: slot_parts.clone(),
                part_addresses: addresses.clone(),
            };
            let deploy = ToTaskManager::Deploy(Deployment {
                job_id: id,
                graph: Box::new(graph.clone()),
                config: config.clone(),
                assignment,
                cached_files: cached_files.clone(),
                restore: restore.clone(),
            });
            if let Some(tm) = s.taskmanagers.get_mut(&part.taskmanager) {
                // A TaskManager whose connection just closed is being lost; that fails this run.
                let _ = tm.tx.send(deploy);
                tm.used += part.slots.len() as u32;
                tm.jobs.insert(id);
                tm.idle_since = None;
            }
        }
        let names: Vec<&str> = parts.iter().map(|p| p.taskmanager.as_str()).collect();
        info!(job_id = %id, attempt, slots, taskmanagers = ?names, "job deployed");
        if let Some(j) = s.jobs.get_mut(&id) {
            j.parts = parts;
        }
        deployed(s, id);
    }
}
