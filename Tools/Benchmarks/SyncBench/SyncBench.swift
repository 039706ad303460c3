import Foundation
import Hummingbird
import KanbanAgent
import KanbanModel
import KanbanProtocol
import KanbanRelay
import KanbanStore
import Logging
import NIOHTTP1
import ServiceLifecycle
import Synchronization

// MARK: - Relays

/// A relay in this process on a file-backed SQLite log (synchronous=FULL).
struct LocalRelay {
    let relay: Relay
    let server: RunningServer
    let directory: URL
    let authority: TokenAuthority
    var url: String { "ws://127.0.0.1:\(server.port)/sync" }
    func token(boards: [String]? = nil) -> String { authority.sign(RelayToken(team: "bench", boards: boards)) }

    /// `prepare`: writes to the log before the relay opens it.
    static func start(prepare: (SQLiteRelayStorage) async throws -> Void = { _ in }) async throws -> LocalRelay {
        let directory = try makeTempDir("relay")
        let storage = try SQLiteRelayStorage(path: directory.appendingPathComponent("relay.sqlite").path)
        try await prepare(storage)
        let relay = try await Relay(storage: storage, configuration: .init(port: 0), logger: quietLogger("relay"))
        let server = try await RunningServer.start { onListening in
            buildRelayApplication(relay: relay, logger: quietLogger("relay"), onListening: onListening)
        }
        return LocalRelay(relay: relay, server: server, directory: directory, authority: TokenAuthority(secret: try storage.secret()))
    }
}

/// A `kanban relay` process (release build), for clean RSS and CPU numbers.
final class RelayProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    let token: String
    let directory: URL
    var url: String { "ws://127.0.0.1:\(port)/sync" }
    var pid: Int32 { process.processIdentifier }

    /// `store`: a PostgreSQL URL (`--store`); nil: SQLite in a new temporary directory.
    /// `team`: the token's team (a new one keeps earlier runs' boards on a shared store out).
    init(kanban: String, store: String? = nil, team: String = "bench") throws {
        directory = try makeTempDir("relayproc")
        let location = store.map { ["--store", $0] } ?? ["--data", directory.path]
        let tokenProcess = Process()
        tokenProcess.executableURL = URL(fileURLWithPath: kanban)
        tokenProcess.arguments = ["relay", "token", "create"] + location + ["--team", team]
        let tokenPipe = Pipe()
        tokenProcess.standardOutput = tokenPipe
        try tokenProcess.run()
        tokenProcess.waitUntilExit()
        token = String(decoding: tokenPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        process = Process()
        process.executableURL = URL(fileURLWithPath: kanban)
        // Thousands of connections share the bench token (idle, fan-out): lift the per-token limit.
        // KANBAN_BENCH_RELAY_LOG=info shows what the relay processes log.
        process.arguments = ["relay", "serve", "--port", "0", "--log-level", ProcessInfo.processInfo.environment["KANBAN_BENCH_RELAY_LOG"] ?? "error",
                             "--max-connections-per-token", "1000000"] + location
        port = try startReportingPort(process, announcedAs: "ws://127.0.0.1:", what: "relay")
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        ChildGuard.remove(process.processIdentifier)
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Runs `process` (a `kanban` server started with `--port 0`) and returns the port it prints
/// as `<prefix><port>/` on stdout within 20 s; otherwise stops it and throws.
func startReportingPort(_ process: Process, announcedAs prefix: String, what: String) throws -> Int {
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    ChildGuard.add(process.processIdentifier)
    var text = ""
    let deadline = Date().addingTimeInterval(20)
    while Date() < deadline {
        let data = out.fileHandleForReading.availableData
        if data.isEmpty { Thread.sleep(forTimeInterval: 0.05); continue }
        text += String(decoding: data, as: UTF8.self)
        if let r = text.range(of: prefix) {
            let digits = text[r.upperBound...].prefix { $0.isNumber }
            if text[r.upperBound...].dropFirst(digits.count).hasPrefix("/"), let port = Int(digits) { return port }
        }
    }
    process.terminate()
    process.waitUntilExit()
    ChildGuard.remove(process.processIdentifier)
    throw BenchError("\(what) process did not report its port: \(text)")
}

func syncConfiguration(_ url: String, _ token: String) -> SyncConfiguration {
    var c = SyncConfiguration(relayURL: url, token: token)
    c.backoffBase = .milliseconds(20)
    c.backoffCap = .milliseconds(300)
    return c
}

// MARK: - Scenario 2a: end-to-end A (HTTP) -> relay -> B (event stream)

func runE2EBench(rates: [Double], duration: Double) async throws {
    var rows: [[String]] = []
    for rate in rates {
        let relay = try await LocalRelay.start()
        rows.append(try await e2e(urlA: relay.url, urlB: relay.url, token: relay.token(), rate: rate, duration: duration))
        await relay.server.stop()
    }
    printTable("Sync end-to-end: HTTP create on agent A -> relay -> task:created on agent B's /api/events (all stores durable: FULL)",
               ["ops/s", "created ok / err", "delivered to B", "p50 ms", "p90 ms", "p99 ms", "max ms", "A HTTP p50 / p99 ms",
                "CPU % (one process: relay + 2 agents + load)"], rows)
}

/// The same measurement as the product runs: `kanban relay` and two `kanban agent` processes
/// (each store durable, FULL), driven over loopback from this process.
///
/// `clients`: which load generator drives it, `nio` (SwiftNIO clients on Swift concurrency, as
/// the other benchmarks) and/or `lean` (`LeanE2E`: one thread, raw sockets). With both, each
/// rate runs once with each, on fresh processes, alternating which goes first.
func runE2EProcessBench(kanban: String, rates: [Double], duration: Double, clients: [String] = ["nio"]) async throws {
    var rows: [[String]] = []
    for (r, rate) in rates.enumerated() {
        for client in r % 2 == 0 ? clients : clients.reversed() {
            let relay = try RelayProcess(kanban: kanban)
            defer { relay.stop() }
            let a = try AgentProcess(kanban: kanban, name: "a", relay: relay.url, token: relay.token)
            defer { a.stop() }
            let b = try AgentProcess(kanban: kanban, name: "b", relay: relay.url, token: relay.token)
            defer { b.stop() }
            let row = client == "lean"
                ? try await e2eProcessesLean(a: a, b: b, relayPID: relay.pid, rate: rate, duration: duration)
                : try await e2eProcesses(a: a, b: b, relayPID: relay.pid, rate: rate, duration: duration)
            rows.append([client] + row)
        }
    }
    printTable("Sync end-to-end, processes: HTTP create on `kanban agent` A -> `kanban relay` -> task:created on `kanban agent` B's /api/events (all stores durable: FULL)",
               ["client", "ops/s", "created ok / err", "delivered to B", "p50 ms", "p90 ms", "p99 ms", "max ms", "A HTTP p50 / p99 ms",
                "bench send lag p50 / p99 ms", "CPU % (relay / A / B / bench)"], rows)
}

/// A board with 10 columns made on A over HTTP, once B has it and A's outbox is empty.
func e2eBoard(a: AgentProcess, b: AgentProcess) async throws -> (EntityID, [EntityID]) {
    let (board, columns) = try await HTTPConnection.with(port: a.port) { request in
        let made = try await request(.POST, "/api/boards", #"{"title":"Bench board"}"#)
        guard made.status == 201 || made.status == 200, let board = jsonField("id", in: made.body).flatMap(EntityID.init) else {
            throw BenchError("creating the board on A: HTTP \(made.status) \(made.body.prefix(200))")
        }
        var columns: [EntityID] = []
        for i in 0..<10 {
            let after = columns.last.map { #","after":"\#($0)""# } ?? ""
            let r = try await request(.POST, "/api/boards/\(board)/columns", #"{"title":"Column \#(i)"\#(after)}"#)
            guard let id = jsonField("id", in: r.body).flatMap(EntityID.init) else {
                throw BenchError("creating a column on A: HTTP \(r.status) \(r.body.prefix(200))")
            }
            columns.append(id)
        }
        return (board, columns)
    }
    try await waitUntil("B has the board and A's outbox is empty", timeout: .seconds(30), every: .milliseconds(50)) {
        let onB = try await HTTPConnection.with(port: b.port) { try await $0(.GET, "/api/boards/\(board)", nil) }
        let status = try await HTTPConnection.with(port: a.port) { try await $0(.GET, "/health/websocket", nil) }
        return onB.status == 200 && columns.allSatisfy { onB.body.contains($0.rawValue) }
            && status.body.contains(#""queuedOperations":0"#)
    }
    return (board, columns)
}

/// CPU of the relay and both agents (from /proc) and of this process over one run of
/// `runE2EProcessBench`, in % of one core.
struct E2ECPU {
    let pids: [Int32]
    let start: [Double]
    let window = CPUWindow(otherPIDs: [])

    init(relay: Int32, a: AgentProcess, b: AgentProcess) {
        pids = [relay, a.pid, b.pid]
        start = pids.map { processCPUSeconds($0) ?? 0 }
    }

    /// "relay / A / B / bench".
    func stop() -> String {
        let bench = window.stop().bench
        let seconds = Double(nowNs() - window.t0) / 1e9
        let servers = zip(pids, start).map { pid, start in ((processCPUSeconds(pid) ?? start) - start) / seconds * 100 }
        return (servers + [bench]).map { num($0) }.joined(separator: " / ")
    }
}

/// A row of `runE2EProcessBench` (after the client column).
func e2eRow(rate: Double, ok: Int, errors: Int, delivered: Int, e2e: [UInt64], http: [UInt64], sendLags: [UInt64], cpu: String) -> [String] {
    let (s, h, lag) = (LatencySummary(e2e), LatencySummary(http), LatencySummary(sendLags))
    return ["\(Int(rate))", "\(ok) / \(errors)", "\(delivered)", ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max),
            "\(ms(h.p50)) / \(ms(h.p99))", "\(ms(lag.p50)) / \(ms(lag.p99))", cpu]
}

/// One row of `runE2EProcessBench` with the NIO clients: B's event stream open, then creates on
/// A at `rate` for `duration` s.
func e2eProcesses(a: AgentProcess, b: AgentProcess, relayPID: Int32, rate: Double, duration: Double) async throws -> [String] {
    let (board, columns) = try await e2eBoard(a: a, b: b)
    let listeners = EventListeners()
    try await listeners.connect(count: 1, port: b.port, board: board, requireRemote: true)
    listeners.measureFrom.store(nowNs() + 1_000_000_000, ordering: .relaxed)
    note("e2e (processes) at \(rate) ops/s for \(duration)s")
    let cpu = E2ECPU(relay: relayPID, a: a, b: b)
    let r = try await openLoopCreates(port: a.port, columns: columns, rate: rate, duration: duration, warmup: 1, connections: 16)
    let cpuUsed = cpu.stop()
    await listeners.flushWait(expected: r.ok, timeout: .seconds(30))
    let row = e2eRow(rate: rate, ok: r.ok, errors: r.errors, delivered: listeners.received.load, e2e: listeners.sink.all,
                     http: r.latencies, sendLags: r.sendLags, cpu: cpuUsed)
    listeners.close()
    return row
}

/// One row of `runE2EProcessBench` with `LeanE2E` as the load generator, on a thread of its own.
func e2eProcessesLean(a: AgentProcess, b: AgentProcess, relayPID: Int32, rate: Double, duration: Double) async throws -> [String] {
    let (board, columns) = try await e2eBoard(a: a, b: b)
    note("e2e (processes, lean client) at \(rate) ops/s for \(duration)s")
    let cpu = E2ECPU(relay: relayPID, a: a, b: b)
    let lean = LeanE2E(aPort: a.port, bPort: b.port, board: board, columns: columns)
    let r: LeanE2E.Result = try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try lean.run(rate: rate, duration: duration, warmup: 1, connections: 16) }) }.start()
    }
    return e2eRow(rate: rate, ok: r.ok, errors: r.errors, delivered: r.received, e2e: r.e2e, http: r.http,
                  sendLags: r.sendLags, cpu: cpu.stop())
}

/// The string value of the first `"name":"..."` in a JSON text.
func jsonField(_ name: String, in text: String) -> String? {
    guard let r = text.range(of: "\"\(name)\":\"") else { return nil }
    return String(text[r.upperBound...].prefix { $0 != "\"" })
}

/// A `kanban agent` process (release build) syncing with `relay`, on a free port and a data
/// directory of its own.
final class AgentProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    let directory: URL
    var pid: Int32 { process.processIdentifier }

    init(kanban: String, name: String, relay: String, token: String) throws {
        directory = try makeTempDir("agentproc-\(name)")
        process = Process()
        process.executableURL = URL(fileURLWithPath: kanban)
        process.arguments = ["agent", "--port", "0", "--data", directory.path, "--relay", relay, "--token", token,
                             "--log-level", "error"]
        port = try startReportingPort(process, announcedAs: "http://127.0.0.1:", what: "agent")
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        ChildGuard.remove(process.processIdentifier)
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Agent A (connected to `urlA`) creates tasks over HTTP at `rate`; agent B (on `urlB`) streams
/// its events. One table row.
func e2e(urlA: String, urlB: String, token: String, rate: Double, duration: Double,
         serverPIDs: [Int32] = [], postgres: Bool = false) async throws -> [String] {
    let a = try await LocalAgent.start("a") { [SyncClient(agent: $0, configuration: syncConfiguration(urlA, token), logger: quietLogger("sync"))] }
    let b = try await LocalAgent.start("b") { [SyncClient(agent: $0, configuration: syncConfiguration(urlB, token), logger: quietLogger("sync"))] }
    let (board, columns) = try await a.makeBoard(columns: 10)
    try await waitUntil("B has the board", timeout: .seconds(30)) {
        try b.agent.store.document(board)?.columns.count == 10 && a.agent.store.outboxCount() == 0
    }
    let listeners = EventListeners()
    try await listeners.connect(count: 1, port: b.port, board: board, requireRemote: true)
    listeners.measureFrom.store(nowNs() + 1_000_000_000, ordering: .relaxed)
    note("e2e at \(rate) ops/s for \(duration)s (A on \(urlA), B on \(urlB))")
    let cpu = CPUWindow(otherPIDs: serverPIDs, postgres: postgres)
    let r = try await openLoopCreates(port: a.port, columns: columns, rate: rate, duration: duration, warmup: 1, connections: 16)
    let c = cpu.stop()
    await listeners.flushWait(expected: r.ok, timeout: .seconds(30))
    let s = LatencySummary(listeners.sink.all)
    let h = LatencySummary(r.latencies)
    listeners.close()
    await a.server.stop(); await b.server.stop()
    return ["\(Int(rate))", "\(r.ok) / \(r.errors)", "\(listeners.received.load)", ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max),
            "\(ms(h.p50)) / \(ms(h.p99))", c.short]
}

// MARK: - Scenario 2b: relay fan-out

struct FanoutResult {
    var subs = 0, writers = 0, window = 0
    var delivered = 0, writerDelivered = 0, acked = 0
    var seconds = 0.0
    var latencies: [UInt64] = []
    var cpu: CPUWindow.Result?
    var closedEarly = 0
}

/// 1 board, `subs` subscriber connections (hello → ops), `writers` writers each keeping at most
/// `window` operations not yet acknowledged AND delivered to every subscriber (closed loop).
func fanout(urls: [String], token: String, serverPIDs: [Int32], postgres: Bool = false, subs: Int, writers: Int, window: Int,
            duration: Double, warmup: Double, deflate: Bool) async throws -> FanoutResult {
    // With several relay instances, subscribers and writers alternate between them.
    let url = urls[0]
    let board = EntityID.make()
    // Board creation by writer 0.
    let created = Counter()
    let setup = WireClient(url: url, token: token, deflate: deflate) { text in if text.contains("\"type\":\"ack\"") { created.add() } }
    // Operation IDs new to this run: a shared store (PostgreSQL) keeps earlier runs' IDs, and a
    // known ID is acknowledged as a duplicate instead of stored.
    let counterBase = UInt64(Date().timeIntervalSince1970 * 1000) * 1_000
    var f0 = OpFactory(replica: "bsetup", board: board, seed: 1)
    f0.counter = counterBase
    setup.send(SyncMessage.hello(.init(replica: f0.replica, cursors: [:], client: "bench")).text)
    setup.send(SyncMessage.push(.init(ops: [f0.make(.createBoard(title: "Fan-out"))])).text)
    try await waitUntil("board created", timeout: .seconds(20)) { created.load > 0 }

    let ring = 8192
    final class Slots: Sendable {
        final class IntBox: Sendable { let v = Atomic<Int>(0) }
        final class U64Box: Sendable { let v = Atomic<UInt64>(0) }
        let remaining: [IntBox]
        let sentAt: [U64Box]
        init(_ n: Int) {
            remaining = (0..<n).map { _ in IntBox() }
            sentAt = (0..<n).map { _ in U64Box() }
        }
    }
    let slots = (0..<writers).map { _ in Slots(ring) }
    let sems = (0..<writers).map { _ in AsyncSemaphore(window) }
    let delivered = Counter(), deliveredWin = Counter(), writerDelivered = Counter(), acked = Counter()
    let ready = Counter()
    let measure = Mutex<(from: UInt64, until: UInt64)>((UInt64.max, UInt64.max))
    let sink = SampleSink()

    @Sendable func arrived(_ w: Int, _ n: Int) {
        guard w < writers else { return }
        let slot = slots[w]
        if slot.remaining[n % ring].v.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { sems[w].signal() }
    }

    var subscribers: [WireClient] = []
    for i in 0..<subs {
        final class Local: @unchecked Sendable { var samples: [UInt64] = []; var ready = false }
        let local = Local()
        let client = WireClient(url: urls[i % urls.count], token: token, deflate: deflate) { text in
            if !local.ready {
                if text.contains("\"type\":\"ops\"") { local.ready = true; ready.add() }
                return
            }
            let ids = opIDs(in: text, prefix: "bw")
            guard !ids.isEmpty else { return }
            let now = nowNs()
            let (from, until) = measure.withLock { $0 }
            delivered.add(ids.count)
            if now >= from && now < until { deliveredWin.add(ids.count) }
            for (w, n) in ids {
                if w < writers {
                    let sent = slots[w].sentAt[n % ring].v.load(ordering: .relaxed)
                    if sent >= from && sent < until { local.samples.append(now - sent) }
                }
                arrived(w, n)
            }
            if local.samples.count >= 64 { sink.add(contentsOf: local.samples); local.samples.removeAll(keepingCapacity: true) }
        }
        client.send(SyncMessage.hello(.init(replica: ReplicaID("bsub\(i)")!, cursors: [:], client: "bench")).text)
        subscribers.append(client)
        _ = i
    }
    try await waitUntil("\(subs) subscribers caught up", timeout: .seconds(60)) { ready.load >= subs }

    var writerClients: [WireClient] = []
    let writersReady = Counter()
    for w in 0..<writers {
        final class Flag: @unchecked Sendable { var ready = false }
        let flag = Flag()
        let prefix = "\"op\":\"bw\(w):"
        let client = WireClient(url: urls[w % urls.count], token: token, deflate: deflate) { text in
            if !flag.ready { if text.contains("\"type\":\"ops\"") { flag.ready = true; writersReady.add() }; return }
            if text.hasPrefix("{\"acks\"") {
                for n in integers(after: prefix, in: text) { acked.add(); arrived(w, n) }
            } else if text.contains("\"type\":\"ops\"") {
                writerDelivered.add(opIDs(in: text, prefix: "bw").count)
            }
        }
        client.send(SyncMessage.hello(.init(replica: ReplicaID("bw\(w)")!, cursors: [:], client: "bench")).text)
        writerClients.append(client)
    }
    try await waitUntil("writers welcomed", timeout: .seconds(30)) { writersReady.load >= writers }

    // Pre-encode the pushes (the writer's cost is not what we measure).
    let perWriter = 400_000
    let start = nowNs()
    let end = start + UInt64((warmup + duration) * 1e9)
    measure.withLock { $0 = (start + UInt64(warmup * 1e9), end) }
    var cpu: CPUWindow?
    let cpuBox = Mutex<CPUWindow?>(nil)
    let warmTask = Task {
        try? await Task.sleep(for: .seconds(warmup))
        cpuBox.withLock { $0 = CPUWindow(otherPIDs: serverPIDs, postgres: postgres) }
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
            let client = writerClients[w]
            let slot = slots[w]
            let sem = sems[w]
            group.addTask {
                var factory = OpFactory(replica: "bw\(w)", board: board, seed: UInt64(w + 10))
                factory.counter = counterBase
                for _ in 0..<perWriter {
                    await sem.wait()
                    let t = nowNs()
                    if t >= end { break }
                    let op = factory.update()
                    let n = Int(op.id.counter)
                    slot.remaining[n % ring].v.store(subs + 1, ordering: .relaxed)
                    slot.sentAt[n % ring].v.store(nowNs(), ordering: .relaxed)
                    client.send(SyncMessage.push(.init(ops: [op])).text)
                }
            }
        }
        try await group.waitForAll()
    }
    await warmTask.value
    cpu = cpuBox.withLock { $0 }
    let cpuResult = cpu?.stop()
    for s in sems { s.openAll() }
    try? await Task.sleep(for: .milliseconds(500))
    var result = FanoutResult()
    result.subs = subs; result.writers = writers; result.window = window
    result.delivered = deliveredWin.load
    result.writerDelivered = writerDelivered.load
    result.acked = acked.load
    result.seconds = duration
    result.latencies = sink.all
    result.cpu = cpuResult
    result.closedEarly = subscribers.filter { $0.closed.load(ordering: .relaxed) }.count
    for c in subscribers + writerClients + [setup] { c.close() }
    try? await Task.sleep(for: .milliseconds(300))
    return result
}

func runFanoutBench(subs: Int, writers: Int, windows: [Int], duration: Double, kanban: String?) async throws {
    var rows: [[String]] = []
    for window in windows {
        var url: String, token: String, pid: Int32? = nil
        var stopper: () async -> Void
        if let kanban {
            let p = try RelayProcess(kanban: kanban)
            (url, token, pid) = (p.url, p.token, p.pid)
            stopper = { p.stop() }
        } else {
            let r = try await LocalRelay.start()
            (url, token) = (r.url, r.token())
            stopper = { await r.server.stop() }
        }
        note("fan-out: \(subs) subs, \(writers) writers, window \(window), relay \(pid.map { "process \($0)" } ?? "in-process")")
        let r = try await fanout(urls: [url], token: token, serverPIDs: pid.map { [$0] } ?? [], subs: subs, writers: writers, window: window,
                                 duration: duration, warmup: 2, deflate: true)
        let s = LatencySummary(r.latencies)
        rows.append(["\(subs) x 1 board, \(writers) writers, window \(window)", pid == nil ? "in-process" : "kanban relay process",
                     num(Double(r.delivered) / r.seconds), num(Double(r.delivered) / Double(subs) / r.seconds),
                     "\(r.writerDelivered)", ms(s.p50), ms(s.p99), ms(s.max), "\(r.closedEarly)", r.cpu?.short ?? "-"])
        await stopper()
    }
    printTable("Relay fan-out (sync protocol, permessage-deflate, 1 op per push, task.update ops)",
               ["shape", "relay", "delivered msgs/s (subscribers)", "ops/s", "also delivered to writers (total)", "fan-out p50 ms",
                "p99 ms", "max ms", "subs closed", "CPU %"], rows)
}

// MARK: - Scenario 2c: 10,000 queued operations, reconnect, converge

func runConvergeBench(queued: Int) async throws {
    let relay = try await LocalRelay.start()
    let token = relay.token()
    let a = try await LocalAgent.start("conv-a") { [SyncClient(agent: $0, configuration: syncConfiguration(relay.url, token), logger: quietLogger("sync"))] }
    let b = try await LocalAgent.start("conv-b") { [SyncClient(agent: $0, configuration: syncConfiguration(relay.url, token), logger: quietLogger("sync"))] }
    let (board, columns) = try await a.makeBoard(columns: 10)
    try await waitUntil("B has the board", timeout: .seconds(30)) {
        try b.agent.store.document(board)?.columns.count == 10 && a.agent.store.outboxCount() == 0
    }
    await a.server.stop()  // A goes offline (its sync client stops with its server)
    note("authoring \(queued) operations offline on A (durability .full)")
    let t0 = nowNs()
    var tasks: [EntityID] = []
    var rng = SplitMix(seed: 42)
    for i in 0..<queued {
        if tasks.count < 10 || i % 4 == 0 {
            guard case .task(let t) = try await a.agent.createTask(column: columns[i % columns.count], title: "Task \(i) fix login redirect",
                                                               description: "write release notes", after: nil) else { continue }
            tasks.append(t.id)
        } else if i % 4 == 1 {
            _ = try await a.agent.moveTask(tasks[Int(rng.next() % UInt64(tasks.count))], to: columns[Int(rng.next() % 10)], after: nil)
        } else {
            _ = try await a.agent.updateTask(tasks[Int(rng.next() % UInt64(tasks.count))], title: "Edited \(i) review accessibility audit", description: nil)
        }
    }
    let authoring = Double(nowNs() - t0) / 1e9
    let outbox = try a.agent.store.outboxCount()
    note("outbox \(outbox), authored in \(authoring)s; reconnecting")

    let cpu = CPUWindow()
    let start = nowNs()
    let server = try await RunningServer.start { onListening in
        buildAgentApplication(agent: a.agent, logger: quietLogger("agent"),
                              services: [SyncClient(agent: a.agent, configuration: syncConfiguration(relay.url, token), logger: quietLogger("sync"))],
                              onListening: onListening)
    }
    var emptied: Double = .nan
    try await waitUntil("A's outbox empty and B converged", timeout: .seconds(120), every: .milliseconds(2)) {
        if emptied.isNaN, try a.agent.store.outboxCount() == 0 { emptied = Double(nowNs() - start) / 1e9 }
        guard !emptied.isNaN, try b.agent.store.operationCount() == (try a.agent.store.operationCount()) else { return false }
        return try b.agent.store.digest(board) == (try a.agent.store.digest(board))
    }
    let converged = Double(nowNs() - start) / 1e9
    let c = cpu.stop()
    printTable("Reconnect with \(outbox) queued operations (A offline, then reconnects; B online; relay in-process; all durable)",
               ["queued ops", "authoring offline (s)", "reconnect -> A outbox empty (s)", "reconnect -> B digest == A digest (s)", "CPU %"],
               [["\(outbox)", num(authoring), String(format: "%.3f", emptied), String(format: "%.3f", converged), c.short]])
    await server.stop(); await b.server.stop(); await relay.server.stop()
}

// MARK: - Scenario 2d: bytes on the wire, with and without permessage-deflate

func runWireBench(ops count: Int) async throws {
    var rows: [[String]] = []
    var totals: [Bool: Int] = [:]
    for deflate in [false, true] {
        let relay = try await LocalRelay.start()
        let token = relay.token()
        // One forwarder per link, so each direction of each link is counted on its own.
        let wfwd = try CountingForwarder(targetPort: relay.server.port)
        let sfwd = try CountingForwarder(targetPort: relay.server.port)
        let board = EntityID.make()
        var factory = OpFactory(replica: "wwriter", board: board, seed: 7)
        let acks = Counter(), subReady = Counter(), received = Counter(), subPayload = Counter(), writerRx = Counter()
        let writer = WireClient(url: "ws://127.0.0.1:\(wfwd.port)/sync", token: token, deflate: deflate) { text in
            writerRx.add(text.utf8.count)
            if text.contains("\"type\":\"ack\"") { acks.add() }
        }
        writer.send(SyncMessage.hello(.init(replica: factory.replica, cursors: [:], client: "bench")).text)
        writer.send(SyncMessage.push(.init(ops: [factory.make(.createBoard(title: "Wire"))])).text)
        try await waitUntil("board", timeout: .seconds(20)) { acks.load >= 1 }
        let sub = WireClient(url: "ws://127.0.0.1:\(sfwd.port)/sync", token: token, deflate: deflate) { text in
            if subReady.load == 0 { if text.contains("\"type\":\"ops\"") { subReady.add() }; return }
            subPayload.add(text.utf8.count)
            received.add(opIDs(in: text, prefix: "wwriter").count)
        }
        sub.send(SyncMessage.hello(.init(replica: ReplicaID("wsub")!, cursors: [:], client: "bench")).text)
        try await waitUntil("subscriber", timeout: .seconds(20)) { subReady.load >= 1 }
        try await Task.sleep(for: .milliseconds(100))
        let w0 = wfwd.counts, s0 = sfwd.counts
        let rxBefore = writerRx.load
        var pushPayload = 0
        // An interactive stream: one op per push, next after the ack (as an agent pushes edits).
        for i in 0..<count {
            let text = SyncMessage.push(.init(ops: [factory.typical()])).text
            pushPayload += text.utf8.count
            writer.send(text)
            try await waitUntil("ack", timeout: .seconds(20), every: .microseconds(200)) { acks.load >= i + 2 }
        }
        try await waitUntil("delivery", timeout: .seconds(20)) { received.load >= count }
        try await Task.sleep(for: .milliseconds(200))
        let w1 = wfwd.counts, s1 = sfwd.counts
        let links: [(String, Int, Int)] = [
            ("writer -> relay (push)", pushPayload, w1.up - w0.up),
            ("relay -> writer (ack)", writerRx.load - rxBefore, w1.down - w0.down),
            ("relay -> subscriber (ops)", subPayload.load, s1.down - s0.down),
        ]
        var jsonTotal = 0, tcpTotal = 0
        for (name, json, tcp) in links {
            rows.append([deflate ? "deflate" : "none", name, "\(json)", "\(tcp)", num(Double(tcp) / Double(count)),
                         String(format: "%.2f", Double(json) / Double(tcp))])
            jsonTotal += json; tcpTotal += tcp
        }
        rows.append([deflate ? "deflate" : "none", "**all three**", "\(jsonTotal)", "\(tcpTotal)", num(Double(tcpTotal) / Double(count)),
                     String(format: "%.2f", Double(jsonTotal) / Double(tcpTotal))])
        totals[deflate] = tcpTotal
        writer.close(); sub.close()
        try? await Task.sleep(for: .milliseconds(200))
        wfwd.stop(); sfwd.stop()
        await relay.server.stop()
    }
    printTable("Bytes on the wire: \(count) typical ops (loadgen mix), 1 op per push, next push after the ack; TCP payload bytes per link direction (WebSocket frames incl. headers) counted by a forwarder",
               ["compression", "link", "JSON message bytes", "TCP bytes", "TCP bytes per op", "JSON / TCP"], rows)
    if let plain = totals[false], let comp = totals[true] {
        print("\nCompression ratio on the wire (no compression / deflate, all links): \(String(format: "%.2fx", Double(plain) / Double(comp)))")
    }
}

// MARK: - Scenario 2e: relay memory per idle connection

func runIdleBench(kanban: String, connections: Int, deflateModes: [Bool]) async throws {
    var rows: [[String]] = []
    for deflate in deflateModes {
        let relay = try RelayProcess(kanban: kanban)
        let board = EntityID.make()
        var factory = OpFactory(replica: "isetup", board: board, seed: 3)
        let acked = Counter()
        let setup = WireClient(url: relay.url, token: relay.token, deflate: deflate) { t in if t.contains("\"type\":\"ack\"") { acked.add() } }
        setup.send(SyncMessage.hello(.init(replica: factory.replica, cursors: [:], client: "bench")).text)
        setup.send(SyncMessage.push(.init(ops: [factory.make(.createBoard(title: "Idle"))])).text)
        try await waitUntil("board", timeout: .seconds(20)) { acked.load >= 1 }
        try await Task.sleep(for: .seconds(1))
        let rss0 = rssKiB(relay.pid) ?? 0
        let ready = Counter()
        let cpu = CPUWindow(otherPID: relay.pid)
        let t0 = nowNs()
        var clients: [WireClient] = []
        for i in 0..<connections {
            let flag = Atomic<Bool>(false)
            _ = flag
            final class Flag: @unchecked Sendable { var done = false }
            let f = Flag()
            // The hello goes compressed, as an agent's first push or a hello with several cursors
            // does: the relay then has had to inflate something from every connection.
            let c = WireClient(url: relay.url, token: relay.token, deflate: deflate, compressFrom: 16) { text in
                if !f.done && text.contains("\"type\":\"ops\"") { f.done = true; ready.add() }
            }
            c.send(SyncMessage.hello(.init(replica: ReplicaID("idle\(i)")!, cursors: [:], client: "bench")).text)
            clients.append(c)
            if i % 200 == 199 {
                try await waitUntil("connections", timeout: .seconds(60), every: .milliseconds(5)) { ready.load >= i + 1 - 200 }
            }
        }
        try await waitUntil("\(connections) connections welcomed", timeout: .seconds(120), every: .milliseconds(5)) { ready.load >= connections }
        let connectSeconds = Double(nowNs() - t0) / 1e9
        let c = cpu.stop()
        let rss1 = rssKiB(relay.pid) ?? 0
        try await Task.sleep(for: .seconds(3))
        let rss2 = rssKiB(relay.pid) ?? 0
        let per = Double(rss2 - rss0) * 1024 / Double(connections)
        rows.append([deflate ? "on" : "off", "\(ready.load) / \(connections)", num(Double(connections) / connectSeconds),
                     "\(rss0) -> \(rss1) -> \(rss2)", num(per), num(per / 1024), c.short])
        for c in clients + [setup] { c.close() }
        try? await Task.sleep(for: .seconds(1))
        relay.stop()
    }
    printTable("Relay memory per idle connection (`kanban relay` process; each client: upgrade + hello (compressed when deflate is on) + catch-up of 1 board)",
               ["deflate", "connected", "connects/s", "relay RSS KiB before -> connected -> settled 3 s", "bytes/conn", "KiB/conn",
                "CPU % during connect"], rows)
}

// MARK: - Scale-out: relays on PostgreSQL (issue 6)

/// The same fan-out and end-to-end loads against: one `kanban relay` on SQLite, one on
/// PostgreSQL, and two on one PostgreSQL (clients alternate between the instances, so half of
/// every delivery crosses instances through LISTEN/NOTIFY).
func runScaleOutBench(kanban: String, postgres: String, subs: Int, writers: Int, windows: [Int], duration: Double,
                      rates: [Double], quietWait: Double) async throws {
    var fanRows: [[String]] = []
    var e2eRows: [[String]] = []
    let setups: [(name: String, store: String?, instances: Int)] = [
        ("SQLite, 1 instance", nil, 1), ("PostgreSQL, 1 instance", postgres, 1), ("PostgreSQL, 2 instances", postgres, 2),
    ]
    for setup in setups {
        // New relay processes (and, on the shared database, a new team) for every measurement,
        // so no run sees an earlier run's boards.
        func start() throws -> [RelayProcess] {
            let team = "bench-\(UUID().uuidString.prefix(8).lowercased())"
            return try (0..<setup.instances).map { _ in try RelayProcess(kanban: kanban, store: setup.store, team: team) }
        }
        for window in windows {
            await waitQuiet(maxWait: quietWait)
            let relays = try start()
            note("scale-out fan-out: \(setup.name), window \(window)")
            let r = try await fanout(urls: relays.map(\.url), token: relays[0].token, serverPIDs: relays.map(\.pid),
                                     postgres: setup.store != nil, subs: subs, writers: writers, window: window, duration: duration,
                                     warmup: 2, deflate: true)
            for relay in relays { relay.stop() }
            let s = LatencySummary(r.latencies)
            fanRows.append([setup.name, "\(subs) subs, \(writers) writers, window \(window)", num(Double(r.delivered) / r.seconds),
                            num(Double(r.delivered) / Double(subs) / r.seconds), ms(s.p50), ms(s.p99), ms(s.max), "\(r.closedEarly)",
                            r.cpu?.short ?? "-"])
        }
        for rate in rates {
            await waitQuiet(maxWait: quietWait)
            let relays = try start()
            let urls = relays.map(\.url)
            var row = try await e2e(urlA: urls[0], urlB: urls[urls.count - 1], token: relays[0].token, rate: rate, duration: duration,
                                    serverPIDs: relays.map(\.pid), postgres: setup.store != nil)
            for relay in relays { relay.stop() }
            row.insert(setup.name + (setup.instances > 1 ? " (A on one, B on the other)" : ""), at: 0)
            e2eRows.append(row)
        }
    }
    printTable("Scale-out: relay fan-out (1 board, sync protocol, deflate, 1 op per push; `kanban relay` processes)",
               ["relays", "shape", "delivered msgs/s (subscribers)", "ops/s", "fan-out p50 ms", "p99 ms", "max ms", "subs closed",
                "CPU % (srv = all relay processes)"], fanRows)
    printTable("Scale-out: end-to-end, HTTP create on agent A -> relay(s) -> task:created on agent B (agents in the bench process)",
               ["relays", "ops/s", "created ok / err", "delivered to B", "p50 ms", "p90 ms", "p99 ms", "max ms", "A HTTP p50 / p99 ms",
                "CPU %"], e2eRows)
}
