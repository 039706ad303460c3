#!/usr/bin/env python3
"""The least an end-to-end create can take on this machine: the same shape as agent A -> relay
-> agent B, with nothing but the durable writes and the loopback hops.

Three hop processes (A, relay, B) are chained over TCP on 127.0.0.1. The driver sends a small
message to A at a fixed rate; each hop reads it, writes --pages 4 KiB pages into a file of its
own (cyclically into a preallocated file, as SQLite reuses its write-ahead log), syncs the file
(`fdatasync`, what a synced SQLite commit ends with) unless --no-sync, and passes the message
on; B sends it back to the driver, which records the time from its send. No parsing, no JSON,
no database: what is left is disk syncs, thread wake-ups and loopback, so the figures bound
from below what `kanban-sync-bench e2e` can reach with every hop durable.

    python3 Tools/Benchmarks/Floor/e2e_floor.py [--rates 100,1000] [--duration 5] [--pages 1] [--no-sync]

Loopback only; the hop processes end with the run (their sockets close, or they are killed
if the run fails), and their files are removed.
"""
import argparse, os, socket, struct, subprocess, sys, tempfile, threading, time

MESSAGE = struct.Struct("<qq")  # sequence number, send time (CLOCK_MONOTONIC ns, shared by all processes)
PAGE = 4096
FILE_PAGES = 4_096  # 16 MiB, reused from the start when full


def recv_exact(conn, size):
    data = conn.recv(size, socket.MSG_WAITALL)
    return data if len(data) == size else None


def hop(listen_port, next_port, path, pages, sync):
    """One hop: listen, connect to the next hop, say "ready", accept the previous one, then
    forward every message after a durable write."""
    server = socket.create_server(("127.0.0.1", listen_port))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"\0" * (FILE_PAGES * PAGE))  # real blocks, so a write overwrites as in a reused log
    os.fsync(fd)
    out = socket.create_connection(("127.0.0.1", next_port))
    out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("ready", flush=True)
    conn, _ = server.accept()
    server.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    block = os.urandom(PAGE * pages)
    slot = 0
    try:
        while (message := recv_exact(conn, MESSAGE.size)) is not None:
            if slot + pages > FILE_PAGES:
                slot = 0
            os.pwrite(fd, block, slot * PAGE)
            slot += pages
            if sync:
                os.fdatasync(fd)
            out.sendall(message)
    finally:
        os.close(fd)
        out.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(rate, duration, pages, sync, workdir):
    """One run at `rate` messages/s for `duration` s: the latencies in ms, sorted."""
    events = socket.create_server(("127.0.0.1", 0))
    ports = [free_port() for _ in range(3)]
    nexts = ports[1:] + [events.getsockname()[1]]
    hops = []
    try:
        # Last to first: each hop connects to the next one, which listens by the time it says ready.
        for name, port, nxt in reversed(list(zip(("A", "relay", "B"), ports, nexts))):
            p = subprocess.Popen([sys.executable, __file__, "--hop", str(port), str(nxt),
                                  os.path.join(workdir, f"{name}.log"), str(pages), "1" if sync else "0"],
                                 stdout=subprocess.PIPE, text=True)
            hops.append(p)
            if p.stdout.readline().strip() != "ready":
                sys.exit(f"hop {name} did not start; see its error above")
        back, _ = events.accept()
        events.close()
        to_a = socket.create_connection(("127.0.0.1", ports[0]))
        to_a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        time.sleep(0.5)  # every process idle before the first message, as between runs of the real thing
        count = int(rate * duration)
        latencies = []

        def receive():
            for _ in range(count):
                message = recv_exact(back, MESSAGE.size)
                if message is None:
                    return
                latencies.append((time.monotonic_ns() - MESSAGE.unpack(message)[1]) / 1e6)

        receiver = threading.Thread(target=receive)
        receiver.start()
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            to_a.sendall(MESSAGE.pack(i, time.monotonic_ns()))
        receiver.join(timeout=30)
        to_a.close()
        back.close()
        for p in hops:
            p.wait(timeout=20)
        if len(latencies) != count:
            sys.exit(f"only {len(latencies)} of {count} messages came back")
        return sorted(latencies)
    finally:
        # A hop that never got its connection (one failed to start, the driver failed) waits
        # in accept: stop whatever is still running.
        for p in hops:
            if p.poll() is None:
                p.kill()
                p.wait()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--hop":
        listen_port, next_port, path, pages, sync = sys.argv[2:7]
        hop(int(listen_port), int(next_port), path, int(pages), sync == "1")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,1000", help="messages per second, comma-separated (default 100,1000)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per rate (default 5)")
    parser.add_argument("--pages", type=int, default=1, help="4 KiB pages each hop writes per message (default 1)")
    parser.add_argument("--no-sync", action="store_true", help="write without fdatasync")
    args = parser.parse_args()
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        sys.exit(f"--rates: expected numbers separated by commas, got {args.rates!r}")
    if any(r <= 0 for r in rates) or args.duration <= 0 or not 1 <= args.pages <= 256:
        sys.exit("--rates and --duration must be positive, --pages between 1 and 256")
    workdir = tempfile.mkdtemp(prefix="kanban-e2e-floor-", dir=os.environ.get("TMPDIR", "/tmp"))
    sync = not args.no_sync
    print(f"3 hops on 127.0.0.1, each writing {args.pages} x 4 KiB {'and syncing (fdatasync)' if sync else 'without a sync'} "
          f"per message; files in {workdir}")
    print("| msgs/s | messages | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    try:
        for rate in rates:
            lat = measure(rate, args.duration, args.pages, sync, workdir)
            pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]
            print(f"| {rate:g} | {len(lat)} | {pct(0.5):.3f} | {pct(0.9):.3f} | {pct(0.99):.3f} | {lat[-1]:.3f} |", flush=True)
    finally:
        for name in os.listdir(workdir):
            os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)


if __name__ == "__main__":
    main()
