#!/usr/bin/env python3
"""Self-test of faultproxy.py against a local echo server: python3 Tools/faultproxy/test_faultproxy.py"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultproxy  # noqa: E402


class Echo:
    """A threaded TCP echo server on 127.0.0.1 (optionally a byte sink that echoes nothing)."""

    def __init__(self, sink=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sink = sink
        self.received = 0
        self.stop_reading = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        with c:
            while True:
                if self.stop_reading.is_set():
                    time.sleep(0.01)
                    continue
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                self.received += len(d)
                if not self.sink:
                    try:
                        c.sendall(d)
                    except OSError:
                        return

    def close(self):
        self.sock.close()


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return out


class ProxyTests(unittest.TestCase):
    def setUp(self):
        self.echo = Echo()
        self.t = faultproxy.ProxyThread().start()
        self.p = self.t.start_proxy(("127.0.0.1", self.echo.port), seed=1)

    def tearDown(self):
        self.t.close()
        self.echo.close()

    def test_forwards_both_ways(self):
        s = connect(self.p.port)
        payload = os.urandom(200_000)
        threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
        self.assertEqual(recv_exact(s, len(payload)), payload)
        s.close()
        st = self.t.call(self.p.stats)
        self.assertEqual(st["connections"], 1)
        self.assertEqual(st["bytes"]["up"], len(payload))
        self.assertEqual(st["bytes"]["down"], len(payload))

    def test_delay_with_jitter_keeps_order(self):
        s = connect(self.p.port)
        s.sendall(b"x"); recv_exact(s, 1)                   # connected
        self.t.call(self.p.set_delay, 150, 50)
        start = time.monotonic()
        s.sendall(b"hello")
        self.assertEqual(recv_exact(s, 5), b"hello")
        rtt = time.monotonic() - start
        self.assertGreaterEqual(rtt, 0.19)                  # two hops of >= 100 ms
        for i in range(20):                                  # order kept under jitter
            s.sendall(b"%03d" % i)
        self.assertEqual(recv_exact(s, 60), b"".join(b"%03d" % i for i in range(20)))
        self.assertEqual(self.t.call(self.p.stats)["faults"]["delay"], 1)

    def test_pause_holds_bytes_and_is_bounded(self):
        sink = Echo(sink=True)
        p = self.t.start_proxy(("127.0.0.1", sink.port))
        s = connect(p.port)
        s.sendall(b"a" * 10); time.sleep(0.1)
        self.t.call(p.pause)
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:                   # fill until TCP pushes back
            try:
                sent += s.send(b"b" * 65536)
            except BlockingIOError:
                time.sleep(0.05)
                try:
                    sent += s.send(b"b" * 65536)
                except BlockingIOError:
                    break
        self.assertLess(time.monotonic(), deadline, "sender was never blocked")
        st = self.t.call(p.stats)
        self.assertTrue(st["state"]["paused"])
        self.assertEqual(st["bytes"]["up"], 10)              # nothing moved while paused
        self.assertEqual(sink.received, 10)
        self.t.call(p.resume)
        deadline = time.monotonic() + 10
        while sink.received < sent + 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(sink.received, sent + 10)
        s.close(); sink.close()

    def test_cut_after_bytes(self):
        s = connect(self.p.port)
        s.sendall(b"x"); recv_exact(s, 1)
        self.t.call(self.p.set_cut_after, 100)
        s.sendall(b"y" * 60)
        got = recv_exact(s, 60)                              # 60 up + 40 down = 100, then closed
        self.assertEqual(got, b"y" * 40)
        # New connections are cut too.
        s2 = connect(self.p.port)
        s2.sendall(b"z" * 200)
        got2 = recv_exact(s2, 200)
        self.assertEqual(len(got2), 0)                       # all 100 bytes spent upstream
        self.assertEqual(self.t.call(self.p.stats)["faults"]["cut"], 2)
        self.t.call(self.p.set_cut_after, None)
        s3 = connect(self.p.port)
        s3.sendall(b"ok"); self.assertEqual(recv_exact(s3, 2), b"ok")

    def test_reset_sends_rst(self):
        s = connect(self.p.port)
        s.sendall(b"x"); recv_exact(s, 1)
        self.assertEqual(self.t.call(self.p.reset_all), 1)
        with self.assertRaises(ConnectionResetError):
            for _ in range(50):
                s.sendall(b"x")
                if not s.recv(10):
                    break
                time.sleep(0.02)
            s.recv(10)

    def test_refuse_and_accept(self):
        s = connect(self.p.port)
        s.sendall(b"x"); recv_exact(s, 1)
        self.t.call(self.p.refuse)
        with self.assertRaises(ConnectionRefusedError):
            connect(self.p.port)
        s.sendall(b"still"); self.assertEqual(recv_exact(s, 5), b"still")   # existing ones live
        self.t.call(self.p.refuse, "rst")
        with self.assertRaises((ConnectionResetError, BrokenPipeError)):
            c = connect(self.p.port)                          # may already fail here
            c.sendall(b"x"); time.sleep(0.1); c.sendall(b"x")
            if not c.recv(1):
                raise ConnectionResetError
        self.t.call(self.p.accept)
        s2 = connect(self.p.port)
        s2.sendall(b"back"); self.assertEqual(recv_exact(s2, 4), b"back")
        st = self.t.call(self.p.stats)
        self.assertEqual(st["faults"]["refuse"], 1)
        self.assertGreaterEqual(st["faults"]["refused"], 1)

    def test_target_down_resets_client(self):
        free = socket.socket(); free.bind(("127.0.0.1", 0)); dead = free.getsockname()[1]; free.close()
        p = self.t.start_proxy(("127.0.0.1", dead))
        try:
            # The reset can arrive before connect() returns (seen on a loaded machine) or after.
            c = connect(p.port)
            self.assertEqual(c.recv(10), b"")
            c.close()
        except ConnectionResetError:
            pass
        self.assertEqual(self.t.call(p.stats)["open"], 0)

    def test_several_targets_in_turn_then_the_live_ones(self):
        other = Echo()
        free = socket.socket(); free.bind(("127.0.0.1", 0)); dead = free.getsockname()[1]; free.close()
        p = self.t.start_proxy([("127.0.0.1", self.echo.port), ("127.0.0.1", other.port), ("127.0.0.1", dead)])
        try:
            # Each new connection starts at the next target; the dead one passes its turn on.
            for i in range(6):
                s = connect(p.port)
                s.sendall(b"%d" % i); self.assertEqual(recv_exact(s, 1), b"%d" % i)
                s.close()
            self.assertEqual((self.echo.received, other.received), (4, 2))
            st = self.t.call(p.stats)
            self.assertEqual(st["byTarget"], {f"127.0.0.1:{self.echo.port}": 4, f"127.0.0.1:{other.port}": 2,
                                              f"127.0.0.1:{dead}": 0})
            self.assertEqual(st["connections"], 6)
        finally:
            other.close()

    def test_sticky_targets_take_the_first_that_accepts(self):
        other = Echo()
        free = socket.socket(); free.bind(("127.0.0.1", 0)); dead = free.getsockname()[1]; free.close()
        p = self.t.start_proxy([("127.0.0.1", dead), ("127.0.0.1", other.port), ("127.0.0.1", self.echo.port)], sticky=True)
        try:
            for i in range(4):                               # the dead one is skipped, the second takes all
                s = connect(p.port)
                s.sendall(b"%d" % i); self.assertEqual(recv_exact(s, 1), b"%d" % i)
                s.close()
            self.assertEqual((other.received, self.echo.received), (4, 0))
            self.assertTrue(self.t.call(p.stats)["sticky"])
        finally:
            other.close()


class ControlPortTest(unittest.TestCase):
    def test_cli_and_control(self):
        echo = Echo()
        proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "faultproxy.py"),
                                 "--target", f"127.0.0.1:{echo.port}"], stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            m = re.search(r"listening on 127\.0\.0\.1:(\d+) .* control http://127\.0\.0\.1:(\d+)/", line)
            self.assertIsNotNone(m, line)
            port, control = int(m.group(1)), int(m.group(2))

            def post(path):
                req = urllib.request.Request(f"http://127.0.0.1:{control}{path}", method="POST")
                with urllib.request.urlopen(req, timeout=5) as r:
                    return json.load(r)

            s = connect(port); s.sendall(b"hi"); self.assertEqual(recv_exact(s, 2), b"hi")
            self.assertEqual(post("/delay?ms=50&jitter=10")["state"]["delayMs"], 50)
            self.assertTrue(post("/pause")["state"]["paused"])
            self.assertFalse(post("/resume")["state"]["paused"])
            self.assertEqual(post("/cut-after?bytes=1000")["state"]["cutAfter"], 1000)
            self.assertEqual(post("/reset")["faults"]["reset"], 1)
            self.assertEqual(post("/refuse")["state"]["refusing"], "closed")
            st = post("/heal")
            self.assertEqual(st["state"], {"delayMs": 0, "jitterMs": 0, "paused": False, "cutAfter": None, "refusing": None})
            with urllib.request.urlopen(f"http://127.0.0.1:{control}/stats", timeout=5) as r:
                st = json.load(r)
            self.assertEqual(st["connections"], 1)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{control}/pause", timeout=5)
            self.assertEqual(e.exception.code, 405)
            with self.assertRaises(urllib.error.HTTPError) as e:
                post("/cut-after?bytes=x")
            self.assertEqual(e.exception.code, 400)
            s2 = connect(port); s2.sendall(b"ok"); self.assertEqual(recv_exact(s2, 2), b"ok")
        finally:
            proc.terminate()
            proc.wait(5)
            echo.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
