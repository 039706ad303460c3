import Foundation
import HTTPTypes
import Hummingbird
import KanbanAgent
import KanbanModel
import KanbanStore
import Logging
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import WSClient
import WSCompression

// MARK: - An agent in this process

/// A local agent on a file-backed replica (default durability .full), serving its HTTP API.
struct LocalAgent {
    let agent: Agent
    let server: RunningServer
    let directory: URL
    var port: Int { server.port }

    static func start(_ name: String, services: (Agent) -> [any Service] = { _ in [] }) async throws -> LocalAgent {
        let directory = try makeTempDir(name)
        let store = try ReplicaStore(path: directory.appendingPathComponent("replica.sqlite").path)
        // WSClient sends `Origin: ws://127.0.0.1` (scheme://host of the ws URL, no port), which the
        // agent's origin check refuses; allow exactly that origin so the check still runs.
        let agent = Agent(store: store, configuration: .init(port: 0, allowedOrigins: ["ws://127.0.0.1"]))
        let extra = services(agent)
        let server = try await RunningServer.start { onListening in
            buildAgentApplication(agent: agent, logger: quietLogger("agent"), services: extra, onListening: onListening)
        }
        return LocalAgent(agent: agent, server: server, directory: directory)
    }

    /// A board with `columns` columns, made through the agent core.
    func makeBoard(columns: Int) async throws -> (board: EntityID, columns: [EntityID]) {
        let board = try await agent.createBoard(title: "Bench board").id
        var ids: [EntityID] = []
        var after: EntityID? = nil
        for i in 0..<columns {
            guard case .column(let c) = try await agent.createColumn(board: board, title: "Column \(i)", after: after) else {
                throw BenchError("createColumn returned no column")
            }
            ids.append(c.id)
            after = c.id
        }
        return (board, ids)
    }
}

let benchWords = ("fix login redirect loop on safari update onboarding copy for teams plan migrate billing webhooks add dark mode "
    + "toggle to settings investigate flaky sync test refactor column drag handler write release notes for v2 review "
    + "accessibility audit findings cache board snapshot on device reduce cold start time support markdown in task "
    + "descriptions handle offline edits conflict resolution export board as csv").split(separator: " ").map(String.init)

/// Body of a create-task request whose title carries the send time (`b<ns> ...`).
func createTaskBody(_ i: Int, sentAt: UInt64) -> String {
    var rng = SplitMix(seed: UInt64(i))
    let title = (0..<(3 + Int(rng.next() % 5))).map { _ in benchWords[Int(rng.next() % UInt64(benchWords.count))] }.joined(separator: " ")
    let description = (0..<(1 + Int(rng.next() % 8))).map { _ in benchWords[Int(rng.next() % UInt64(benchWords.count))] }.joined(separator: " ")
    return "{\"title\":\"b\(sentAt) \(title)\",\"description\":\"\(description)\"}"
}

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Open-loop and closed-loop HTTP load

struct LoadResult {
    var sent = 0
    var ok = 0
    var errors = 0
    var wall: Double = 0
    /// From the scheduled send time (open loop: includes any queueing behind a busy connection).
    var latencies: [UInt64] = []
    /// How late each request left the bench after its scheduled time (the bench's own delay).
    var sendLags: [UInt64] = []
}

/// Sends `rate` create-task requests per second for `duration` seconds on `connections`
/// keep-alive connections (request i goes to connection i % connections). Latency counts from
/// the request's scheduled time, so a stalled server is not hidden (no coordinated omission).
func openLoopCreates(port: Int, columns: [EntityID], rate: Double, duration: Double, warmup: Double,
                     connections: Int) async throws -> LoadResult {
    let total = Int(rate * duration)
    let warmCount = Int(rate * warmup)
    let interval = 1e9 / rate
    var streams: [AsyncStream<(Int, UInt64)>] = []
    var inputs: [AsyncStream<(Int, UInt64)>.Continuation] = []
    for _ in 0..<connections {
        let (s, c) = AsyncStream<(Int, UInt64)>.makeStream()
        streams.append(s); inputs.append(c)
    }
    let sink = SampleSink(), lagSink = SampleSink()
    let ok = Counter(), errors = Counter()
    let start = nowNs()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (w, stream) in streams.enumerated() {
            group.addTask {
                try await HTTPConnection.with(port: port) { request in
                    var local: [UInt64] = [], lags: [UInt64] = []
                    for await (i, scheduled) in stream {
                        let column = columns[i % columns.count]
                        if i >= warmCount { lags.append(nanos(from: scheduled, to: nowNs())) }
                        let r = try await request(.POST, "/api/columns/\(column)/tasks", createTaskBody(i, sentAt: scheduled))
                        let done = nowNs()
                        if r.status == 201 { ok.add() } else {
                            errors.add()
                            if errors.load < 3 { note("HTTP \(r.status): \(r.body.prefix(200))") }
                        }
                        if i >= warmCount { local.append(nanos(from: scheduled, to: done)) }
                    }
                    sink.add(contentsOf: local)
                    lagSink.add(contentsOf: lags)
                    _ = w
                }
            }
        }
        for i in 0..<total {
            let target = start + UInt64(Double(i) * interval)
            let now = nowNs()
            if target > now + 20_000 { try await Task.sleep(for: .nanoseconds(Int64(target - now))) }
            inputs[i % connections].yield((i, target))
        }
        for c in inputs { c.finish() }
        try await group.waitForAll()
    }
    return LoadResult(sent: total, ok: ok.load, errors: errors.load, wall: Double(nowNs() - start) / 1e9, latencies: sink.all,
                      sendLags: lagSink.all)
}

/// `clients` connections, each sending its next create-task as soon as the previous answered.
func closedLoopCreates(port: Int, columns: [EntityID], clients: Int, duration: Double, warmup: Double) async throws -> LoadResult {
    let sink = SampleSink()
    let ok = Counter(), errors = Counter(), measured = Counter()
    let start = nowNs()
    let warmEnd = start + UInt64(warmup * 1e9)
    let end = warmEnd + UInt64(duration * 1e9)
    try await withThrowingTaskGroup(of: Void.self) { group in
        for c in 0..<clients {
            group.addTask {
                try await HTTPConnection.with(port: port) { request in
                    var local: [UInt64] = []
                    var i = c * 1_000_000
                    while true {
                        let t = nowNs()
                        if t >= end { break }
                        let r = try await request(.POST, "/api/columns/\(columns[i % columns.count])/tasks", createTaskBody(i, sentAt: t))
                        let done = nowNs()
                        if r.status == 201 { ok.add() } else { errors.add() }
                        if t >= warmEnd && done <= end { local.append(done - t); measured.add() }
                        i += 1
                    }
                    sink.add(contentsOf: local)
                }
            }
        }
        try await group.waitForAll()
    }
    var result = LoadResult(sent: ok.load + errors.load, ok: ok.load, errors: errors.load, wall: duration, latencies: sink.all)
    result.sent = measured.load
    return result
}

// MARK: - Local event-stream clients

/// WebSocket clients on `/api/events?board=ID` (offering permessage-deflate, as browsers do).
/// Every `task:created` event's title carries its HTTP send time; latency = arrival - send.
final class EventListeners: Sendable {
    let ready = Counter()
    let received = Counter()
    let sink = SampleSink()
    let measureFrom = Atomic<UInt64>(UInt64.max)
    private let tasks = Mutex<[Task<Void, Never>]>([])

    func connect(count: Int, port: Int, board: EntityID, requireRemote: Bool = false) async throws {
        let url = "ws://127.0.0.1:\(port)/api/events?board=\(board)"
        for _ in 0..<count {
            let task = Task { [self] in
                do {
                    try await WebSocketClient.connect(
                        url: url,
                        configuration: .init(maxFrameSize: 1 << 22, extensions: [.perMessageDeflate(maxDecompressedFrameSize: 1 << 22)]),
                        logger: quietLogger("events")
                    ) { inbound, _, _ in
                        var first = true
                        var local: [UInt64] = []
                        for try await message in inbound.messages(maxSize: 1 << 22) {
                            guard case .text(let text) = message else { continue }
                            let now = nowNs()
                            if first { first = false; self.ready.add(); continue }
                            if requireRemote && !text.contains("\"origin\":\"remote\"") { continue }
                            let stamps = integers(after: "\"title\":\"b", in: text)
                            guard !stamps.isEmpty else { continue }
                            self.received.add(stamps.count)
                            let from = self.measureFrom.load(ordering: .relaxed)
                            for ts in stamps where UInt64(ts) >= from { local.append(nanos(from: UInt64(ts), to: now)) }
                            if !local.isEmpty { self.sink.add(contentsOf: local); local.removeAll(keepingCapacity: true) }
                        }
                        self.sink.add(contentsOf: local)
                    }
                } catch {
                    if !Task.isCancelled { note("event client ended: \(error)") }
                }
            }
            tasks.withLock { $0.append(task) }
        }
        try await waitUntil("\(count) event clients have their snapshot", timeout: .seconds(60)) { ready.load >= count }
    }

    func flushWait(expected: Int, timeout: Duration = .seconds(10)) async {
        try? await waitUntil("\(expected) events", timeout: timeout, every: .milliseconds(5)) { received.load >= expected }
        try? await Task.sleep(for: .milliseconds(100))  // let clients flush their local samples
    }

    func close() {
        for t in tasks.withLock({ $0 }) { t.cancel() }
    }
}

// MARK: - Scenario 1: agent HTTP API and local event delivery

func runHTTPBench(rate: Double, duration: Double, closedDuration: Double, clientCounts: [Int]) async throws {
    let local = try await LocalAgent.start("http")
    let (_, columns) = try await local.makeBoard(columns: 10)
    note("agent on port \(local.port); open loop \(rate) req/s for \(duration)s")
    var rows: [[String]] = []

    let cpu = CPUWindow()
    let open = try await openLoopCreates(port: local.port, columns: columns, rate: rate, duration: duration, warmup: 1, connections: 16)
    let c = cpu.stop()
    let s = LatencySummary(open.latencies)
    rows.append(["open loop \(Int(rate)) req/s, 16 conns, \(Int(duration)) s", num(Double(open.ok) / open.wall), "\(open.errors)",
                 ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), c.short])

    for clients in clientCounts {
        let cpu = CPUWindow()
        let r = try await closedLoopCreates(port: local.port, columns: columns, clients: clients, duration: closedDuration, warmup: 1)
        let c = cpu.stop()
        let s = LatencySummary(r.latencies)
        rows.append(["closed loop, \(clients) clients, \(Int(closedDuration)) s", num(Double(r.sent) / r.wall), "\(r.errors)",
                     ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), c.short])
    }
    let tasks = (try? local.agent.store.operationCount()) ?? 0
    printTable("Agent HTTP API: POST /api/columns/{id}/tasks (file replica, durability .full; \(tasks) ops in log at end)",
               ["load", "req/s", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU % (bench process incl. agent / other processes)"], rows)
    await local.server.stop()
}

func runEventsBench(counts: [Int], rate: Double, duration: Double) async throws {
    var rows: [[String]] = []
    for n in counts {
        let local = try await LocalAgent.start("events")
        let (board, columns) = try await local.makeBoard(columns: 10)
        let listeners = EventListeners()
        try await listeners.connect(count: n, port: local.port, board: board)
        listeners.measureFrom.store(nowNs() + 1_000_000_000, ordering: .relaxed)
        let cpu = CPUWindow()
        let r = try await openLoopCreates(port: local.port, columns: columns, rate: rate, duration: duration, warmup: 1, connections: 4)
        let c = cpu.stop()
        await listeners.flushWait(expected: r.ok * n)
        let s = LatencySummary(listeners.sink.all)
        let h = LatencySummary(r.latencies)
        rows.append(["\(n)", "\(Int(rate))/s x \(Int(duration)) s", "\(listeners.received.load) / \(r.ok * n)",
                     ms(s.p50), ms(s.p99), ms(s.max), "\(ms(h.p50)) / \(ms(h.p99))", c.short])
        listeners.close()
        await local.server.stop()
    }
    printTable("Local event delivery: HTTP create -> task:created on N WebSockets /api/events?board=ID (deflate offered)",
               ["clients", "creates", "events recv / expected", "p50 ms", "p99 ms", "max ms", "HTTP p50 / p99 ms", "CPU %"], rows)
}
