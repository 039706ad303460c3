#!/usr/bin/env python3
"""Headless Chromium test of the web board.

Starts `kanban agent --port 0` on a temporary data directory, makes a board with two columns
through the HTTP API and opens it in two independent pages, A and B. In page A it creates a
task, edits its title, drags it into the other column and deletes it; page B restores it from
its Trash panel; page A deletes that column, page B moves one of its recovered tasks back into a
column, and page A restores the column. After each step it checks that the other page shows the
change within 1 s (printing each latency, measured from the step's last input) and that both
pages show exactly what `GET /api/boards/{id}` says. Saves a screenshot to artifacts/board.png.

Then the relay outage: a `kanban relay` and an agent syncing through it, one page. The relay is
SIGKILLed: the always-visible relay indicator turns to reconnecting, an edit made offline is
queued, and the troubleshooting panel shows the classified failure in plain words with its fix
and the queued count (screenshot: artifacts/relay-outage.png). The relay restarts on the same
port and data; "Reconnect now" reconnects before the agent's own next try, and the queue drains.
Long-polling behind a proxy that drops `Upgrade` and a board the relay refuses are shown as
such. Last, a burst: 201 changes from another agent are drawn at most once per animation frame
and end equal to the agent's board, while that agent's page edits a task ("editing" on its card).
And a conflict (one task renamed on two agents while the relay is down) is described in words
in the Conflicts panel, and its Restore brings the lost title back everywhere.

Prints `browser: N passed, M failed` last and exits non-zero on any failure. Every wait is for a
condition, with a timeout.

Run it with Tools/browser/run.sh, which installs Chromium and Playwright if missing.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
KANBAN_BIN = Path(os.environ.get("KANBAN_BIN") or ROOT / ".build/debug/kanban")
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
LATENCY_LIMIT_S = 1.0
WAIT_S = 5.0  # how long to wait for a change before calling it missing (the limit is checked apart)
TEST_DEADLINE_S = 150.0
RUNNING: list = []  # every process started, so the watchdog can stop them


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {name}{f' ({detail})' if detail else ''}", flush=True)
        else:
            self.failed += 1
            print(f"  FAIL  {name}{f': {detail}' if detail else ''}", flush=True)
        return ok


class KanbanProcess:
    """A `kanban` subprocess that prints a line matching `ready` once it listens; stopped by PID."""

    def __init__(self, args: list[str], ready: str, what: str, program: list[str] | None = None) -> None:
        self.log: list[str] = []
        self.what = what
        self.proc = subprocess.Popen(
            [*(program or [str(KANBAN_BIN)]), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )
        RUNNING.append(self)
        self._ready_pattern = re.compile(ready)
        self.match: re.Match | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(15) or self.match is None:
            self.stop()
            raise RuntimeError(f"{what} did not print {ready!r} within 15 s:\n" + self.tail())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # drained to the end so the pipe never fills
            self.log.append(line.rstrip())
            m = self._ready_pattern.search(line)
            if m and self.match is None:
                self.match = m
                self._ready.set()
        self._ready.set()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash or a power cut."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


class Agent(KanbanProcess):
    """`kanban agent --port 0 --data DIR [ARGS]`."""

    def __init__(self, data_dir: str, args: tuple[str, ...] = ()) -> None:
        super().__init__(["agent", "--port", "0", "--data", data_dir, *args],
                         r"Board: http://127\.0\.0\.1:(\d+)/", "agent")
        self.base = f"http://127.0.0.1:{self.match.group(1)}"

    def api(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")


class Relay(KanbanProcess):
    """`kanban relay --port PORT --data DIR` (PORT 0: a free one)."""

    def __init__(self, data_dir: str, port: int = 0) -> None:
        super().__init__(["relay", "--port", str(port), "--data", data_dir],
                         r"listening on ws://\S+:(\d+)/sync", "relay")
        self.port = int(self.match.group(1))
        self.url = f"ws://127.0.0.1:{self.port}/sync"


class StripUpgradeProxy(KanbanProcess):
    """Tools/diagnostics/strip_upgrade_proxy.py in front of a relay: WebSocket upgrades fail, plain HTTP passes."""

    def __init__(self, relay_port: int) -> None:
        super().__init__(["0", str(relay_port)], r"listening (\d+)", "proxy",
                         program=[sys.executable, str(ROOT / "Tools/diagnostics/strip_upgrade_proxy.py")])
        self.url = f"ws://127.0.0.1:{self.match.group(1)}/sync"


def make_token(relay_dir: str, *args: str) -> str:
    """`kanban relay token create --data RELAY_DIR --team browser [ARGS]`: the token alone."""
    return subprocess.run([str(KANBAN_BIN), "relay", "token", "create", "--data", relay_dir, "--team", "browser", *args],
                          capture_output=True, text=True, timeout=15, check=True).stdout.strip()


def poll(what: str, condition, timeout: float, interval: float = 0.05):
    """Calls `condition` until it returns something truthy (returned) or `timeout` s pass (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# What a page shows, in the board document's shape (IDs and titles in order).
PAGE_STATE_JS = """() => ({
  columns: [...document.querySelectorAll('#column-list > [data-testid="column"]')].map(c => ({
    id: c.dataset.id,
    title: c.querySelector('[data-testid="column-title"]').textContent,
    tasks: [...c.querySelectorAll('[data-testid="task"]')].map(t => ({
      id: t.dataset.id, title: t.querySelector('[data-testid="task-title"]').textContent,
      description: t.querySelector('[data-testid="task-description"]').textContent })),
  })),
  orphans: [...document.querySelectorAll('[data-testid="orphan"]')].map(t => t.dataset.id),
  trash: [...document.querySelectorAll('[data-testid="trash-task"]')].map(t => t.dataset.id),
})"""


def document_state(doc: dict) -> dict:
    return {
        "columns": [{"id": c["id"], "title": c["title"],
                     "tasks": [{"id": t["id"], "title": t["title"], "description": t["description"]} for t in c["tasks"]]}
                    for c in doc["columns"]],
        "orphans": [t["id"] for t in doc["orphans"]],
        "trash": [t["id"] for t in doc["trash"]],
    }


def task_selector(task_id: str, column_id: str | None = None) -> str:
    scope = f'[data-testid="column"][data-id="{column_id}"] ' if column_id else ""
    return f'{scope}[data-testid="task"][data-id="{task_id}"]'


def wait_until(page: Page, predicate_js: str, arg) -> float:
    """Waits until `predicate_js(arg)` is true in `page`; returns the monotonic time it was seen."""
    page.wait_for_function(predicate_js, arg=arg, timeout=WAIT_S * 1000, polling=5)
    return time.monotonic()


def page_state_when(page: Page, expected: dict) -> dict:
    """What `page` shows (PAGE_STATE_JS), once it equals `expected` or after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        shown = page.evaluate(PAGE_STATE_JS)
        if shown == expected or time.monotonic() >= deadline:
            return shown
        time.sleep(0.01)


def launch(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True, timeout=20000)


def open_board(browser, base: str, board_id: str, page_errors: list[str]) -> Page:
    """A new page on an agent's board; JavaScript errors and console errors go to `page_errors`."""
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(10000)
    page.on("pageerror", lambda e: page_errors.append(f"{e}"))
    page.on("console", lambda m: m.type == "error" and page_errors.append(f"console: {m.text}"))
    page.goto(f"{base}/?board={board_id}", timeout=10000)
    return page


def two_pages_test(checks: Checks) -> None:
    """Two pages on one agent: every edit in one shows in the other within 1 s."""
    data_dir = tempfile.mkdtemp(prefix="kanban-browser-")
    agent: Agent | None = None
    latencies: dict[str, float] = {}
    page_errors: list[str] = []
    try:
        agent = Agent(data_dir)
        print(f"agent at {agent.base} (pid {agent.proc.pid}, data {data_dir})", flush=True)
        board = agent.api("POST", "/api/boards", {"title": "Browser test"})
        todo = agent.api("POST", f"/api/boards/{board['id']}/columns", {"title": "To do"})
        done = agent.api("POST", f"/api/boards/{board['id']}/columns", {"title": "Done", "after": todo["id"]})
        alpha = agent.api("POST", f"/api/columns/{done['id']}/tasks", {"title": "Alpha"})
        beta = agent.api("POST", f"/api/columns/{done['id']}/tasks", {"title": "Beta", "after": alpha["id"]})
        url = f"{agent.base}/?board={board['id']}"

        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                pages: dict[str, Page] = {}
                for name in ("A", "B"):
                    # Separate contexts: two independent visitors, as two people would be.
                    context = browser.new_context(viewport={"width": 1360, "height": 720})
                    page = context.new_page()
                    page.set_default_timeout(WAIT_S * 1000)
                    page.on("pageerror", lambda e, n=name: page_errors.append(f"page {n}: {e}"))
                    page.on("console", lambda m, n=name: m.type == "error" and page_errors.append(f"page {n} console: {m.text}"))
                    page.goto(url, timeout=10000)
                    pages[name] = page
                a, b = pages["A"], pages["B"]
                for name, page in pages.items():
                    page.wait_for_selector('[data-testid="stream-status"][data-state="live"]')
                    page.wait_for_selector(task_selector(beta["id"], done["id"]))
                checks.check("both pages open the board live from /?board=ID",
                             all(p.url == url for p in pages.values()) and
                             a.evaluate(PAGE_STATE_JS) == document_state(agent.api("GET", f"/api/boards/{board['id']}")))

                def step(name: str, prepare, trigger, predicate_js: str, arg, expect, other: Page = b) -> None:
                    """Runs `prepare` then `trigger` in one page; measures from the trigger until `other` shows it."""
                    prepare()
                    t0 = time.monotonic()
                    trigger()
                    try:
                        seen = wait_until(other, predicate_js, arg)
                        latency = seen - t0
                        latencies[name] = latency
                        checks.check(f"{name}: the other page shows it within {LATENCY_LIMIT_S:.0f} s",
                                     latency <= LATENCY_LIMIT_S, f"{latency * 1000:.0f} ms")
                    except PlaywrightError as error:
                        checks.check(f"{name}: the other page shows it", False, f"not within {WAIT_S:.0f} s: {error.message.splitlines()[0]}")
                    doc = agent.api("GET", f"/api/boards/{board['id']}")
                    expected = document_state(doc)
                    problems = []
                    if not expect(doc):
                        problems.append(f"API document is not as expected: {json.dumps(expected)}")
                    for page_name, page in pages.items():
                        # The page that acted gets the change from the same event stream as the
                        # other one, a moment before or after it: give it the same WAIT_S.
                        shown = page_state_when(page, expected)
                        if shown != expected:
                            problems.append(f"page {page_name} shows {json.dumps(shown)}, API says {json.dumps(expected)}")
                    checks.check(f"{name}: API state matches and both pages show it", not problems, "; ".join(problems))

                def column_tasks(doc: dict, column_id: str) -> list[tuple[str, str]]:
                    column = next(c for c in doc["columns"] if c["id"] == column_id)
                    return [(t["id"], t["title"]) for t in column["tasks"]]

                # 1. Create a task at the top of "To do".
                title = "Write the spec"

                new_task_input = f'[data-testid="column"][data-id="{todo["id"]}"] [data-testid="new-task-input"]'

                def create() -> None:
                    a.click(f'[data-testid="column"][data-id="{todo["id"]}"] [data-testid="add-task"]')
                    a.fill(new_task_input, title)

                step("create", create, lambda: a.press(new_task_input, "Enter"),
                     """([c, title]) => [...document.querySelectorAll(`[data-testid="column"][data-id="${c}"] [data-testid="task-title"]`)]
                          .some(e => e.textContent === title)""",
                     [todo["id"], title],
                     lambda doc: [t for _, t in column_tasks(doc, todo["id"])] == [title])
                doc = agent.api("GET", f"/api/boards/{board['id']}")
                task_id = column_tasks(doc, todo["id"])[0][0]
                a.keyboard.press("Escape")  # close the still-open "add another" form

                # 2. Edit its title (and description) inline.
                new_title = "Write the spec (v2)"
                description = "Cover the API and the board."

                def edit() -> None:
                    a.click(f"{task_selector(task_id)} [data-testid=task-title]")
                    a.fill(f"{task_selector(task_id)} [data-testid=edit-title-input]", new_title)
                    a.fill(f"{task_selector(task_id)} [data-testid=edit-description-input]", description)

                step("edit", edit, lambda: a.press(f"{task_selector(task_id)} [data-testid=edit-title-input]", "Enter"),
                     """([t, title]) => document.querySelector(`[data-testid="task"][data-id="${t}"] [data-testid="task-title"]`)?.textContent === title""",
                     [task_id, new_title],
                     lambda doc: column_tasks(doc, todo["id"]) == [(task_id, new_title)]
                     and doc["columns"][0]["tasks"][0]["description"] == description)

                # 3. Drag it into "Done", between Alpha and Beta (upper half of Beta: after = Alpha).
                def drag() -> None:
                    source = a.locator(task_selector(task_id))
                    target = a.locator(task_selector(beta["id"]))
                    box = target.bounding_box()
                    source.drag_to(target, target_position={"x": box["width"] / 2, "y": 4}, timeout=5000)

                step("move", lambda: None, drag,
                     """([c, ids]) => JSON.stringify([...document.querySelectorAll(`[data-testid="column"][data-id="${c}"] [data-testid="task"]`)]
                          .map(e => e.dataset.id)) === JSON.stringify(ids)""",
                     [done["id"], [alpha["id"], task_id, beta["id"]]],
                     lambda doc: [i for i, _ in column_tasks(doc, done["id"])] == [alpha["id"], task_id, beta["id"]]
                     and column_tasks(doc, todo["id"]) == [])

                # 4. Delete it.
                step("delete", lambda: a.hover(task_selector(task_id)), lambda: a.click(f"{task_selector(task_id)} [data-testid=delete-task]"),
                     """(t) => !document.querySelector(`[data-testid="task"][data-id="${t}"]`) &&
                          !!document.querySelector(`[data-testid="trash-task"][data-id="${t}"]`)""",
                     task_id,
                     lambda doc: [t["id"] for t in doc["trash"]] == [task_id]
                     and [i for i, _ in column_tasks(doc, done["id"])] == [alpha["id"], beta["id"]])

                # 5. Restore it from page B's Trash panel; page A sees it back between Alpha and Beta.
                step("restore", lambda: b.click('[data-testid="toggle-trash"]'),
                     lambda: b.click(f'[data-testid="trash-task"][data-id="{task_id}"] [data-testid="restore-task"]'),
                     """([c, t]) => !!document.querySelector(`[data-testid="column"][data-id="${c}"] [data-testid="task"][data-id="${t}"]`)""",
                     [done["id"], task_id],
                     lambda doc: doc["trash"] == [] and [i for i, _ in column_tasks(doc, done["id"])] == [alpha["id"], task_id, beta["id"]],
                     other=a)

                # 6. Delete the "Done" column in page A: page B lists its tasks under Recovered tasks.
                step("delete column", lambda: None,
                     lambda: a.click(f'[data-testid="column"][data-id="{done["id"]}"] [data-testid="delete-column"]'),
                     """(ids) => !document.querySelector(`[data-testid="column"][data-id="${ids[0]}"]`) &&
                          ids.slice(1).every(t => document.querySelector(`[data-testid="orphans"]:not([hidden]) [data-testid="orphan"][data-id="${t}"]`))""",
                     [done["id"], alpha["id"], task_id, beta["id"]],
                     lambda doc: [c["id"] for c in doc["columns"]] == [todo["id"]]
                     and [t["id"] for t in doc["orphans"]] == [alpha["id"], task_id, beta["id"]])

                # 7. In page B, move one recovered task into "To do" (the column picker's first choice).
                step("recover task", lambda: None,
                     lambda: b.click(f'[data-testid="orphan"][data-id="{task_id}"] [data-testid="move-orphan"]'),
                     """([c, t]) => !!document.querySelector(`[data-testid="column"][data-id="${c}"] [data-testid="task"][data-id="${t}"]`)""",
                     [todo["id"], task_id],
                     lambda doc: [i for i, _ in column_tasks(doc, todo["id"])] == [task_id]
                     and [t["id"] for t in doc["orphans"]] == [alpha["id"], beta["id"]],
                     other=a)

                # 8. Restore the column from page A's Recovered tasks area: its other tasks go back into it.
                step("restore column", lambda: None,
                     lambda: a.click(f'[data-testid="orphans"] [data-testid="restore-orphan-column"][data-id="{done["id"]}"]'),
                     """([c, ids]) => JSON.stringify([...document.querySelectorAll(`[data-testid="column"][data-id="${c}"] [data-testid="task"]`)]
                          .map(e => e.dataset.id)) === JSON.stringify(ids)""",
                     [done["id"], [alpha["id"], beta["id"]]],
                     lambda doc: [c["id"] for c in doc["columns"]] == [todo["id"], done["id"]] and doc["orphans"] == []
                     and [i for i, _ in column_tasks(doc, done["id"])] == [alpha["id"], beta["id"]])

                # 9. In page A, add a task below Alpha from Alpha's card (its form is made on first use).
                gamma = "Gamma"
                below_input = f"{task_selector(alpha['id'])} [data-testid=add-below-input]"

                def add_below() -> None:
                    a.hover(task_selector(alpha["id"]))
                    a.click(f"{task_selector(alpha['id'])} [data-testid=add-below]")
                    a.fill(below_input, gamma)

                step("add below", add_below, lambda: a.press(below_input, "Enter"),
                     """([c, titles]) => JSON.stringify([...document.querySelectorAll(`[data-testid="column"][data-id="${c}"] [data-testid="task-title"]`)]
                          .map(e => e.textContent)) === JSON.stringify(titles)""",
                     [done["id"], ["Alpha", gamma, "Beta"]],
                     lambda doc: [t for _, t in column_tasks(doc, done["id"])] == ["Alpha", gamma, "Beta"])

                # 10. Page A edits Beta while its title changes elsewhere: the open form says so.
                renamed = "Beta (renamed elsewhere)"
                a.click(f"{task_selector(beta['id'])} [data-testid=task-title]")
                a.wait_for_selector(f"{task_selector(beta['id'])} [data-testid=edit-title-input]", state="visible")
                agent.api("PATCH", f"/api/tasks/{beta['id']}", {"title": renamed})
                note = f"{task_selector(beta['id'])} [data-testid=changed-elsewhere]"
                try:
                    a.wait_for_selector(note, state="visible")
                    text = a.inner_text(note)
                    checks.check("editing a task changed elsewhere: the form says what changed", renamed in text, text)
                except PlaywrightError as error:
                    checks.check("editing a task changed elsewhere: the form says what changed", False, error.message.splitlines()[0])
                a.press(f"{task_selector(beta['id'])} [data-testid=edit-title-input]", "Escape")
                checks.check("Escape closes the edit form and shows the card again",
                             a.evaluate("""(t) => { const el = document.querySelector(`[data-testid="task"][data-id="${t}"]`);
                                 return !el.classList.contains('editing') && el.querySelector('[data-testid="edit-task-form"]').hidden; }""", beta["id"]))

                # A card's buttons are made when the pointer or the focus first reaches it: from the
                # keyboard, focusing a card untouched so far and pressing Tab reaches its Edit button.
                card = task_selector(gamma_id := a.evaluate(
                    "(c) => [...document.querySelectorAll(`[data-testid=\"column\"][data-id=\"${c}\"] [data-testid=\"task\"]`)]"
                    ".map(e => e.dataset.id)[1]", done["id"]))
                untouched = a.evaluate("(s) => !document.querySelector(s + ' [data-testid=\"edit-task\"]')", card)
                a.focus(card)
                a.keyboard.press("Tab")
                focused = a.evaluate("() => [document.activeElement.dataset.testid, document.activeElement.closest('[data-testid=\"task\"]')?.dataset.id]")
                checks.check("keyboard: Tab from a focused card reaches its Edit button (made on focus)",
                             untouched and focused == ["edit-task", gamma_id], f"untouched {untouched}, focused {focused}")

                checks.check("status bar shows the live stream and the relay state",
                             a.inner_text('[data-testid="stream-status"]').strip() == "Live"
                             and a.inner_text('[data-testid="sync-status"]').strip() != "",
                             a.inner_text('[data-testid="status"]').replace("\n", " "))

                a.click('[data-testid="toggle-troubleshoot"]')
                a.wait_for_selector('[data-testid="troubleshoot-sync"] dd[data-field="state"]')
                checks.check("troubleshooting panel shows /health/websocket",
                             a.inner_text('[data-testid="troubleshoot-sync"] dd[data-field="state"]').strip() != "")
                checks.check("no JavaScript errors in either page", not page_errors, "; ".join(page_errors[:5]))

                ARTIFACTS.mkdir(exist_ok=True)
                a.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)
                print(f"screenshot: {ARTIFACTS / 'board.png'}", flush=True)
            finally:
                browser.close()
    except Exception as error:  # noqa: BLE001 - any failure is a failed check, reported with context
        checks.check("two pages: test ran to the end", False, f"{type(error).__name__}: {error}")
        if agent is not None:
            print("agent log (tail):\n" + agent.tail(), flush=True)
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    if latencies:
        print("latencies (action in one page → the other page shows it): "
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in latencies.items()), flush=True)


# The troubleshooting panel's rendering of /health/websocket (status.js renderFields).
PANEL = '[data-testid="troubleshoot-sync"]'
SYNC_PILL = '[data-testid="sync-status"]'


def panel_field(page: Page, field: str) -> str | None:
    return page.evaluate("""(f) => document.querySelector(`[data-testid="troubleshoot-sync"] > dl > dd[data-field="${f}"]`)?.textContent ?? null""", field)


def panel_attempts(page: Page) -> list[dict]:
    """The failed attempts the panel lists: [{errorClass, message, fix}] as shown."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="troubleshoot-sync"] dd[data-field="attempts"] li')]
        .map(li => Object.fromEntries(['errorClass', 'message', 'fix']
            .map(f => [f, li.querySelector(`dd[data-field="${f}"]`)?.textContent ?? null])))""")


def iso_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@contextlib.contextmanager
def scenario(checks: Checks, name: str, processes: list[KanbanProcess], directories: tuple[str, ...]):
    """One page scenario's frame: an exception is a failed check (with the processes' log
    tails), and the processes (in reverse order) and directories go at the end either way."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - any failure is a failed check, reported with context
        checks.check(f"{name}: test ran to the end", False, f"{type(error).__name__}: {error}")
        for process in processes:
            print(f"{process.what} log (tail):\n" + process.tail(), flush=True)
    finally:
        for process in reversed(processes):
            process.stop()
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)


def relay_outage_test(checks: Checks) -> None:
    """One agent synced through a relay; the relay is killed and restarted while the page watches.

    The always-visible relay indicator goes from connected to reconnecting; the troubleshooting
    panel lists the classified failure in plain words with its fix, and the queued count after
    an edit made offline; "Reconnect now" reconnects at once (before the agent's own next try)
    and the queue drains to 0.
    """
    relay_dir = tempfile.mkdtemp(prefix="kanban-browser-relay-")
    agent_dir = tempfile.mkdtemp(prefix="kanban-browser-agent-")
    relay: Relay | None = None
    agent: Agent | None = None
    page_errors: list[str] = []
    try:
        relay = Relay(relay_dir)
        token = make_token(relay_dir)
        # Waits up to 30 s between attempts (10 by default): step 4 needs one at least 8 s away,
        # which a 10 s ceiling with full jitter gave only one attempt in five (it timed out in CI).
        agent = Agent(agent_dir, ("--relay", relay.url, "--token", token, "--max-reconnect-delay", "30"))
        print(f"relay at {relay.url} (pid {relay.proc.pid}), agent at {agent.base} (pid {agent.proc.pid})", flush=True)
        status = lambda: agent.api("GET", "/health/websocket")  # noqa: E731
        board = agent.api("POST", "/api/boards", {"title": "Relay outage"})
        todo = agent.api("POST", f"/api/boards/{board['id']}/columns", {"title": "To do"})
        poll("the agent to sync its board", lambda: status()["state"] == "connected" and status()["queuedOperations"] == 0, 15)

        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = open_board(browser, agent.base, board["id"], page_errors)
                page.wait_for_selector('[data-testid="stream-status"][data-state="live"]')

                # 1. Connected: the indicator says so; the panel shows the link, with a round-trip time.
                page.wait_for_selector(f'{SYNC_PILL}[data-state="connected"]')
                checks.check("outage: the relay indicator shows connected",
                             page.inner_text(f"{SYNC_PILL} .pill-text").strip() == "Synced"
                             and page.get_attribute(SYNC_PILL, "data-tone") == "good",
                             page.inner_text(SYNC_PILL).strip())
                page.click('[data-testid="toggle-troubleshoot"]')
                page.wait_for_function("""() => /^\\d+(\\.\\d+)?$/.test(document.querySelector(
                    '[data-testid="troubleshoot-sync"] > dl > dd[data-field="roundTripMs"]')?.textContent ?? '')""")
                checks.check("outage: the panel shows the link connected, its relay URL and round-trip time",
                             panel_field(page, "state") == "connected" and panel_field(page, "relayURL") == relay.url,
                             f"state {panel_field(page, 'state')}, URL {panel_field(page, 'relayURL')}, RTT {panel_field(page, 'roundTripMs')} ms")

                # 2. The relay dies (SIGKILL by PID).
                port = relay.port
                relay.kill()
                # One predicate, so that state, words and colour are read at the same moment.
                pill = page.wait_for_function("""() => {
                    const pill = document.querySelector('[data-testid="sync-status"]');
                    const text = pill.querySelector('.pill-text').textContent;
                    return pill.dataset.state === 'reconnecting' && pill.dataset.tone === 'warn'
                        && text.startsWith('Reconnecting') && text; }""").json_value()
                checks.check("outage: the indicator turns to reconnecting", True, pill)

                # 3. The panel names the failure in plain words with a fix, as the agent classified it.
                page.wait_for_function("""() => [...document.querySelectorAll(
                    '[data-testid="troubleshoot-sync"] dd[data-field="attempts"] dd[data-field="errorClass"]')]
                    .some(e => e.textContent === 'connection_refused')""")
                shown = next(a for a in panel_attempts(page) if a["errorClass"] == "connection_refused")
                agent_says = next(a for a in status()["attempts"] if a["errorClass"] == "connection_refused")
                checks.check("outage: the panel shows the classified error in plain words with a fix",
                             shown["message"] == agent_says["message"] == "Nothing is listening at that host and port."
                             and shown["fix"] == agent_says["fix"] and len(shown["fix"] or "") > 20,
                             f"{shown['message']} Fix: {shown['fix']}")

                # 4. Wait until the agent's own next try is at least 8 s away: what happens before
                #    then (the indicator counting an offline edit, a reconnect) is not that try's doing.
                def long_wait():
                    s = status()
                    if s["state"] != "reconnecting" or "nextAttemptAt" not in s:
                        return None
                    left = (iso_time(s["nextAttemptAt"]) - datetime.now(timezone.utc)).total_seconds()
                    return iso_time(s["nextAttemptAt"]) if left >= 8 else None
                next_attempt = poll("the agent to back off for 8 s or more", long_wait, 90, interval=0.2)
                print(f"agent's next try at {next_attempt.time()}", flush=True)

                # 5. An edit made offline is kept and queued; the indicator counts it by itself (the
                #    open panel would refresh it too, so it is closed meanwhile), then the panel.
                page.click('[data-testid="toggle-troubleshoot"]')
                page.wait_for_selector('[data-testid="troubleshoot"]', state="hidden")
                add_input = f'[data-testid="column"][data-id="{todo["id"]}"] [data-testid="new-task-input"]'
                page.click(f'[data-testid="column"][data-id="{todo["id"]}"] [data-testid="add-task"]')
                page.fill(add_input, "Written offline")
                page.press(add_input, "Enter")
                page.wait_for_function("""(c) => [...document.querySelectorAll(`[data-testid="column"][data-id="${c}"] [data-testid="task-title"]`)]
                    .some(e => e.textContent === 'Written offline')""", arg=todo["id"])
                page.keyboard.press("Escape")
                queued = status()["queuedOperations"]
                checks.check("outage: the agent queues the offline edit", queued == 1, f"queuedOperations {queued}")
                # The card says it is not on the relay yet: marked, the mark shown once it has lasted
                # a moment (an online edit never shows it), and a page opened now marks it too.
                offline_card = """(c) => [...document.querySelectorAll(`[data-testid="column"][data-id="${c}"] [data-testid="task"]`)]
                    .find(e => e.querySelector('[data-testid="task-title"]').textContent === 'Written offline')"""
                page.wait_for_function(f"""(c) => {{ const el = ({offline_card})(c);
                    return el && el.classList.contains('pending') && getComputedStyle(el, '::before').opacity === '1'; }}""", arg=todo["id"])
                second = open_board(browser, agent.base, board["id"], page_errors)
                second.wait_for_function(f"(c) => ({offline_card})(c)?.classList.contains('pending')", arg=todo["id"])
                others_marked = second.evaluate("() => document.querySelectorAll('.task.pending').length")
                checks.check("outage: the offline edit's card is marked not on the relay yet, in this page and a new one",
                             others_marked == 1, f"{others_marked} marked cards in the new page")
                page.wait_for_function("""() => document.querySelector('[data-testid="sync-status"] .pill-text')
                    ?.textContent.includes('1 change queued')""")
                pill_seen = datetime.now(timezone.utc)
                page.click('[data-testid="toggle-troubleshoot"]')
                page.wait_for_function("""() => document.querySelector(
                    '[data-testid="troubleshoot-sync"] > dl > dd[data-field="queuedOperations"]')?.textContent === '1'""")
                checks.check("outage: the indicator counts the queued change before the agent's next try",
                             pill_seen < next_attempt, page.inner_text(f"{SYNC_PILL} .pill-text").strip())
                checks.check("outage: the panel shows 1 queued change", panel_field(page, "queuedOperations") == "1")
                checks.check("outage: the panel's labels are words, not field names",
                             all(label in page.inner_text(PANEL) for label in
                                 ("Queued changes", "Recent failed attempts", "What happened", "How to fix it", "Round trip (ms)")))
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "relay-outage.png"), full_page=True)
                print(f"screenshot: {ARTIFACTS / 'relay-outage.png'}", flush=True)

                # 6. The relay comes back on the same port and data; "Reconnect now" does not wait.
                relay = Relay(relay_dir, port=port)
                print(f"relay restarted on port {relay.port} (pid {relay.proc.pid})", flush=True)
                page.click('[data-testid="sync-reconnect"]')
                page.wait_for_selector(f'{SYNC_PILL}[data-state="connected"]')
                connected = iso_time(status()["connectedSince"])  # whole seconds, so compare with 1 s to spare
                checks.check("outage: Reconnect now reconnects at once (before the agent's own next try)",
                             (next_attempt - connected).total_seconds() >= 1,
                             f"connected {connected.time()}, next try was {next_attempt.time()}")

                # 7. The queue drains: the relay acknowledged the offline edit.
                page.wait_for_function("""() => document.querySelector('[data-testid="sync-status"] .pill-text')?.textContent === 'Synced'""")
                page.wait_for_function("""() => document.querySelector(
                    '[data-testid="troubleshoot-sync"] > dl > dd[data-field="queuedOperations"]')?.textContent === '0'""")
                checks.check("outage: the queue drains to 0 and the indicator shows connected again",
                             status()["queuedOperations"] == 0 and page.get_attribute(SYNC_PILL, "data-tone") == "good",
                             page.inner_text(f"{SYNC_PILL} .pill-text").strip())
                for p, name in ((page, "this page"), (second, "the new page")):
                    p.wait_for_function("() => document.querySelectorAll('.task.pending').length === 0")
                checks.check("outage: once acknowledged, no card is marked in either page", True)
                # Online, an edit is acknowledged before its mark would show.
                agent.api("POST", f"/api/columns/{todo['id']}/tasks", {"title": "Written online"})
                page.wait_for_function("""(c) => [...document.querySelectorAll(`[data-testid="column"][data-id="${c}"] [data-testid="task-title"]`)]
                    .some(e => e.textContent === 'Written online')""", arg=todo["id"])
                page.wait_for_timeout(1200)
                shown = page.evaluate("""() => [...document.querySelectorAll('.task')].filter(e => getComputedStyle(e, '::before').opacity === '1'
                    && getComputedStyle(e, '::before').content !== 'none').length""")
                checks.check("outage: an edit made online never shows the mark", shown == 0, f"{shown} cards show it")
                checks.check("outage: no JavaScript errors", not page_errors, "; ".join(page_errors[:5]))
            finally:
                browser.close()
    except Exception as error:  # noqa: BLE001 - any failure is a failed check, reported with context
        checks.check("outage: test ran to the end", False, f"{type(error).__name__}: {error}")
        for process in (agent, relay):
            if process is not None:
                print(f"{process.what} log (tail):\n" + process.tail(), flush=True)
    finally:
        for process in (agent, relay):
            if process is not None:
                process.stop()
        shutil.rmtree(relay_dir, ignore_errors=True)
        shutil.rmtree(agent_dir, ignore_errors=True)


def refused_board_test(checks: Checks) -> None:
    """An agent whose token covers one board also has a board of its own: the relay refuses that
    board's changes. The relay indicator says so by the board's title (not "Syncing" for ever),
    and the troubleshooting panel lists the refusal with what to do."""
    relay_dir = tempfile.mkdtemp(prefix="kanban-browser-relay-")
    agent_dir = tempfile.mkdtemp(prefix="kanban-browser-agent-")
    processes: list[KanbanProcess] = []
    page_errors: list[str] = []
    with scenario(checks, "refused", processes, (relay_dir, agent_dir)):
        relay = Relay(relay_dir)
        processes.append(relay)
        # The boards first, offline; then a token that covers only the shared one.
        alone = Agent(agent_dir)
        processes.append(alone)
        shared = alone.api("POST", "/api/boards", {"title": "Shared"})
        private = alone.api("POST", "/api/boards", {"title": "Private plans"})
        alone.stop()
        token = make_token(relay_dir, "--board", shared["id"])
        agent = Agent(agent_dir, ("--relay", relay.url, "--token", token))
        processes.append(agent)
        poll("the relay to refuse the private board",
             lambda: any(r["board"] == private["id"] for r in agent.api("GET", "/health/websocket").get("refused", [])), 15)
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = open_board(browser, agent.base, private["id"], page_errors)
                page.wait_for_selector(f'{SYNC_PILL}[data-state="connected"]')
                text = page.inner_text(f"{SYNC_PILL} .pill-text").strip()
                checks.check("refused: the relay indicator names the board whose changes the relay refuses",
                             "the relay refuses changes to “Private plans”" in text and page.get_attribute(SYNC_PILL, "data-tone") == "warn",
                             text)
                page.click('[data-testid="toggle-troubleshoot"]')
                page.wait_for_selector(f'{PANEL} dd[data-field="refused"]')
                refused = page.inner_text(f'{PANEL} dd[data-field="refused"]')
                checks.check("refused: the panel lists the refusal, its code and what to do",
                             "Changes the relay refused" in page.inner_text(PANEL) and "forbidden_board" in refused
                             and "Private plans" in refused and "Ask for a token that includes it" in refused, refused[:300])
                # The relay indicator's words for a clock that is off (status.js, as the page loads it).
                texts = page.evaluate("""async () => { const { describeSync } = await import('/status.js');
                    const at = (clockSkewMs, extra = {}) => describeSync({ state: 'connected', queuedOperations: 0, clockSkewMs, ...extra });
                    return [at(300000), at(-7200000, { queuedOperations: 2 }), at(1500)].map((d) => [d.text, d.tone, d.hint ?? '']); }""")
                checks.check("refused: a clock off by more than 2 s is named in the relay indicator, with what to do",
                             texts[0][0] == "Synced · this computer's clock is 5 min behind the relay's" and texts[0][1] == "warn"
                             and "NTP" in texts[0][2]
                             and texts[1][0] == "Syncing – 2 changes queued · this computer's clock is 2 h ahead of the relay's"
                             and texts[2][:2] == ["Synced", "good"], str(texts))
                # "Discard them": after a confirmation naming what goes, the board that existed only
                # here is gone, the page moves to the remaining board, and nothing is refused any more.
                discard = page.locator('[data-testid="sync-discard"]')
                checks.check("refused: the relay indicator offers to discard the refused changes", discard.is_visible())
                asked: list[str] = []
                page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
                discard.click()
                page.wait_for_function("id => new URLSearchParams(location.search).get('board') === id", arg=shared["id"],
                                       timeout=WAIT_S * 1000)
                status = poll("the refusal to clear", lambda: (lambda s: s if not s.get("refused") else None)(
                    agent.api("GET", "/health/websocket")), 10)
                boards = [b["id"] for b in agent.api("GET", "/api/boards")]
                checks.check("refused: discarding asks first, naming the changes and the board",
                             len(asked) == 1 and "Discard 1 change made here to “Private plans”" in asked[0], str(asked))
                checks.check("refused: after the discard the private board is gone, nothing is queued, the page shows the other board",
                             boards == [shared["id"]] and status.get("queuedOperations") == 0 and not discard.is_visible(),
                             f"boards {boards}, queued {status.get('queuedOperations')}")
                checks.check("refused: no JavaScript errors", not page_errors, "; ".join(page_errors[:5]))
            finally:
                browser.close()


def long_polling_test(checks: Checks) -> None:
    """An agent behind a proxy that drops `Upgrade` syncs over HTTP long-polling: the indicator
    and the troubleshooting panel say so and why, and a change from an agent on the WebSocket
    shows up on the page live."""
    relay_dir = tempfile.mkdtemp(prefix="kanban-browser-relay-")
    dirs = [tempfile.mkdtemp(prefix="kanban-browser-agent-") for _ in range(2)]
    processes: list[KanbanProcess] = []
    page_errors: list[str] = []
    with scenario(checks, "long-polling", processes, (relay_dir, *dirs)):
        relay = Relay(relay_dir)
        processes.append(relay)
        proxy = StripUpgradeProxy(relay.port)
        processes.append(proxy)
        token = make_token(relay_dir)
        behind = Agent(dirs[0], ("--relay", proxy.url, "--token", token))
        direct = Agent(dirs[1], ("--relay", relay.url, "--token", token))
        processes += [behind, direct]
        status = lambda: behind.api("GET", "/health/websocket")  # noqa: E731
        poll("the agent behind the proxy to long-poll",
             lambda: status()["state"] == "connected" and status().get("transport") == "long-polling", 15)
        board = behind.api("POST", "/api/boards", {"title": "Behind a proxy"})
        todo = behind.api("POST", f"/api/boards/{board['id']}/columns", {"title": "To do"})
        poll("the column to reach the other agent",
             lambda: any(b["id"] == board["id"] for b in direct.api("GET", "/api/boards")) and
             direct.api("GET", f"/api/boards/{board['id']}")["columns"], 15, interval=0.1)
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = open_board(browser, behind.base, board["id"], page_errors)
                page.wait_for_selector(f'{SYNC_PILL}[data-state="connected"]')
                checks.check("long-polling: the relay indicator says it syncs via HTTP long-polling",
                             page.inner_text(f"{SYNC_PILL} .pill-text").strip() == "Synced (via HTTP long-polling)",
                             page.inner_text(SYNC_PILL).strip())
                page.click('[data-testid="toggle-troubleshoot"]')
                page.wait_for_function("""() => document.querySelector(
                    '[data-testid="troubleshoot-sync"] > dl > dd[data-field="transport"]')?.textContent === 'long-polling'""")
                reason = panel_field(page, "fallbackReason") or ""
                checks.check("long-polling: the panel shows the transport and why the WebSocket is not used",
                             "Upgrade header" in reason and "Transport" in page.inner_text(PANEL)
                             and "Why not WebSocket" in page.inner_text(PANEL), reason)
                direct.api("POST", f"/api/columns/{todo['id']}/tasks", {"title": "from the WebSocket side"})
                start = time.monotonic()
                try:
                    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="task-title"]')]
                        .some((e) => e.textContent === 'from the WebSocket side')""", timeout=WAIT_S * 1000)
                    arrived = True
                except PlaywrightError:
                    arrived = False
                checks.check("long-polling: a change from another agent shows up live", arrived,
                             f"{(time.monotonic() - start) * 1000:.0f} ms")
                checks.check("long-polling: no JavaScript errors", not page_errors, "; ".join(page_errors[:5]))
            finally:
                browser.close()


# Counts the page's animation frames from now on (window.__frames).
COUNT_FRAMES_JS = """() => { window.__frames = 0; const tick = () => { window.__frames++; requestAnimationFrame(tick); };
  requestAnimationFrame(tick); }"""
RENDERS_JS = "() => performance.getEntriesByName('kanban:render').length"
TASK_BADGE_JS = """(t) => document.querySelector(`[data-testid="task"][data-id="${t}"] [data-testid="task-presence"]`)"""


def first_difference(shown: dict, expected: dict) -> str:
    """Where a page's state (PAGE_STATE_JS) first differs from a document's (document_state)."""
    for key in ("orphans", "trash"):
        if shown[key] != expected[key]:
            return f"{key}: page {shown[key][:5]}, agent {expected[key][:5]}"
    if [c["id"] for c in shown["columns"]] != [c["id"] for c in expected["columns"]]:
        return "the columns differ"
    for page_column, column in zip(shown["columns"], expected["columns"]):
        if page_column["title"] != column["title"]:
            return f"column {column['id']}: title {page_column['title']!r}, agent {column['title']!r}"
        for i, (page_task, task) in enumerate(zip(page_column["tasks"], column["tasks"])):
            if page_task != task:
                return f"column {column['title']!r}, task {i}: page {page_task}, agent {task}"
        if len(page_column["tasks"]) != len(column["tasks"]):
            return f"column {column['title']!r}: page {len(page_column['tasks'])} tasks, agent {len(column['tasks'])}"
    return "equal"


def burst_test(checks: Checks) -> None:
    """Two agents on a relay, a page on each. A burst of changes from the other agent (200
    creates by 8 clients and a rename) reaches page A drawn at most once per animation frame
    (not once per event) and ends equal to agent A's document; page B's open edit form shows
    on A's card as "editing" while it is open and says what changed under it."""
    relay_dir = tempfile.mkdtemp(prefix="kanban-browser-relay-")
    dirs = [tempfile.mkdtemp(prefix="kanban-browser-agent-") for _ in range(2)]
    processes: list[KanbanProcess] = []
    page_errors: list[str] = []
    with scenario(checks, "burst", processes, (relay_dir, *dirs)):
        relay = Relay(relay_dir)
        processes.append(relay)
        token = make_token(relay_dir)
        a_agent = Agent(dirs[0], ("--relay", relay.url, "--token", token))
        processes.append(a_agent)
        b_agent = Agent(dirs[1], ("--relay", relay.url, "--token", token))
        processes.append(b_agent)
        board = a_agent.api("POST", "/api/boards", {"title": "Burst"})
        columns = [a_agent.api("POST", f"/api/boards/{board['id']}/columns", {"title": f"Column {i + 1}"})["id"] for i in range(3)]
        first = [a_agent.api("POST", f"/api/columns/{columns[i % 3]}/tasks", {"title": f"Task {i}"}) for i in range(60)]
        poll("agent B to have the board's 60 tasks",
             lambda: any(b["id"] == board["id"] for b in b_agent.api("GET", "/api/boards"))
             and sum(len(c["tasks"]) for c in b_agent.api("GET", f"/api/boards/{board['id']}")["columns"]) == 60, 15, interval=0.1)
        edited = first[0]["id"]
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page_a = open_board(browser, a_agent.base, board["id"], page_errors)
                page_b = open_board(browser, b_agent.base, board["id"], page_errors)
                for page in (page_a, page_b):
                    page.wait_for_selector('[data-testid="stream-status"][data-state="live"]')
                    page.wait_for_selector(task_selector(edited))

                # Page B opens a task's editor: A's card says someone edits it.
                page_b.click(f"{task_selector(edited)} [data-testid=task-title]")
                page_b.wait_for_selector(f"{task_selector(edited)} [data-testid=edit-title-input]", state="visible")
                try:
                    page_a.wait_for_function(f"(t) => {{ const b = ({TASK_BADGE_JS})(t); return b && !b.hidden && /editing$/.test(b.textContent); }}",
                                             arg=edited, timeout=WAIT_S * 1000)
                    badge = page_a.evaluate(f"(t) => ({TASK_BADGE_JS})(t).textContent", edited)
                except PlaywrightError as error:
                    badge = f"not shown: {error.message.splitlines()[0]}"
                checks.check("burst: a task open in another agent's page shows \"… editing\" on its card",
                             badge.endswith("editing"), badge)

                page_a.evaluate(COUNT_FRAMES_JS)
                renders_before = page_a.evaluate(RENDERS_JS)
                started = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda i: b_agent.api("POST", f"/api/columns/{columns[i % 3]}/tasks", {"title": f"Burst {i}"}), range(200)))
                b_agent.api("PATCH", f"/api/tasks/{edited}", {"title": "Renamed in the burst"})
                expected = poll("agent A to have the burst and the rename", lambda: (lambda doc: doc if sum(len(c["tasks"]) for c in doc["columns"]) == 260
                                and any(t["title"] == "Renamed in the burst" for c in doc["columns"] for t in c["tasks"]) else None)(
                                    document_state(a_agent.api("GET", f"/api/boards/{board['id']}"))), 20, interval=0.05)
                shown = page_state_when(page_a, expected)
                elapsed_ms = (time.monotonic() - started) * 1000
                renders = page_a.evaluate(RENDERS_JS) - renders_before
                frames = page_a.evaluate("window.__frames")
                checks.check("burst: page A ends equal to agent A's board (260 tasks, the rename)", shown == expected,
                             first_difference(shown, expected))
                # One render per frame at most; the page's 250 ms timer (for pages without frames)
                # may add one more per 250 ms.
                bound = frames + 1 + int(elapsed_ms // 250)
                checks.check("burst: 201 events drawn at most once per animation frame", 1 <= renders <= bound,
                             f"{renders} renders for 201 events in {elapsed_ms:.0f} ms, {frames} frames")
                print(f"burst: {renders} renders for 201 events in {elapsed_ms:.0f} ms ({frames} frames)", flush=True)

                note = f"{task_selector(edited)} [data-testid=changed-elsewhere]"
                try:
                    page_b.wait_for_selector(note, state="visible", timeout=WAIT_S * 1000)
                    text = page_b.inner_text(note)
                except PlaywrightError as error:
                    text = f"not shown: {error.message.splitlines()[0]}"
                checks.check("burst: the open editor says its task was renamed during the burst", "Renamed in the burst" in text, text)
                page_b.press(f"{task_selector(edited)} [data-testid=edit-title-input]", "Escape")
                try:
                    page_a.wait_for_function(f"(t) => ({TASK_BADGE_JS})(t).hidden", arg=edited, timeout=WAIT_S * 1000)
                    gone = True
                except PlaywrightError:
                    gone = False
                checks.check("burst: the card's \"editing\" badge goes when the other page closes the editor", gone)
                checks.check("burst: no JavaScript errors", not page_errors, "; ".join(page_errors[:5]))
            finally:
                browser.close()


def conflict_test(checks: Checks) -> None:
    """Two agents rename one task while the relay is down; once it is back, the page's Conflicts
    panel says in words which title was kept and which was lost, and Restore brings the lost one
    back on every replica."""
    relay_dir = tempfile.mkdtemp(prefix="kanban-browser-relay-")
    dirs = [tempfile.mkdtemp(prefix="kanban-browser-agent-") for _ in range(2)]
    processes: list[KanbanProcess] = []
    page_errors: list[str] = []
    with scenario(checks, "conflict", processes, (relay_dir, *dirs)):
        relay = Relay(relay_dir)
        processes.append(relay)
        token = make_token(relay_dir)
        agents = [Agent(d, ("--relay", relay.url, "--token", token)) for d in dirs]
        processes += agents
        a_agent, b_agent = agents
        board = a_agent.api("POST", "/api/boards", {"title": "Conflicts"})
        column = a_agent.api("POST", f"/api/boards/{board['id']}/columns", {"title": "To do"})
        task = a_agent.api("POST", f"/api/columns/{column['id']}/tasks", {"title": "Original"})
        poll("agent B to have the task", lambda: any(b["id"] == board["id"] for b in b_agent.api("GET", "/api/boards"))
             and task_titles(b_agent, board["id"]) == ["Original"], 15, interval=0.1)
        relay.kill()
        processes.remove(relay)
        a_agent.api("PATCH", f"/api/tasks/{task['id']}", {"title": "Title from A"})
        b_agent.api("PATCH", f"/api/tasks/{task['id']}", {"title": "Title from B"})
        relay = Relay(relay_dir, relay.port)
        processes.append(relay)
        for agent in agents:
            agent.api("POST", "/api/sync/reconnect")
        conflicts = poll("agent A to record the conflict",
                         lambda: a_agent.api("GET", f"/api/boards/{board['id']}/conflicts"), 20, interval=0.1)
        kept, lost = conflicts[0]["winnerValue"], conflicts[0]["loserValue"]
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = open_board(browser, a_agent.base, board["id"], page_errors)
                page.wait_for_selector('[data-testid="stream-status"][data-state="live"]')
                page.wait_for_function("""() => document.querySelector('[data-testid="conflict-count"]').textContent === '1'""")
                page.click('[data-testid="toggle-conflicts"]')
                text = page.inner_text('[data-testid="conflict"]')
                checks.check("conflict: the panel says which title was kept and which was lost, in words",
                             f"Task “{kept}” – title" in text and f"Kept “{kept}”; lost “{lost}”" in text, text.replace("\n", " | "))
                page.click('[data-testid="restore-conflict"]')
                try:
                    page.wait_for_function("""(t) => document.querySelector(`[data-testid="task"][data-id="${t[0]}"] [data-testid="task-title"]`)?.textContent === t[1]
                        && document.querySelector('[data-testid="conflict-count"]').textContent === '0'""", arg=[task["id"], lost])
                    restored = True
                except PlaywrightError:
                    restored = False
                checks.check("conflict: Restore brings the lost title back and the conflict goes", restored,
                             page.inner_text('[data-testid="conflict-list"]').replace("\n", " | "))
                try:
                    poll("agent B to have the restored title", lambda: task_titles(b_agent, board["id"]) == [lost], 10, interval=0.1)
                    on_b = True
                except TimeoutError:
                    on_b = False
                checks.check("conflict: the restored title reaches the other agent", on_b, str(task_titles(b_agent, board["id"])))
                checks.check("conflict: no JavaScript errors", not page_errors, "; ".join(page_errors[:5]))
            finally:
                browser.close()


def task_titles(agent: Agent, board_id: str) -> list[str]:
    return [t["title"] for c in agent.api("GET", f"/api/boards/{board_id}")["columns"] for t in c["tasks"]]


def main() -> int:
    checks = Checks()

    # The whole run is bounded: past the deadline, stop every process started and leave.
    def watchdog() -> None:
        print(f"browser: test exceeded {TEST_DEADLINE_S:.0f} s, aborting", flush=True)
        for process in RUNNING:
            process.stop()
        print(f"browser: {checks.passed} passed, {checks.failed + 1} failed", flush=True)
        os._exit(1)

    timer = threading.Timer(TEST_DEADLINE_S, watchdog)
    timer.daemon = True
    timer.start()
    started = time.monotonic()
    try:
        two_pages_test(checks)
        relay_outage_test(checks)
        long_polling_test(checks)
        refused_board_test(checks)
        burst_test(checks)
        conflict_test(checks)
    finally:
        timer.cancel()
    print(f"took {time.monotonic() - started:.1f} s", flush=True)
    print(f"browser: {checks.passed} passed, {checks.failed} failed", flush=True)
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
