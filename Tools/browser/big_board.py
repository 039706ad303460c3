#!/usr/bin/env python3
"""How the web board copes with a large board: one `kanban agent` (release build recommended)
with --tasks tasks over 5 columns, opened in headless Chromium. Prints, as a markdown table:

  * how long the page's first render of the board took (the longest main-thread task, from the
    browser's Long Tasks API) and when every task was in the page;
  * for --live tasks created over the API one after another: when the event reached the page and
    when the task was in the page (a MutationObserver's time, on the page's own clock);
  * for a burst of --burst tasks created by 8 concurrent clients (as when a teammate imports a
    list, or this agent catches up after a reconnect): when all of them were in the page, how
    many renders that took (app.js measures each) and how long the page was frozen meanwhile
    (the gaps between its animation frames longer than 50 ms).

    KANBAN_BIN=.build/release/kanban Tools/browser/.venv/bin/python Tools/browser/big_board.py --tasks 5000

Loopback only; the agent it starts is stopped by PID before it exits, and every wait is bounded.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import sys
import tempfile
import time

from playwright.sync_api import sync_playwright

from board_test import CHROMIUM, KANBAN_BIN, Agent

# Counts the page's long tasks and when each event-stream message arrived (page clock, ms).
PROBES = """
  window.__long = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__long.push([Math.round(e.startTime), Math.round(e.duration)]);
  }).observe({ type: 'longtask', buffered: true });
  // When the board is on screen: the start of the animation frame after the first one at which
  // every one of the board's tasks is in the page (frame callbacks run before that frame's
  // style, layout and paint, so the next frame's start is when those were done).
  window.__allShownAt = null;
  const watchFrames = () => {
    if (window.__expectTasks && document.querySelectorAll('#column-list [data-testid="task"]').length >= window.__expectTasks) {
      requestAnimationFrame((t) => { window.__allShownAt = performance.now(); });
    } else requestAnimationFrame(watchFrames);
  };
  requestAnimationFrame(watchFrames);
  window.__events = [];
  const Native = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    ws.addEventListener('message', (e) => {
      try { const m = JSON.parse(e.data); window.__events.push([performance.now(), m.type, m.task?.title]); } catch {}
    });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, Native);
"""

# Resolves with the page time at which `count` cards whose title starts with `prefix` have been
# added to the board (or null after 30 s). Reads only the added nodes, so it costs the page little.
WATCH_ADDED = """([prefix, count]) => { window.__seen = new Promise((resolve) => {
  const added = new Set();
  const observer = new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      if (n.dataset?.testid === 'task' && n.querySelector('[data-testid="task-title"]')?.textContent.startsWith(prefix)) added.add(n.dataset.id);
    }
    if (added.size >= count) { observer.disconnect(); resolve(performance.now()); }
  });
  observer.observe(document.getElementById('column-list'), { subtree: true, childList: true });
  setTimeout(() => { observer.disconnect(); resolve(null); }, 30000);
}); }"""

# Records the time between the page's animation frames from now on (window.__gaps, ms); a frame
# that comes more than 50 ms after the one before means the page was frozen that long.
FRAME_GAPS = """() => { window.__gaps = []; let last = performance.now();
  const tick = (t) => { window.__gaps.push(t - last); last = t; if (!window.__stopFrames) requestAnimationFrame(tick); };
  requestAnimationFrame(tick); }"""

# The page's renders of the board (app.js measures each) that started at or after page time t.
RENDERS = "(t) => performance.getEntriesByName('kanban:render').filter((e) => e.startTime >= t).map((e) => e.duration)"

# Resolves with the page time at which a task titled `title` is in the board (or null after 30 s).
WATCH = """(title) => { window.__seen = new Promise((resolve) => {
  const has = () => [...document.querySelectorAll('[data-testid="task-title"]')].some((e) => e.textContent === title);
  const observer = new MutationObserver(() => { if (has()) { observer.disconnect(); resolve(performance.now()); } });
  observer.observe(document.getElementById('column-list'), { subtree: true, childList: true, characterData: true });
  setTimeout(() => { observer.disconnect(); resolve(null); }, 30000);
}); }"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks on the board (default 5000)")
    parser.add_argument("--live", type=int, default=5, help="tasks then created one at a time and timed (default 5)")
    parser.add_argument("--burst", type=int, default=200, help="tasks then created at once by 8 clients (default 200; 0: none)")
    args = parser.parse_args()
    if args.tasks < 1 or args.live < 1 or args.burst < 0:
        parser.error("--tasks and --live must be at least 1, --burst at least 0")

    data_dir = tempfile.mkdtemp(prefix="kanban-big-board-")
    agent = None
    try:
        agent = Agent(data_dir)
        board = agent.api("POST", "/api/boards", {"title": "Big board"})
        columns = [agent.api("POST", f"/api/boards/{board['id']}/columns", {"title": f"Column {i + 1}"})["id"] for i in range(5)]
        started = time.monotonic()
        for i in range(args.tasks):
            agent.api("POST", f"/api/columns/{columns[i % 5]}/tasks", {"title": f"Task {i}", "description": "A few words of description."})
        print(f"[big-board] {args.tasks} tasks created in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True, timeout=20000)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                page.add_init_script(f"window.__expectTasks = {args.tasks};" + PROBES)
                page.goto(f"{agent.base}/?board={board['id']}", timeout=20000)
                deadline = time.monotonic() + 180
                while page.evaluate("document.querySelectorAll('[data-testid=\"task\"]').length") < args.tasks:
                    if time.monotonic() > deadline:
                        print("the page did not show every task within 180 s", file=sys.stderr)
                        return 1
                    time.sleep(0.2)
                shown = page.evaluate("performance.now()")
                page.wait_for_function("window.__allShownAt !== null", timeout=30000)
                frame = page.evaluate("window.__allShownAt")
                longest = max((d for _, d in page.evaluate("window.__long")), default=0)
                snapshot_at = next((t for t, kind, _ in page.evaluate("window.__events") if kind == "snapshot"), None)

                rows = []
                for i in range(args.live):
                    title = f"Live {i}"
                    page.evaluate(WATCH, title)
                    sent = page.evaluate("performance.now()")
                    agent.api("POST", f"/api/columns/{columns[0]}/tasks", {"title": title})
                    seen = page.evaluate("window.__seen")
                    arrived = next((t for t, kind, t_title in page.evaluate("window.__events")
                                    if kind == "task:created" and t_title == title), None)
                    rows.append((arrived - sent if arrived else None, seen - sent if seen else None,
                                 max(page.evaluate(RENDERS, sent), default=None)))
                    time.sleep(0.2)

                burst = None
                if args.burst:
                    page.evaluate(WATCH_ADDED, ["Burst ", args.burst])
                    page.evaluate(FRAME_GAPS)
                    sent = page.evaluate("performance.now()")
                    sent_here = time.monotonic()
                    with concurrent.futures.ThreadPoolExecutor(8) as pool:
                        list(pool.map(lambda i: agent.api("POST", f"/api/columns/{columns[i % 5]}/tasks", {"title": f"Burst {i}"}),
                                      range(args.burst)))
                    posted = (time.monotonic() - sent_here) * 1000  # here: a frozen page answers late
                    seen = page.evaluate("window.__seen")
                    count = page.evaluate("[...document.querySelectorAll('[data-testid=\"task-title\"]')].filter((e) => e.textContent.startsWith('Burst ')).length")
                    page.wait_for_timeout(100)
                    gaps = page.evaluate("window.__stopFrames = true; window.__gaps")
                    renders = page.evaluate(RENDERS, sent)
                    burst = (posted, seen - sent if seen else None, count,
                             sum(g for g in gaps if g > 50), max(gaps, default=0), renders)
            finally:
                browser.close()
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    def ms(v):
        return "not within 30 s" if v is None else f"{v:.0f}"

    print(f"\n### Web board with {args.tasks:,} tasks ({KANBAN_BIN})\n")
    print("| measure | ms |\n|---|---|")
    print(f"| snapshot received → every task in the page (polled every 200 ms) | {ms(shown - snapshot_at) if snapshot_at else '-'} |")
    print(f"| snapshot received → the board on screen (the frame after the first with every task) | {ms(frame - snapshot_at) if snapshot_at else '-'} |")
    print(f"| longest main-thread task (the first render) | {longest} |")
    for i, (arrived, seen, render) in enumerate(rows):
        print(f"| live create {i + 1}: POST → event in the page / task in the page / its render | {ms(arrived)} / {ms(seen)} / {'-' if render is None else f'{render:.0f}'} |")
    if burst:
        posted, seen, count, frozen, longest, renders = burst
        print(f"| burst of {args.burst:,} creates (8 clients): every POST answered / every task in the page | {ms(posted)} / {ms(seen)} |")
        print(f"| burst: renders of the board, count / total / longest | {len(renders)} / {ms(sum(renders))} / {ms(max(renders, default=0))} |")
        print(f"| burst: frozen (time between animation frames more than 50 ms apart, sum / longest) | {frozen:.0f} / {longest:.0f} |")
        if count != args.burst:
            print(f"the page shows {count} of the burst's {args.burst} tasks", file=sys.stderr)
    return 0 if all(seen is not None for _, seen, _ in rows) and (not burst or (burst[1] is not None and burst[2] == args.burst)) else 1


if __name__ == "__main__":
    sys.exit(main())
