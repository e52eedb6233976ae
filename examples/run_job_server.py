#!/usr/bin/env python3
"""Run examples/job_server against a throwaway redis-server, under valgrind,
and check what README "Examples" promises. Run by tools/check:

    examples/run_job_server.py BUILD_DIR

Phase 1 (the happy path and its failures): POST 200 jobs, some "poison" and
some "flaky"; every 202 carries an id that a worker then logs ("handled <id>
attempt <n> <verb>"); poison is rejected at its first attempt and is in the
dead letters with that id; flaky is nacked once and acked at attempt 2; GET
/stats agrees; SIGTERM exits 0; valgrind finds no error and no definite
leak; Redis holds nothing but the dead letters.

Phase 2 (a grace period too short for the work): jobs that take 20 s, a 300 ms
grace period. The server must still exit 0 within the grace period (plus
valgrind's slowness), valgrind-clean (the held messages are finished after
the consumer's close: REDQ_ECLOSED, memory released), and every job must be
back in Redis, none lost, none in a processing list.

Exit 0 when everything held, 1 otherwise (each failure is a "FAIL:" line).
Set JOB_SERVER_NO_VALGRIND=1 to run without valgrind (faster, to debug).
"""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_JOBS = 200
POISON_AT = (17, 99, 150)   # these bodies are "poison"
FLAKY_AT = (5, 60, 133, 199)  # these are "flaky"
ID_RE = re.compile(r"^[0-9a-f]{16}-[0-9]+$")

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def info(msg):
    print("run_job_server: " + msg, flush=True)


def wait_for(cond, timeout, what):
    """Poll cond() until it is true or timeout seconds pass (bounded wait,
    never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            fail("timed out after %.0f s waiting for %s" % (timeout, what))
            return None
        time.sleep(0.05)


class Server:
    """job_server (under valgrind) with its stdout and stderr collected by
    reader threads."""

    def __init__(self, build, url, queue, tag, extra):
        self.lines = []      # stdout lines
        self.err = []        # stderr lines
        self.lock = threading.Lock()
        self.vglog = os.path.join(build, "job_server-%s.valgrind" % tag)
        exe = os.path.join(build, "examples", "job_server")
        cmd = [exe, "--listen", "127.0.0.1:0", "--url", url, "--queue", queue] + extra
        self.valgrind = not os.environ.get("JOB_SERVER_NO_VALGRIND")
        if self.valgrind:
            cmd = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
                   "--errors-for-leak-kinds=definite", "--error-exitcode=99",
                   "--log-file=" + self.vglog] + cmd
        info("starting " + " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace")
        self.threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines)),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.err))]
        for t in self.threads:
            t.daemon = True
            t.start()
        self.port = None

    def _read(self, f, into):
        for line in f:
            with self.lock:
                into.append(line.rstrip("\n"))

    def stdout(self):
        with self.lock:
            return list(self.lines)

    def stderr(self):
        with self.lock:
            return list(self.err)

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                return "exited"
            for line in self.stderr():
                m = re.search(r"ready on 127\.0\.0\.1:([0-9]+)", line)
                if m:
                    return m.group(1)
            return None
        r = wait_for(ready, 60, "job_server's ready line")
        if r is None or r == "exited":
            fail("job_server did not start (exit %s): %s" % (self.proc.poll(), self.stderr()[-5:]))
            return False
        self.port = int(r)
        return True

    def stop(self, timeout):
        """SIGTERM, then wait; returns the exit status (None on timeout, after
        which the process is killed)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            fail("job_server did not exit within %d s of SIGTERM" % timeout)
            self.proc.kill()
            self.proc.wait()
            rc = None
        for t in self.threads:
            t.join(5)
        info("exit status %s, %.1f s after SIGTERM" % (rc, time.monotonic() - t0))
        return rc

    def check_valgrind(self):
        if not self.valgrind:
            return
        try:
            log = open(self.vglog).read()
        except OSError as e:
            fail("no valgrind log: %s" % e)
            return
        m = re.search(r"ERROR SUMMARY: ([0-9]+) errors", log)
        if not m or m.group(1) != "0":
            fail("valgrind reports errors (see %s):\n%s" % (self.vglog, log[-3000:]))
        m = re.search(r"definitely lost: ([0-9,]+) bytes", log)
        if m and m.group(1) != "0":
            fail("valgrind: definitely lost %s bytes (see %s)" % (m.group(1), self.vglog))


def http(port, method, path, body=None, timeout=30):
    """(status, parsed JSON body or raw text)."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode("utf-8", "replace")


def redq_cli(build, url, *args):
    out = subprocess.run([os.path.join(build, "tools", "redq"), *args, "--url", url],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        fail("redq %s exited %d: %s" % (" ".join(args), out.returncode, out.stderr.strip()))
    return out.stdout


def queue_numbers(build, url, queue):
    out = redq_cli(build, url, "stats", "--json", queue)
    try:
        return json.loads(out)["queues"][0]
    except (ValueError, KeyError, IndexError):
        fail("redq stats --json %s: unexpected output %r" % (queue, out))
        return {}


def leftover_keys(url, queue):
    """Every key of the queue holding something, by a SCAN of our own (not
    redq's view): {key: (type, length)}."""
    port = url.rsplit(":", 1)[1]
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", port]
    keys = set()
    for pattern in (queue, "{%s}*" % queue):
        out = subprocess.run(cli + ["--scan", "--pattern", pattern.replace("{", "\\{").replace("}", "\\}")],
                             capture_output=True, text=True, timeout=30).stdout
        keys.update(k for k in out.split("\n") if k)
    found = {}
    for k in sorted(keys):
        t = subprocess.run(cli + ["type", k], capture_output=True, text=True).stdout.strip()
        cmd = {"list": "llen", "zset": "zcard"}.get(t)
        if cmd:
            n = int(subprocess.run(cli + [cmd, k], capture_output=True, text=True).stdout.strip() or 0)
            if n:
                found[k] = (t, n)
    return found


def phase1(build, url):
    queue = "jobs"
    srv = Server(build, url, queue, "main", ["--grace-ms", "5000", "--work-ms", "20"])
    if not srv.wait_ready():
        srv.stop(30)
        return
    port = srv.port

    # Answers that need no Redis: wrong path, wrong method.
    st, _ = http(port, "GET", "/nope")
    if st != 404:
        fail("GET /nope: %d, expected 404" % st)
    st, _ = http(port, "GET", "/jobs")
    if st != 405:
        fail("GET /jobs: %d, expected 405" % st)

    bodies = []
    for i in range(N_JOBS):
        if i in POISON_AT:
            bodies.append(b"poison")
        elif i in FLAKY_AT:
            bodies.append(b"flaky")
        else:
            bodies.append(b"job %d \x00\xff binary" % i)  # any bytes

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: http(port, "POST", "/jobs", b), bodies))
    info("%d POSTs answered in %.1f s" % (N_JOBS, time.monotonic() - t0))
    ids = []
    for i, (st, body) in enumerate(answers):
        if st != 202 or not isinstance(body, dict) or not ID_RE.match(str(body.get("id", ""))):
            fail("POST job %d: %d %r, expected 202 {\"id\": \"<16 hex>-<n>\"}" % (i, st, body))
            ids.append(None)
        else:
            ids.append(body["id"])
    if len(set(x for x in ids if x)) != len([x for x in ids if x]):
        fail("the 202 ids are not unique")

    # What each job's handled lines must be, in order of attempts.
    expect = {}
    for i, mid in enumerate(ids):
        if mid is None:
            continue
        if i in POISON_AT:
            expect[mid] = ["attempt 1 reject"]
        elif i in FLAKY_AT:
            expect[mid] = ["attempt 1 nack", "attempt 2 ack"]
        else:
            expect[mid] = ["attempt 1 ack"]

    def handled():
        got = {}
        for line in srv.stdout():
            m = re.match(r"handled (\S+) (attempt [0-9]+ \w+)$", line)
            if m:
                got.setdefault(m.group(1), []).append(m.group(2))
        return got

    wait_for(lambda: all(len(handled().get(k, [])) >= len(v) for k, v in expect.items()),
             60, "a handled line for every accepted job")
    got = handled()
    for mid, want in expect.items():
        if got.get(mid) != want:
            fail("job %s: handled %r, expected %r" % (mid, got.get(mid), want))
    extra = set(got) - set(expect)
    if extra:
        fail("handled ids no POST was given: %s" % sorted(extra)[:5])

    n_ok = len(expect)
    want_stats = {"produced": N_JOBS, "stored": N_JOBS, "failed": 0,
                  "handled": N_JOBS + len(FLAKY_AT), "acked": N_JOBS - len(POISON_AT),
                  "nacked": len(FLAKY_AT), "rejected": len(POISON_AT), "unacked": 0}
    last = {}

    def stats_match():
        nonlocal last
        st, last = http(port, "GET", "/stats")
        return st == 200 and isinstance(last, dict) and \
            all(last.get(k) == v for k, v in want_stats.items())
    if n_ok == N_JOBS and not wait_for(stats_match, 20, "GET /stats to show %s" % want_stats):
        fail("GET /stats: %r" % last)

    # The poison jobs are dead letters, under the ids their clients got.
    dead = [json.loads(l) for l in redq_cli(build, url, "dead", "list", "--json", queue).splitlines() if l]
    dead_ids = sorted(d.get("id") for d in dead)
    poison_ids = sorted(ids[i] for i in POISON_AT if ids[i])
    if dead_ids != poison_ids:
        fail("dead letters %r, expected the poison jobs %r" % (dead_ids, poison_ids))
    for d in dead:
        if d.get("body") != "poison" or "poison" not in d.get("dead_reason", ""):
            fail("dead letter %r: expected body poison and the handler's reason" % d)

    rc = srv.stop(60)
    if rc != 0:
        fail("job_server exited %s after SIGTERM, expected 0 (99: valgrind errors); stderr: %s"
             % (rc, srv.stderr()[-10:]))
    srv.check_valgrind()

    nums = queue_numbers(build, url, queue)
    for k in ("ready", "due", "processing", "delayed", "orphaned"):
        if nums.get(k) != 0:
            fail("after shutdown, %s of %s is %r, expected 0" % (k, queue, nums.get(k)))
    if nums.get("dead") != len(POISON_AT):
        fail("after shutdown, %d dead letters expected, redq stats says %r" % (len(POISON_AT), nums.get("dead")))
    left = leftover_keys(url, queue)
    left.pop("{%s}/dead" % queue, None)
    if left:
        fail("keys still holding messages after shutdown: %r" % left)


def phase2(build, url):
    """Shutdown that the grace period cuts short: the held jobs go back."""
    queue = "slowjobs"
    n = 5
    srv = Server(build, url, queue, "grace", ["--grace-ms", "300", "--work-ms", "20000"])
    if not srv.wait_ready():
        srv.stop(30)
        return
    ids = []
    for i in range(n):
        st, body = http(srv.port, "POST", "/jobs", b"slow %d" % i)
        if st != 202:
            fail("slow POST %d: %d %r" % (i, st, body))
        else:
            ids.append(body["id"])

    def all_held():
        st, s = http(srv.port, "GET", "/stats")
        return st == 200 and s.get("unacked") == n
    wait_for(all_held, 30, "the workers to hold all %d slow jobs" % n)
    t0 = time.monotonic()
    rc = srv.stop(60)
    took = time.monotonic() - t0
    if rc != 0:
        fail("slow job_server exited %s, expected 0; stderr: %s" % (rc, srv.stderr()[-10:]))
    if took > 15:
        fail("shutdown with a 300 ms grace period took %.1f s" % took)
    if any(l.startswith("handled ") and l.endswith(" ack") for l in srv.stdout()):
        fail("a 20 s job was acked within the test: %r" % srv.stdout())
    srv.check_valgrind()
    nums = queue_numbers(build, url, queue)
    back = nums.get("ready", 0) + nums.get("due", 0)
    if back != n or nums.get("processing") != 0 or nums.get("orphaned") != 0:
        fail("after a cut-short shutdown, expected all %d jobs back (ready+due), none "
             "processing: %r" % (n, nums))


def main():
    if len(sys.argv) != 2:
        print("usage: run_job_server.py BUILD_DIR", file=sys.stderr)
        return 2
    build = os.path.abspath(sys.argv[1])
    for exe in ("examples/job_server", "tools/redq"):
        if not os.access(os.path.join(build, exe), os.X_OK):
            print("FAIL: no %s in %s" % (exe, build))
            return 1
    out = subprocess.run([os.path.join(ROOT, "tools", "redis-local"), "start"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print("FAIL: tools/redis-local start: " + out.stderr)
        return 1
    env = dict(l.split("=", 1) for l in out.stdout.split("\n") if "=" in l)
    url, rdir = env["REDQ_URL"], env["REDQ_REDIS_DIR"]
    # redis-local prints the dir %q-quoted; ours never needs quoting (mktemp).
    t0 = time.monotonic()
    try:
        phase1(build, url)
        phase2(build, url)
    finally:
        subprocess.run([os.path.join(ROOT, "tools", "redis-local"), "stop", rdir])
    info("%s in %.1f s" % ("FAILED (%d)" % len(failures) if failures else "passed",
                            time.monotonic() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
