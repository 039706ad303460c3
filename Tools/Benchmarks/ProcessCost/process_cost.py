#!/usr/bin/env python3
"""What one created task costs each process: a `kanban relay` and two `kanban agent`s (A and B,
both syncing through the relay) run as real processes; one keep-alive HTTP connection creates
tasks on A at a fixed rate, one at a time. For each process it prints CPU time and context
switches per created task (from /proc, over the load window), and A's HTTP latency.

    python3 Tools/Benchmarks/ProcessCost/process_cost.py --kanban .build/release/kanban --rate 1000 --duration 5

Loopback only; every process it starts is stopped by PID before it exits.
"""
import argparse, http.client, json, os, shutil, socket, subprocess, sys, tempfile, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total


def request(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def wait_for_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port}; see the process's output above")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kanban", required=True, help="a release build of the kanban executable")
    parser.add_argument("--rate", type=float, default=1000, help="creates per second (default 1000)")
    parser.add_argument("--duration", type=float, default=5, help="seconds of load (default 5)")
    args = parser.parse_args()
    if args.rate <= 0 or args.duration <= 0:
        sys.exit("--rate and --duration must be positive")
    base = tempfile.mkdtemp(prefix="kanban-process-cost-")
    procs = {}
    try:
        relay_port, a_port, b_port = free_port(), free_port(), free_port()
        relay_dir = os.path.join(base, "relay")
        os.makedirs(relay_dir)
        token = subprocess.check_output([args.kanban, "relay", "token", "create", "--data", relay_dir, "--team", "t"]).decode().strip()
        procs["relay"] = subprocess.Popen([args.kanban, "relay", "--port", str(relay_port), "--data", relay_dir, "--host", "127.0.0.1",
                                           "--log-level", "error"], stdout=subprocess.DEVNULL)
        wait_for_port(relay_port, time.time() + 20)
        for name, port in (("A", a_port), ("B", b_port)):
            procs[name] = subprocess.Popen([args.kanban, "agent", "--port", str(port), "--data", os.path.join(base, name),
                                            "--relay", f"ws://127.0.0.1:{relay_port}/sync", "--token", token,
                                            "--log-level", "error"], stdout=subprocess.DEVNULL)
            wait_for_port(port, time.time() + 20)
        conn = http.client.HTTPConnection("127.0.0.1", a_port)
        status, body = request(conn, "POST", "/api/boards", {"title": "process cost"})
        board = json.loads(body)["id"]
        status, body = request(conn, "POST", f"/api/boards/{board}/columns", {"title": "Todo"})
        column = json.loads(body)["id"]
        time.sleep(1)  # the board reaches B; the agents go quiet
        before = {name: (cpu_seconds(p.pid), context_switches(p.pid)) for name, p in procs.items()}
        count = int(args.rate * args.duration)
        start = time.time()
        latencies, failures = [], 0
        for i in range(count):
            delay = start + i / args.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            t = time.perf_counter()
            status, _ = request(conn, "POST", f"/api/columns/{column}/tasks", {"title": f"task {i}", "description": "a few words"})
            latencies.append(time.perf_counter() - t)
            failures += status != 201
        time.sleep(1)  # what is still in flight reaches B
        after = {name: (cpu_seconds(p.pid), context_switches(p.pid)) for name, p in procs.items()}
        status, body = request(http.client.HTTPConnection("127.0.0.1", b_port), "GET", f"/api/boards/{board}")
        on_b = sum(len(c["tasks"]) for c in json.loads(body)["columns"])
        latencies.sort()
        pct = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000
        print(f"{count} creates on A at {args.rate:g}/s ({failures} failed, {on_b} on B): "
              f"A's HTTP p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms")
        print("| process | CPU ms per create | context switches per create |")
        print("|---|---|---|")
        for name in procs:
            cpu = after[name][0] - before[name][0]
            switches = after[name][1] - before[name][1]
            print(f"| {name} | {cpu / count * 1000:.3f} | {switches / count:.1f} |")
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
