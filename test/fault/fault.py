#!/usr/bin/env python3
"""The redq fault harness: a seeded torture run against a real redis-server.

Run it with tools/fault (which builds first); docs/RELIABILITY.md explains
what it checks. In short:

  1. start redis-server (AOF, appendfsync always) on a free 127.0.0.1 port in
     a temp dir, and a TCP proxy (127.0.0.1) in front of it;
  2. start producer and consumer workers (test/fault/fault-*.c, built on
     redq.h), some through the proxy, some direct, both delivery modes on
     separate queues, pool sizes 1-8;
  3. inject faults chosen at random (seeded) for --seconds, logging each in a
     timeline;
  4. heal, stop the producers (flush + close), wait until the queues are
     quiet, stop the consumers (stop + close), look at every key in Redis;
  5. check the workers' logs against each other and against Redis.

Only the Python standard library is used (a small RESP client is below).
Everything it starts is stopped by pid; the temp dir is removed at the end
(unless --keep). Every wait has a deadline.
"""

import argparse
import bisect
import collections
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import re
import time

FAULT_KINDS = ["kill", "sleep", "pause", "stop", "crash", "restart",
               "scriptflush", "squeeze", "blackhole", "reset"]
# Faults that can take messages out of an at-most-once consumer's hands
# (a pop whose reply never arrives, a process that dies holding messages).
HITS_CONSUMERS = {"kill", "sleep", "pause", "stop", "crash", "restart",
                  "blackhole", "reset"}

COMMAND_TIMEOUT_S = 1.0   # the workers' command_timeout_ms
DUP_WINDOW_S = 25.0       # a duplicate this close to a fault is explained
WORKER_RSS_LIMIT_KB = 512 * 1024
REDIS_MEM_LIMIT = 1024 * 1024 * 1024

# The payload shapes of fault-common.h; "safe" ones do not look like redq's
# JSON envelope (to look past issue 8 defect 1 while it is open).
VARIANTS = ["text", "json-id-body", "json-mail", "meta", "binary", "empty", "json-b64",
            "json-seed", "json-attempts", "json-bignum", "json-array", "medium", "big"]
SAFE_VARIANTS = ["text", "meta", "binary", "empty", "json-array", "medium", "big"]

ALO_QUEUES = ["alo", "{orders}", "a}b", "x:proc:y", "L" * 1024]
AMO_QUEUES = ["amo", "{amo}", "amo:proc:z", "M" * 1024]


TAG_RE = re.compile(rb"~t([0-9]+\.[0-9]+)~")


def now():
    return time.time()


# --------------------------------------------------------------------------
# A minimal RESP client (blocking, with timeouts).
# --------------------------------------------------------------------------

class RedisError(Exception):
    pass


class Resp:
    def __init__(self, port, timeout=2.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            d = self.sock.recv(max(65536, n + 2 - len(self.buf)))
            if not d:
                raise ConnectionError("connection closed")
            self.buf += d
        v, self.buf = self.buf[:n], self.buf[n + 2:]
        return v

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return RedisError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError("bad reply %r" % line[:40])

    def cmd(self, *args, timeout=None):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        if timeout is not None:
            self.sock.settimeout(timeout)
        self.sock.sendall(b"".join(out))
        r = self._reply()
        if isinstance(r, RedisError):
            raise r
        return r


def info_field(info, name):
    for line in info.decode().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    return None


# --------------------------------------------------------------------------
# The proxy: a pulled cable (black hole, sockets left open) or a reset.
# --------------------------------------------------------------------------

class Proxy(threading.Thread):
    def __init__(self, upstream_port):
        super().__init__(daemon=True)
        self.upstream = upstream_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.peer = {}      # socket -> the other end
        self.out = {}       # socket -> bytes waiting to be written to it
        self.blackhole = False
        self.reset_req = threading.Event()
        self.stop_req = threading.Event()
        self.errors = []

    def _drop(self, s):
        p = self.peer.pop(s, None)
        self.out.pop(s, None)
        s.close()
        if p is not None:
            self.peer.pop(p, None)
            self.out.pop(p, None)
            p.close()

    def _reset_all(self):
        for s in list(self.peer):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            s.close()
        self.peer.clear()
        self.out.clear()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except BlockingIOError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=0.5)
            except OSError:
                c.close()       # Redis is down: the client sees a closed connection
                continue
            for s in (c, u):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.peer[c], self.peer[u] = u, c
            self.out[c], self.out[u] = b"", b""

    def run(self):
        while not self.stop_req.is_set():
            if self.reset_req.is_set():
                self._reset_all()
                self.reset_req.clear()
            if self.blackhole:
                # A pulled cable: nothing is read, written or accepted; the
                # sockets stay open and the kernel buffers fill.
                time.sleep(0.02)
                continue
            rl = [self.lsock] + [s for s in self.peer
                                 if len(self.out.get(self.peer[s], b"")) < (4 << 20)]
            wl = [s for s, b in self.out.items() if b]
            try:
                r, w, _ = select.select(rl, wl, [], 0.05)
            except (OSError, ValueError):
                continue
            for s in w:
                if s not in self.out:
                    continue
                try:
                    n = s.send(self.out[s])
                    self.out[s] = self.out[s][n:]
                except BlockingIOError:
                    pass
                except OSError:
                    self._drop(s)
            for s in r:
                if s is self.lsock:
                    self._accept()
                    continue
                if s not in self.peer:
                    continue
                try:
                    d = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                if not d:
                    self._drop(s)
                    continue
                self.out[self.peer[s]] += d
        self._reset_all()
        self.lsock.close()


# --------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------

class Worker:
    def __init__(self, role, key, make_args, via_proxy):
        self.role = role          # "producer" or "consumer"
        self.key = key            # stable name: p0, c2, ...
        self.make_args = make_args
        self.via_proxy = via_proxy
        self.proc = None
        self.incarnations = []    # (log path, producer id or None, killed?)
        self.max_hwm_kb = 0
        self.stopping = False     # SIGTERMed at the end: not restarted
        self.mode, self.pool, self.queues = None, 0, []


class Harness:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.tmp = tempfile.mkdtemp(prefix="redq-fault-")
        self.t0 = now()
        self.timeline = []        # dicts: kind, start, end, detail, consumer
        self.problems = []        # harness-level failures (strings)
        self.redis = None
        self.redis_port = None
        self.redis_mem_peak = 0
        self.workers = []
        self.next_pid = 1
        self.proxy = None
        self.poll_stop = threading.Event()
        self.lock = threading.Lock()
        self.faults = args.faults
        self.stranded = {}        # tag -> key it was found in at the end
        self.leftovers = []

    # --- redis-server ---------------------------------------------------------

    def free_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        return p

    def start_redis(self):
        rdir = os.path.join(self.tmp, "redis")
        os.makedirs(rdir, exist_ok=True)
        cmd = [self.a.redis_server, "--port", str(self.redis_port),
               "--bind", "127.0.0.1", "--dir", rdir, "--appendonly", "yes",
               "--appendfsync", "always", "--save", "", "--daemonize", "no",
               "--logfile", "redis.log"]
        if self.redis_major >= 7:
            cmd += ["--enable-debug-command", "yes"]
        self.redis = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = now() + 30
        while now() < deadline:
            if self.redis.poll() is not None:
                raise RuntimeError("redis-server exited %s (see %s/redis.log)"
                                   % (self.redis.returncode, rdir))
            try:
                c = Resp(self.redis_port, 1.0)
                try:
                    c.cmd("PING")
                    return
                finally:
                    c.close()
            except (OSError, RedisError):   # refused, or LOADING
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 30 s")

    def kill_redis(self):
        if self.redis and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(10)

    def rcmd(self, *args, timeout=3.0):
        c = Resp(self.redis_port, timeout)
        try:
            return c.cmd(*args)
        finally:
            c.close()

    # --- workers ---------------------------------------------------------------

    def url(self, w):
        port = self.proxy.port if w.via_proxy else self.redis_port
        return "redis://127.0.0.1:%d" % port

    def spawn(self, w):
        n = len(w.incarnations)
        log = os.path.join(self.tmp, "%s.%d.log" % (w.key, n))
        err = open(os.path.join(self.tmp, "%s.%d.err" % (w.key, n)), "w")
        pid_arg = None
        if w.role == "producer":
            pid_arg = self.next_pid
            self.next_pid += 1
        argv = w.make_args(self.url(w), log, pid_arg, n)
        w.proc = subprocess.Popen(argv, stdout=err, stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        w.incarnations.append({"log": log, "pid": pid_arg, "killed": False,
                               "proc": w.proc})

    def setup_workers(self):
        b = self.a.build
        seed = self.a.seed
        ok = lambda q: len(q) <= self.a.max_name_len
        qargs_alo = ["%d:%s" % (i, q) for i, q in enumerate(ALO_QUEUES) if ok(q)]
        base = len(ALO_QUEUES)
        qargs_amo = ["%d:%s" % (base + i, q) for i, q in enumerate(AMO_QUEUES) if ok(q)]
        self.qmode = {i: "alo" for i in range(len(ALO_QUEUES))}
        self.qmode.update({base + i: "amo" for i in range(len(AMO_QUEUES))})
        self.qname = {i: q for i, q in enumerate(ALO_QUEUES + AMO_QUEUES)}

        for k in range(self.a.producers):
            def mk(url, log, pid, n, k=k):
                return [os.path.join(b, "test/fault/fault-producer"), "-u", url,
                        "-l", log, "-i", str(pid), "-s", str(seed),
                        "-r", str(self.a.rate), "-b", str(self.a.big_every),
                        "-n", "fault-p%d" % pid] + \
                    (["-V", self.a.variants] if self.a.variants else []) + qargs_alo + qargs_amo
            self.workers.append(Worker("producer", "p%d" % k, mk, k % 2 == 1))

        # Consumers per mode: each queue has at least one (queue i goes to
        # consumer i % n), and each consumer takes some more at random.
        k = 0
        for mode, qargs in (("alo", qargs_alo), ("amo", qargs_amo)):
            n = self.a.consumers
            for j in range(n):
                mine = [q for i, q in enumerate(qargs)
                        if i % n == j or self.rng.random() < 0.3]
                pool = self.rng.randint(1, 8)

                def mk(url, log, pid, inc, mine=mine, pool=pool, mode=mode, k=k):
                    return [os.path.join(b, "test/fault/fault-consumer"), "-u", url,
                            "-l", log, "-s", str(seed * 1000 + k * 100 + inc),
                            "-m", mode, "-p", str(pool),
                            "-n", "fault-c%d-%d" % (k, inc)] + mine
                w = Worker("consumer", "c%d" % k, mk, k % 2 == 0)
                w.mode, w.pool, w.queues = mode, pool, mine
                self.workers.append(w)
                k += 1
        for w in self.workers:
            self.spawn(w)

    def hwm_kb(self, pid):
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def poller(self):
        """Every 0.5 s: Redis used_memory and the workers' peak RSS."""
        while not self.poll_stop.wait(0.5):
            try:
                c = Resp(self.redis_port, 0.3)
                try:
                    used = int(info_field(c.cmd("INFO", "memory"), "used_memory"))
                finally:
                    c.close()
                with self.lock:
                    self.redis_mem_peak = max(self.redis_mem_peak, used)
            except (OSError, RedisError, ValueError, TypeError):
                pass
            for w in self.workers:
                p = w.proc
                if p is not None and p.poll() is None:
                    w.max_hwm_kb = max(w.max_hwm_kb, self.hwm_kb(p.pid))

    def check_workers(self):
        """A worker that died without us killing it is a finding; restart it."""
        for w in self.workers:
            rc = w.proc.poll()
            if rc is not None and not w.incarnations[-1]["killed"] and not w.stopping:
                self.problems.append(
                    "WORKER: %s (%s) exited by itself with status %s at +%.1fs (see %s)"
                    % (w.key, w.role, rc, now() - self.t0,
                       w.incarnations[-1]["log"].replace(".log", ".err")))
                w.incarnations[-1]["killed"] = True
                self.spawn(w)

    # --- faults ------------------------------------------------------------------

    def fault(self, kind):
        r = self.rng
        consumers = [w.key for w in self.workers if w.role == "consumer"]
        ent = {"kind": kind, "start": now(), "detail": "", "consumer": kind in HITS_CONSUMERS,
               "affects": consumers}
        try:
            if kind == "kill":
                lst = self.rcmd("CLIENT", "LIST").decode()
                ids = []
                for line in lst.splitlines():
                    f = dict(x.split("=", 1) for x in line.split(" ") if "=" in x)
                    if f.get("name", "").startswith("fault-"):
                        ids.append((f["id"], f["name"]))
                pick = r.sample(ids, min(len(ids), r.randint(1, 3)))
                for cid, _ in pick:
                    try:
                        self.rcmd("CLIENT", "KILL", "ID", cid)
                    except RedisError:
                        pass
                ent["detail"] = " ".join(n for _, n in pick)
                ent["consumer"] = any(n.startswith("fault-c") for _, n in pick)
                ent["affects"] = sorted({n[len("fault-"):].split("-")[0] for _, n in pick
                                         if n.startswith("fault-c")})
            elif kind == "sleep":
                d = round(r.uniform(COMMAND_TIMEOUT_S * 1.5, COMMAND_TIMEOUT_S * 3), 2)
                ent["detail"] = "DEBUG SLEEP %s" % d
                self.rcmd("DEBUG", "SLEEP", d, timeout=d + 10)
            elif kind == "pause":
                ms = r.randint(500, 3000)
                ent["detail"] = "CLIENT PAUSE %d ALL" % ms
                self.rcmd("CLIENT", "PAUSE", ms)
                time.sleep(ms / 1000)
            elif kind in ("stop", "crash"):
                w = r.choice(self.workers)
                ent["consumer"] = w.role == "consumer"
                ent["affects"] = [w.key] if w.role == "consumer" else []
                if kind == "stop":
                    d = round(r.uniform(0.5, 6), 2)
                    ent["detail"] = "SIGSTOP %s (%s) for %ss" % (w.key, w.role, d)
                    w.proc.send_signal(signal.SIGSTOP)
                    time.sleep(d)
                    w.proc.send_signal(signal.SIGCONT)
                else:
                    ent["detail"] = "SIGKILL %s (%s), restarted" % (w.key, w.role)
                    w.incarnations[-1]["killed"] = True
                    w.proc.kill()
                    w.proc.wait(10)
                    time.sleep(r.uniform(0.1, 1.0))
                    self.spawn(w)
            elif kind == "restart":
                d = round(r.uniform(0.2, 2), 2)
                ent["detail"] = "redis-server SIGKILL, restart after %ss" % d
                self.kill_redis()
                time.sleep(d)
                self.start_redis()
            elif kind == "sabotage":
                # Not a fault redq must survive: the harness's own check.
                # Flip the last byte of a ready message (the checker must say
                # CORRUPT) and delete a ready list (it must say LOST).
                qs = [q for i, q in self.qname.items() if self.qmode[i] == "alo"]
                done = []
                held = [w for w in self.workers if w.role == "consumer"]
                for w in held:          # let messages wait in the ready lists
                    w.proc.send_signal(signal.SIGSTOP)
                time.sleep(0.5)
                for q in r.sample(qs, len(qs)):
                    v = self.rcmd("LINDEX", q, 0)
                    if v and not done:
                        self.rcmd("LSET", q, 0, v[:-1] + bytes([v[-1] ^ 1]))
                        done.append("flipped a byte in %s" % q[:20])
                    elif v:
                        n = self.rcmd("DEL", q)
                        done.append("deleted %s (%d)" % (q[:20], n))
                        break
                for w in held:
                    w.proc.send_signal(signal.SIGCONT)
                ent["detail"] = "; ".join(done) or "nothing ready to sabotage"
                ent["consumer"] = False
            elif kind == "scriptflush":
                self.rcmd("SCRIPT", "FLUSH")
                ent["detail"] = "SCRIPT FLUSH"
            elif kind == "squeeze":
                used = int(info_field(self.rcmd("INFO", "memory"), "used_memory"))
                d = round(r.uniform(1, 4), 2)
                self.rcmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
                self.rcmd("CONFIG", "SET", "maxmemory", used + 256 * 1024)
                ent["detail"] = "maxmemory %d (used %d) for %ss" % (used + 256 * 1024, used, d)
                time.sleep(d)
                self.rcmd("CONFIG", "SET", "maxmemory", 0)
            elif kind in ("blackhole", "reset"):
                ent["affects"] = [w.key for w in self.workers
                                  if w.role == "consumer" and w.via_proxy]
            if kind == "blackhole":
                d = round(r.uniform(1, 6), 2)
                ent["detail"] = "proxy black hole for %ss" % d
                self.proxy.blackhole = True
                time.sleep(d)
                self.proxy.blackhole = False
            elif kind == "reset":
                ent["detail"] = "proxy resets every connection"
                self.proxy.reset_req.set()
                deadline = now() + 5
                while self.proxy.reset_req.is_set() and now() < deadline:
                    time.sleep(0.01)
        except (OSError, RedisError) as e:
            ent["detail"] += " [harness: %s]" % e
            if kind == "squeeze":
                self.squeeze_off()
        ent["end"] = now()
        self.timeline.append(ent)

    def squeeze_off(self):
        deadline = now() + 10
        while now() < deadline:
            try:
                self.rcmd("CONFIG", "SET", "maxmemory", 0)
                return
            except (OSError, RedisError):
                time.sleep(0.2)

    # --- end of run --------------------------------------------------------------

    def queue_keys_state(self):
        """Number of messages in ready, delayed and processing lists."""
        c = Resp(self.redis_port, 3)
        try:
            total = 0
            cursor = b"0"
            while True:
                cursor, keys = c.cmd("SCAN", cursor, "COUNT", 1000)
                for k in keys:
                    t = c.cmd("TYPE", k)
                    if t == b"list":
                        total += c.cmd("LLEN", k)
                    elif t == b"zset":
                        total += c.cmd("ZCARD", k)
                if cursor == b"0":
                    return total
        finally:
            c.close()

    def consumed_lines(self):
        n = 0
        for w in self.workers:
            if w.role != "consumer":
                continue
            for inc in w.incarnations:
                try:
                    n += os.path.getsize(inc["log"])
                except OSError:
                    pass
        return n

    def stop_role(self, role, limit):
        ws = [w for w in self.workers if w.role == role]
        for w in ws:
            w.stopping = True
            if w.proc.poll() is None:
                w.max_hwm_kb = max(w.max_hwm_kb, self.hwm_kb(w.proc.pid))
                w.proc.send_signal(signal.SIGCONT)
                w.proc.terminate()
        deadline = now() + limit
        for w in ws:
            try:
                rc = w.proc.wait(max(0.1, deadline - now()))
            except subprocess.TimeoutExpired:
                self.problems.append("WORKER: %s (%s) did not stop within %d s of SIGTERM; killed"
                                     % (w.key, role, limit))
                w.incarnations[-1]["killed"] = True
                w.proc.kill()
                w.proc.wait(10)
                continue
            if rc != 0 and not w.incarnations[-1]["killed"]:
                self.problems.append("WORKER: %s (%s) exited %s after SIGTERM (see %s)"
                                     % (w.key, role, rc,
                                        w.incarnations[-1]["log"].replace(".log", ".err")))
                w.incarnations[-1]["killed"] = True

    def leftover_keys(self):
        c = Resp(self.redis_port, 5)
        out = []
        try:
            cursor = b"0"
            while True:
                cursor, keys = c.cmd("SCAN", cursor, "COUNT", 1000)
                for k in keys:
                    # Allowed to stay: the reaper locks (TTL'd), the queue
                    # registry, and each queue's meta hash (its counters of
                    # messages moved and its pause flag live on).
                    if k.endswith((b":reaper", b"/reaper", b":meta", b"/meta")) \
                            or k.startswith(b"redq:"):
                        continue
                    t = c.cmd("TYPE", k).decode()
                    n = {"list": "LLEN", "zset": "ZCARD", "set": "SCARD",
                         "hash": "HLEN"}.get(t)
                    size = c.cmd(n, k) if n else "-"
                    sample = b""
                    if t == "list":
                        items = c.cmd("LRANGE", k, 0, 9999)
                        sample = items[0]
                        for it in items:
                            for m in TAG_RE.finditer(it):
                                self.stranded.setdefault(m.group(1).decode(), k)
                    elif t == "zset":
                        sample = c.cmd("ZRANGE", k, 0, 0)[0]
                    elif t == "set":
                        sample = c.cmd("SRANDMEMBER", k)
                    kk = shortkey(k)
                    out.append("LEFT: key %r (%s, %s items) left after a clean stop; first: %r"
                               % (kk, t, size, sample[:100]))
                if cursor == b"0":
                    return out
        finally:
            c.close()

    def run(self):
        out = subprocess.run([self.a.redis_server, "--version"], capture_output=True,
                             text=True).stdout
        v = out.split("v=")[1].split()[0] if "v=" in out else "7.0.0"
        self.redis_major = int(v.split(".")[0])
        self.redis_port = self.free_port()
        self.start_redis()
        self.proxy = Proxy(self.redis_port)
        self.proxy.start()
        self.setup_workers()
        poll = threading.Thread(target=self.poller, daemon=True)
        poll.start()

        end = self.t0 + self.a.seconds
        time.sleep(min(2, self.a.seconds / 4))   # let everything connect first
        while now() < end:
            self.check_workers()
            if self.faults:
                kind = self.rng.choice(self.faults)
                self.fault(kind)
            time.sleep(min(max(0, end - now()), self.rng.uniform(0.3, 2.0)))
        self.check_workers()

        # Heal, then stop the producers: they flush (bounded by their
        # message_timeout_ms) and close.
        self.proxy.blackhole = False
        self.squeeze_off()
        self.stop_role("producer", 60)
        # Wait for quiet: every list and zset empty, or no consumption for
        # a while (what is left then is left for good).
        deadline = now() + self.a.drain
        last, last_change = -1, now()
        self.quiet = False
        while now() < deadline:
            try:
                left = self.queue_keys_state()
            except (OSError, RedisError):
                left = -1
            n = self.consumed_lines()
            if n != last:
                last, last_change = n, now()
            if left == 0:
                self.quiet = True
                break
            if now() - last_change > 8:
                break
            time.sleep(0.25)
        self.check_workers()
        self.stop_role("consumer", 40)
        self.poll_stop.set()
        poll.join(5)
        try:
            self.leftovers = self.leftover_keys()
        except (OSError, RedisError) as e:
            self.leftovers = ["LEFT: could not scan the keys: %s" % e]
        self.proxy.stop_req.set()
        self.proxy.join(5)
        if self.redis.poll() is None:
            self.redis.terminate()
            try:
                self.redis.wait(15)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait(5)
        return check(self)


# --------------------------------------------------------------------------
# The checker.
# --------------------------------------------------------------------------

def shortkey(k):
    return k if len(k) < 60 else k[:20] + b"...(%d bytes)..." % len(k) + k[-20:]


def nearest_fault(timeline, t0, t1):
    """(distance in s, fault) of the fault nearest the interval [t0, t1]."""
    best = None
    for f in timeline:
        if f["end"] < t0:
            d = t0 - f["end"]
        elif f["start"] > t1:
            d = f["start"] - t1
        else:
            d = 0.0
        if best is None or d < best[0]:
            best = (d, f)
    return best


def check(h):
    sent = {}          # tag -> (qidx, len, hash, t_ms, variant)
    reports = collections.defaultdict(list)   # tag -> [(status, len, hash, t_ms)]
    consumed = collections.defaultdict(list)  # tag -> [(qidx, len, hash, attempt, t_ms, who)]
    killed_pids = set()
    clean_pids = set()
    empty_consumed = collections.Counter()
    bad = []           # discrepancies (strings), the first ones printed
    stops = []

    for w in h.workers:
        for inc in w.incarnations:
            try:
                f = open(inc["log"], "rb")
            except OSError:
                continue
            with f:
                for raw in f:
                    p = raw.decode(errors="replace").split()
                    if not p:
                        continue
                    if w.role == "producer":
                        if p[0] == "S":
                            sent[p[1]] = (int(p[2]), int(p[3]), p[4], int(p[5]), p[6])
                        elif p[0] == "R":
                            reports[p[1]].append((int(p[3]), int(p[4]), p[5], int(p[6])))
                        elif p[0] == "END":
                            clean_pids.add(inc["pid"])
                    else:
                        if p[0] == "M":
                            if p[2] == "-":
                                if int(p[3]) != 0:
                                    bad.append("CORRUPT: %s got a %s-byte message without a "
                                               "tag on queue %s" % (w.key, p[3], p[1]))
                                else:
                                    empty_consumed[int(p[1])] += 1
                                continue
                            consumed[p[2]].append((int(p[1]), int(p[3]), p[4], int(p[5]),
                                                   int(p[6]), w.key))
                        elif p[0] == "STOP":
                            stops.append((w.key, int(p[1])))
                        elif p[0] == "A":
                            bad.append("ACK: %s: redq_ack returned %s" % (w.key, p[2]))
            if inc["killed"] and inc["pid"] is not None:
                killed_pids.add(inc["pid"])

    def tpid(tag):
        return int(tag.split(".")[0])

    def rel(ms):
        return ms / 1000.0 - h.t0

    stats = collections.Counter()
    dups_explained = dups_unexplained = 0
    amo_lost_explained = 0
    empty_ok = collections.Counter()
    empty_sent = collections.Counter()

    # Reports: one per accepted message, carrying the bytes that were sent.
    for tag, s in sent.items():
        rs = reports.get(tag, [])
        if len(rs) > 1:
            bad.append("REPORTS: %s had %d reports" % (tag, len(rs)))
        if not rs and tpid(tag) in clean_pids:
            bad.append("NO REPORT: %s (queue %d) accepted by a producer that exited "
                       "cleanly but never reported" % (tag, s[0]))
        for r in rs:
            if (r[1], r[2]) != (s[1], s[2]):
                bad.append("REPORT PAYLOAD: %s report carries %d bytes hash %s, sent %d "
                           "bytes hash %s" % (tag, r[1], r[2], s[1], s[2]))
        ok = any(r[0] == 0 for r in rs)
        stats["sent"] += 1
        stats["reported_ok" if ok else ("reported_failed" if rs else "unreported")] += 1
        if s[1] == 0:
            empty_sent[s[0]] += 1
            if ok:
                empty_ok[s[0]] += 1

    for tag, cs in consumed.items():
        s = sent.get(tag)
        if s is None:
            if tpid(tag) not in killed_pids:
                bad.append("UNKNOWN: %s consumed a message tagged %s that no producer "
                           "accepted" % (cs[0][5], tag))
            continue
        for c in cs:
            if c[0] != s[0] or c[1] != s[1] or c[2] != s[2]:
                bad.append("CORRUPT: %s (%s) sent to queue %d as %d bytes hash %s, %s "
                           "got it from queue %d as %d bytes hash %s (attempt %d)"
                           % (tag, s[4], s[0], s[1], s[2], c[5], c[0], c[1], c[2], c[3]))
        stats["consumed"] += len(cs)
        if len(cs) > 1:
            ts = sorted(c[4] for c in cs)
            nf = nearest_fault(h.timeline, ts[0] / 1000, ts[-1] / 1000)
            if nf and nf[0] <= DUP_WINDOW_S:
                dups_explained += len(cs) - 1
            else:
                dups_unexplained += len(cs) - 1
                bad.append("DUPLICATE: %s (%s) consumed %d times at %s, no fault within "
                           "%.0f s%s" % (tag, s[4], len(cs),
                                         ", ".join("+%.2fs" % rel(t) for t in ts),
                                         DUP_WINDOW_S,
                                         " (nearest: %s at +%.1fs)" % (nf[1]["kind"], nf[1]["start"] - h.t0) if nf else ""))

    consumer_faults = [f for f in h.timeline if f["consumer"]]
    lost_alo = []
    for tag, s in sent.items():
        if s[1] == 0 or tag in consumed:
            continue
        rs = reports.get(tag, [])
        if not any(r[0] == 0 for r in rs):
            continue
        t_sent = s[3] / 1000
        t_rep = max(r[3] for r in rs) / 1000
        if h.qmode[s[0]] == "alo":
            lost_alo.append((tag, s, t_sent))
        else:
            if any(f["end"] >= t_sent - 1 and f["start"] <= t_rep + 30 for f in consumer_faults):
                amo_lost_explained += 1
            else:
                where = h.stranded.get(tag)
                bad.append("LOST-AMO: no fault hit a consumer while it was in "
                           "flight: %s (%s) sent to queue %d at +%.2fs%s"
                           % (tag, s[4], s[0], t_sent - h.t0,
                              " (still in key %r)" % shortkey(where) if where else ""))
    by_key = collections.OrderedDict()
    for tag, s, t_sent in sorted(lost_alo, key=lambda x: x[2]):
        where = h.stranded.get(tag)
        if where:
            by_key.setdefault(where, []).append((tag, s, t_sent))
    for where, lst in by_key.items():
        tag, s, t_sent = lst[0]
        nf = nearest_fault(h.timeline, t_sent, t_sent)
        bad.append("STRANDED: %d messages reported ok on at-least-once queues, never "
                   "consumed, are still in key %r; the first: %s (%s) sent at +%.2fs%s"
                   % (len(lst), shortkey(where), tag, s[4], t_sent - h.t0,
                      " (nearest fault: %s at +%.1fs)" % (nf[1]["kind"], nf[1]["start"] - h.t0) if nf else ""))
    for tag, s, t_sent in sorted(lost_alo, key=lambda x: x[2]):
        nf = nearest_fault(h.timeline, t_sent, t_sent)
        if h.stranded.get(tag):
            continue
        bad.append("LOST: %s (%s, %d bytes) reported ok on at-least-once queue %d at "
                   "+%.2fs, never consumed%s"
                   % (tag, s[4], s[1], s[0], t_sent - h.t0,
                      " (nearest fault: %s at +%.1fs)" % (nf[1]["kind"], nf[1]["start"] - h.t0) if nf else ""))
    stats["lost_alo"] = len(lost_alo)

    # Empty payloads carry no tag: count them per queue.
    for q, n in empty_ok.items():
        got = empty_consumed.get(q, 0)
        if got < n:
            if h.qmode[q] == "alo":
                bad.append("LOST: queue %d: %d empty messages reported ok, %d consumed"
                           % (q, n, got))
                stats["lost_alo"] += n - got
            else:
                amo_lost_explained += n - got
    stats["consumed"] += sum(empty_consumed.values())
    for q, got in empty_consumed.items():
        if got > empty_sent.get(q, 0):
            dups_explained += got - empty_sent.get(q, 0)

    for key, st in stops:
        if st != 0:
            bad.append("STOP: %s's redq_consumer_stop reported %d" % (key, st))
    bad.extend(h.leftovers)
    for w in h.workers:
        if w.max_hwm_kb > WORKER_RSS_LIMIT_KB:
            bad.append("MEMORY: %s peak RSS %d KiB > %d KiB" % (w.key, w.max_hwm_kb,
                                                              WORKER_RSS_LIMIT_KB))
    if h.redis_mem_peak > REDIS_MEM_LIMIT:
        bad.append("MEMORY: Redis used_memory peaked at %d bytes > %d"
                   % (h.redis_mem_peak, REDIS_MEM_LIMIT))
    problems = h.problems + bad

    # Recovery: from a fault's end until every consumer it hit has consumed
    # again (faults that hit no consumer do not count).
    times = collections.defaultdict(list)
    for cs in consumed.values():
        for c in cs:
            times[c[5]].append(c[4] / 1000)
    for v in times.values():
        v.sort()
    rec = []
    for f in h.timeline:
        r = None
        for key in f.get("affects", []):
            v = times.get(key, [])
            i = bisect.bisect_right(v, f["end"])
            if i < len(v):
                r = max(r or 0.0, v[i] - f["end"])
        if r is not None:
            rec.append(r)
            f["recovery"] = r
    kinds = collections.Counter(f["kind"] for f in h.timeline)
    kinds_s = ",".join("%s=%d" % kv for kv in sorted(kinds.items())) or "none"
    summary = ("seed=%d %.0fs faults=%d(%s) sent=%d ok=%d consumed=%d lost_alo=%d "
               "lost_amo=%d duplicates=%d max_recovery=%.2fs max_rss=%dKiB redis_peak=%dKiB"
               % (h.a.seed, now() - h.t0, len(h.timeline), kinds_s, stats["sent"],
                  stats["reported_ok"], stats["consumed"], stats["lost_alo"],
                  amo_lost_explained, dups_explained + dups_unexplained,
                  max(rec) if rec else 0.0, max(w.max_hwm_kb for w in h.workers),
                  h.redis_mem_peak // 1024))
    if stats["consumed"] == 0:
        problems.append("NOTHING: nothing was consumed at all")

    if not problems:
        print("fault: PASS " + summary)
        return 0
    print("fault: run with --seed %d (%s)" % (h.a.seed, " ".join(sys.argv[1:])))
    print("fault: workers: " + ", ".join(
        "%s %s%s%s" % (w.key, w.role,
                       " %s pool %d queues %s" % (w.mode, w.pool, "+".join(q.split(":")[0] for q in w.queues))
                       if w.role == "consumer" else "",
                       " via proxy" if w.via_proxy else "") for w in h.workers))
    print("fault: queues: " + ", ".join("%d=%s %s" % (i, q if len(q) < 40 else q[:8] + "...(%d)" % len(q), h.qmode[i]) for i, q in h.qname.items()))
    print("fault: timeline:")
    for f in h.timeline:
        print("  +%7.2fs .. +%7.2fs  %-11s %s%s" % (
            f["start"] - h.t0, f["end"] - h.t0, f["kind"], f["detail"],
            "; consuming again %.2fs later" % f["recovery"] if "recovery" in f else ""))
    groups = collections.OrderedDict()
    for p in problems:
        groups.setdefault(p.split(":")[0], []).append(p)
    print("fault: %d discrepancies (%s); the first of each kind:" % (
        len(problems), ", ".join("%s=%d" % (k, len(v)) for k, v in groups.items())))
    each = max(2, h.a.show // max(1, len(groups)))
    for k, v in groups.items():
        for p in v[:each]:
            print("  " + p)
    print("fault: FAIL " + summary)
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="fault phase length (default 60)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--build", default="build", help="meson build dir with test/fault/")
    ap.add_argument("--faults", default="all",
                    help="comma-separated fault kinds, 'all' or 'none' (%s)" % ",".join(FAULT_KINDS))
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--consumers", type=int, default=2, help="per delivery mode")
    ap.add_argument("--rate", type=int, default=200, help="messages/s per producer")
    ap.add_argument("--big-every", type=int, default=2000,
                    help="every Nth message of a producer is 1 MiB (0: none)")
    ap.add_argument("--variants", default="all",
                    help="payload shapes, comma-separated, 'all' or 'safe' (%s; safe: %s)"
                    % (",".join(VARIANTS), ",".join(SAFE_VARIANTS)))
    ap.add_argument("--max-name-len", type=int, default=1024,
                    help="leave out queues with longer names (default 1024: all)")
    ap.add_argument("--drain", type=float, default=40, help="max seconds to wait for quiet")
    ap.add_argument("--show", type=int, default=20, help="discrepancies printed")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, AOF)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    if a.faults == "all":
        a.faults = list(FAULT_KINDS)
    elif a.faults == "none":
        a.faults = []
    else:
        a.faults = [f for f in a.faults.split(",") if f]
        for f in a.faults:
            if f not in FAULT_KINDS:
                if f != "sabotage":
                    ap.error("unknown fault %r (known: %s, and sabotage to check the "
                             "checker)" % (f, ",".join(FAULT_KINDS)))
    if a.variants == "all":
        a.variants = None
    elif a.variants == "safe":
        a.variants = ",".join(SAFE_VARIANTS)
    else:
        for v in a.variants.split(","):
            if v not in VARIANTS:
                ap.error("unknown variant %r" % v)
    for exe in ("fault-producer", "fault-consumer"):
        if not os.access(os.path.join(a.build, "test/fault", exe), os.X_OK):
            ap.error("%s/test/fault/%s not built" % (a.build, exe))
    a.build = os.path.abspath(a.build)
    # SIGPIPE stays ignored here: the proxy writes to sockets that a fault
    # or a worker closed, and must see EPIPE, not die of it. The workers get
    # the default disposition back anyway (subprocess restore_signals), so
    # the library's own SIGPIPE handling is what keeps them alive.

    h = Harness(a)
    print("fault: seed %d, %gs, faults %s, temp dir %s" % (a.seed, a.seconds,
          ",".join(a.faults) or "none", h.tmp), flush=True)
    rc = 2
    try:
        rc = h.run()
    except Exception as e:   # a harness failure must still clean up and say so
        import traceback
        traceback.print_exc()
        print("fault: FAIL seed=%d: harness error: %s" % (a.seed, e))
        rc = 2
    finally:
        for w in h.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
                w.proc.kill()
                w.proc.wait(10)
        if h.redis is not None and h.redis.poll() is None:
            h.redis.kill()
            h.redis.wait(10)
        if h.proxy is not None:
            h.proxy.stop_req.set()
        if a.keep:
            print("fault: kept %s" % h.tmp)
        else:
            shutil.rmtree(h.tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
