#!/usr/bin/env python3
"""Where one create's end-to-end time goes, hop by hop, from the system calls of the real
processes: `kanban-sync-bench e2e --kanban` runs a relay and agents A and B as `kanban`
processes and creates tasks on A at --rate; while it runs, `perf trace` records the socket
reads and writes, WAL writes and `fdatasync` calls of the four processes (the bench included)
for --trace seconds. Each create is then followed through the trace:

    bench writes the request -> A reads it -> A's writer writes the WAL -> its fdatasync ends
    -> A writes the push -> the relay reads it -> ... -> B writes the event -> the bench reads it

and the time between consecutive steps is summarised over every create found (p10 / p50 /
p90). A chain is kept only if it ends within --max-chain ms (a create whose steps were matched
to a neighbour's is dropped, and counted; so is one whose first WAL write was an unsynced
acknowledgment commit). `perf trace` slows every system call, so totals come out above the
bench's own figures; the split is what this is for. Use a rate at which creates do not
overlap (the default 100/s): at 1,000/s the four tracers load the two cores and consecutive
creates interleave, so most chains are mismatched and dropped.

    python3 Tools/Benchmarks/Floor/hop_timeline.py --kanban .build/release/kanban \\
        --sync-bench .build/release/kanban-sync-bench [--rate 100] [--trace 5]

Needs `perf` (Debian `linux-perf`) and the right to trace the processes (root, or
kernel.perf_event_paranoid <= 1). Loopback only; the bench stops its own processes.
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

CALLS = "fdatasync,pwrite64,write,writev,read"
LINE = re.compile(r"^\s*([\d.]+) \(\s*([\d.]*)(?: ms)?\): (\S+)/\d+ +(?:\.\.\. \[continued\]: )?(\w+)\((.*?)\)\s*(?:= (-?\d+))?")


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid:
                found.append((int(entry), open(f"/proc/{entry}/cmdline").read().replace("\0", " ")))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return found


def parse(path):
    events = []
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        start, duration, comm, call, args, result = m.groups()
        # A call interrupted by another line appears twice; keep the line that has the result.
        if result is not None:
            events.append({"t": float(start), "end": float(start) + float(duration or 0), "comm": comm, "call": call,
                           "args": args, "ret": int(result)})
    return events


def fd(event):
    m = re.search(r"fd: (\d+)", event["args"])
    return int(m.group(1)) if m else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kanban", required=True, help="release build of the kanban executable")
    parser.add_argument("--sync-bench", required=True, help="release build of kanban-sync-bench")
    parser.add_argument("--rate", type=float, default=100, help="creates per second (default 100)")
    parser.add_argument("--trace", type=float, default=5, help="seconds traced (default 5)")
    parser.add_argument("--max-chain", type=float, default=10, help="longest chain kept, ms (default 10)")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf is not installed (Debian: apt-get install linux-perf)")
    if args.rate <= 0 or args.trace <= 0:
        sys.exit("--rate and --trace must be positive")

    duration = args.trace + 8
    bench = subprocess.Popen([args.sync_bench, "e2e", "--kanban", os.path.abspath(args.kanban), "--rates", f"{args.rate:g}",
                              "--duration", f"{duration:g}", "--wait-quiet", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    traces = {}
    try:
        roles = {}
        deadline = time.time() + 30
        while time.time() < deadline and len(roles) < 3:
            time.sleep(0.5)
            for pid, cmd in children(bench.pid):
                if " relay " in f" {cmd} ":
                    roles["relay"] = pid
                elif "agentproc-a" in cmd:
                    roles["A"] = pid
                elif "agentproc-b" in cmd:
                    roles["B"] = pid
        if len(roles) < 3:
            sys.exit(f"the bench did not start its relay and agents within 30 s (found {sorted(roles)})")
        roles["bench"] = bench.pid
        time.sleep(3)  # past the bench's warm-up
        # One `perf trace` per process, so that every event's process is known, also from the
        # dispatch threads that come and go (GRDB's writer queue runs on them).
        tracers = []
        for name, pid in roles.items():
            traces[name] = tempfile.NamedTemporaryFile(prefix=f"kanban-hop-{name}-", suffix=".txt", delete=False).name
            tracers.append(subprocess.Popen(["timeout", "--signal=INT", f"{args.trace:g}", "perf", "trace", "-T", "-p", str(pid),
                                             "-e", CALLS, "-o", traces[name]], stderr=subprocess.DEVNULL))
        for tracer in tracers:
            tracer.wait()
        out, _ = bench.communicate(timeout=duration + 60)
        events = []
        for name, path in traces.items():
            for event in parse(path):
                event["process"] = name
                events.append(event)
        events.sort(key=lambda e: e["t"])
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for path in traces.values():
            if os.path.exists(path):
                os.remove(path)

    def event_loop(e, name):
        return e["process"] == name and e["comm"].startswith("NIO-")

    # Each process's write-ahead log is the file it syncs most (a checkpoint also writes and
    # syncs the database file). GRDB's writer is a serial dispatch queue, so its thread varies.
    log = {}
    for name in ("A", "relay", "B"):
        counts = {}
        for e in events:
            if e["call"] == "fdatasync" and e["process"] == name:
                counts[fd(e)] = counts.get(fd(e), 0) + 1
        if not counts:
            sys.exit(f"no fdatasync from {name} in the trace: is perf allowed to trace these processes?")
        log[name] = max(counts, key=counts.get)

    def wal_write(name):
        # The frames of a commit (a restart's 32-byte log header is written and synced on its own).
        return lambda e: e["process"] == name and e["call"] == "pwrite64" and fd(e) == log[name] and e["ret"] > 32

    def synced(name):
        return lambda e: e["process"] == name and e["call"] == "fdatasync" and fd(e) == log[name]

    def reads(name, least):
        return lambda e: event_loop(e, name) and e["call"] == "read" and e["ret"] >= least

    def writes(name, least, most=1 << 30):
        return lambda e: event_loop(e, name) and e["call"] in ("write", "writev") and least <= e["ret"] <= most

    # The steps of one create, in order; sizes tell messages apart (acks are ~14 bytes, pings
    # and pongs ~20, a one-operation push or ops message ~60-200 compressed, the HTTP request
    # and the event on B's stream ~250-550).
    steps = [
        ("A reads the HTTP request", reads("A", 200), "t"),
        ("A's writer writes the WAL", wal_write("A"), "t"),
        ("A's fdatasync returns", synced("A"), "end"),
        ("A writes the push to the relay", writes("A", 40, 240), "t"),
        ("the relay reads it", reads("relay", 40), "t"),
        ("the relay's writer writes the WAL", wal_write("relay"), "t"),
        ("the relay's fdatasync returns", synced("relay"), "end"),
        ("the relay writes the ops to B", writes("relay", 40, 240), "t"),
        ("B reads them", reads("B", 40), "t"),
        ("B's writer writes the WAL", wal_write("B"), "t"),
        ("B's fdatasync returns", synced("B"), "end"),
        ("B writes the event to the bench", writes("B", 200), "t"),
        ("the bench reads it", reads("bench", 200), "t"),
    ]
    chains, dropped, too_long, unsent = [], 0, 0, 0
    i = 0
    while True:
        start = next((k for k in range(i, len(events)) if steps[0][1](events[k])), None)
        if start is None:
            break
        sent = next((events[k]["t"] for k in range(start, -1, -1)
                     if events[k]["process"] == "bench" and events[k]["call"] in ("write", "writev") and events[k]["ret"] >= 200), None)
        times, k = [], start
        for _, match, field in steps:
            k = next((j for j in range(k, len(events)) if match(events[j])), None)
            if k is None:
                break
            times.append(events[k][field])
        if k is None:
            break
        if sent is None:
            unsent += 1
        elif times[-1] - sent > args.max_chain:
            too_long += 1
        elif any(b < a for a, b in zip(times, times[1:])):
            dropped += 1
        else:
            chains.append([sent] + times)
        i = start + 1
    if not chains:
        sys.exit(f"no complete chain found ({too_long} longer than --max-chain, {dropped} out of order, {unsent} without the bench's write)")
    names = ["the bench writes the request"] + [s[0] for s in steps]
    print(f"{len(chains)} creates followed at {args.rate:g}/s over {args.trace:g} s of trace (dropped: {too_long} longer "
          f"than {args.max_chain:g} ms, {dropped} out of order, {unsent} without the bench's write); time from the previous step, ms:\n")
    print("| step | p10 | p50 | p90 |")
    print("|---|---|---|---|")
    for n in range(1, len(names)):
        gaps = sorted(c[n] - c[n - 1] for c in chains)
        pick = lambda q: gaps[min(len(gaps) - 1, int(len(gaps) * q))]
        print(f"| {names[n]} | {pick(0.1):.3f} | {statistics.median(gaps):.3f} | {pick(0.9):.3f} |")
    totals = sorted(c[-1] - c[0] for c in chains)
    print(f"| **request written → event read** | {totals[len(totals) // 10]:.3f} | {statistics.median(totals):.3f} | "
          f"{totals[min(len(totals) - 1, len(totals) * 9 // 10)]:.3f} |")
    print("\nThe bench's own table for the same run (perf trace attached for part of it):\n")
    print("\n".join(line for line in out.splitlines() if line.startswith("|")))


if __name__ == "__main__":
    main()
