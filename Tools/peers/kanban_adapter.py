#!/usr/bin/env python3
"""kanban_adapter.py - loadgen.py adapter for the Kanban relay's own sync protocol (version 1).

Put this file next to ../shared/peers/loadgen.py (Tools/peers/run.sh does that in a temp copy) and
run it instead of loadgen.py: it registers adapter "kanban" and then calls loadgen.main():

    KANBAN_BIN=.build/release/kanban KANBAN_RELAY_DATA=/tmp/relay-data \
      python kanban_adapter.py --adapter kanban --url ws://127.0.0.1:7421/sync --server-pid PID ...

Mapping of loadgen's interface onto the protocol (Protocol/sync-protocol.md):
  setup     one team-wide token (`kanban relay token create --team bench`) for writers and
            one board-scoped token (`... --board ID`) per board; creates boards board-0000..
            (loadgen names) by pushing `board.create` ops (board IDs = UUIDs derived from the names)
  connect   nothing on the wire yet: the token, which is sent with the upgrade request, depends
            on the board the client joins (writers open their socket on first send, during warm-up)
  join      WebSocket upgrade with the board's token + permessage-deflate, `hello` with no cursors;
            returns when the `welcome` and the board's catch-up `ops` (head) have arrived
  send      one `push` with one operation: a `task.update` whose `description` is the loadgen op
            as compact JSON (so `_ts`/`_w`/`_n` pass through the relay untouched and the payload
            size is the loadgen's); the `ack` entry for it calls on_ack({"seq": ...})
  on_event  called for every operation in an `ops` message, with the decoded loadgen op (+ "seq")
Writers are members of their boards' rooms too (every connection is an agent in this protocol),
so the relay also sends them the other writers' operations (extra relay work the Socket.IO design
does not do); the adapter drops those without calling on_event, so they are not counted.
"""
import asyncio
import hashlib
import os
import random
import string
import subprocess
import sys
import time

import loadgen
from loadgen import Client, _dumps, _loads, adapter, board_name, log

PROTOCOL = 1


def board_uuid(name):
    """Deterministic UUID (v7 layout) for a loadgen board name."""
    h = hashlib.sha256(("kanban-bench:" + name).encode()).hexdigest()
    return f"{h[0:8]}-{h[8:12]}-7{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def task_uuid(i):
    h = hashlib.sha256(f"kanban-bench-task:{i}".encode()).hexdigest()
    return f"{h[0:8]}-{h[8:12]}-7{h[13:16]}-9{h[17:20]}-{h[20:32]}"


def new_replica():
    return "lg" + "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(14))


def hlc(ms, counter, replica):
    return f"{ms:015d}.{counter % 10**10:010d}.{replica}"


async def make_token(kanban, data, board=None):
    args = [kanban, "relay", "token", "create", "--data", data, "--team", "bench"]
    if board:
        args += ["--board", board]
    p = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"kanban relay token create failed: {err.decode()[:300]}")
    return out.decode().strip()


@adapter("kanban")
class KanbanClient(Client):
    team_token = None
    board_tokens = {}
    tasks = [task_uuid(i) for i in range(256)]

    @classmethod
    async def setup(cls, url, opts):
        kanban = os.environ.get("KANBAN_BIN")
        data = os.environ.get("KANBAN_RELAY_DATA")
        if not kanban or not data:
            raise SystemExit("kanban adapter needs KANBAN_BIN and KANBAN_RELAY_DATA (the relay's --data directory)")
        nboards = max(1, int(getattr(opts, "boards", 1)))
        names = [board_name(i) for i in range(nboards)]
        cls.team_token = await make_token(kanban, data)
        sem = asyncio.Semaphore(8)

        async def one(name):
            async with sem:
                cls.board_tokens[name] = await make_token(kanban, data, board_uuid(name))

        await asyncio.gather(*(one(n) for n in names))
        # create the boards: one connection, board.create ops in pushes of <= 500
        c = cls(url, lambda op: None, opts)
        await c._open(cls.team_token)
        acked = [0]
        done = asyncio.get_running_loop().create_future()
        total = len(names)

        def on_ack(reply):
            acked[0] += 1
            if acked[0] >= total and not done.done():
                done.set_result(True)

        for i in range(0, total, 500):
            ops = []
            for name in names[i : i + 500]:
                c.counter += 1
                oid = f"{c.replica}:{c.counter}"
                c.pending[oid] = on_ack
                ops.append({"id": oid, "hlc": hlc(int(time.time() * 1000), c.counter, c.replica), "board": board_uuid(name),
                            "kind": "board.create", "title": name})
            await c.ws.send(_dumps({"type": "push", "ops": ops}))
        await asyncio.wait_for(done, 60)
        await c.close()
        log(f"[kanban] {total} boards created, {len(cls.board_tokens)} board tokens")

    def __init__(self, url, on_event, opts):
        self.url = url
        self.on_event = on_event
        self.compression = None if getattr(opts, "no_deflate", False) else "deflate"
        self.ws = None
        self.reader = None
        self.pending = {}
        self.replica = new_replica()
        self.counter = 0
        self.welcomed = None
        self.caught_up = {}
        self.opening = None
        self.errors = 0

    async def _open(self, token, board=None):
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url, compression=self.compression, max_size=2**22, open_timeout=120, close_timeout=2, max_queue=None,
            additional_headers={"Authorization": f"Bearer {token}"},
        )
        loop = asyncio.get_running_loop()
        self.welcomed = loop.create_future()
        if board:
            self.caught_up[board] = loop.create_future()
        self.reader = asyncio.create_task(self._read())
        await self.ws.send(_dumps({"type": "hello", "protocol": PROTOCOL, "replica": self.replica, "cursors": {}, "client": "loadgen"}))
        await asyncio.wait_for(self.welcomed, 120)

    async def _read(self):
        on_event = self.on_event
        pending = self.pending
        try:
            async for raw in self.ws:
                m = _loads(raw)
                t = m.get("type")
                if t == "ops":
                    f = self.caught_up.get(m["board"])
                    if f is None:
                        continue  # a writer's room membership, not a joined board: not a delivery
                    for e in m["ops"]:
                        d = e["op"].get("description")
                        if d and d[0] == "{":
                            op = _loads(d)
                            op["seq"] = e["seq"]
                            on_event(op)
                    if not f.done():
                        f.set_result(True)
                elif t == "ack":
                    for a in m["acks"]:
                        cb = pending.pop(a["op"], None)
                        if cb is not None:
                            cb({"seq": a["seq"], "op": a["op"]})
                elif t == "welcome":
                    if not self.welcomed.done():
                        self.welcomed.set_result(m)
                elif t == "error":
                    self.errors += 1
                    if self.errors <= 3:
                        log(f"[kanban] relay error: {raw[:200]}")
        except Exception as e:  # connection closed
            if self.welcomed is not None and not self.welcomed.done():
                self.welcomed.set_exception(e)

    async def connect(self):
        pass  # see module docstring: the socket opens in join() (or on a writer's first send)

    async def join(self, board_id):
        board = board_uuid(board_id)
        await self._open(self.board_tokens[board_id], board)
        await asyncio.wait_for(self.caught_up[board], 120)

    async def send(self, op, on_ack):
        if self.ws is None:
            if self.opening is None:
                self.opening = asyncio.ensure_future(self._open(self.team_token))
            await self.opening
        self.counter += 1
        oid = f"{self.replica}:{self.counter}"
        self.pending[oid] = on_ack
        ours = {
            "id": oid,
            "hlc": hlc(int(time.time() * 1000), self.counter, self.replica),
            "board": board_uuid(op["boardId"]),
            "kind": "task.update",
            "task": self.tasks[self.counter & 255],
            "description": _dumps(op),
        }
        await self.ws.send(_dumps({"type": "push", "ops": [ours]}))

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, Exception):
                pass


if __name__ == "__main__":
    sys.argv[0] = "loadgen.py"
    loadgen.main()
