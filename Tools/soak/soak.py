#!/usr/bin/env python3
"""Fault-injection soak test of kanban sync (Python 3 standard library only).

Starts one relay (or --relays N instances sharing one PostgreSQL log, --store) and N agents
(each agent's relay link through its own fault proxy from Tools/faultproxy; with several relays
each new WebSocket goes to the next instance, as behind a load balancer, while a long-polling
agent stays on one instance until it is down, as Tools/nginx/kanban-relays.conf keeps it; with
--pinned, agent i always goes to relay i mod N),
drives random operations through every agent's HTTP API while it injects faults (proxy delay
with jitter, pause, cut after N bytes, reset, refuse; agents SIGKILLed and restarted; a relay
SIGKILLed or SIGTERMed and restarted; with --faults ...,relay_rollback also the relay's data put
back to an earlier copy), then heals everything and checks:

  * every replica converges (bounded wait): same boards, identical board documents (minus the
    per-agent `version` counter), identical digests;
  * every operation that got a 2xx (its IDs from the `Kanban-Operations` response header) is in
    `GET /api/boards/{id}/operations` of every replica (lost = 0); agents without that endpoint
    are checked by the presence of every entity created with a 2xx instead;
  * no 5xx, no request failing against a running agent, and no process exiting on its own.

Usage:  Tools/soak/run.sh --duration 60            (builds or finds the binary)
        python3 Tools/soak/soak.py --binary .build/debug/kanban --duration 1800 --seed 7
        eval "$(Tools/postgres/start.sh)"
        python3 Tools/soak/soak.py --relays 2 --store "$KANBAN_POSTGRES_URL" --duration 600

Choices (operation kinds, targets by index, fault kinds and timings, titles) come from RNGs
seeded by --seed, so a run can be repeated; real process timing still differs run to run.
Everything listens on 127.0.0.1. Logs of each child are in the run directory (kept and printed
on failure, or always with --keep). Exit status: 0 only when nothing was lost, everything
converged, no 5xx and no crash.
"""

from __future__ import annotations

import argparse
import ctypes
import heapq
import http.client
import json
import os
import random
import re
import shutil
import sqlite3
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faultproxy"))
import faultproxy  # noqa: E402

HOST = "127.0.0.1"
TEAM = "soak"


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Child processes get SIGKILL if the soak process dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

class HTTPResult:
    __slots__ = ("status", "headers", "body", "error")

    def __init__(self, status=0, headers=None, body=None, error=None):
        self.status, self.headers, self.body, self.error = status, headers or {}, body, error

    def json(self):
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def request(port: int, method: str, path: str, body=None, timeout: float = 30.0) -> HTTPResult:
    """One request on a fresh connection (no keep-alive, so a failure is never ambiguous)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        return HTTPResult(r.status, {k.lower(): v for k, v in r.getheaders()}, raw)
    except (OSError, http.client.HTTPException) as e:
        return HTTPResult(error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def prometheus(text: str) -> dict[str, float]:
    """Sums of each metric family over its labels, plus each `name{labels}` on its own."""
    out: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] += v
        if m.group(2):
            out[m.group(1) + m.group(2)] += v
    return dict(out)


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------

class Child:
    """A kanban process we start, kill by PID, restart with the same arguments, and watch."""

    def __init__(self, name: str, log_path: str):
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.expected_exit = False
        self.starts = 0
        self.crashes: list[str] = []
        self.generation = 0
        self.up = threading.Event()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready_pattern(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> re.Match:
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== soak: start #{self.starts} at {time.strftime('%H:%M:%S')}: {' '.join(self.argv())}\n".encode())
            offset = f.tell()
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=_die_with_parent, close_fds=True)
        logf.close()
        self.expected_exit = False
        deadline = time.monotonic() + timeout
        pattern = re.compile(self.ready_pattern())
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                m = pattern.search(f.read().decode("utf-8", "replace"))
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting; see {self.log_path}")
            time.sleep(0.05)
        self.kill(signal.SIGKILL)
        raise RuntimeError(f"{self.name} did not print its ready line within {timeout:.0f} s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, wait: float = 15.0) -> int | None:
        """Signal our own child by PID and wait for it; SIGKILL if it outlives `wait`."""
        self.check_crash()                       # it may have died on its own just before
        self.up.clear()
        self.generation += 1
        if self.proc is None:
            return None
        self.expected_exit = True
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                return None                      # did not stop in time
        return self.proc.returncode

    def check_crash(self) -> bool:
        """True (once) when the process exited without us killing it."""
        if self.proc is not None and not self.expected_exit and self.proc.poll() is not None:
            self.expected_exit = True
            self.up.clear()
            self.generation += 1
            self.crashes.append(f"{self.name} (pid {self.proc.pid}) exited on its own with {self.proc.returncode}")
            return True
        return False


def sqlite_rows(path: str, sql: str) -> list[tuple]:
    """Rows of a query on a SQLite file a running process may be writing (read-only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(sql).fetchall()


class RelayProc(Child):
    def __init__(self, name: str, binary: str, data: str, log_path: str, heartbeat: int | None, store: str | None,
                 compaction: int = 0):
        super().__init__(name, log_path)
        self.binary, self.data, self.heartbeat, self.store, self.compaction = binary, data, heartbeat, store, compaction
        self.port = 0

    def location(self) -> list[str]:
        """Where the log is: the shared PostgreSQL store, else this relay's own SQLite directory."""
        return ["--store", self.store] if self.store else ["--data", self.data]

    def argv(self):
        a = [self.binary, "relay", "--port", str(self.port), "--name", self.name] + self.location()
        if self.heartbeat:
            a += ["--heartbeat", str(self.heartbeat)]
        if self.compaction:
            a += ["--compaction-threshold", str(self.compaction), "--compaction-keep", str(self.compaction // 4)]
        return a

    def ready_pattern(self):
        return r"Kanban relay listening on ws://127\.0\.0\.1:(\d+)/sync"

    def start(self, timeout: float = 30.0):
        m = super().start(timeout)
        self.port = int(m.group(1))
        self.up.set()
        return m


class AgentProc(Child):
    def __init__(self, index: int, binary: str, data: str, log_path: str, port: int, proxy_port: int, token: str,
                 transport: str = "auto"):
        super().__init__(f"agent{index}", log_path)
        self.index, self.binary, self.data = index, binary, data
        self.port, self.proxy_port, self.token = port, proxy_port, token
        self.transport = transport
        self.replica = ""

    def argv(self):
        return [self.binary, "agent", "--port", str(self.port), "--data", self.data,
                "--relay", f"ws://{HOST}:{self.proxy_port}/sync", "--token", self.token,
                "--relay-transport", self.transport]

    def ready_pattern(self):
        return r"Board: http://127\.0\.0\.1:(\d+)/"

    def start(self, timeout: float = 30.0):
        m = super().start(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = request(self.port, "GET", "/health", timeout=5)
            if r.status == 200:
                self.replica = (r.json() or {}).get("replicaId", "")
                self.up.set()
                return m
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: /health did not answer within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# Bookkeeping shared by the workers
# ---------------------------------------------------------------------------------------------

class Ledger:
    """Everything the workers did, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = Counter()                 # op kind -> 2xx count
        self.status4xx = Counter()          # "kind status" -> count
        self.status5xx: list[str] = []
        self.expected_conn_errors = 0       # agent was being killed / down
        self.unexpected_errors: list[str] = []
        self.acked: dict[str, tuple[str, str]] = {}   # op ID -> (board, what)
        self.samples4xx: list[str] = []    # the first few of each kind, for the run directory
        self.no_header = Counter()          # 2xx state changes without Kanban-Operations
        self.created: list[tuple[str, str, str]] = []  # (kind, entity, board) with a 2xx
        self.boards: list[str] = []         # every board created with a 2xx (ordered)
        self.anchors: dict[str, str] = {}   # hot column -> anchor task (never moved or deleted)

    def record(self, kind: str, board: str | None, r: HTTPResult, what: str) -> None:
        with self.lock:
            if 200 <= r.status < 300:
                self.ok[kind] += 1
                ids = [x.strip() for x in r.headers.get("kanban-operations", "").split(",") if x.strip()]
                if not ids:
                    self.no_header[kind] += 1
                for op in ids:
                    self.acked[op] = (board or "", what)
            elif 400 <= r.status < 500:
                self.status4xx[f"{kind} {r.status}"] += 1
                if self.status4xx[f"{kind} {r.status}"] <= 3:
                    self.samples4xx.append(f"{what} -> {r.status} {r.body[:300].decode('utf-8', 'replace')}")
            else:
                self.status5xx.append(f"{what} -> {r.status} {r.body[:300]!r}")


class View:
    """A worker's picture of one board, from its agent's document."""

    def __init__(self, doc: dict):
        self.board = doc["id"]
        self.columns = [c["id"] for c in doc.get("columns", [])]
        self.deleted_columns = [c["id"] for c in doc.get("deletedColumns", [])]
        self.tasks: dict[str, list[str]] = {c["id"]: [t["id"] for t in c.get("tasks", [])] for c in doc.get("columns", [])}
        self.visible = [t for ts in self.tasks.values() for t in ts]
        self.orphans = [t["id"] for t in doc.get("orphans", [])]
        self.trash = [t["id"] for t in doc.get("trash", [])]


# ---------------------------------------------------------------------------------------------
# Workers: random operations through one agent's API
# ---------------------------------------------------------------------------------------------

FAULT_KINDS = ("delay", "pause", "cut", "reset", "refuse", "agent_kill", "relay_restart")
# Only when asked for with --faults: the relay's SQLite data put back to an earlier copy (a
# restore from backup), which loses operations the relay had acknowledged; the agents push them again.
OPTIONAL_FAULTS = ("relay_rollback",)
# How often each kind is picked, relative to the others (`--faults KIND:WEIGHT` changes one).
DEFAULT_FAULT_WEIGHTS = {"delay": 18, "pause": 16, "cut": 16, "reset": 16, "refuse": 10, "agent_kill": 14,
                         "relay_restart": 10, "relay_rollback": 6}

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


class Worker(threading.Thread):
    def __init__(self, soak: "Soak", agent: AgentProc, seed: int):
        super().__init__(name=f"worker-{agent.name}", daemon=True)
        self.soak, self.agent, self.rng = soak, agent, random.Random(seed)
        self.views: dict[str, View] = {}
        self.ops_since_refresh = 1 << 30
        self.n = 0

    def title(self) -> str:
        self.n += 1
        return f"{self.agent.name}-{self.n} {' '.join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 3)))}"

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            with self.soak.ledger.lock:
                self.soak.ledger.unexpected_errors.append(f"{self.name} raised:\n{traceback.format_exc()}")

    def _run(self) -> None:
        rate = self.soak.args.rate
        next_at = time.monotonic()
        while not self.soak.stop_workers.is_set():
            now = time.monotonic()
            if next_at > now:
                self.soak.stop_workers.wait(next_at - now)
                continue
            next_at = max(next_at, now - 1.0) + self.rng.expovariate(rate)
            if not self.agent.up.is_set():
                self.agent.up.wait(0.2)
                self.ops_since_refresh = 1 << 30   # it restarted: look again
                continue
            self.step()

    # -- requests ------------------------------------------------------------------------------
    def call(self, kind: str, board: str | None, method: str, path: str, body=None) -> HTTPResult | None:
        gen = self.agent.generation
        up = self.agent.up.is_set()
        r = request(self.agent.port, method, path, body)
        if r.error is not None:
            with self.soak.ledger.lock:
                if gen != self.agent.generation or not up or not self.agent.up.is_set():
                    self.soak.ledger.expected_conn_errors += 1
                else:
                    self.soak.ledger.unexpected_errors.append(
                        f"{time.strftime('%H:%M:%S')} {self.agent.name} {method} {path}: {r.error}")
            return None
        if method != "GET":
            self.soak.ledger.record(kind, board, r, f"{self.agent.name} {method} {path} {json.dumps(body) if body else ''}")
        elif r.status >= 500:
            self.soak.ledger.record(kind, board, r, f"{self.agent.name} GET {path}")
        return r

    def refresh(self) -> None:
        r = self.call("list", None, "GET", "/api/boards")
        if r is None or r.status != 200:
            return
        boards = [b["id"] for b in (r.json() or [])]
        for gone in set(self.views) - set(boards):
            del self.views[gone]
        # One board document per refresh keeps the cost flat as boards grow.
        if boards:
            b = self.rng.choice(sorted(boards))
            d = self.call("get", b, "GET", f"/api/boards/{b}")
            if d is not None and d.status == 200:
                self.views[b] = View(d.json())
            for other in boards:
                if other not in self.views:
                    d = self.call("get", other, "GET", f"/api/boards/{other}")
                    if d is not None and d.status == 200:
                        self.views[other] = View(d.json())
        self.ops_since_refresh = 0

    # -- one random operation ----------------------------------------------------------------------
    def step(self) -> None:
        if self.ops_since_refresh >= self.soak.args.refresh_every:
            self.refresh()
        self.ops_since_refresh += 1
        rng, led = self.rng, self.soak.ledger
        if not self.views:
            return
        v = self.views[rng.choice(sorted(self.views))]
        with led.lock:
            anchors = dict(led.anchors)
            protected_tasks = set(anchors.values())
            n_boards = len(led.boards)
            created = led.created[-200:] if led.created else []
        kind = rng.choices(
            ["create_task", "create_task_hot", "move", "edit", "delete", "restore", "create_column",
             "delete_column", "restore_column", "update_column", "rename_board", "create_board", "foreign"],
            weights=[14, 14, 16, 14, 9, 7, 3, 3, 3, 2, 1, 1, 5])[0]

        def pick(seq, exclude=()):
            seq = [x for x in seq if x not in exclude]
            return rng.choice(seq) if seq else None

        if kind == "create_board":
            if n_boards >= self.soak.args.max_boards:
                kind = "create_task"
            else:
                r = self.call(kind, None, "POST", "/api/boards", {"title": "board " + self.title()})
                if r is not None and r.status == 201:
                    b = r.json()["id"]
                    with led.lock:
                        led.boards.append(b)
                        led.created.append(("board", b, b))
                    self.ledger_set_board(r, b)
                return
        if kind == "create_task_hot":
            hot = [c for c in v.columns if c in anchors]
            if hot:
                col = rng.choice(hot)
                after = anchors[col] if rng.random() < 0.7 else None     # same spot: below the anchor, or the top
                self.create_task(v.board, col, after)
                return
            kind = "create_task"
        if kind == "create_task":
            col = pick(v.columns)
            if col:
                tasks = v.tasks.get(col, [])
                after = pick(tasks) if tasks and rng.random() < 0.6 else None
                self.create_task(v.board, col, after)
            return
        if kind == "move":
            t = pick(v.visible + v.orphans, protected_tasks)
            if not t:
                return
            cols = v.columns + (v.deleted_columns if rng.random() < 0.1 else [])
            col = pick(cols)
            if not col:
                return
            body = {"columnId": col}
            targets = [x for x in v.tasks.get(col, []) if x != t]
            if targets and rng.random() < 0.7:
                body["after"] = rng.choice(targets)
            self.call(kind, v.board, "POST", f"/api/tasks/{t}/move", body)
            return
        if kind == "edit":
            t = pick(v.visible + v.orphans + v.trash[:5])
            if not t:
                return
            body = {}
            if rng.random() < 0.7:
                body["title"] = self.title()
            if rng.random() < 0.5 or not body:
                body["description"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))
            self.call(kind, v.board, "PATCH", f"/api/tasks/{t}", body)
            return
        if kind == "delete":
            t = pick(v.visible + v.orphans, protected_tasks)
            if t:
                self.call(kind, v.board, "DELETE", f"/api/tasks/{t}")
            return
        if kind == "restore":
            t = pick(v.trash)
            if t:
                self.call(kind, v.board, "POST", f"/api/tasks/{t}/restore")
            return
        if kind == "create_column":
            if len(v.columns) >= 8:
                return
            body = {"title": "col " + self.title()}
            if v.columns and rng.random() < 0.7:
                body["after"] = rng.choice(v.columns)
            r = self.call(kind, v.board, "POST", f"/api/boards/{v.board}/columns", body)
            if r is not None and r.status == 201:
                c = (r.json() or {}).get("id")
                if c:
                    with led.lock:
                        led.created.append(("column", c, v.board))
            return
        if kind == "delete_column":
            c = pick(v.columns, set(anchors))
            if c and len(v.columns) > 2:
                self.call(kind, v.board, "DELETE", f"/api/columns/{c}")
            return
        if kind == "restore_column":
            c = pick(v.deleted_columns)
            if c:
                self.call(kind, v.board, "POST", f"/api/columns/{c}/restore")
            return
        if kind == "update_column":
            c = pick(v.columns)
            if c:
                body = {"title": "col " + self.title()} if rng.random() < 0.5 else {}
                if rng.random() < 0.5 or not body:
                    body["after"] = pick(v.columns, {c})
                self.call(kind, v.board, "PATCH", f"/api/columns/{c}", body)
            return
        if kind == "rename_board":
            self.call(kind, v.board, "PATCH", f"/api/boards/{v.board}", {"title": "board " + self.title()})
            return
        if kind == "foreign":
            # An entity some other agent created: may not have arrived here yet (404 expected).
            if not created:
                return
            ekind, e, board = rng.choice(created)
            if ekind == "task" and e not in protected_tasks:
                self.call("foreign_edit", board, "PATCH", f"/api/tasks/{e}", {"title": self.title()})
            elif ekind == "column":
                self.call("foreign_create_task", board, "POST", f"/api/columns/{e}/tasks", {"title": self.title()})
            return

    def ledger_set_board(self, r: HTTPResult, board: str) -> None:
        """A board create's operations belong to the board it made."""
        ids = [x.strip() for x in r.headers.get("kanban-operations", "").split(",") if x.strip()]
        with self.soak.ledger.lock:
            for op in ids:
                self.soak.ledger.acked[op] = (board, self.soak.ledger.acked.get(op, ("", ""))[1])

    def create_task(self, board: str, col: str, after: str | None) -> None:
        body = {"title": self.title()}
        if self.rng.random() < 0.3:
            body["description"] = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 20)))
        if after is not None or self.rng.random() < 0.5:
            body["after"] = after
        r = self.call("create_task", board, "POST", f"/api/columns/{col}/tasks", body)
        if r is not None and r.status == 201:
            t = (r.json() or {}).get("id")
            if t:
                with self.soak.ledger.lock:
                    self.soak.ledger.created.append(("task", t, board))


# ---------------------------------------------------------------------------------------------
# The soak run
# ---------------------------------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.fault_rng = random.Random(self.rng.getrandbits(64))
        self.ledger = Ledger()
        self.stop_workers = threading.Event()
        self.relays: list[RelayProc] = []
        # On a shared PostgreSQL store the log outlives the run: a team of its own keeps earlier
        # runs' boards out of this one.
        self.team = f"{TEAM}-{args.seed}-{int(time.time())}" if args.store else TEAM
        self.agents: list[AgentProc] = []
        self.proxies: list[faultproxy.Proxy] = []
        self.pt: faultproxy.ProxyThread | None = None
        self.workers: list[Worker] = []
        self.events = Counter()            # agent kills, relay restarts by signal, ...
        self.start_failures: list[str] = []
        self.hangs: list[str] = []
        self.lifetime_metrics = defaultdict(float)   # agent counters summed over finished lifetimes
        self.relay_metrics = defaultdict(float)
        self.capabilities = {"operations": False, "digest": False}
        self.timeline: list[tuple[float, int, str, tuple]] = []   # heap of undo actions
        self.seq = 0
        self.dir = args.dir or tempfile.mkdtemp(prefix="kanban-soak-")
        os.makedirs(self.dir, exist_ok=True)

    # -- processes -----------------------------------------------------------------------------
    def setup(self) -> None:
        a = self.args
        log(f"seed {a.seed}; run directory {self.dir}; binary {a.binary}")
        for k in range(a.relays):
            name = "relay" if a.relays == 1 else f"relay{k}"
            relay = RelayProc(name, a.binary, os.path.join(self.dir, name), os.path.join(self.dir, f"{name}.log"),
                              a.relay_heartbeat, a.store, a.compaction_threshold)
            self.relays.append(relay)
            relay.start()
            log(f"{name} on port {relay.port} ({'PostgreSQL ' + a.store if a.store else 'SQLite'})")
        tok = subprocess.run([a.binary, "relay", "token", "create"] + self.relays[0].location() + ["--team", self.team],
                             capture_output=True, text=True, timeout=30)
        if tok.returncode != 0 or not tok.stdout.strip():
            raise RuntimeError(f"token create failed ({tok.returncode}): {tok.stderr}")
        token = tok.stdout.strip()
        self.pt = faultproxy.ProxyThread().start()
        for i in range(a.agents):
            # The last `--long-polling` agents sync over HTTP long-polling instead of the WebSocket.
            transport = "long-polling" if i >= a.agents - a.long_polling else "auto"
            # Rotating: every reconnect of this agent may land on another instance, which must
            # catch it up from the shared log with the cursors another instance gave it. A
            # long-polling session lives in one instance and its requests use several connections
            # at once, so those go to one instance while it is up (client affinity), like nginx's.
            order = [self.relays[(i + k) % len(self.relays)] for k in range(1 if a.pinned else len(self.relays))]
            p = self.pt.start_proxy([(HOST, r.port) for r in order], seed=self.rng.getrandbits(32), name=f"proxy{i}",
                                    sticky=transport == "long-polling")
            self.proxies.append(p)
            ag = AgentProc(i, a.binary, os.path.join(self.dir, f"agent{i}"), os.path.join(self.dir, f"agent{i}.log"),
                           free_port(), p.port, token, transport)
            self.agents.append(ag)
            ag.start()
            log(f"{ag.name} (replica {ag.replica}) on port {ag.port}, relay link ({transport}) through proxy port {p.port} "
                f"to {'/'.join(r.name for r in order)}{' (first that is up)' if p.sticky and len(order) > 1 else ''}")
        self.seed_boards()

    def seed_boards(self) -> None:
        """Two boards with a few columns and one anchor task per hot column, seen by everyone."""
        a0 = self.agents[0]
        led = self.ledger

        def must(r: HTTPResult, what: str) -> dict:
            if r.error or not 200 <= r.status < 300:
                raise RuntimeError(f"setup {what}: {r.error or r.status} {r.body!r}")
            led.record("setup", board, r, f"agent0 setup {what}")
            return r.json()

        for bi in range(2):
            board = None
            board = must(request(a0.port, "POST", "/api/boards", {"title": f"soak board {bi}"}), "board")["id"]
            for op in [x for x in led.acked if led.acked[x][0] == ""]:
                led.acked[op] = (board, led.acked[op][1])
            led.boards.append(board)
            led.created.append(("board", board, board))
            after = None
            for ci in range(3 if bi == 0 else 2):
                body = {"title": f"column {bi}.{ci}"}
                if after:
                    body["after"] = after
                col = must(request(a0.port, "POST", f"/api/boards/{board}/columns", body), "column")["id"]
                after = col
                led.created.append(("column", col, board))
                if ci < 2:
                    task = must(request(a0.port, "POST", f"/api/columns/{col}/tasks", {"title": f"anchor {bi}.{ci}"}), "anchor")["id"]
                    led.anchors[col] = task
                    led.created.append(("task", task, board))
        probe = request(a0.port, "GET", f"/api/boards/{led.boards[0]}/operations")
        self.capabilities["operations"] = probe.status == 200 and isinstance((probe.json() or {}).get("operations"), list)
        probe = request(a0.port, "GET", f"/api/boards/{led.boards[0]}/digest")
        self.capabilities["digest"] = probe.status == 200 and "digest" in (probe.json() or {})
        if not self.capabilities["operations"]:
            log("agent has no GET /api/boards/{id}/operations: checking by entity presence instead")
        if not led.acked and self.capabilities["operations"]:
            log("WARNING: 2xx responses carry no Kanban-Operations header")
        ok = self.wait(lambda: all(self.has_boards(ag, led.boards) for ag in self.agents), 60, "seed boards everywhere")
        if not ok:
            raise RuntimeError("seed boards did not reach every agent within 60 s (no faults yet)")

    def has_boards(self, ag: AgentProc, boards: list[str]) -> bool:
        r = request(ag.port, "GET", "/api/boards", timeout=10)
        return r.status == 200 and set(boards) <= {b["id"] for b in r.json() or []}

    def wait(self, cond, timeout: float, what: str, interval: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch_children()
            if cond():
                return True
            time.sleep(interval)
        log(f"timed out after {timeout:.0f} s waiting for {what}")
        return False

    def watch_children(self) -> None:
        for ch in self.relays + self.agents:
            if ch.check_crash():
                log(f"CRASH: {ch.crashes[-1]}; log {ch.log_path}")
                self.note(f"CRASH: {ch.crashes[-1]}")
                self.schedule(0.5, "restart", (ch,))

    # -- metrics across restarts -----------------------------------------------------------------
    def harvest_agent(self, ag: AgentProc) -> None:
        r = request(ag.port, "GET", "/metrics", timeout=5)
        h = request(ag.port, "GET", "/health/websocket", timeout=5)
        if r.status == 200:
            for k, v in prometheus(r.body.decode()).items():
                if k.endswith("_total") or "_total{" in k:
                    self.lifetime_metrics[k] += v
        if h.status == 200:
            self.lifetime_metrics["repairs"] += (h.json() or {}).get("repairs", 0)

    def harvest_relay(self, relay: RelayProc) -> None:
        r = request(relay.port, "GET", "/metrics", timeout=5)
        if r.status == 200:
            for k, v in prometheus(r.body.decode()).items():
                if k in ("kanban_relay_digest_mismatches", "kanban_relay_compactions", "kanban_relay_operations_accepted"):
                    self.relay_metrics[k] += v

    # -- faults ---------------------------------------------------------------------------------------
    def schedule(self, delay: float, action: str, args: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.timeline, (time.monotonic() + delay, self.seq, action, args))

    def run_due(self) -> None:
        while self.timeline and self.timeline[0][0] <= time.monotonic():
            _, _, action, args = heapq.heappop(self.timeline)
            self.do(action, args)

    def note(self, msg: str) -> None:
        """One line of the fault timeline (faults.log in the run directory)."""
        with open(os.path.join(self.dir, "faults.log"), "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {msg}\n")

    def proxy_states(self) -> str:
        bad = []
        for p in self.proxies:
            st = self.pt.call(p.stats)["state"]
            flags = [k for k, v in (("paused", st["paused"]), ("delay", st["delayMs"]), ("cut", st["cutAfter"] is not None),
                                    ("refusing", st["refusing"])) if v]
            if flags:
                bad.append(f"{p.name}: {'+'.join(flags)}")
        return ", ".join(bad) or "all proxies normal"

    def do(self, action: str, args: tuple) -> None:
        if action == "restart":
            (ch,) = args
            if not ch.alive():
                try:
                    ch.start()
                    self.note(f"{ch.name} started (pid {ch.proc.pid})")
                except RuntimeError as e:
                    self.start_failures.append(str(e))
                    self.note(f"{ch.name} FAILED to start: {e}")
                    log(f"FAILED restart: {e}")
                    self.schedule(2.0, "restart", (ch,))
        elif action == "proxy":
            p, method, margs = args
            self.pt.call(getattr(p, method), *margs)
            self.note(f"{p.name} {method}{margs if margs else ''}")

    def kill(self, ch: Child, sig: int) -> None:
        pid = ch.proc.pid
        around = self.proxy_states()
        start = time.monotonic()
        rc = ch.kill(sig)
        took = time.monotonic() - start
        name = signal.Signals(sig).name
        self.events[f"{'relay' if ch in self.relays else 'agent'} {name}"] += 1
        self.note(f"{ch.name} (pid {pid}) {name}: exit {rc} after {took:.2f} s ({around})")
        if rc is None:
            msg = f"{time.strftime('%H:%M:%S')} {ch.name} did not exit within 15 s of {name} ({around})"
            self.hangs.append(msg)
            log(msg)
        elif sig == signal.SIGTERM and rc != 0:
            self.hangs.append(f"{time.strftime('%H:%M:%S')} {ch.name} exited with {rc} after SIGTERM")

    def inject(self) -> None:
        rng, a = self.fault_rng, self.args
        weights = dict(DEFAULT_FAULT_WEIGHTS, **a.fault_weights)
        kinds = [k for k in FAULT_KINDS + OPTIONAL_FAULTS if k in a.faults]
        if not kinds:
            return
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        i = rng.randrange(len(self.proxies))
        p, ag = self.proxies[i], self.agents[i]
        long_ok = a.duration >= 300
        if kind == "delay":
            ms, jitter = rng.choice([20, 50, 100, 200, 500, 1000]), rng.choice([0, 10, 50, 100, 300])
            self.do("proxy", (p, "set_delay", (ms, jitter)))
            self.schedule(rng.uniform(1, 10), "proxy", (p, "set_delay", (0, 0)))
        elif kind == "pause":
            dur = rng.uniform(20, 40) if long_ok and rng.random() < 0.1 else rng.uniform(0.3, 6)
            self.do("proxy", (p, "pause", ()))
            self.schedule(dur, "proxy", (p, "resume", ()))
        elif kind == "cut":
            n = rng.choice([0, 1, 20, 100, 500, 2000, 10000, 50000]) + rng.randrange(100)
            self.do("proxy", (p, "set_cut_after", (n,)))
            self.schedule(rng.uniform(0.5, 8), "proxy", (p, "set_cut_after", (None,)))
        elif kind == "reset":
            self.do("proxy", (p, "reset_all", ()))
        elif kind == "refuse":
            self.do("proxy", (p, "refuse", (rng.choice(["closed", "rst"]),)))
            self.schedule(rng.uniform(0.5, 8), "proxy", (p, "accept", ()))
        elif kind == "agent_kill":
            if not ag.alive():
                return
            self.harvest_agent(ag)
            self.kill(ag, signal.SIGKILL if rng.random() < 0.85 else signal.SIGTERM)
            self.schedule(rng.uniform(0.1, 3), "restart", (ag,))
        elif kind == "relay_rollback":
            # A relay stopped cleanly, its data copied aside the first time; from then on, the
            # copy put back (and, now and then, a newer copy taken first).
            relay = self.relays[0]
            if not relay.alive():
                return
            self.harvest_relay(relay)
            self.kill(relay, signal.SIGTERM)
            backup = os.path.join(self.dir, "relay-backup")
            if not os.path.isdir(backup) or rng.random() < 0.25:
                shutil.rmtree(backup, ignore_errors=True)
                shutil.copytree(relay.data, backup)
                self.note(f"{relay.name} data copied aside")
            else:
                shutil.rmtree(relay.data)
                shutil.copytree(backup, relay.data)
                self.events["rollback of the relay data"] += 1
                self.note(f"{relay.name} data put back to the copy")
            self.schedule(rng.uniform(0.1, 3), "restart", (relay,))
        elif kind == "relay_restart":
            relay = self.relays[rng.randrange(len(self.relays))] if len(self.relays) > 1 else self.relays[0]
            if not relay.alive():
                return
            self.harvest_relay(relay)
            self.kill(relay, signal.SIGKILL if rng.random() < 0.6 else signal.SIGTERM)
            self.schedule(rng.uniform(0.1, 3), "restart", (relay,))

    # -- main phases --------------------------------------------------------------------------------
    def load(self) -> None:
        a = self.args
        self.workers = [Worker(self, ag, self.rng.getrandbits(64)) for ag in self.agents]
        for w in self.workers:
            w.start()
        log(f"load for {a.duration:.0f} s: {a.rate:g} ops/s per agent, a fault every ~{a.fault_interval:g} s")
        start = time.monotonic()
        end = start + a.duration
        next_fault = start + self.fault_rng.expovariate(1 / a.fault_interval)
        next_report = start + 30
        while time.monotonic() < end:
            self.watch_children()
            self.run_due()
            now = time.monotonic()
            if now >= next_fault:
                self.inject()
                next_fault = now + self.fault_rng.expovariate(1 / a.fault_interval)
            if now >= next_report:
                next_report = now + 30
                with self.ledger.lock:
                    log(f"{now - start:.0f} s: {sum(self.ledger.ok.values())} ok, "
                        f"{sum(self.ledger.status4xx.values())} 4xx, {len(self.ledger.status5xx)} 5xx, "
                        f"faults {dict(self.fault_counts())}")
            time.sleep(0.05)
        self.stop_workers.set()
        for w in self.workers:
            w.join(60)
            if w.is_alive():
                self.ledger.unexpected_errors.append(f"{w.name} still running 60 s after the load ended")

    def heal(self) -> None:
        log("healing: proxies back to normal, every process up, reconnect now")
        self.timeline.clear()
        for p in self.proxies:
            self.pt.call(p.heal)
        self.watch_children()
        self.run_due()
        self.timeline.clear()
        for ch in self.relays + self.agents:
            if not ch.alive():
                ch.start()
        for ag in self.agents:
            r = request(ag.port, "POST", "/api/sync/reconnect", timeout=10)
            if r.error or r.status >= 300:
                log(f"{ag.name} reconnect: {r.error or r.status}")

    def snapshot(self) -> dict:
        """Per agent: link status, boards, documents (minus version), digests."""
        out = {}
        for ag in self.agents:
            s = {"ws": None, "boards": None, "docs": {}, "digests": {}}
            h = request(ag.port, "GET", "/health/websocket", timeout=10)
            s["ws"] = h.json() if h.status == 200 else None
            r = request(ag.port, "GET", "/api/boards", timeout=10)
            if r.status == 200:
                s["boards"] = sorted(b["id"] for b in r.json())
                for b in s["boards"]:
                    d = request(ag.port, "GET", f"/api/boards/{b}", timeout=30)
                    if d.status == 200:
                        doc = d.json()
                        doc.pop("version", None)
                        s["docs"][b] = json.dumps(doc, sort_keys=True)
                    if self.capabilities["digest"]:
                        g = request(ag.port, "GET", f"/api/boards/{b}/digest", timeout=30)
                        if g.status == 200:
                            s["digests"][b] = g.json().get("digest")
            out[ag.name] = s
        return out

    @staticmethod
    def converged(snap: dict) -> bool:
        first = None
        for s in snap.values():
            ws = s["ws"] or {}
            if ws.get("state") != "connected" or ws.get("queuedOperations", 1) != 0 or s["boards"] is None:
                return False
            key = (s["boards"], s["docs"], s["digests"])
            if first is None:
                first = key
            elif key != first:
                return False
        return True

    def converge(self) -> tuple[bool, float, dict]:
        start = time.monotonic()
        snap: dict = {}

        def check():
            nonlocal snap
            snap = self.snapshot()
            return self.converged(snap)
        ok = self.wait(check, self.args.converge_timeout, "convergence", interval=0.5)
        return ok, time.monotonic() - start, snap

    def verify(self, snap: dict) -> dict:
        """Documents and digests identical; every 2xx operation on every replica."""
        led = self.ledger
        res = {"divergent": [], "lost": {}, "missing_by_agent": {}}
        names = list(snap)
        ref = snap[names[0]]
        for n in names[1:]:
            s = snap[n]
            if s["boards"] != ref["boards"]:
                res["divergent"].append(f"{n} boards {s['boards']} != {names[0]} {ref['boards']}")
            for b in ref["boards"] or []:
                if s["docs"].get(b) != ref["docs"].get(b):
                    res["divergent"].append(f"board {b}: document of {n} differs from {names[0]}")
                if s["digests"].get(b) != ref["digests"].get(b):
                    res["divergent"].append(f"board {b}: digest of {n} {s['digests'].get(b)} != {ref['digests'].get(b)}")
        if self.capabilities["operations"]:
            with led.lock:
                expected = dict(led.acked)
            boards = sorted({b for b, _ in expected.values()} | set(led.boards))
            logged: dict | None = None  # the relay's log, op ID -> (board, sequence): read once, if needed
            for ag in self.agents:
                have: dict[str, set] = {}
                union: set = set()
                for b in boards:
                    r = request(ag.port, "GET", f"/api/boards/{b}/operations", timeout=60)
                    have[b] = set((r.json() or {}).get("operations", [])) if r.status == 200 else set()
                    union |= have[b]
                missing = [op for op, (b, _) in expected.items() if op not in (have.get(b) if b else union)]
                if missing and self.args.compaction_threshold:
                    # Caught up through a relay snapshot, an agent holds the state the folded
                    # operations made, not the operations: one the relay logged at or below the
                    # sequence of the agent's snapshot of its board is there.
                    at = dict(sqlite_rows(os.path.join(ag.data, "replica.sqlite"), "SELECT board_id, seq FROM snapshot"))
                    if logged is None:
                        logged = {op: (b, seq) for op, b, seq in
                                  sqlite_rows(os.path.join(self.relays[0].data, "relay.sqlite"), "SELECT op_id, board_id, seq FROM relay_op")}
                    folded = {op for op in missing if op in logged and logged[op][1] <= at.get(logged[op][0], 0)}
                    res.setdefault("in_snapshots", {})[ag.name] = len(folded)
                    missing = [op for op in missing if op not in folded]
                res["missing_by_agent"][ag.name] = len(missing)
                for op in missing:
                    res["lost"].setdefault(op, []).append(ag.name)
        else:
            with led.lock:
                created = list(led.created)
            for ag in self.agents:
                present = set()
                for b in snap[ag.name]["docs"]:
                    d = json.loads(snap[ag.name]["docs"][b])
                    present.add(d["id"])
                    for c in d["columns"] + d["deletedColumns"]:
                        present.add(c["id"])
                        present.update(t["id"] for t in c["tasks"])
                    present.update(t["id"] for t in d["orphans"] + d["trash"])
                missing = [e for _, e, _ in created if e not in present]
                res["missing_by_agent"][ag.name] = len(missing)
                for e in missing:
                    res["lost"].setdefault(e, []).append(ag.name)
        return res

    def dump_state(self, snap: dict, res: dict) -> None:
        """On failure: every agent's link status, boards and documents, and the proxies' stats."""
        state = {"agents": {}, "proxies": [self.pt.call(p.stats) for p in self.proxies], "result": res}
        for ag in self.agents:
            s = snap.get(ag.name, {})
            state["agents"][ag.name] = {"replica": ag.replica, "port": ag.port, "ws": s.get("ws"),
                                        "boards": s.get("boards"), "digests": s.get("digests"),
                                        "docs": {b: json.loads(d) for b, d in (s.get("docs") or {}).items()}}
        path = os.path.join(self.dir, "final-state.json")
        with open(path, "w") as f:
            json.dump(state, f, indent=1)
        log(f"final state written to {path}")

    @property
    def crashes(self) -> list[str]:
        kids = self.relays + self.agents
        return [c for ch in kids for c in ch.crashes] + self.start_failures

    def fault_counts(self) -> Counter:
        c = Counter()
        for p in self.proxies:
            for k, v in p.faults.items():
                c[k] += v
        c.update(self.events)
        return c

    def relay_connections(self) -> dict[str, int]:
        """Connections the proxies forwarded to each relay, over the whole run."""
        out = {r.name: 0 for r in self.relays}
        for p in self.proxies:
            by_target = self.pt.call(p.stats)["byTarget"]
            for r in self.relays:
                out[r.name] += by_target.get(f"{HOST}:{r.port}", 0)
        return out

    def final_metrics(self) -> dict:
        m = defaultdict(float, self.lifetime_metrics)
        for ag in self.agents:
            r = request(ag.port, "GET", "/metrics", timeout=10)
            if r.status == 200:
                for k, v in prometheus(r.body.decode()).items():
                    if k.endswith("_total") or "_total{" in k:
                        m[k] += v
            h = request(ag.port, "GET", "/health/websocket", timeout=10)
            if h.status == 200:
                m["repairs"] += (h.json() or {}).get("repairs", 0)
        for relay in self.relays:
            self.harvest_relay(relay)
        m.update({f"relay:{k}": v for k, v in self.relay_metrics.items()})
        return m

    def shutdown(self) -> None:
        self.stop_workers.set()
        for ch in self.agents + self.relays:
            if ch.alive():
                rc = ch.kill(signal.SIGTERM, wait=10)
                if rc not in (0, None) and rc != -signal.SIGTERM:
                    log(f"{ch.name} exited with {rc} on the final SIGTERM")
                elif rc is None and ch.proc is not None:
                    log(f"{ch.name} needed SIGKILL at the end")
        if self.pt is not None:
            self.pt.close()


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=__doc__.split("Usage:")[0].rstrip(),
                                 epilog="Usage:" + __doc__.split("Usage:")[1])
    ap.add_argument("--duration", type=float, default=60, help="seconds of load and faults (default 60)")
    ap.add_argument("--agents", type=int, default=4, help="agent processes (default 4, at least 2)")
    ap.add_argument("--long-polling", type=int, default=1,
                    help="how many of the agents sync over HTTP long-polling instead of the WebSocket (default 1)")
    ap.add_argument("--seed", type=int, default=None, help="seed for every random choice (default: random, printed)")
    ap.add_argument("--binary", default=os.environ.get("KANBAN_BIN", os.path.join(here, "..", "..", ".build", "debug", "kanban")),
                    help="the kanban executable (default $KANBAN_BIN or .build/debug/kanban)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory even when everything passed")
    ap.add_argument("--dir", default=None, help="run directory (default: a new temporary directory)")
    ap.add_argument("--rate", type=float, default=5.0, help="operations per second per agent (default 5)")
    ap.add_argument("--fault-interval", type=float, default=2.0, help="mean seconds between injected faults (default 2)")
    ap.add_argument("--converge-timeout", type=float, default=120, help="seconds allowed to converge after healing (default 120)")
    ap.add_argument("--max-boards", type=int, default=5, help="boards the workload may create in total (default 5)")
    ap.add_argument("--refresh-every", type=int, default=8, help="operations between re-reading a board (default 8)")
    ap.add_argument("--relay-heartbeat", type=int, default=5,
                    help="relay ping interval in seconds, so long pauses hit heartbeat timeouts (default 5; 0: relay default)")
    ap.add_argument("--compaction-threshold", type=int, default=0,
                    help="the relays' --compaction-threshold (with --compaction-keep a quarter of it), so that boards are "
                         "folded into snapshots and agents catch up through them under the faults (default 0: the relay's own)")
    ap.add_argument("--relays", type=int, default=1,
                    help="relay instances (default 1); more than one needs --store, the log they share")
    ap.add_argument("--pinned", action="store_true",
                    help="with --relays N: agent i always connects to relay i mod N (default: each new connection "
                         "to the next relay, as behind a load balancer)")
    ap.add_argument("--store", default=None,
                    help="postgres://USER@HOST:PORT/DATABASE: the relays keep their log in this PostgreSQL "
                         "(Tools/postgres/start.sh starts a throwaway one) instead of SQLite in the run directory")
    ap.add_argument("--faults", default=",".join(FAULT_KINDS),
                    help="fault kinds to inject, comma-separated (default: %(default)s; also "
                         f"{', '.join(OPTIONAL_FAULTS)}: one relay on SQLite put back to an earlier copy of its data); "
                         "KIND:WEIGHT picks a kind more or less often than its default weight "
                         f"({', '.join(f'{k} {w}' for k, w in DEFAULT_FAULT_WEIGHTS.items())})")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    args.binary = os.path.abspath(args.binary)
    args.fault_weights = {}
    faults = []
    for item in (f.strip() for f in args.faults.split(",") if f.strip()):
        kind, _, weight = item.partition(":")
        if weight:
            if not weight.isdigit() or int(weight) < 1:
                ap.error(f"--faults {item}: the weight after ':' must be a whole number of at least 1")
            args.fault_weights[kind] = int(weight)
        faults.append(kind)
    args.faults = faults
    if set(args.faults) - set(FAULT_KINDS + OPTIONAL_FAULTS):
        ap.error(f"unknown fault kinds {sorted(set(args.faults) - set(FAULT_KINDS + OPTIONAL_FAULTS))}; "
                 f"known: {','.join(FAULT_KINDS + OPTIONAL_FAULTS)}")
    if "relay_rollback" in args.faults and (args.store or args.relays > 1):
        ap.error("relay_rollback puts one relay's SQLite data back to a copy: not with --store or --relays")
    if args.compaction_threshold and (args.store or "relay_rollback" in args.faults):
        ap.error("--compaction-threshold: the check reads the relay's SQLite log, so not with --store; and not with "
                 "relay_rollback (operations an agent has only inside a relay snapshot cannot be pushed to a restored relay)")
    if args.compaction_threshold < 0:
        ap.error("--compaction-threshold must be 0 (the relay's own) or more")
    if args.agents < 2:
        ap.error("--agents must be at least 2")
    if not 0 <= args.long_polling <= args.agents:
        ap.error(f"--long-polling must be 0-{args.agents} (the number of agents)")
    if args.relays < 1:
        ap.error("--relays must be at least 1")
    if args.relays > 1 and not args.store:
        ap.error("--relays above 1 needs --store postgres://...: instances on SQLite do not share a log")
    if args.store and not args.store.startswith(("postgres://", "postgresql://")):
        ap.error(f"--store must be a postgres:// URL, got {args.store!r}")
    if not os.access(args.binary, os.X_OK):
        ap.error(f"no executable at {args.binary} (build with `swift build --product kanban` or pass --binary)")

    soak = Soak(args)
    t0 = time.monotonic()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C, even if started with SIGINT ignored

    failures: list[str] = []
    summary: dict = {}
    try:
        soak.setup()
        soak.load()
        soak.heal()
        ok, took, snap = soak.converge()
        res = soak.verify(snap)
        if not ok or res["lost"] or res["divergent"]:
            soak.dump_state(snap, res)
        metrics = soak.final_metrics()
        soak.watch_children()
        led = soak.ledger
        faults = soak.fault_counts()
        lost = len(res["lost"])
        summary = {
            "seed": args.seed, "agents": args.agents, "duration_s": round(time.monotonic() - t0, 1),
            "load_s": args.duration,
            "operations_ok": sum(led.ok.values()), "operations_ok_by_kind": dict(led.ok),
            "operations_4xx": sum(led.status4xx.values()), "4xx_by_kind": dict(led.status4xx),
            "operations_5xx": len(led.status5xx),
            "operation_ids_acked": len(led.acked), "ok_without_operation_ids": sum(led.no_header.values()), "entities_created": len(led.created),
            "expected_connection_errors": led.expected_conn_errors,
            "unexpected_errors": len(led.unexpected_errors),
            "faults": dict(faults),
            "agent_kills": sum(v for k, v in faults.items() if k.startswith("agent ")),
            "relay_restarts": sum(v for k, v in faults.items() if k.startswith("relay ")),
            "agent_starts": sum(ag.starts for ag in soak.agents), "relay_starts": sum(r.starts for r in soak.relays), "relays": args.relays,
            "connections_by_relay": soak.relay_connections(),
            "link_attempts": int(metrics.get("kanban_link_attempts_total", 0)),
            "reconnects": max(0, int(metrics.get("kanban_link_connects_total", 0)) - sum(ag.starts for ag in soak.agents)),
            "link_failures": int(metrics.get("kanban_link_failures_total", 0)),
            "repairs": int(metrics.get("repairs", 0)),
            "relay_digest_mismatches": int(metrics.get("relay:kanban_relay_digest_mismatches", 0)),
            "relay_compactions": int(metrics.get("relay:kanban_relay_compactions", 0)),
            "checked_by": "operation IDs" if soak.capabilities["operations"] else "entity presence",
            "lost": lost, "missing_by_agent": res["missing_by_agent"],
            "in_snapshots_by_agent": res.get("in_snapshots", {}),
            "divergent": len(res["divergent"]),
            "converged": ok, "converge_s": round(took, 1),
            "boards": len(soak.ledger.boards),
            "crashes": soak.crashes, "shutdown_problems": soak.hangs,
        }
        if led.status5xx:
            failures.append(f"{len(led.status5xx)} responses with 5xx, e.g. {led.status5xx[:3]}")
        if led.unexpected_errors:
            failures.append(f"{len(led.unexpected_errors)} requests failed against a running agent, e.g. {led.unexpected_errors[:3]}")
        if lost:
            sample = list(res["lost"].items())[:5]
            with led.lock:
                detail = [f"{op} ({led.acked.get(op, ('', ''))[1] or 'entity'}) missing on {who}" for op, who in sample]
            failures.append(f"lost = {lost}: {detail}")
        if res["divergent"]:
            failures.append(f"divergent: {res['divergent'][:5]}")
        if not ok:
            links = {n: {k: (x["ws"] or {}).get(k) for k in ("state", "queuedOperations", "consecutiveFailures", "lastError")}
                     for n, x in snap.items() if (x["ws"] or {}).get("state") != "connected" or (x["ws"] or {}).get("queuedOperations")}
            failures.append(f"not converged within {args.converge_timeout:.0f} s; links not settled: {links or 'none'}")
        if soak.crashes:
            failures.append(f"crashes: {soak.crashes}")
        if soak.hangs:
            failures.append(f"shutdown problems: {soak.hangs}")
        if soak.capabilities["operations"] and not led.acked:
            failures.append("no operation IDs were collected (Kanban-Operations header missing)")
    except KeyboardInterrupt:
        failures.append("interrupted")
    except Exception:
        failures.append("soak tool error:\n" + traceback.format_exc())
    finally:
        soak.shutdown()

    if summary:
        with open(os.path.join(soak.dir, "summary.json"), "w") as f:
            json.dump({**summary, "failures": failures}, f, indent=2)
        with open(os.path.join(soak.dir, "4xx-samples.txt"), "w") as f:
            f.write("\n".join(soak.ledger.samples4xx) + "\n")
        if soak.ledger.status5xx or soak.ledger.unexpected_errors:
            with open(os.path.join(soak.dir, "errors.txt"), "w") as f:
                f.write("\n".join(soak.ledger.status5xx + soak.ledger.unexpected_errors) + "\n")
        s = summary
        print()
        print("==== kanban soak summary ====")
        print(f"seed {s['seed']}, {s['relays']} relay(s), {s['agents']} agents, load {s['load_s']:.0f} s, total {s['duration_s']} s")
        print(f"operations: {s['operations_ok']} ok ({s['operation_ids_acked']} operation IDs), "
              f"{s['operations_4xx']} 4xx, {s['operations_5xx']} 5xx, "
              f"{s['expected_connection_errors']} connection errors while an agent was down, "
              f"{s['unexpected_errors']} unexpected errors")
        if s["ok_without_operation_ids"]:
            print(f"  {s['ok_without_operation_ids']} state-changing 2xx named no operation (no Kanban-Operations header): "
                  f"{dict(led.no_header)}")
        print(f"  ok by kind: {dict(sorted(s['operations_ok_by_kind'].items()))}")
        print(f"  4xx by kind: {dict(sorted(s['4xx_by_kind'].items()))}")
        print(f"faults: {dict(sorted(s['faults'].items()))}")
        print(f"agent kills {s['agent_kills']}, relay restarts {s['relay_restarts']}, "
              f"link attempts {s['link_attempts']}, reconnects {s['reconnects']}, link failures {s['link_failures']}, "
              f"repairs {s['repairs']}, relay digest mismatches {s['relay_digest_mismatches']}")
        if s["relays"] > 1:
            print(f"agent connections by relay: {s['connections_by_relay']}"
                  f"{' (pinned)' if args.pinned else ' (WebSockets: each to the next relay; long-polling: the first that is up)'}")
        if args.compaction_threshold:
            print(f"relay compactions (since the relay's last start) {s['relay_compactions']}; operations held only "
                  f"inside a relay snapshot (found in the relay's log at or below the agent's snapshot): "
                  f"{s['in_snapshots_by_agent']}")
        print(f"checked by {s['checked_by']}: lost = {s['lost']} {s['missing_by_agent']}, "
              f"divergent = {s['divergent']}, converged = {'yes' if s['converged'] else 'no'} "
              f"({s['converge_s']} s after healing), crashes = {len(s['crashes'])}")
        print(f"duration {s['duration_s']} s")
    if failures:
        print("\nFAILED:")
        for f in failures:
            print("  - " + f)
        print(f"run directory kept: {soak.dir}")
        return 1
    if args.keep:
        print(f"run directory kept: {soak.dir}")
    else:
        shutil.rmtree(soak.dir, ignore_errors=True)
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
