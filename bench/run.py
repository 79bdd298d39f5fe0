#!/usr/bin/env python3
"""stallguard benchmark suite: `make bench` / `make bench-quick` run this.

Four parts, every one alternating the configurations it compares round by round (A/B/A/B,
the order reversed every other round) and reporting medians with their ranges, because the
2-core VMs this runs on are noisy:

  hooks     bench/hookbench.c: ns per call of read/recv/write/send/sendfile on a tracked
            accepted socket, on an untracked socket/pipe/file, and the EAGAIN path, in three
            configurations: no shim, no shim + one idle thread (what the watcher thread does
            to a process by merely existing), and the shim. Plus instructions per call from
            callgrind (user space only; stable where wall clock is not).
  e2e       wrk against civetweb and nginx: direct, guarded (LD_PRELOAD into the server) and
            with HAProxy in front (timeouts configured, the usual alternative defence);
            apache2 prefork (8 children, private configuration) with KeepAlive On and Off,
            direct and guarded, a fresh pair of apache2 servers every round (one instance's
            memory layout biases it by several %): req/s, p50/p99 latency, server CPU per
            request from /proc/PID/stat (apache: the master and its children).
  watcher   bench/idlebench.c: CPU share of the thread named "stallguard" with 1k, 10k and
            100k idle tracked connections (or as many as the hard RLIMIT_NOFILE allows; the
            client uses 16 source addresses 127.0.0.2-17), and the resident memory the guard
            adds.
  accept    extra syscalls per accepted connection: strace -f -c of pool_server serving N
            and 2N one-request connections, guarded minus direct.
  forks     200 concurrent forked connection processes (forking_server): CPU of every
            guard thread together.
  budgets   the figures above against the budgets of issues #6 and #13.

Writes bench/results/latest.{md,json} and e2e.svg (quick.{md,json}, quick-e2e.svg for
--quick) and prints the markdown. Exits non-zero only if the harness broke (or, with
BENCH_STRICT=1, if a budget is missed): timings are never asserted by default.

Every process it starts is stopped by its PID; every load run is bounded in time.
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1

# Budgets from issue #6.
BUDGET_UNTRACKED_NS = 2.0
BUDGET_TRACKED_NS = 5.0
BUDGET_TRACKED_WORST_NS = 10.0
BUDGET_E2E_THROUGHPUT = 0.99
BUDGET_E2E_CPU = 1.01
BUDGET_WATCHER_CORE_PCT = 0.05      # 10k idle connections (issue 13)
BUDGET_WATCHER_BIG_CORE_PCT = 0.3   # 100k idle connections
BUDGET_ACCEPT_SYSCALLS = 2.0        # extra syscalls per accepted connection
BUDGET_FORKS_CORE_PCT = 0.2         # 200 forked connection processes, all guard threads
BUDGET_MEMORY_PER_CONN = 128        # bytes, slot + watcher
# Other load (cores) above which the end-to-end budgets are reported as inconclusive.
QUIET_CORES = 0.3

TRACKED_CASES = ["sock_read_tracked", "sock_recv_tracked", "sock_write_tracked",
                 "sock_send_tracked", "sock_eagain_tracked"]
UNTRACKED_CASES = ["sock_read_untracked", "sock_recv_untracked", "sock_write_untracked",
                   "sock_send_untracked", "sock_eagain_untracked", "pipe_read", "pipe_write",
                   "file_read", "null_write"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# processes: started here, stopped by PID
# ---------------------------------------------------------------------------------------

class Procs:
    """Every child this script starts, so each is stopped by its own PID whatever happens."""

    def __init__(self):
        self.live = []

    def start(self, argv, env=None, cwd=None, stdout=None, stderr=None, pin=None,
              new_session=False):
        if pin is not None and NPROC >= 2 and shutil.which("taskset"):
            argv = ["taskset", "-c", str(pin)] + list(argv)
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                             stdout=stdout if stdout is not None else subprocess.DEVNULL,
                             stderr=stderr if stderr is not None else subprocess.DEVNULL,
                             text=True, start_new_session=new_session)
        self.live.append(p)
        return p

    def stop(self, p, grace=5.0):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in list(reversed(self.live)):
            self.stop(p)


PROCS = Procs()


def on_signal(signum, _frame):
    PROCS.stop_all()
    sys.exit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def read_line(proc, prefix, timeout):
    """Reads stdout lines of `proc` until one starts with prefix (bounded in time)."""
    import select
    fd = proc.stdout.fileno()
    buf = getattr(proc, "_linebuf", b"")
    deadline = time.time() + timeout
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.decode(errors="replace").startswith(prefix):
                proc._linebuf = buf
                return line.decode().split()
        left = deadline - time.time()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    proc._linebuf = buf
    raise RuntimeError(f"no '{prefix}' line from pid {proc.pid} within {timeout}s")


# ---------------------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------------------

def proc_cpu_s(pid):
    """utime+stime+cutime+cstime of a process (all its threads, waited-for children), in s."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime is field 14.
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def proc_sched_ns(pid):
    """Time on CPU of every live thread of a process, in ns (schedstat, finer than ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def thread_named(pid, name):
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == name:
                    return int(tid)
        except OSError:
            pass
    return None


def thread_reading(pid, tid):
    """(cpu ns from schedstat, cpu s from stat, voluntary context switches) of one thread."""
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        ns = int(f.read().split()[0])
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
    vol = 0
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                vol = int(line.split()[1])
    return ns, ticks, vol


def cpu_busy_s():
    """CPU time the whole machine spent busy (all CPUs, /proc/stat), in s."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


def children_cpu_s():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_wait, threshold=0.3, sample=0.5):
    """Waits (at most max_wait s) until the machine's busy CPU, sampled over `sample` s, is
    below `threshold` cores: the concurrent load on these VMs comes in bursts. Returns the
    seconds waited."""
    t0 = time.monotonic()
    while True:
        b0 = cpu_busy_s()
        time.sleep(sample)
        load = (cpu_busy_s() - b0) / sample
        waited = time.monotonic() - t0
        if load < threshold or waited >= max_wait:
            return waited


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def rng(xs):
    return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))


def round_orders(variants, rounds):
    """A/B/C, C/B/A, A/B/C...: each configuration runs early and late equally often."""
    return [list(variants) if r % 2 == 0 else list(reversed(variants)) for r in range(rounds)]


# ---------------------------------------------------------------------------------------
# part 1: hooks
# ---------------------------------------------------------------------------------------

HOOK_VARIANTS = ["none", "thread", "shim"]


def hook_env(variant, so, work):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if variant == "shim":
        env["LD_PRELOAD"] = so
        env["STALLGUARD_LOG_FILE"] = os.path.join(work, "hookbench-stallguard.log")
    return env


def parse_hookbench(out):
    cases, watcher = {}, None
    for line in out.splitlines():
        p = line.split()
        if p and p[0] == "case":
            cases[p[1]] = {"median_ns": float(p[3]), "min_ns": float(p[5]), "calls": int(p[7]),
                           "p10_ns": float(p[9])}
        elif p and p[0] == "watcher":
            watcher = int(p[1])
    return cases, watcher


def run_hooks(cfg, so, work):
    exe = os.path.join(ROOT, "target", "bench", "hookbench")
    pin = NPROC - 1
    per = {v: [] for v in HOOK_VARIANTS}  # variant -> list (per round) of {case: median}
    for order in round_orders(HOOK_VARIANTS, cfg["hook_rounds"]):
        for v in order:
            argv = [exe, "--batches", str(cfg["hook_batches"])]
            if v == "thread":
                argv.append("--idle-thread")
            if NPROC >= 2:
                argv = ["taskset", "-c", str(pin)] + argv
            r = subprocess.run(argv, env=hook_env(v, so, work), capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"hookbench ({v}) failed: {r.stderr.strip()}")
            cases, watcher = parse_hookbench(r.stdout)
            if (v == "shim") != (watcher == 1):
                raise RuntimeError(f"hookbench ({v}): watcher={watcher}: the shim was "
                                   f"{'not ' if v == 'shim' else ''}active")
            # Per run: the 10th percentile of the per-batch ns/call. Bursts of outside load
            # inflate the upper batches; the low ones are the undisturbed cost.
            per[v].append({c: x["p10_ns"] for c, x in cases.items()})
    names = list(per["none"][0].keys())
    result = {}
    for c in names:
        row = {}
        for v in HOOK_VARIANTS:
            xs = [r[c] for r in per[v]]
            row[v] = {"median": med(xs), "range": rng(xs), "runs": xs}
        # paired differences, round by round
        d_none = [s[c] - n[c] for s, n in zip(per["shim"], per["none"])]
        d_thread = [s[c] - t[c] for s, t in zip(per["shim"], per["thread"])]
        row["delta_vs_none"] = {"median": med(d_none), "range": rng(d_none)}
        row["delta_vs_thread"] = {"median": med(d_thread), "range": rng(d_thread)}
        result[c] = row
    return result


def callgrind_ir(outfile, calls):
    r = subprocess.run(["callgrind_annotate", "--inclusive=yes", outfile],
                       capture_output=True, text=True, timeout=120)
    ir = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s.*:bench_(\w+) \[", line)
        if m:
            name = m.group(2)
            ir[name] = int(m.group(1).replace(",", "")) / calls[name]
    return ir


def run_callgrind(cfg, so, work):
    if not shutil.which("valgrind") or not shutil.which("callgrind_annotate"):
        log("valgrind not found: skipping instruction counts")
        return None
    exe = os.path.join(ROOT, "target", "bench", "hookbench")
    res = {}
    for v in HOOK_VARIANTS:
        out = os.path.join(work, f"callgrind.{v}")
        argv = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
                "--toggle-collect=bench_*", "--separate-threads=yes",
                f"--callgrind-out-file={out}", exe, "--callgrind",
                "--batches", str(cfg["callgrind_batches"])]
        if v == "thread":
            argv.append("--idle-thread")
        r = subprocess.run(argv, env=hook_env(v, so, work), capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind ({v}) failed: {r.stderr[-2000:]}")
        cases, watcher = parse_hookbench(r.stdout)
        if (v == "shim") != (watcher == 1):
            raise RuntimeError(f"callgrind ({v}): watcher={watcher}")
        calls = {c: x["calls"] for c, x in cases.items()}
        main_thread = out + "-01" if os.path.exists(out + "-01") else out
        res[v] = callgrind_ir(main_thread, calls)
    return res


# ---------------------------------------------------------------------------------------
# part 2: end to end
# ---------------------------------------------------------------------------------------

def parse_duration_s(txt):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", txt)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return v * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def parse_wrk(out):
    res = {"rps": float("nan"), "requests": 0, "p50_ms": float("nan"),
           "p99_ms": float("nan"), "errors": 0, "non2xx": 0}
    in_dist = False
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("Latency Distribution"):
            in_dist = True
            continue
        if in_dist:
            m = re.match(r"(\d+)%\s+(\S+)", s)
            if m:
                q = int(m.group(1))
                if q in (50, 99):
                    res[f"p{q}_ms"] = parse_duration_s(m.group(2)) * 1e3
                continue
            in_dist = False
        m = re.match(r"(\d+) requests in", s)
        if m:
            res["requests"] = int(m.group(1))
        m = re.match(r"Requests/sec:\s+([\d.]+)", s)
        if m:
            res["rps"] = float(m.group(1))
        m = re.match(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
        if m:
            res["errors"] = sum(int(x) for x in m.groups())
        m = re.match(r"Non-2xx or 3xx responses: (\d+)", s)
        if m:
            res["non2xx"] = int(m.group(1))
    return res


class Server:
    """One web server instance (guarded or not) on a private loopback port."""

    def __init__(self, kind, name, work, docroot, so=None, wrap=None, start_timeout=10.0):
        self.kind, self.name, self.so = kind, name, so
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if so:
            env["LD_PRELOAD"] = so
            env["STALLGUARD_LOG_FILE"] = os.path.join(self.dir, "stallguard.log")
        self.errlog = open(os.path.join(self.dir, "stderr.log"), "w")
        if kind == "civetweb":
            argv = ["civetweb", "-listening_ports", f"127.0.0.1:{self.port}",
                    "-document_root", docroot, "-num_threads", "32",
                    "-enable_keep_alive", "yes", "-tcp_nodelay", "1",
                    "-error_log_file", os.path.join(self.dir, "error.log")]
        elif kind == "nginx":
            conf = os.path.join(self.dir, "nginx.conf")
            d = self.dir
            with open(conf, "w") as f:
                f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/html;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{self.port};
        root {docroot};
        location / {{ }}
    }}
}}
""")
            argv = ["/usr/sbin/nginx", "-p", d + "/", "-c", conf, "-e", f"{d}/error.log"]
        elif kind in APACHE_KINDS:
            argv = ["/usr/sbin/apache2", "-DFOREGROUND", "-d", self.dir,
                    "-f", self.apache_conf(docroot, APACHE_KINDS[kind])]
        else:
            raise ValueError(kind)
        # apache's prefork master signals its whole process group when it stops (this
        # script included): its own session keeps the group to itself.
        self.proc = PROCS.start((wrap or []) + argv, env=env, cwd=self.dir, stderr=self.errlog,
                                pin=NPROC - 1, new_session=kind in APACHE_KINDS)
        wait_port(self.port, self.proc, start_timeout)
        self.pid = self.proc.pid  # taskset and valgrind exec: the same pid

    def apache_conf(self, docroot, keepalive):
        """A private apache2 prefork configuration: loopback port, its own pid file, logs and
        document root, 8 children from the start (StartServers = Min/MaxSpare =
        MaxRequestWorkers, never recycled), nothing from /etc/apache2 and no system service."""
        d = self.dir
        conf = os.path.join(d, "apache2.conf")
        mods = "/usr/lib/apache2/modules"
        # Root starts the master (it binds and writes the pid file), the children run as
        # www-data (apache refuses to serve as root): they read the document root only.
        user = "www-data" if os.geteuid() == 0 else None
        with open(conf, "w") as f:
            f.write(f"""ServerRoot {d}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile {d}/apache2.pid
ErrorLog {d}/error.log
LogLevel warn
LoadModule mpm_prefork_module {mods}/mod_mpm_prefork.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule mime_module {mods}/mod_mime.so
LoadModule dir_module {mods}/mod_dir.so
{f"User {user}" if user else ""}
{f"Group {user}" if user else ""}
StartServers 8
MinSpareServers 8
MaxSpareServers 8
ServerLimit 8
MaxRequestWorkers 8
MaxConnectionsPerChild 0
KeepAlive {"On" if keepalive else "Off"}
MaxKeepAliveRequests 0
KeepAliveTimeout 5
EnableSendfile On
Mutex file:{d}
DocumentRoot {docroot}
<Directory />
    AllowOverride None
    Require all granted
</Directory>
TypesConfig /etc/mime.types
""")
        return conf

    def pids(self):
        """The server's processes: the master and, for prefork, its live children."""
        kids = []
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            pass
        return [self.pid] + kids

    def cpu_s(self):
        """CPU of the master (and the children it reaped) plus its live children (prefork)."""
        total = proc_cpu_s(self.pid)
        for pid in self.pids()[1:]:
            try:
                total += proc_cpu_s(pid)
            except OSError:
                pass
        return total

    def sched_ns(self):
        total = 0
        for pid in self.pids():
            try:
                total += proc_sched_ns(pid)
            except OSError:
                pass
        return total

    def guard_active(self):
        # Prefork: the master never accepts; each child runs its own watcher.
        return any(thread_named(p, "stallguard") is not None for p in self.pids())

    def reaps(self):
        p = os.path.join(self.dir, "stallguard.log")
        if not os.path.exists(p):
            return 0
        with open(p) as f:
            return sum(1 for line in f if "event=reap" in line or "event=would_reap" in line)

    def stop(self, grace=5.0):
        PROCS.stop(self.proc, grace)
        self.errlog.close()

    def stop_waking(self, tries=30):
        """SIGTERM, then a connection to wake an event loop parked in epoll_wait: under
        valgrind a signal that lands outside a syscall may wait for the next wake-up."""
        for _ in range(tries):
            if self.proc.poll() is not None:
                break
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                pass
            try:
                self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        self.stop(grace=1.0)


class HAProxy:
    def __init__(self, work, backend_port):
        self.dir = os.path.join(work, "haproxy")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.dir, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s

frontend fe
    bind 127.0.0.1:{self.port}
    default_backend be

backend be
    http-reuse always
    server s1 127.0.0.1:{backend_port} maxconn 64
""")
        self.errlog = open(os.path.join(self.dir, "stderr.log"), "w")
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        self.proc = PROCS.start(["/usr/sbin/haproxy", "-db", "-f", conf], env=env,
                                cwd=self.dir, stderr=self.errlog, pin=NPROC - 1)
        wait_port(self.port, self.proc)
        self.pid = self.proc.pid

    def stop(self):
        PROCS.stop(self.proc)
        self.errlog.close()


def wrk(port, seconds, connections):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "2s",
            f"http://127.0.0.1:{port}/index.html"]
    if NPROC >= 2 and shutil.which("taskset"):
        argv = ["taskset", "-c", "0"] + argv
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr.strip()}")
    return parse_wrk(r.stdout)


E2E_MODES = ["direct", "guarded", "haproxy"]
# apache2 prefork (8 children): kind -> KeepAlive. wrk reconnects after every answer when
# keep-alive is off, so that row is one request per connection (accept + close each time).
APACHE_KINDS = {"apache2": True, "apache2-ka-off": False}


def make_docroot(cfg, work):
    docroot = os.path.join(work, "www")
    os.makedirs(docroot, exist_ok=True)
    with open(os.path.join(docroot, "index.html"), "w") as f:
        body = "<!doctype html><title>stallguard bench</title>\n"
        f.write(body + "x" * (cfg["file_bytes"] - len(body) - 1) + "\n")
    return docroot


def run_e2e(cfg, so, work):
    missing = [b for b in ("wrk", "civetweb") if not shutil.which(b)]
    missing += [b for b in ("/usr/sbin/nginx", "/usr/sbin/haproxy") if not os.path.exists(b)]
    if any(k in APACHE_KINDS for k in cfg["servers"]) and not os.path.exists("/usr/sbin/apache2"):
        missing.append("/usr/sbin/apache2")
    if missing:
        raise RuntimeError(f"missing {missing}: run bench/install-deps.sh")
    docroot = make_docroot(cfg, work)
    results = {}
    for kind in cfg["servers"]:
        log(f"e2e: {kind}")
        plain = Server(kind, f"{kind}-direct", work, docroot)
        guarded = Server(kind, f"{kind}-guarded", work, docroot, so=so)
        # HAProxy in front of civetweb and nginx only: the comparison is made there, and the
        # apache rows would add minutes to the run.
        proxy = (HAProxy(work, plain.port) if cfg["haproxy"] and kind not in APACHE_KINDS
                 else None)
        modes = E2E_MODES if proxy else E2E_MODES[:2]
        target = {"direct": (plain, None), "guarded": (guarded, None), "haproxy": (plain, proxy)}
        try:
            for m in modes:  # warm-up; also starts the guard's watcher
                srv, px = target[m]
                wrk(px.port if px else srv.port, 1, cfg["wrk_connections"])
            if not guarded.guard_active():
                raise RuntimeError(f"{kind}: no stallguard thread in the guarded server")
            if plain.guard_active():
                raise RuntimeError(f"{kind}: a stallguard thread in the unguarded server")
            runs = {m: [] for m in modes}
            earlier_reaps = 0  # of the guarded instances replaced below
            for i, order in enumerate(round_orders(modes, cfg["e2e_rounds"])):
                if i > 0 and kind in APACHE_KINDS:
                    # Fresh servers every round: two identical prefork instances differ by 4-6 %
                    # in CPU per request for as long as they run (where their 8 children's
                    # memory lands), more than the 1 % budget; new instances each round make
                    # that a spread across rounds instead of a bias of one instance.
                    earlier_reaps += guarded.reaps()
                    plain.stop()
                    guarded.stop()
                    plain = Server(kind, f"{kind}-direct-{i}", work, docroot)
                    guarded = Server(kind, f"{kind}-guarded-{i}", work, docroot, so=so)
                    target = {"direct": (plain, None), "guarded": (guarded, None)}
                    for m in modes:
                        wrk(target[m][0].port, 1, cfg["wrk_connections"])
                    if not guarded.guard_active():
                        raise RuntimeError(f"{kind}: no stallguard thread in the guarded server")
                # One quiet moment per round: the modes of a round run back to back.
                waited = wait_quiet(cfg["quiet_wait"])
                for m in order:
                    srv, px = target[m]
                    c0, s0 = srv.cpu_s(), srv.sched_ns()
                    p0 = proc_cpu_s(px.pid) if px else 0.0
                    b0, k0, t0 = cpu_busy_s(), children_cpu_s(), time.monotonic()
                    w = wrk(px.port if px else srv.port, cfg["wrk_seconds"],
                            cfg["wrk_connections"])
                    b1, k1, t1 = cpu_busy_s(), children_cpu_s(), time.monotonic()
                    c1, s1 = srv.cpu_s(), srv.sched_ns()
                    p1 = proc_cpu_s(px.pid) if px else 0.0
                    n = max(1, w["requests"])
                    w["server_cpu_us_per_req"] = (c1 - c0) / n * 1e6
                    w["server_sched_us_per_req"] = (s1 - s0) / 1e3 / n
                    w["proxy_cpu_us_per_req"] = (p1 - p0) / n * 1e6 if px else 0.0
                    # CPU used on the machine by anything but this run (server, proxy, wrk).
                    own = (c1 - c0) + (p1 - p0) + (k1 - k0)
                    w["foreign_cores"] = max(0.0, (b1 - b0) - own) / (t1 - t0)
                    w["quiet_wait_s"] = waited
                    runs[m].append(w)
                    log(f"  {kind:8s} {m:8s} {w['rps']:9.0f} req/s  p99 {w['p99_ms']:.2f} ms  "
                        f"cpu {w['server_cpu_us_per_req']:.1f} us/req  "
                        f"other load {w['foreign_cores']:.2f} cores")
            summary = {}
            for m in modes:
                rs = runs[m]
                summary[m] = {k: {"median": med([r[k] for r in rs]), "range": rng([r[k] for r in rs])}
                              for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req",
                                        "server_sched_us_per_req", "proxy_cpu_us_per_req",
                                        "foreign_cores")}
                summary[m]["errors"] = sum(r["errors"] + r["non2xx"] for r in rs)
                summary[m]["runs"] = rs
            # paired ratios against direct, round by round
            for m in modes[1:]:
                tr = [g["rps"] / d["rps"] for g, d in zip(runs[m], runs["direct"]) if d["rps"]]
                cr = [g["server_cpu_us_per_req"] / d["server_cpu_us_per_req"]
                      for g, d in zip(runs[m], runs["direct"]) if d["server_cpu_us_per_req"]]
                sr = [g["server_sched_us_per_req"] / d["server_sched_us_per_req"]
                      for g, d in zip(runs[m], runs["direct"]) if d["server_sched_us_per_req"]]
                summary[m]["rps_ratio"] = {"median": med(tr), "range": rng(tr)}
                summary[m]["cpu_ratio"] = {"median": med(cr), "range": rng(cr)}
                summary[m]["sched_ratio"] = {"median": med(sr), "range": rng(sr)}
            summary["guarded"]["reaps"] = guarded.reaps() + earlier_reaps
            results[kind] = summary
        finally:
            if proxy:
                proxy.stop()
            guarded.stop()
            plain.stop()
    return results


def http_requests(port, n, path="/index.html", keepalive=True):
    """n keep-alive GETs on one connection (or n connections of one GET each when the server
    does not keep connections alive), each answer read in full; bounded by timeouts."""
    if not keepalive:
        for _ in range(n):
            http_requests(port, 1, path)
        return
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        buf = b""
        for _ in range(n):
            s.sendall(req)
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer {head[:40]!r}")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            while len(buf) < length:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                buf += chunk
            buf = buf[length:]


def parse_strace_c(path):
    calls = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            # % time  seconds  usecs/call  calls  [errors]  syscall
            if len(p) >= 5 and re.match(r"[\d.]+$", p[0]) and p[-1] != "total":
                try:
                    calls[p[-1]] = int(p[3])
                except ValueError:
                    pass
    return calls


def threads_named(pid, name):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().strip() == name:
                        out.append(int(tid))
            except OSError:
                pass
    except OSError:
        pass
    return out


def parse_strace_lines(path, watcher_tids):
    """Calls per syscall name from `strace -f -o` (a line per call, the thread id first): of
    the program's threads, and of the threads in `watcher_tids`."""
    prog, watch = {}, {}
    with open(path) as f:
        for line in f:
            m = re.match(r"(\d+)\s+([a-z_0-9]+)\(", line)
            if not m:
                continue  # "<... resumed>", signals, exits
            d = watch if int(m.group(1)) in watcher_tids else prog
            d[m.group(2)] = d.get(m.group(2), 0) + 1
    return prog, watch


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def run_e2e_counts(cfg, so, work, docroot):
    """Deterministic per-request figures: syscalls (strace -c) and user-space instructions
    (callgrind, difference of two runs with different request counts)."""
    res = {}
    have_strace = shutil.which("strace") is not None
    have_cg = shutil.which("valgrind") is not None and cfg["e2e_callgrind"]
    for kind in cfg["servers"]:
        res[kind] = {}
        for mode in ("direct", "guarded"):
            r = {}
            g = so if mode == "guarded" else None
            if have_strace:
                srv = Server(kind, f"{kind}-{mode}-strace", work, docroot, so=g)
                ka = APACHE_KINDS.get(kind, True)
                try:
                    http_requests(srv.port, 50, keepalive=ka)
                    out = os.path.join(srv.dir, "strace.txt")
                    # Every process of the server (prefork: the master and its 8 children),
                    # one line per call: the watcher threads' calls are told apart by thread.
                    argv = ["strace", "-f", "-qq", "-o", out]
                    for pid in srv.pids():
                        argv += ["-p", str(pid)]
                    st = PROCS.start(argv, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)  # attached
                    n = cfg["count_requests"] if ka else cfg["count_requests"] // 3
                    http_requests(srv.port, n, keepalive=ka)
                    time.sleep(0.3)
                    watchers = {t for p in srv.pids() for t in threads_named(p, "stallguard")}
                    os.kill(st.pid, signal.SIGINT)
                    st.wait(20)
                    PROCS.stop(st)
                    calls, wcalls = parse_strace_lines(out, watchers)
                    # The program's threads: the request path. The watcher's calls (its
                    # ticks, its first look at each connection) are counted apart.
                    r["syscalls_per_req"] = sum(calls.values()) / n
                    r["watcher_syscalls_per_req"] = sum(wcalls.values()) / n
                    r["syscalls"] = {k: v / n for k, v in sorted(calls.items(), key=lambda x: -x[1])
                                     if v / n >= 0.05}
                finally:
                    srv.stop()
            # Not under callgrind: prefork children would each write their own profile.
            if have_cg and kind not in APACHE_KINDS:
                totals = []
                for n in cfg["cg_requests"]:
                    out = os.path.join(work, f"cg-{kind}-{mode}-{n}")
                    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
                    srv = Server(kind, f"{kind}-{mode}-cg{n}", work, docroot, so=g, wrap=wrap,
                                 start_timeout=60)
                    try:
                        http_requests(srv.port, n)
                    finally:
                        srv.stop_waking()
                    if srv.proc.returncode not in (0, -signal.SIGTERM):
                        raise RuntimeError(f"{kind} under callgrind ended with "
                                           f"{srv.proc.returncode}")
                    totals.append(callgrind_total(out))
                n1, n2 = cfg["cg_requests"]
                r["ir_per_req"] = (totals[1] - totals[0]) / (n2 - n1)
            res[kind][mode] = r
            log(f"  {kind} {mode}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()
                                                  if isinstance(v, float)))
    return res


# ---------------------------------------------------------------------------------------
# part 3: watcher
# ---------------------------------------------------------------------------------------

def idle_setup(n, so, work, epoll, label, pressure=True):
    exe = os.path.join(ROOT, "target", "bench", "idlebench")
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if so:
        env["LD_PRELOAD"] = so
        env["STALLGUARD_LOG_FILE"] = os.path.join(work, f"idle-{label}.log")
        # Timers that run but never fire within the run: the verdict is computed every tick.
        env["STALLGUARD_FIRST_BYTE"] = "1h"
        env["STALLGUARD_IDLE"] = "1h"
        env["STALLGUARD_TICK"] = f"{WATCHER_TICK_MS}ms"
        if not pressure:
            env["STALLGUARD_PRESSURE"] = "off"
    argv = [exe, "server", str(n), "--max-seconds", "180"] + (["--epoll"] if epoll else [])
    srv = PROCS.start(argv, env=env, stdout=subprocess.PIPE, pin=NPROC - 1)
    port = int(read_line(srv, "port", 10)[1])
    cenv = dict(os.environ)
    cenv.pop("LD_PRELOAD", None)
    cli = PROCS.start([exe, "client", str(port), str(n), "--max-seconds", "180"], env=cenv,
                      stdout=subprocess.PIPE, pin=0)
    read_line(cli, "connected", 60)
    read_line(srv, "ready", 60)
    return srv, cli

def guard_layout(logfile):
    """The guard's bytes per tracked connection, from its start line (`bytes="slot:192
    watcher:16 queue:16 http_line:64"`): the build under test says its own sizes."""
    try:
        with open(logfile) as f:
            for line in f:
                m = re.search(r'event=start .*bytes="([^"]*)"', line)
                if m:
                    return {k: int(v) for k, v in (x.split(":") for x in m.group(1).split())}
    except OSError:
        pass
    return None


def memory_accounting(layout):
    """Exact bytes per tracked connection: its slot, the watcher's memory of it and its entry
    in the deadline queue (while a deadline runs); an HTTP connection adds its request line."""
    if not layout:
        return None
    return layout["slot"] + layout["watcher"] + layout["queue"]


def big_idle_size():
    """100k idle connections, or as many as the hard RLIMIT_NOFILE lets one process hold."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 100000
    return max(1000, min(100000, hard - 200) // 1000 * 1000)


def run_accept_syscalls(cfg, so, work):
    """Extra syscalls per accepted connection: strace -f -c of pool_server serving N and 2N
    one-request connections, direct and guarded; the difference of differences over N."""
    if not shutil.which("strace"):
        return None
    exe = os.path.join(ROOT, "target", "c-examples", "pool_server")
    if not os.path.exists(exe):
        return None
    n1 = cfg["accept_conns"]
    n2 = 2 * n1

    def one(guard, n):
        port = free_port()
        out = os.path.join(work, f"accept-{guard}-{n}.strace")
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if guard:
            env["LD_PRELOAD"] = so
            env["STALLGUARD_LOG_FILE"] = os.path.join(work, "accept.log")
        p = PROCS.start(["strace", "-f", "-c", "-o", out, exe, str(port), "--threads", "2"],
                        env=env)
        wait_port(port, p)
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                c.recv(4096)
        time.sleep(0.3)
        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        for k in kids:
            os.kill(int(k), signal.SIGTERM)  # the server; strace then writes its summary
        p.wait(timeout=10)
        return parse_strace_c(out)

    d1, d2, g1, g2 = one(False, n1), one(False, n2), one(True, n1), one(True, n2)
    names = sorted(set(d1) | set(d2) | set(g1) | set(g2))
    per = {k: ((g2.get(k, 0) - g1.get(k, 0)) - (d2.get(k, 0) - d1.get(k, 0))) / (n2 - n1)
           for k in names}
    per = {k: v for k, v in per.items() if abs(v) >= 0.05}
    return {"connections": n2 - n1, "extra_per_conn": sum(per.values()), "by_syscall": per}


def run_forks(cfg, so, work):
    """N concurrent forked connection processes (forking_server, one child per idle
    connection): the CPU of every guard thread over an interval."""
    exe = os.path.join(ROOT, "target", "c-examples", "forking_server")
    if not os.path.exists(exe):
        return None
    n = cfg["forks"]
    port = free_port()
    env = dict(os.environ)
    env.update({"LD_PRELOAD": so, "STALLGUARD_LOG_FILE": os.path.join(work, "forks.log"),
                "STALLGUARD_FIRST_BYTE": "1h", "STALLGUARD_IDLE": "1h"})
    srv = PROCS.start([exe, str(port), "--max", str(n + 10)], env=env)
    conns = []
    try:
        wait_port(port, srv)
        time.sleep(0.5)
        for i in range(n):
            c = socket.socket()
            c.bind((f"127.0.0.{2 + i % 8}", 0))
            c.connect(("127.0.0.1", port))
            conns.append(c)
        time.sleep(2.0)
        kids = [int(k) for k in open(f"/proc/{srv.pid}/task/{srv.pid}/children").read().split()]
        procs = kids + [srv.pid]

        def guard_ns():
            tot = 0
            for pid in procs:
                try:
                    tid = thread_named(pid, "stallguard")
                    if tid is not None:
                        tot += thread_reading(pid, tid)[0]
                except OSError:
                    pass
            return tot

        a, w0 = guard_ns(), time.monotonic()
        time.sleep(cfg["forks_seconds"])
        b, w1 = guard_ns(), time.monotonic()
    finally:
        for c in conns:
            c.close()
        PROCS.stop(srv)
    return {"processes": len(kids), "seconds": w1 - w0, "core_pct": (b - a) / 1e9 / (w1 - w0) * 100}


def run_watcher(cfg, so, work):
    res = []
    for n, epoll, pressure in cfg["watcher_sizes"]:
        label = f"{n}{'-epoll' if epoll else ''}{'' if pressure else '-nopressure'}"
        log(f"watcher: {label} connections")
        # unguarded first: the RSS baseline
        srv, cli = idle_setup(n, None, work, epoll, label + "-plain")
        time.sleep(0.5)
        rss_plain = proc_status_kib(srv.pid, "VmRSS")
        anon_plain = proc_status_kib(srv.pid, "RssAnon")
        PROCS.stop(cli)
        PROCS.stop(srv)
        srv, cli = idle_setup(n, so, work, epoll, label, pressure)
        try:
            time.sleep(1.0)  # first ticks: the watcher sizes its memory to the high-water mark
            tid = thread_named(srv.pid, "stallguard")
            if tid is None:
                raise RuntimeError("no stallguard thread in the guarded idle server")
            ns0, t0, v0 = thread_reading(srv.pid, tid)
            w0 = time.monotonic()
            time.sleep(cfg["watcher_seconds"])
            ns1, t1, v1 = thread_reading(srv.pid, tid)
            w1 = time.monotonic()
            rss = proc_status_kib(srv.pid, "VmRSS")
            anon = proc_status_kib(srv.pid, "RssAnon")
        finally:
            PROCS.stop(cli)
            PROCS.stop(srv)
        ticks = max(1, v1 - v0)
        wall = w1 - w0
        layout = guard_layout(os.path.join(work, f"idle-{label}.log"))
        res.append({
            "connections": n, "epoll": epoll, "pressure": pressure, "ticks": ticks,
            "seconds": wall,
            "us_per_tick": (ns1 - ns0) / 1e3 / ticks,
            # Share of one core over the interval: the watcher sleeps until what is due (at
            # most a tick), so its wake-ups are not a fixed rate any more.
            "core_pct": (ns1 - ns0) / 1e9 / wall * 100,
            "core_pct_wall": (ns1 - ns0) / 1e9 / wall * 100,
            "core_pct_stat": (t1 - t0) / wall * 100,
            "ns_per_conn_tick": (ns1 - ns0) / ticks / n,
            "rss_plain_kib": rss_plain, "rss_guarded_kib": rss,
            "anon_plain_kib": anon_plain, "anon_guarded_kib": anon,
            "rss_added_kib": rss - rss_plain, "anon_added_kib": anon - anon_plain,
            "layout": layout,
        })
        log(f"  {label}: {res[-1]['us_per_tick']:.1f} us/tick, {res[-1]['core_pct']:.3f} % core, "
            f"RSS +{rss - rss_plain} KiB")
    return res


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------

def machine_info(command, so):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = "?"
    load = open("/proc/loadavg").read().split()[:3]
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": NPROC, "cpu": cpu, "kernel": platform.release(), "command": command,
            "revision": rev, "loadavg_at_start": " ".join(load), "so": so,
            "pinning": "wrk on cpu 0, servers/proxy/benchmarks on cpu %d" % (NPROC - 1)
            if NPROC >= 2 else "none (1 cpu)"}


def f1(x, unit=""):
    return "n/a" if x is None or x != x else f"{x:.1f}{unit}"


def f2(x, unit=""):
    return "n/a" if x is None or x != x else f"{x:.2f}{unit}"


def fr(r, fmt="{:.1f}"):
    return "–".join(fmt.format(v) for v in r)


def signed(x, digits=1):
    return "n/a" if x != x else f"{x:+.{digits}f}"


def budgets(hooks, ir, e2e, watcher, accept=None, forks=None):
    out = []

    def verdict(ok):
        return "met" if ok else "**missed**"

    if hooks:
        for label, cases, budget in (
                ("untracked fd ≤ 2 ns/call over no shim", UNTRACKED_CASES, BUDGET_UNTRACKED_NS),
                ("tracked connection ≤ 5 ns/call (10 at worst)", TRACKED_CASES, BUDGET_TRACKED_NS)):
            cs = [c for c in cases if c in hooks]
            d_all = [hooks[c]["delta_vs_none"]["median"] for c in cs]
            d_hook = [hooks[c]["delta_vs_thread"]["median"] for c in cs]
            worst = max(cs, key=lambda c: hooks[c]["delta_vs_none"]["median"])
            m_all, m_hook = med(d_all), med(d_hook)
            if m_all <= budget:
                v = "met"
            elif budget == BUDGET_TRACKED_NS and m_all <= BUDGET_TRACKED_WORST_NS:
                v = "within worst case"
            else:
                v = "**missed**"
            out.append((label,
                        f"{signed(m_all)} ns (median of {len(cs)} calls; worst {worst} "
                        f"{signed(hooks[worst]['delta_vs_none']['median'])}); the hook alone, vs an "
                        f"idle thread: {signed(m_hook)} ns (worst {signed(max(d_hook))})", v))
        if "sock_sendfile_tracked" in hooks:
            d = hooks["sock_sendfile_tracked"]["delta_vs_none"]["median"]
            out.append(("tracked sendfile (same budget)", f"{signed(d)} ns (2 extra rt_sigprocmask "
                        "syscalls per call)", "met" if d <= BUDGET_TRACKED_WORST_NS else "**missed**"))
    if ir:
        un = max((ir["shim"][c] - ir["thread"][c], c) for c in UNTRACKED_CASES if c in ir["shim"])
        tr = max((ir["shim"][c] - ir["thread"][c], c) for c in TRACKED_CASES if c in ir["shim"])
        th = max((ir["thread"][c] - ir["none"][c], c) for c in UNTRACKED_CASES if c in ir["shim"])
        out.append(("(instructions, callgrind)",
                    f"hook: untracked +{un[0]:.0f} Ir ({un[1]}), tracked +{tr[0]:.0f} Ir ({tr[1]}); "
                    f"second thread in glibc: +{th[0]:.0f} Ir", ""))
    for kind, s in (e2e or {}).items():
        g = s["guarded"]
        other = max(s["direct"]["foreign_cores"]["median"], g["foreign_cores"]["median"])

        def e2e_verdict(ok):
            # A 1 % budget cannot be judged while the rest of the machine is busy.
            if other > QUIET_CORES:
                return f"inconclusive (other load {other:.1f} cores)"
            return verdict(ok)

        out.append((f"{kind}: guarded ≥ 0.99× direct req/s",
                    f"{g['rps_ratio']['median']:.3f}× (paired rounds {fr(g['rps_ratio']['range'], '{:.3f}')})",
                    e2e_verdict(g["rps_ratio"]["median"] >= BUDGET_E2E_THROUGHPUT)))
        out.append((f"{kind}: server CPU/request ≤ +1 %",
                    f"{(g['cpu_ratio']['median'] - 1) * 100:+.1f} % (paired rounds "
                    f"{fr([(x - 1) * 100 for x in g['cpu_ratio']['range']], '{:+.1f}')} %)",
                    e2e_verdict(g["cpu_ratio"]["median"] <= BUDGET_E2E_CPU)))
    for w in watcher or []:
        if w["connections"] >= 10000 and not w["epoll"] and w.get("pressure", True):
            big = w["connections"] > 10000
            budget = BUDGET_WATCHER_BIG_CORE_PCT if big else BUDGET_WATCHER_CORE_PCT
            note = "" if not big or w["connections"] >= 100000 else (
                " (100k wanted: the hard RLIMIT_NOFILE here allows no more)")
            off = [x for x in watcher if x["connections"] == w["connections"]
                   and not x["epoll"] and not x.get("pressure", True)]
            vs = (f"; `STALLGUARD_PRESSURE=off`: {off[0]['core_pct']:.3f} % "
                  f"({off[0]['us_per_tick']:.0f} µs)" if off else "")
            out.append((f"watcher ≤ {budget} % of a core, {w['connections']} idle conns{note}",
                        f"{w['core_pct']:.3f} % ({w['us_per_tick']:.0f} µs per wake-up; "
                        f"pressure on, the default{vs})",
                        verdict(w["core_pct"] <= budget)))
    plain = [w for w in (watcher or []) if not w["epoll"] and w["connections"] >= 1000
             and w.get("pressure", True)]
    layout = next((w["layout"] for w in (watcher or []) if w.get("layout")), None)
    exact = memory_accounting(layout)
    if len(plain) >= 2 or exact:
        cross = ""
        if len(plain) >= 2:
            a, b = sorted(plain, key=lambda w: w["connections"])[-2:]
            per = ((b["rss_added_kib"] - a["rss_added_kib"]) * 1024
                   / (b["connections"] - a["connections"]))
            fixed = a["rss_added_kib"] - per * a["connections"] / 1024
            cross = (f"; cross-check, RSS added: {per:.0f} B per connection between "
                     f"{a['connections']} and {b['connections']} + {fixed:.0f} KiB fixed")
        if exact:
            measured = (f"**{exact} B** (slot {layout['slot']} + watcher {layout['watcher']} "
                        f"+ deadline-queue entry {layout['queue']}; an HTTP connection adds its "
                        f"{layout['http_line']} B request line){cross}")
            ok = exact <= BUDGET_MEMORY_PER_CONN
        else:
            measured = cross.lstrip("; ")
            ok = per <= BUDGET_MEMORY_PER_CONN
        out.append((f"guard memory ≤ {BUDGET_MEMORY_PER_CONN} B per tracked connection",
                    measured, verdict(ok)))
    if accept:
        top = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(accept["by_syscall"].items()))
        out.append((f"extra syscalls per accepted connection ≤ {BUDGET_ACCEPT_SYSCALLS:.0f}",
                    f"{accept['extra_per_conn']:.2f} ({top}; strace -f -c, pool_server, "
                    f"{accept['connections']} one-request connections)",
                    verdict(accept["extra_per_conn"] <= BUDGET_ACCEPT_SYSCALLS + 0.05)))
    if forks:
        out.append((f"{forks['processes']} forked connection processes: all guard threads "
                    f"≤ {BUDGET_FORKS_CORE_PCT} % of a core",
                    f"{forks['core_pct']:.3f} %",
                    verdict(forks["core_pct"] <= BUDGET_FORKS_CORE_PCT)))
    return out


def markdown(info, hooks, ir, e2e, counts, watcher, budget_rows, quick, accept=None, forks=None):
    L = []
    L.append(f"### stallguard benchmarks{' (quick)' if quick else ''}")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    L.append(f"| date | {info['date']} |")
    L.append(f"| machine | {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']} |")
    L.append(f"| command | `{info['command']}` |")
    L.append(f"| revision | {info['revision']} |")
    L.append(f"| pinning | {info['pinning']} |")
    L.append(f"| load average at start | {info['loadavg_at_start']} |")
    L.append("")
    if budget_rows:
        L.append("**Budgets (issue #6)**")
        L.append("")
        L.append("| budget | measured | verdict |")
        L.append("|---|---|---|")
        for b in budget_rows:
            L.append(f"| {b[0]} | {b[1]} | {b[2]} |")
        L.append("")
    if hooks:
        L.append("**Hooks: ns per call (per run: 10th percentile of batches of "
                 f"{HOOK_BATCH} calls; median over {len(next(iter(hooks.values()))['none']['runs'])} "
                 "rounds, min–max; Δ: median of the paired per-round differences) "
                 "and instructions per call (callgrind, user space)**")
        L.append("")
        L.append("| call | no shim | + idle thread | shim | Δ shim − none | Δ hook (shim − thread) "
                 "| Ir none | Ir thread | Ir shim | ΔIr hook |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for c, row in hooks.items():
            irs = [ir[v].get(c) if ir else None for v in HOOK_VARIANTS]
            dir_ = (irs[2] - irs[1]) if ir and None not in irs else None
            L.append(
                f"| {c} | {f1(row['none']['median'])} ({fr(row['none']['range'], '{:.0f}')}) "
                f"| {f1(row['thread']['median'])} ({fr(row['thread']['range'], '{:.0f}')}) "
                f"| {f1(row['shim']['median'])} ({fr(row['shim']['range'], '{:.0f}')}) "
                f"| {signed(row['delta_vs_none']['median'])} "
                f"| {signed(row['delta_vs_thread']['median'])} "
                f"| {f1(irs[0])} | {f1(irs[1])} | {f1(irs[2])} "
                f"| {'n/a' if dir_ is None else f'{dir_:+.1f}'} |")
        L.append("")
        L.append("*tracked*: accepted with `accept()` (the shim tracks it); *untracked*: the same "
                 "kind of socket accepted with the raw syscall. *+ idle thread*: no shim, one "
                 "sleeping thread, which is what the watcher thread costs a single-threaded "
                 "process by existing (the kernel's fdget takes a file reference once the fd table "
                 "is shared, glibc's cancellable syscalls switch to their multi-threaded path). "
                 "`file_pread_nohook` is not interposed: a control.")
        L.append("")
    if e2e:
        L.append("**End to end: wrk, 1 thread, keep-alive, "
                 f"{E2E_CFG_DESC} (median, min–max over rounds)**")
        L.append("")
        L.append("| server | mode | req/s | × direct | p50 ms | p99 ms | server CPU µs/req | "
                 "× direct | proxy CPU µs/req | errors | other load (cores) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for kind, s in e2e.items():
            for m in E2E_MODES:
                if m not in s:
                    continue
                x = s[m]
                ratio = "1" if m == "direct" else f"{x['rps_ratio']['median']:.3f}"
                cratio = "1" if m == "direct" else f"{x['cpu_ratio']['median']:.3f}"
                proxy_cpu = ("–" if m != "haproxy"
                             else f"{x['proxy_cpu_us_per_req']['median']:.1f}")
                label = {"direct": "direct", "guarded": "guarded (LD_PRELOAD)",
                         "haproxy": "HAProxy in front"}[m]
                L.append(f"| {kind} | {label} | {x['rps']['median']:.0f} "
                         f"({fr(x['rps']['range'], '{:.0f}')}) | {ratio} "
                         f"| {x['p50_ms']['median']:.3f} | {x['p99_ms']['median']:.2f} "
                         f"({fr(x['p99_ms']['range'], '{:.2f}')}) "
                         f"| {x['server_cpu_us_per_req']['median']:.1f} | {cratio} "
                         f"| {proxy_cpu} "
                         f"| {x['errors']} | {x['foreign_cores']['median']:.2f} |")
        L.append("")
        L.append("Server CPU: utime+stime (+ children) of the server process from /proc/PID/stat "
                 "over the run, divided by the requests wrk completed; the guarded server's "
                 "includes its watcher thread. With HAProxy in front the server behind it is the "
                 "unguarded one, and the proxy's CPU is shown apart. × direct: median of the "
                 "paired per-round ratios. *Other load*: CPU the rest of the machine used during "
                 "the runs (/proc/stat busy time minus the server, proxy and wrk); each round "
                 "first waits (bounded) for a moment when it is below 0.3 cores.")
        L.append("")
    if counts:
        L.append("**Per request, deterministic: syscalls (strace -f, fixed number of "
                 "keep-alive requests; apache2-ka-off: one request per connection; the program's "
                 "threads, and the watcher's apart: its ticks depend on time, not on requests) and "
                 "user-space instructions (callgrind, difference of two runs; not for apache "
                 "prefork)**")
        L.append("")
        L.append("| server | mode | syscalls/req | main syscalls per request | watcher syscalls/req "
                 "| Ir/req |")
        L.append("|---|---|---|---|---|---|")
        for kind, s in counts.items():
            for m in ("direct", "guarded"):
                x = s.get(m, {})
                sc = ", ".join(f"{k} {v:.2g}" for k, v in x.get("syscalls", {}).items())
                irq = f"{x['ir_per_req']:.0f}" if "ir_per_req" in x else "n/a"
                wsc = f2(x.get("watcher_syscalls_per_req")) if m == "guarded" else "–"
                L.append(f"| {kind} | {m} | {f2(x.get('syscalls_per_req'))} | {sc or 'n/a'} "
                         f"| {wsc} | {irq} |")
        L.append("")
    if watcher:
        L.append("**Watcher and memory: N idle tracked connections, 100 ms tick**")
        L.append("")
        L.append("| connections | server | watcher µs/tick | ns/conn/tick | % of one core | "
                 "RSS unguarded KiB | RSS added KiB | B/conn |")
        L.append("|---|---|---|---|---|---|---|---|")
        for w in watcher:
            one = w["connections"] == 1
            per_conn = "(wake-up)" if one else f"{w['ns_per_conn_tick']:.1f}"
            per_byte = ("(fixed)" if one
                        else f"{w['rss_added_kib'] * 1024 / w['connections']:.0f}")
            kind = "epoll, read interest" if w["epoll"] else "accept, untouched"
            if not w.get("pressure", True):
                kind += ", `STALLGUARD_PRESSURE=off`"
            L.append(f"| {w['connections']} | {kind} | {w['us_per_tick']:.1f} | {per_conn} "
                     f"| {w['core_pct']:.3f} | {w['rss_plain_kib']} | {w['rss_added_kib']} "
                     f"| {per_byte} |")
        L.append("")
        L.append("Watcher CPU: /proc/PID/task/TID/schedstat of the thread named `stallguard` over "
                 "the interval, as a share of one core of wall-clock time; µs per wake-up: its "
                 "voluntary context switches (one sleep per wake-up; it sleeps until the earliest "
                 "deadline, at most a tick while anything needs it every tick — the epoll rows "
                 "with pressure on: the listener's queue — else it dozes, at most 1 s). Timers: "
                 "the defaults but first-byte and idle 1 h, so nothing fires during the run (the "
                 "20 s request timer sets the sweep period). With 1 connection the figure is the "
                 "fixed cost of a wake-up on this VM (a bare thread sleeping 100 ms in a loop "
                 "costs the same 40-50 µs per wake-up here).")
        L.append("")
    if accept:
        L.append("**Extra syscalls per accepted connection** (pool_server, one request per "
                 "connection, `strace -f -c`, guarded minus direct, difference of two runs)")
        L.append("")
        L.append("| syscall | extra per connection |")
        L.append("|---|---|")
        for k, v in sorted(accept["by_syscall"].items()):
            L.append(f"| {k} | {v:+.2f} |")
        L.append(f"| **total** | **{accept['extra_per_conn']:+.2f}** |")
        L.append("")
    if forks:
        L.append(f"**Fork per connection:** {forks['processes']} concurrent forked connection "
                 f"processes (forking_server, idle clients): every guard thread together "
                 f"{forks['core_pct']:.3f} % of one core over {forks['seconds']:.0f} s.")
        L.append("")
    return "\n".join(L)


E2E_CFG_DESC = ""
HOOK_BATCH = 64
WATCHER_TICK_MS = 100


def svg_chart(e2e, info, path):
    """Grouped bars: req/s per server and mode (median, min–max whiskers), p99 under each bar."""
    colors = {"direct": "#4c78a8", "guarded": "#59a14f", "haproxy": "#e15759"}
    labels = {"direct": "direct", "guarded": "guarded (LD_PRELOAD stallguard)",
              "haproxy": "HAProxy in front (timeouts)"}
    kinds = list(e2e.keys())
    width, height = 760, 490
    left, right, top, bottom = 70, 20, 92, 126
    other = max(s[m]["foreign_cores"]["median"] for s in e2e.values() for m in E2E_MODES if m in s)
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = max(max(s[m]["rps"]["range"][1] for m in E2E_MODES if m in s) for s in e2e.values())
    ymax = max(ymax, 1.0)
    step = 10 ** max(0, len(str(int(ymax))) - 1)
    for mult in (1, 2, 2.5, 5, 10):
        if ymax / (step * mult) <= 6:
            step = step * mult
            break
    ytop = step * (int(ymax / step) + 1)

    def y(v):
        return top + plot_h - v / ytop * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
           f'font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
           f'Throughput with and without stallguard (wrk, loopback, small static file)</text>',
           f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">{esc(info["date"])} · '
           f'{info["nproc"]} CPUs · {esc(info["cpu"])} · Linux {esc(info["kernel"])}</text>',
           f'<text x="{width / 2}" y="56" text-anchor="middle" fill="#555">bars: median req/s · '
           f'whiskers: min–max · below: p99, req/s vs direct (median of paired rounds)</text>']
    if other > QUIET_CORES:
        out.append(f'<text x="{width / 2}" y="72" text-anchor="middle" fill="#b00">other load on '
                   f'the machine during the runs: up to {other:.1f} cores (of {info["nproc"]}): '
                   f'differences of a few % are noise</text>')
    v = 0
    while v <= ytop + 1e-9:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v / 1000:g}k</text>')
        v += step
    out.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
               f'text-anchor="middle">requests / s</text>')
    group_w = plot_w / max(1, len(kinds))
    gap = 14
    bar_w = min(90, (group_w - 40) / 3 - gap)
    for gi, kind in enumerate(kinds):
        s = e2e[kind]
        modes = [m for m in E2E_MODES if m in s]
        span = bar_w * len(modes) + gap * (len(modes) - 1)
        gx = left + gi * group_w + (group_w - span) / 2
        for mi, m in enumerate(modes):
            x = gx + mi * (bar_w + gap)
            med_, (lo, hi) = s[m]["rps"]["median"], s[m]["rps"]["range"]
            out.append(f'<rect x="{x:.1f}" y="{y(med_):.1f}" width="{bar_w:.1f}" '
                       f'height="{top + plot_h - y(med_):.1f}" fill="{colors[m]}"/>')
            cx = x + bar_w / 2
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(lo):.1f}" y2="{y(hi):.1f}" '
                       f'stroke="black"/>')
            for yy in (lo, hi):
                out.append(f'<line x1="{cx - 6:.1f}" x2="{cx + 6:.1f}" y1="{y(yy):.1f}" '
                           f'y2="{y(yy):.1f}" stroke="black"/>')
            out.append(f'<text x="{cx:.1f}" y="{y(hi) - 6:.1f}" text-anchor="middle" '
                       f'font-weight="bold">{med_ / 1000:.1f}k</text>')
            out.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                       f'fill="#333" font-size="11">p99</text>')
            out.append(f'<text x="{cx:.1f}" y="{top + plot_h + 30}" text-anchor="middle" '
                       f'fill="#333" font-size="11">{s[m]["p99_ms"]["median"]:.2f} ms</text>')
            ratio = "direct" if m == "direct" else f'×{s[m]["rps_ratio"]["median"]:.3f} paired'
            out.append(f'<text x="{cx:.1f}" y="{top + plot_h + 44}" text-anchor="middle" '
                       f'fill="#333" font-size="11">{ratio}</text>')
        out.append(f'<text x="{left + gi * group_w + group_w / 2:.1f}" y="{top + plot_h + 66}" '
                   f'text-anchor="middle" font-size="14" font-weight="bold">{esc(kind)}</text>')
    lx = left
    for m in E2E_MODES:
        out.append(f'<rect x="{lx}" y="{height - 32}" width="12" height="12" fill="{colors[m]}"/>')
        out.append(f'<text x="{lx + 17}" y="{height - 22}">{labels[m]}</text>')
        lx += 17 + 7 * len(labels[m]) + 24
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------------------

def main():
    global E2E_CFG_DESC
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced run (3-4 minutes)")
    ap.add_argument("--so", default=os.path.join(ROOT, "target", "release", "libstallguard.so"))
    ap.add_argument("--command", default=" ".join(shlex.quote(a) for a in sys.argv))
    ap.add_argument("--parts", default="hooks,callgrind,e2e,counts,watcher,accept,forks",
                    help="comma-separated subset of hooks,callgrind,e2e,counts,watcher,accept,forks")
    ap.add_argument("--watcher-sizes", default=None,
                    help="comma-separated idle connection counts for the watcher part, each "
                         "optionally +epoll and/or +nopressure; 'big' is the largest the "
                         "RLIMIT_NOFILE allows (e.g. 1,10000,big)")
    ap.add_argument("--servers", default=None,
                    help="comma-separated subset of civetweb,nginx,apache2,apache2-ka-off (e2e, counts)")
    ap.add_argument("--out", default=None, help="output basename (default latest / quick)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md/.svg from a results JSON")
    args = ap.parse_args()
    if args.render:
        render(args.render)
        return
    quick = args.quick
    cfg = {
        "hook_rounds": 10 if quick else 30,
        "hook_batches": 50 if quick else 100,
        "callgrind_batches": 10 if quick else 20,
        "servers": ["civetweb", "nginx", "apache2", "apache2-ka-off"],
        "haproxy": True,
        "e2e_rounds": 3 if quick else 10,
        "quiet_wait": 5 if quick else 15,
        "wrk_seconds": 2 if quick else 4,
        "wrk_connections": 8,
        "file_bytes": 1024,
        # (connections, epoll read interest, pressure): pressure is on by default and reads
        # every listener's accept queue each tick; the same 10k without it, side by side.
        "watcher_sizes": [(1000, False, True), (10000, False, True), (10000, False, False),
                          (big_idle_size(), False, True)] if quick
        else [(1, False, True), (1, False, False), (1000, False, True), (10000, False, True),
              (10000, False, False), (10000, True, True), (10000, True, False),
              (big_idle_size(), False, True)],
        "accept_conns": 300 if quick else 1000,
        "forks": 200,
        "forks_seconds": 5 if quick else 10,
        "watcher_seconds": 3 if quick else 10,
        "watcher_tick_ms": WATCHER_TICK_MS,
        "count_requests": 1000 if quick else 3000,
        "e2e_callgrind": not quick,
        "cg_requests": (200, 1200),
    }
    if args.servers:
        cfg["servers"] = args.servers.split(",")
    if args.watcher_sizes:
        cfg["watcher_sizes"] = [
            (big_idle_size() if w.split("+")[0] == "big" else int(w.split("+")[0]),
             "+epoll" in w, "+nopressure" not in w)
            for w in args.watcher_sizes.split(",")]
    E2E_CFG_DESC = (f"{cfg['wrk_connections']} connections, {cfg['wrk_seconds']} s runs, "
                    f"{cfg['e2e_rounds']} rounds, {cfg['file_bytes']}-byte file")
    parts = set(args.parts.split(","))
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not os.path.exists(args.so):
        sys.exit(f"bench: {args.so} not found (make lib)")
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="run-", dir=os.path.join(ROOT, "target", "bench"))
    # apache's children run as www-data: they must reach the document root inside.
    os.chmod(work, 0o755)
    # A private copy: the library under test cannot change under a run (others rebuild it).
    so = os.path.join(work, "libstallguard.so")
    shutil.copy2(args.so, so)
    info = machine_info(args.command, args.so)
    log(f"work dir {work}; {'quick' if quick else 'full'} run; load average {info['loadavg_at_start']}")

    hooks = ir = e2e = counts = watcher = accept = forks = None
    t0 = time.time()
    try:
        if "hooks" in parts:
            log("hooks: wall clock, none / idle thread / shim alternated")
            hooks = run_hooks(cfg, so, work)
        if "callgrind" in parts:
            log("hooks: callgrind instruction counts")
            ir = run_callgrind(cfg, so, work)
        if "e2e" in parts:
            e2e = run_e2e(cfg, so, work)
        if "counts" in parts:
            log("e2e: syscalls and instructions per request")
            counts = run_e2e_counts(cfg, so, work, make_docroot(cfg, work))
        if "watcher" in parts:
            watcher = run_watcher(cfg, so, work)
        if "accept" in parts:
            log("accept: extra syscalls per accepted connection (strace -f -c, pool_server)")
            accept = run_accept_syscalls(cfg, so, work)
        if "forks" in parts:
            log(f"forks: {cfg['forks']} forked connection processes (forking_server)")
            forks = run_forks(cfg, so, work)
    finally:
        PROCS.stop_all()
    log(f"done in {time.time() - t0:.0f} s")

    rows = budgets(hooks, ir, e2e, watcher, accept, forks)
    md = markdown(info, hooks, ir, e2e, counts, watcher, rows, quick, accept, forks)
    base = args.out or ("quick" if quick else "latest")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, base + ".md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(RESULTS, base + ".json"), "w") as f:
        json.dump({"info": info, "config": cfg, "hooks": hooks, "callgrind": ir, "e2e": e2e,
                   "counts": counts, "watcher": watcher, "accept": accept, "forks": forks,
                   "budgets": rows}, f, indent=1)
    if e2e:
        svg_chart(e2e, info, os.path.join(RESULTS, "e2e.svg" if base == "latest" else base + "-e2e.svg"))
    print(md)
    shutil.rmtree(work, ignore_errors=True)
    if os.environ.get("BENCH_STRICT") == "1" and any("missed" in r[2] for r in rows):
        sys.exit(1)


def render(path):
    """Rewrites <base>.md (and the SVG) from <base>.json, e.g. after a change of layout."""
    global E2E_CFG_DESC
    with open(path) as f:
        d = json.load(f)
    cfg = d["config"]
    E2E_CFG_DESC = (f"{cfg['wrk_connections']} connections, {cfg['wrk_seconds']} s runs, "
                    f"{cfg['e2e_rounds']} rounds, {cfg['file_bytes']}-byte file")
    for w in d.get("watcher") or []:
        if "core_pct_wall" not in w:  # results written before the nominal-rate share
            w["core_pct_wall"] = w["core_pct"]
            w["core_pct"] = w["us_per_tick"] / (cfg.get("watcher_tick_ms", 100) * 1e3) * 100
    rows = budgets(d["hooks"], d["callgrind"], d["e2e"], d["watcher"], d.get("accept"),
                   d.get("forks"))
    d["budgets"] = rows
    md = markdown(d["info"], d["hooks"], d["callgrind"], d["e2e"], d.get("counts"), d["watcher"],
                  rows, path.endswith("quick.json"), d.get("accept"), d.get("forks"))
    base = path[:-len(".json")]
    with open(base + ".md", "w") as f:
        f.write(md + "\n")
    with open(path, "w") as f:
        json.dump(d, f, indent=1)
    if d["e2e"]:
        name = os.path.basename(base)
        svg_chart(d["e2e"], d["info"], os.path.join(os.path.dirname(base),
                  "e2e.svg" if name == "latest" else name + "-e2e.svg"))
    print(md)


if __name__ == "__main__":
    main()
