"""The body of bench/ha.sh: see there. Every process it starts is ended by its pid; every wait is
bounded."""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

WEIR, REPS, TIMEOUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(rest, path):
    return json.load(urllib.request.urlopen(f"http://{rest}{path}", timeout=5))


def until(what, limit, check, pause=0.02):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        value = check()
        if value:
            return value
        time.sleep(pause)
    sys.exit(f"{what}: not within {limit} s")


class Procs:
    def __init__(self):
        self.all = []

    def start(self, args, log, ready=None):
        p = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**os.environ, "WEIR_LOG": "warn"})
        self.all.append(p)
        if ready:
            until(f"{args[1]} ready", 30, lambda: ready in open(log).read() or p.poll() is not None)
            if p.poll() is not None:
                sys.exit(f"{args} exited; see {log}")
        return p

    def stop(self):
        for p in self.all:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.all = []


def service(kind, d, procs):
    port = free_port()
    if kind == "etcd":
        peer = free_port()
        procs.start(["etcd", "--data-dir", f"{d}/etcd", "--listen-client-urls", f"http://127.0.0.1:{port}",
                     "--advertise-client-urls", f"http://127.0.0.1:{port}", "--listen-peer-urls",
                     f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                     "--initial-cluster", f"default=http://127.0.0.1:{peer}"], f"{d}/etcd.log",
                    ready="ready to serve client requests")
        return [f"high-availability.etcd.endpoints=127.0.0.1:{port}", f"high-availability.etcd.lease-ttl={TIMEOUT}"]
    os.makedirs(f"{d}/zk", exist_ok=True)
    with open(f"{d}/zoo.cfg", "w") as f:
        f.write(f"tickTime=200\ndataDir={d}/zk\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
                "minSessionTimeout=400\nmaxSessionTimeout=60000\nadmin.enableServer=false\n"
                "4lw.commands.whitelist=srvr\n")
    cp = "/usr/share/java/zookeeper.jar:" + ":".join(
        f"/usr/share/java/{j}" for j in os.listdir("/usr/share/java") if j.endswith(".jar"))
    procs.start(["java", "-cp", cp, "org.apache.zookeeper.server.ZooKeeperServerMain", f"{d}/zoo.cfg"], f"{d}/zk.log")

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"srvr")
                return b"Mode" in s.recv(4096)
        except OSError:
            return False
    until("ZooKeeper", 30, answers, pause=0.1)
    return [f"high-availability.zookeeper.quorum=127.0.0.1:{port}",
            f"high-availability.zookeeper.client.session-timeout={TIMEOUT}"]


def defines(settings):
    return [a for s in settings for a in ("-D", s)]


def cluster(d, procs, ha, jobmanagers):
    """JobManagers and two TaskManagers; the REST addresses of the JobManagers."""
    common = ha + ["heartbeat.interval=200", "heartbeat.timeout=1500", "restart-strategy.type=fixed-delay",
                   "restart-strategy.fixed-delay.attempts=5", "restart-strategy.fixed-delay.delay=0ms"]
    rests, rpc = [], None
    for n in range(jobmanagers):
        log = f"{d}/jm-{n}.log"
        procs.start([WEIR, "jobmanager"] + defines(common + ["rest.port=0", "jobmanager.rpc.port=0",
                    f"blob.storage.directory={d}/jm-{n}"]), log, ready="jobmanager ready")
        line = next(l for l in open(log) if "jobmanager ready" in l)
        rests.append(line.split("rest=http://")[1].split()[0])
        rpc = rpc or line.split("rpc=")[1].split()[0]
    for n in range(2):
        extra = [] if ha else ["jobmanager.rpc.port=" + rpc.split(":")[1]]
        procs.start([WEIR, "taskmanager"] + defines(common + extra + [f"blob.storage.directory={d}/tm-{n}"]),
                    f"{d}/tm-{n}.log", ready="taskmanager ready")
    return rests, common


def leader(rests):
    for i, r in enumerate(rests):
        try:
            if get(r, "/weir/ha")["leading"] and get(r, "/overview")["taskmanagers"] == 2:
                return i
        except Exception:
            pass
    return None


def cancel(rest, job):
    req = urllib.request.Request(f"http://{rest}/jobs/{job}?mode=cancel", method="PATCH")
    urllib.request.urlopen(req, timeout=5).read()


def submit(d, settings, rest=None, out="out"):
    args = json.dumps({"count": 10**9, "keys": 100000, "rate": 100000, "output": f"{d}/{out}"})
    cmd = [WEIR, "run", "-t", "remote", "-d", "keyed-sums", "--args", args, "-p", "2",
           "-D", "execution.checkpointing.interval=100ms", "-D", f"execution.checkpointing.dir={d}/cp"]
    cmd += ["-m", rest] if rest else defines(settings)
    t = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t
    job = out.stdout.split("JobID ")[-1].strip()
    if not job:
        sys.exit(f"not submitted: {out.stdout}{out.stderr}")
    return job, took


def first_submission(d, settings, leader, rest=None):
    """Submits a job and cancels it (bounded wait for CANCELED); how long the submission took."""
    job, took = submit(d, settings, rest, out="out-first")
    cancel(leader, job)
    until("the first job cancelled", 30, lambda: get(leader, f"/jobs/{job}")["state"] == "CANCELED")
    return took


def failover(kind):
    with tempfile.TemporaryDirectory() as d:
        procs = Procs()
        try:
            ha = ["high-availability.type=" + kind, "high-availability.cluster-id=bench",
                  f"high-availability.storageDir={d}/ha"] + service(kind, d, procs)
            rests, settings = cluster(d, procs, ha, 2)
            first = until("a leader", 30, lambda: leader(rests) is not None and leader(rests) + 1) - 1
            # The first submission (the artifact goes to the storage directory) is cancelled at
            # once; the second, with the artifact kept, is the steady state, and the job measured.
            took = first_submission(d, settings, rests[first])
            job, again = submit(d, settings)
            until("10 checkpoints", 60,
                  lambda: get(rests[first], f"/jobs/{job}/checkpoints")["counts"]["completed"] >= 10)
            victim = procs.all[1 + first]
            t0 = time.monotonic()
            victim.kill()
            other = rests[1 - first]

            def processing():
                try:
                    cps = get(other, f"/jobs/{job}/checkpoints")
                except Exception:
                    return False
                restored, done = cps["latest"]["restored"], cps["latest"]["completed"]
                return restored and done and done["id"] > restored["id"]
            until("a checkpoint under the new leader", 60, processing, pause=0.005)
            return round((time.monotonic() - t0) * 1000), took, again
        finally:
            procs.stop()


def plain_submission():
    with tempfile.TemporaryDirectory() as d:
        procs = Procs()
        try:
            rests, settings = cluster(d, procs, [], 1)
            until("TaskManagers", 30, lambda: get(rests[0], "/overview")["taskmanagers"] == 2)
            took = first_submission(d, settings, rests[0], rests[0])
            return took, submit(d, settings, rests[0])[1]
        finally:
            procs.stop()


for kind in ["etcd", "zookeeper"]:
    runs = [failover(kind) for _ in range(REPS)]
    ms = [r[0] for r in runs]
    print(f"RESULT ha-failover service={kind} timeout={TIMEOUT} kill-9-to-first-checkpoint-under-new-leader "
          f"median={statistics.median(ms)} ms (runs: {ms}); submission median: first "
          f"{round(statistics.median(r[1] for r in runs) * 1000)} ms, second "
          f"{round(statistics.median(r[2] for r in runs) * 1000)} ms "
          f"(runs: {[round(r[2] * 1000) for r in runs]})", flush=True)
plain = [plain_submission() for _ in range(REPS)]
print(f"RESULT ha-submission without-ha median: first {round(statistics.median(p[0] for p in plain) * 1000)} ms, "
      f"second {round(statistics.median(p[1] for p in plain) * 1000)} ms "
      f"(runs: {[round(p[1] * 1000) for p in plain]})")
