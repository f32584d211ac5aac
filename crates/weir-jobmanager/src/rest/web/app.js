// weir's dashboard: plain JavaScript over the REST API it is served with (Flink's paths), no
// build step. Pages are routes of the URL's hash; the page shown is drawn again every
// REFRESH_MS from fresh data. Every failed REST call is counted and named in the footer
// (#errors, data-count), which the browser test reads.
"use strict";

const REFRESH_MS = 2000;
const HISTORY = 60; // samples kept for each chart
const NO_WATERMARK = -9223372036854775808;

const failures = [];
const throughput = new Map(); // job id -> [records/s of its sources, ...]

function esc(v) {
  return String(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(path, options) {
  let r;
  try {
    r = await fetch(path, options);
  } catch (e) {
    failed(`${path}: ${e}`);
    throw e;
  }
  if (!r.ok) {
    failed(`${r.status} ${path}`);
    throw new Error(`${r.status} ${path}`);
  }
  return r.json();
}

// A REST call whose 404 means "nothing there" (a job without checkpoints).
async function optional(path) {
  const r = await fetch(path);
  if (r.status === 404) return null;
  if (!r.ok) {
    failed(`${r.status} ${path}`);
    return null;
  }
  return r.json();
}

function failed(what) {
  failures.push(what);
  const e = document.getElementById("errors");
  e.dataset.count = String(failures.length);
  e.textContent = `${failures.length} failed REST call(s), last: ${what}`;
}

function number(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + " k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function bytes(n) {
  if (!n && n !== 0) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(ms) {
  if (ms < 0) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function time(ms) {
  return ms > 0 ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–";
}

function state(s) {
  return `<span class="state ${esc(s)}">${esc(s)}</span>`;
}

function table(headers, rows, numeric = []) {
  const head = headers.map((h, i) => `<th class="${numeric.includes(i) ? "num" : ""}">${esc(h)}</th>`).join("");
  const body = rows.length
    ? rows.map((r) => `<tr>${r.map((c, i) => `<td class="${numeric.includes(i) ? "num" : ""}">${c}</td>`).join("")}</tr>`).join("")
    : `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`;
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function sparkline(values, width = 420, height = 80) {
  if (values.length < 2) return `<svg class="chart" width="${width}" height="${height}"><text x="8" y="20">collecting…</text></svg>`;
  const max = Math.max(...values, 1);
  const step = width / (HISTORY - 1);
  const points = values.map((v, i) => `${(i + HISTORY - values.length) * step},${height - 6 - (v / max) * (height - 24)}`).join(" ");
  return `<svg class="chart" width="${width}" height="${height}"><text x="6" y="14">${esc(number(max))} records/s</text><polyline points="${points}"/></svg>`;
}

function metricValues(list) {
  const out = {};
  for (const m of list || []) out[m.id] = Number(m.value);
  return out;
}

// ---- pages

async function overview() {
  const [o, jobs] = await Promise.all([api("/overview"), api("/jobs/overview")]);
  const running = jobs.jobs.filter((j) => !["FINISHED", "FAILED", "CANCELED"].includes(j.state));
  const ended = jobs.jobs.filter((j) => ["FINISHED", "FAILED", "CANCELED"].includes(j.state));
  const charts = running.map((j) => `<div><div class="muted">${esc(j.name)}</div>${sparkline(throughput.get(j.jid) || [])}</div>`);
  await Promise.all(running.map((j) => sampleThroughput(j.jid)));
  return `<h1>Overview</h1>
    <div class="cards">
      <div class="card"><div class="n" id="tm-count">${o.taskmanagers}</div><div class="l">Task Managers</div></div>
      <div class="card"><div class="n">${o["slots-available"]} / ${o["slots-total"]}</div><div class="l">slots available</div></div>
      <div class="card"><div class="n">${o["jobs-running"]}</div><div class="l">running jobs</div></div>
      <div class="card"><div class="n">${o["jobs-finished"]}</div><div class="l">finished</div></div>
      <div class="card"><div class="n">${o["jobs-failed"]}</div><div class="l">failed</div></div>
      <div class="card"><div class="n">${o["jobs-cancelled"]}</div><div class="l">cancelled</div></div>
    </div>
    <h2>Throughput of running jobs (records/s read by their sources)</h2>
    <div class="row">${charts.join("") || '<span class="muted">no running job</span>'}</div>
    <h2>Running jobs</h2>${jobTable(running)}
    <h2>Completed jobs</h2>${jobTable(ended)}`;
}

function jobTable(jobs) {
  return table(
    ["name", "state", "started", "duration", "tasks"],
    jobs.map((j) => [
      `<a href="#/jobs/${esc(j.jid)}">${esc(j.name)}</a>`,
      state(j.state),
      time(j["start-time"]),
      duration(j.duration),
      `${j.tasks.running} / ${j.tasks.total}`,
    ]),
    [4],
  );
}

async function jobs() {
  const all = await api("/jobs/overview");
  return `<h1>Jobs</h1>${jobTable(all.jobs)}`;
}

// Records/s read by a job's sources (plan nodes without inputs), kept for the charts.
async function sampleThroughput(id, job) {
  job = job || (await api(`/jobs/${id}`));
  const heads = job.plan.nodes.filter((n) => n.inputs.length === 0);
  let sum = 0;
  for (const n of heads) {
    const m = await api(`/jobs/${id}/vertices/${n.id}/subtasks/metrics?get=numRecordsOutPerSecond&agg=sum`);
    sum += m.length ? m[0].sum : 0;
  }
  const h = throughput.get(id) || [];
  h.push(sum);
  while (h.length > HISTORY) h.shift();
  throughput.set(id, h);
  return sum;
}

// Lays the plan's nodes out by depth (longest path from a source) and draws them with their
// records/s, back pressure and watermark.
function graph(job, figures) {
  const nodes = job.plan.nodes;
  const depth = {};
  const visit = (n) => {
    if (depth[n.id] !== undefined) return depth[n.id];
    depth[n.id] = 0;
    const d = n.inputs.length ? 1 + Math.max(...n.inputs.map((i) => visit(nodes.find((x) => x.id === i.id) || { id: i.id, inputs: [] }))) : 0;
    depth[n.id] = d;
    return d;
  };
  nodes.forEach(visit);
  const columns = {};
  for (const n of nodes) (columns[depth[n.id]] = columns[depth[n.id]] || []).push(n);
  const W = 250, H = 92, GX = 70, GY = 24;
  const pos = {};
  for (const [d, col] of Object.entries(columns)) col.forEach((n, i) => (pos[n.id] = { x: 10 + d * (W + GX), y: 10 + i * (H + GY) }));
  const width = 20 + (Math.max(...Object.keys(columns).map(Number)) + 1) * (W + GX);
  const height = 20 + Math.max(...Object.values(columns).map((c) => c.length)) * (H + GY);
  const edges = nodes.flatMap((n) =>
    n.inputs.filter((i) => pos[i.id]).map((i) => {
      const a = pos[i.id], b = pos[n.id];
      const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2, b.x - 4, b.y + H / 2];
      return `<path d="M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}"/><text class="small" x="${(x1 + x2) / 2 - 18}" y="${(y1 + y2) / 2 - 6}">${esc(i.ship_strategy)}</text>`;
    }),
  );
  const boxes = nodes.map((n) => {
    const p = pos[n.id], f = figures[n.id] || {};
    const bp = f.backPressured > 100;
    const wm = f.watermark === undefined || f.watermark <= NO_WATERMARK ? "no watermark" : `watermark ${time(f.watermark)}`;
    return `<g class="node" data-vertex="${esc(n.id)}"><rect class="${bp ? "bp" : ""}" x="${p.x}" y="${p.y}" width="${W}" height="${H}"/>
      <text x="${p.x + 10}" y="${p.y + 20}">${esc(n.description.length > 38 ? n.description.slice(0, 37) + "…" : n.description)}</text>
      <text class="small" x="${p.x + 10}" y="${p.y + 38}">parallelism ${n.parallelism} · ${esc(number(f.rate))} records/s ${f.out ? "out" : "in"}</text>
      <text class="small" x="${p.x + 10}" y="${p.y + 56}">back pressure ${esc(number(f.backPressured))} ms/s · busy ${esc(number(f.busy))} ms/s</text>
      <text class="small" x="${p.x + 10}" y="${p.y + 74}">${esc(wm)}</text></g>`;
  });
  return `<svg class="graph" width="${width}" height="${height}">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9aa3b5"/></marker></defs>
    ${edges.join("")}${boxes.join("")}</svg>`;
}

function checkpointChart(history) {
  const done = history.slice().reverse().filter((c) => c.status !== "IN_PROGRESS");
  if (!done.length) return "";
  const width = 420, height = 110, bw = Math.max(4, Math.min(18, width / done.length - 3));
  const max = Math.max(...done.map((c) => c.end_to_end_duration), 1);
  const bars = done.map((c, i) => {
    const h = Math.max(2, (c.end_to_end_duration / max) * (height - 30));
    return `<rect class="bar ${esc(c.status)}" x="${6 + i * (bw + 3)}" y="${height - 6 - h}" width="${bw}" height="${h}"><title>#${c.id}: ${c.end_to_end_duration} ms</title></rect>`;
  });
  return `<svg class="chart" width="${width}" height="${height}"><text x="6" y="14">checkpoint duration, longest ${max} ms</text>${bars.join("")}</svg>`;
}

async function job(id) {
  const j = await api(`/jobs/${id}`);
  const [exceptions, checkpoints] = await Promise.all([api(`/jobs/${id}/exceptions`), optional(`/jobs/${id}/checkpoints`)]);
  const running = j.state === "RUNNING";
  const figures = {};
  if (running) {
    await sampleThroughput(id, j);
    await Promise.all(
      j.plan.nodes.map(async (n) => {
        const [agg, marks] = await Promise.all([
          api(`/jobs/${id}/vertices/${n.id}/subtasks/metrics?get=numRecordsInPerSecond,numRecordsOutPerSecond,backPressuredTimeMsPerSecond,busyTimeMsPerSecond&agg=sum,max`),
          api(`/jobs/${id}/vertices/${n.id}/watermarks`),
        ]);
        const get = (name, a) => (agg.find((m) => m.id === name) || {})[a];
        const wms = marks.map((m) => Number(m.value));
        figures[n.id] = {
          // A source takes nothing in: what it emits is its rate.
          rate: get(n.inputs.length ? "numRecordsInPerSecond" : "numRecordsOutPerSecond", "sum"),
          out: !n.inputs.length,
          backPressured: get("backPressuredTimeMsPerSecond", "max"),
          busy: get("busyTimeMsPerSecond", "max"),
          watermark: wms.length ? Math.min(...wms) : undefined,
        };
      }),
    );
  }
  const vertices = table(
    ["operator", "state", "parallelism", "records in", "records out"],
    j.vertices.map((v) => [esc(v.name), state(v.status), v.parallelism, number(v.metrics["read-records"]), number(v.metrics["write-records"])]),
    [2, 3, 4],
  );
  let cps = '<p class="muted">This job takes no checkpoints.</p>';
  if (checkpoints) {
    const c = checkpoints.counts;
    cps = `<div class="cards">
        <div class="card"><div class="n">${c.completed}</div><div class="l">completed</div></div>
        <div class="card"><div class="n">${c.failed}</div><div class="l">failed</div></div>
        <div class="card"><div class="n">${c.in_progress}</div><div class="l">in progress</div></div>
        <div class="card"><div class="n">${c.restored}</div><div class="l">restored</div></div>
      </div><h2>Checkpoint durations</h2>${checkpointChart(checkpoints.history)}
      <h2>Checkpoint history</h2>${table(
        ["id", "state", "triggered", "duration", "size", "acknowledged"],
        checkpoints.history.map((h) => [h.id, state(h.status), time(h.trigger_timestamp), `${h.end_to_end_duration} ms`, bytes(h.state_size), `${h.num_acknowledged_subtasks} / ${h.num_subtasks}`]),
        [0, 3, 4, 5],
      )}`;
  }
  const failures = (exceptions["all-exceptions"] || []).map((e) => [time(e.timestamp), `<pre>${esc(e.exception)}</pre>`]);
  return `<h1>${esc(j.name)} ${state(j.state)} ${running ? `<button id="cancel" data-job="${esc(id)}">Cancel</button>` : ""}</h1>
    <p class="muted">${esc(id)} · started ${time(j["start-time"])} · ${duration(j.duration)}</p>
    ${running ? `<h2>Throughput (records/s read by the sources)</h2>${sparkline(throughput.get(id) || [])}` : ""}
    <h2>Job graph</h2><div class="graph-wrap">${graph(j, figures)}</div>
    <h2>Operators</h2>${vertices}
    <h2>Checkpoints</h2>${cps}
    <h2>Exceptions</h2>${table(["time", "exception"], failures)}`;
}

async function applications() {
  const a = await api("/applications");
  return `<h1>Applications</h1>${table(
    ["id", "name", "state", "jobs"],
    (a.applications || []).map((x) => [esc(x.id), esc(x.name || ""), state(x.status || x.state || ""), (x.jobs || []).length]),
    [3],
  )}`;
}

async function taskmanagers() {
  const t = await api("/taskmanagers");
  const now = Date.now();
  const rows = await Promise.all(
    t.taskmanagers.map(async (tm) => {
      const m = metricValues(await api(`/taskmanagers/${encodeURIComponent(tm.id)}/metrics?get=Status.Process.Memory.Resident,Status.Process.CPU.Load,Status.Process.Threads.Count`));
      return [
        `<span class="tm">${esc(tm.id)}</span>`,
        esc(tm.path),
        `${tm.slotsNumber - tm.freeSlots} / ${tm.slotsNumber}`,
        bytes(m["Status.Process.Memory.Resident"]),
        m["Status.Process.CPU.Load"] === undefined ? "–" : `${(m["Status.Process.CPU.Load"] * 100).toFixed(1)} %`,
        number(m["Status.Process.Threads.Count"]),
        `${duration(Math.max(0, now - tm.timeSinceLastHeartbeat))} ago`,
      ];
    }),
  );
  return `<h1>Task Managers</h1>${table(["id", "address", "slots used", "memory (resident)", "CPU", "threads", "last heartbeat"], rows, [2, 3, 4, 5])}`;
}

async function jobmanager() {
  const [config, metrics] = await Promise.all([api("/config"), api("/jobmanager/metrics?get=Status.Process.Memory.Resident,Status.Process.CPU.Load,Status.Process.Threads.Count,numRunningJobs")]);
  const m = metricValues(metrics);
  const settings = Object.entries(config["weir-cluster"] || {}).map(([k, v]) => [esc(k), `<code>${esc(JSON.stringify(v))}</code>`]);
  const defaults = Object.entries(config["weir-job-defaults"] || {}).map(([k, v]) => [esc(k), `<code>${esc(v)}</code>`]);
  return `<h1>Job Manager</h1>
    <div class="cards">
      <div class="card"><div class="n">${bytes(m["Status.Process.Memory.Resident"])}</div><div class="l">memory (resident)</div></div>
      <div class="card"><div class="n">${m["Status.Process.CPU.Load"] === undefined ? "–" : (m["Status.Process.CPU.Load"] * 100).toFixed(1) + " %"}</div><div class="l">CPU</div></div>
      <div class="card"><div class="n">${number(m["Status.Process.Threads.Count"])}</div><div class="l">threads</div></div>
      <div class="card"><div class="n">${number(m.numRunningJobs)}</div><div class="l">running jobs</div></div>
    </div>
    <h2>Configuration</h2>${table(["setting", "value"], settings)}
    <h2>Defaults for jobs</h2>${table(["key", "value"], defaults)}`;
}

// ---- routing and refresh

const routes = [
  [/^#\/jobs\/([0-9a-f]{32})$/, (m) => job(m[1])],
  [/^#\/jobs$/, () => jobs()],
  [/^#\/applications$/, () => applications()],
  [/^#\/taskmanagers$/, () => taskmanagers()],
  [/^#\/jobmanager$/, () => jobmanager()],
  [/^/, () => overview()],
];

let drawing = false;
async function draw() {
  if (drawing) return;
  drawing = true;
  try {
    const hash = location.hash || "#/overview";
    for (const [re, page] of routes) {
      const m = hash.match(re);
      if (m) {
        document.getElementById("main").innerHTML = await page(m);
        break;
      }
    }
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById("updated").textContent = `update failed: ${e.message}`;
  } finally {
    drawing = false;
  }
}

document.addEventListener("click", async (e) => {
  const b = e.target.closest("#cancel");
  if (b && confirm("Cancel this job?")) {
    await api(`/jobs/${b.dataset.job}?mode=cancel`, { method: "PATCH" }).catch(() => {});
    draw();
  }
});
window.addEventListener("hashchange", draw);
api("/config")
  .then((c) => (document.getElementById("version").textContent = c["flink-version"]))
  .catch(() => {});
draw();
setInterval(draw, REFRESH_MS);
