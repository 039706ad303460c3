#!/usr/bin/env python3
"""faultproxy: a fault-injecting TCP proxy for loopback tests (Python 3 standard library only).

It listens on 127.0.0.1:PORT, forwards every connection to TARGET_HOST:TARGET_PORT, and takes
commands at run time on a small HTTP control port (also 127.0.0.1). With several targets
(`--target` repeated), each new connection goes to the next one in turn, and to the ones after
it when that one refuses, the way a load balancer spreads reconnects over server instances; with
`--sticky`, every connection goes to the first target that accepts, in the order given (a
balancer with client affinity, moving on only when the instance is down):

    faultproxy.py --listen 9000 --target 127.0.0.1:7421 --control 9001
    curl -X POST '127.0.0.1:9001/delay?ms=200&jitter=100'  # each chunk waits 200 ± 100 ms (order kept)
    curl -X POST  127.0.0.1:9001/pause                     # stop moving bytes (TCP backpressure)
    curl -X POST  127.0.0.1:9001/resume
    curl -X POST '127.0.0.1:9001/cut-after?bytes=5000'     # every current and new connection is
                                                           # closed after 5000 more bytes (both ways)
    curl -X POST  127.0.0.1:9001/reset                     # RST every connection (SO_LINGER 0)
    curl -X POST  127.0.0.1:9001/refuse                    # stop listening: new connections get
                                                           # ECONNREFUSED (?mode=rst: accept, then RST)
    curl -X POST  127.0.0.1:9001/accept                    # listen again (same port)
    curl -X POST  127.0.0.1:9001/heal                      # no delay, no pause, no cut, accepting
    curl          127.0.0.1:9001/stats                     # JSON counters

Every command answers `200` with the stats JSON. Stats: `connections` (accepted in total),
`open` (now), `faults` (how many of each kind were injected: delay, pause, cut, reset, refuse,
refused (connections turned away with mode=rst)), `bytes` (`up` = client to target, `down` =
target to client), `byTarget` (connections forwarded to each target), and the current `state`.

Bounded: each direction holds at most QUEUE_CHUNKS chunks of CHUNK bytes in flight (delay
queue); when that is full, or while paused, the proxy stops reading from the socket, so the
kernel's buffers fill and TCP flow control pushes back on the sender.

As a module (e.g. from Tools/soak/soak.py), run proxies on a background event loop:

    from faultproxy import ProxyThread
    with ProxyThread() as loop_thread:
        p = loop_thread.start_proxy(("127.0.0.1", 7421))      # listens on a free port: p.port
        loop_thread.call(p.set_delay, 200, 100); loop_thread.call(p.reset_all)
        print(loop_thread.call(p.stats))

`Proxy` itself is plain asyncio and can be used on your own loop (`await proxy.start()`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import threading
import time
import urllib.parse

CHUNK = 16 * 1024
QUEUE_CHUNKS = 16  # per direction: at most 256 KiB held by the proxy


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER on, timeout 0, then close."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class _Conn:
    """One proxied connection: client <-> target, two pumps."""

    def __init__(self, proxy: "Proxy", cr, cw, tr, tw):
        self.proxy = proxy
        self.cr, self.cw, self.tr, self.tw = cr, cw, tr, tw
        self.budget: int | None = proxy.cut_after  # bytes still allowed before a cut
        self.closed = False
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for reader, writer, direction in ((self.cr, self.tw, "up"), (self.tr, self.cw, "down")):
            queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_CHUNKS)
            self.tasks.append(asyncio.ensure_future(self._read(reader, queue)))
            self.tasks.append(asyncio.ensure_future(self._write(writer, queue, direction)))

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue) -> None:
        last_due = 0.0
        try:
            while not self.closed:
                await self.proxy._running.wait()          # paused: read nothing
                data = await reader.read(CHUNK)
                if not data:
                    break
                due = time.monotonic()
                if self.proxy.delay_ms or self.proxy.jitter_ms:
                    ms = self.proxy.delay_ms + self.proxy.rng.uniform(-self.proxy.jitter_ms, self.proxy.jitter_ms)
                    due += max(0.0, ms) / 1000.0
                due = max(due, last_due)                  # TCP keeps order: never overtake
                last_due = due
                await queue.put((due, data))              # full: stop reading (backpressure)
        except (ConnectionError, OSError):
            self.close(rst=True)                          # the peer reset: reset the other side too
            return
        if not self.closed:
            await queue.put((0.0, b""))                   # end of stream: pass the FIN on, in order

    async def _write(self, writer: asyncio.StreamWriter, queue: asyncio.Queue, direction: str) -> None:
        try:
            while not self.closed:
                due, data = await queue.get()
                if not data:
                    # Peer half-closed: pass the FIN on.
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.proxy._running.wait()          # paused: hold what we have
                if self.closed:
                    return
                cut = False
                if self.budget is not None:
                    if len(data) >= self.budget:
                        data, cut = data[: self.budget], True
                    self.budget -= len(data)
                if data:
                    writer.write(data)
                    self.proxy.bytes[direction] += len(data)
                    await writer.drain()
                if cut:
                    self.proxy.faults["cut"] += 1
                    self.close()
                    return
        except (ConnectionError, OSError):
            self.close()

    def close(self, rst: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.cw, self.tw):
            if rst:
                _rst(w)
            else:
                w.close()
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self.proxy.conns.discard(self)


class Proxy:
    """A fault-injecting TCP proxy on the running asyncio loop."""

    def __init__(self, target: tuple[str, int] | list[tuple[str, int]], listen: tuple[str, int] = ("127.0.0.1", 0),
                 seed: int | None = None, name: str = "proxy", sticky: bool = False):
        # One target, or several: taken in turn per connection, or with `sticky` always the first
        # that accepts (see the module's description).
        self.targets = [target] if isinstance(target, tuple) else list(target)
        if not self.targets:
            raise ValueError("a proxy needs at least one target")
        self.sticky = sticky
        self.next_target = 0
        self.by_target = {f"{h}:{p}": 0 for h, p in self.targets}
        self.host, self.port = listen
        self.name = name
        self.rng = random.Random(seed)
        self.delay_ms = 0.0
        self.jitter_ms = 0.0
        self.cut_after: int | None = None
        self.refusing: str | None = None     # None, "closed" or "rst"
        self.conns: set[_Conn] = set()
        self.connections = 0
        self.faults = {"delay": 0, "pause": 0, "cut": 0, "reset": 0, "refuse": 0, "refused": 0}
        self.bytes = {"up": 0, "down": 0}
        self.server: asyncio.base_events.Server | None = None
        self._running: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> "Proxy":
        self._running = asyncio.Event()
        self._running.set()
        await self._listen()
        return self

    async def _listen(self) -> None:
        last: OSError | None = None
        for _ in range(50):                   # the port may linger briefly after /refuse
            try:
                self.server = await asyncio.start_server(self._accept, self.host, self.port,
                                                         reuse_address=True, backlog=64)
                self.port = self.server.sockets[0].getsockname()[1]
                return
            except OSError as e:
                last = e
                await asyncio.sleep(0.02)
        raise last  # type: ignore[misc]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for c in list(self.conns):
            c.close(rst=True)

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.faults["refused"] += 1
            _rst(cw)
            return
        self.connections += 1
        first = 0 if self.sticky else self.next_target
        self.next_target = (first + 1) % len(self.targets)
        for k in range(len(self.targets)):
            host, port = self.targets[(first + k) % len(self.targets)]
            try:
                tr, tw = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=5)
            except (OSError, asyncio.TimeoutError):
                continue                      # this one is down: the next
            self.by_target[f"{host}:{port}"] += 1
            break
        else:
            _rst(cw)                          # every target down: the client sees a reset
            return
        conn = _Conn(self, cr, cw, tr, tw)
        self.conns.add(conn)
        conn.start()
        # When both directions ended (EOF both ways, error, cut), release the connection.
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        conn.close()

    # -- faults (call on the loop's thread) ----------------------------------------------------
    def set_delay(self, ms: float, jitter: float = 0.0) -> None:
        self.delay_ms, self.jitter_ms = max(0.0, float(ms)), max(0.0, float(jitter))
        if self.delay_ms or self.jitter_ms:
            self.faults["delay"] += 1

    def pause(self) -> None:
        if self._running.is_set():
            self.faults["pause"] += 1
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def set_cut_after(self, nbytes: int | None) -> None:
        self.cut_after = None if nbytes is None else max(0, int(nbytes))
        for c in list(self.conns):
            c.budget = self.cut_after
            if c.budget == 0:
                self.faults["cut"] += 1
                c.close()

    def reset_all(self) -> int:
        n = len(self.conns)
        for c in list(self.conns):
            c.close(rst=True)
        self.faults["reset"] += n
        return n

    async def refuse(self, mode: str = "closed") -> None:
        if mode not in ("closed", "rst"):
            raise ValueError("mode must be closed or rst")
        if not self.refusing:
            self.faults["refuse"] += 1
        self.refusing = mode
        if mode == "closed" and self.server is not None:
            self.server.close()               # existing connections stay; new ones: ECONNREFUSED
            self.server = None
        elif mode == "rst" and self.server is None:
            await self._listen()

    async def accept(self) -> None:
        self.refusing = None
        if self.server is None:
            await self._listen()

    async def heal(self) -> None:
        self.set_delay(0, 0)
        self.set_cut_after(None)
        self.resume()
        await self.accept()

    def stats(self) -> dict:
        return {
            "name": self.name,
            "listen": f"{self.host}:{self.port}",
            "target": ", ".join(f"{h}:{p}" for h, p in self.targets),
            "byTarget": dict(self.by_target),
            "sticky": self.sticky,
            "connections": self.connections,
            "open": len(self.conns),
            "faults": dict(self.faults),
            "bytes": dict(self.bytes),
            "state": {
                "delayMs": self.delay_ms, "jitterMs": self.jitter_ms,
                "paused": not self._running.is_set(), "cutAfter": self.cut_after,
                "refusing": self.refusing,
            },
        }


# -- HTTP control port ---------------------------------------------------------------------------

class Control:
    """Minimal HTTP/1.1 control server for one proxy (one request per connection)."""

    def __init__(self, proxy: Proxy, port: int = 0):
        self.proxy, self.port, self.server = proxy, port, None

    async def start(self) -> "Control":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            if len(head) > 8192:
                raise ValueError("header too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            url = urllib.parse.urlsplit(target)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            status, body = await self.dispatch(method, url.path, query)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, body = 400, {"error": "bad request"}
        except ConnectionError:
            writer.close()
            return
        data = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def dispatch(self, method: str, path: str, q: dict) -> tuple[int, dict]:
        p = self.proxy
        if path == "/stats":
            return (200, p.stats()) if method in ("GET", "HEAD") else (405, {"error": "use GET"})
        commands = {"/delay", "/pause", "/resume", "/cut-after", "/reset", "/refuse", "/accept", "/heal"}
        if path not in commands:
            return 404, {"error": f"unknown path {path}", "commands": sorted(commands | {"/stats"})}
        if method != "POST":
            return 405, {"error": "use POST"}
        try:
            if path == "/delay":
                p.set_delay(float(q.get("ms", 0)), float(q.get("jitter", 0)))
            elif path == "/pause":
                p.pause()
            elif path == "/resume":
                p.resume()
            elif path == "/cut-after":
                p.set_cut_after(int(q["bytes"]) if q.get("bytes", "") not in ("", "off") else None)
            elif path == "/reset":
                p.reset_all()
            elif path == "/refuse":
                await p.refuse(q.get("mode", "closed"))
            elif path == "/accept":
                await p.accept()
            elif path == "/heal":
                await p.heal()
        except (KeyError, ValueError) as e:
            return 400, {"error": f"bad argument: {e}"}
        return 200, p.stats()


# -- background loop for synchronous callers ---------------------------------------------------

class ProxyThread:
    """An asyncio loop on a daemon thread that hosts proxies for synchronous code."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="faultproxy", daemon=True)
        self.proxies: list[Proxy] = []

    def __enter__(self) -> "ProxyThread":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "ProxyThread":
        self.thread.start()
        return self

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args, timeout: float = 10):
        """Run fn(*args) on the loop thread (awaiting it if it is a coroutine function)."""
        async def go():
            r = fn(*args)
            if asyncio.iscoroutine(r):
                r = await r
            return r
        return self.run(go(), timeout)

    def start_proxy(self, target: tuple[str, int] | list[tuple[str, int]], listen_port: int = 0, seed: int | None = None,
                    name: str = "proxy", sticky: bool = False) -> Proxy:
        p = Proxy(target, ("127.0.0.1", listen_port), seed=seed, name=name, sticky=sticky)
        self.run(p.start())
        self.proxies.append(p)
        return p

    def close(self) -> None:
        if not self.thread.is_alive():
            return

        async def shutdown():
            for p in self.proxies:
                await p.stop()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        try:
            self.run(shutdown(), timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return (host or "127.0.0.1", int(port))


async def _main(args) -> None:
    proxy = await Proxy([_hostport(t) for t in args.target], ("127.0.0.1", args.listen), seed=args.seed,
                        sticky=args.sticky).start()
    control = await Control(proxy, args.control).start()
    print(f"faultproxy listening on 127.0.0.1:{proxy.port} -> {', '.join(args.target)}; "
          f"control http://127.0.0.1:{control.port}/", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("As a module")[0].rstrip())
    ap.add_argument("--listen", type=int, default=0, help="proxy port on 127.0.0.1 (0: pick one and print it)")
    ap.add_argument("--target", required=True, action="append",
                    help="HOST:PORT to forward to; repeat it to spread connections over several in turn")
    ap.add_argument("--sticky", action="store_true",
                    help="with several --target: every connection to the first one that accepts (default: in turn)")
    ap.add_argument("--control", type=int, default=0, help="control HTTP port on 127.0.0.1 (0: pick one)")
    ap.add_argument("--seed", type=int, default=None, help="seed for the delay jitter")
    args = ap.parse_args()
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
