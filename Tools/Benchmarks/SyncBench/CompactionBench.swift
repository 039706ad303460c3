import Foundation
import KanbanModel
import KanbanProtocol
import KanbanRelay
import Synchronization

// MARK: - Compaction under load

/// A relay's SQLite log folds a long board into a snapshot (what `kanban relay` does once a
/// board's live log passes its compaction threshold, 200,000 operations by default) while
/// pushes to another board keep arriving at `rate`, one operation each: how long the
/// compaction takes, and how long those appends (what each ack waits for) take meanwhile.
func runCompactionBench(ops: Int, rate: Double) async throws {
    guard ops >= 1_000, rate > 0 else { throw BenchError("compaction needs --ops >= 1000 and --rate > 0") }
    let directory = try makeTempDir("compaction")
    let storage = try SQLiteRelayStorage(path: directory.appendingPathComponent("relay.sqlite").path)
    let (long, _) = try await fillLongBoard(storage, ops: ops)
    let busy = EntityID.make()
    var other = OpFactory(replica: "cbusy", board: busy, seed: 2)
    _ = try await storage.append([other.make(.createBoard(title: "Busy"))], team: "bench")
    // Fold all but the newest quarter, as the relay keeps its newest operations as operations.
    let through = Int64(ops - ops / 4)
    note("compaction: \(ops) operations on one board, folding through \(through) while appending to another at \(rate)/s")

    let done = Atomic<UInt64>(0)
    let start = nowNs()
    let compaction = Task {
        try await storage.compact(board: long, through: through)
        done.store(nowNs(), ordering: .releasing)
    }
    var samples: [UInt64] = []
    let interval = 1e9 / rate
    var i = 0
    while done.load(ordering: .acquiring) == 0 {
        let target = start + UInt64(Double(i) * interval)
        let now = nowNs()
        if target > now { try await Task.sleep(for: .nanoseconds(Int64(target - now))) }
        let t0 = nowNs()
        _ = try await storage.append([other.typical()], team: "bench")
        samples.append(nowNs() - t0)
        i += 1
    }
    try await compaction.value
    let seconds = Double(done.load(ordering: .acquiring) - start) / 1e9
    // What a catch-up of the compacted board reads first: the whole snapshot (before 2026-12-02,
    // every catch-up did) or only its sequence (now, unless the catch-up starts below it).
    var t0 = nowNs()
    let snapshot = try await storage.snapshot(board: long)
    let readWhole = Double(nowNs() - t0) / 1e6
    t0 = nowNs()
    let horizon = try await storage.snapshotSeq(board: long)
    let readSeq = Double(nowNs() - t0) / 1e6
    let s = LatencySummary(samples)
    printTable("Relay log compaction under load (SQLite, synchronous=FULL): one board folded while another is appended to",
               ["operations folded", "compaction s", "appends meanwhile", "append p50 ms", "p99 ms", "max ms", "snapshot at",
                "snapshot read ms", "its sequence read ms"],
               [["\(through)", num(seconds), "\(samples.count) at \(Int(rate))/s", ms(s.p50), ms(s.p99), ms(s.max),
                 snapshot.map { "\($0.seq)" } ?? "none", ms(readWhole), horizon == snapshot?.seq ? ms(readSeq) : "differs"]])
}

// MARK: - Digests of a long board

/// Fills `storage` with one board of `ops` operations in the typical mix.
private func fillLongBoard(_ storage: SQLiteRelayStorage, ops: Int) async throws -> (board: EntityID, head: Int64) {
    let board = EntityID.make()
    var writer = OpFactory(replica: "clong", board: board, seed: 1)
    _ = try await storage.append([writer.make(.createBoard(title: "Long"))], team: "bench")
    var left = ops - 1
    while left > 0 {
        let n = min(1_000, left)
        _ = try await storage.append((0..<n).map { _ in writer.typical() }, team: "bench")
        left -= n
    }
    return (board, try storage.head(of: board))
}

/// What a relay does for agents' digests of a long board, and what that costs everyone else.
///
/// An agent sends its board's digest after catch-up. The relay compares it with its state at the
/// same sequence: at the head, the state it keeps for the room (rebuilt from the log once after a
/// start); below the head (others wrote between the agent's catch-up and the digest's arrival),
/// a state rebuilt from the log up to that sequence. First table: those steps' costs, timed here
/// with the storage calls the relay's hub uses (read in 5,000-operation batches, apply, hash).
/// Second: a relay with that board in its log; one client pushes to another board every 5 ms and
/// times each acknowledgment, while `agents` clients each send a digest below the head (each at
/// its own sequence) and one at the head; how long the digests take to answer, and the
/// acknowledgments before and during. Third: `joiners` new agents are sent the whole board
/// (catch-up), pushes still going.
/// `compacted`: all but the newest quarter folded into a snapshot first (as the relay does
/// past its threshold), so that new agents are sent the snapshot and the tail.
func runDigestBench(ops: Int, agents: Int, joiners: Int, compacted: Bool) async throws {
    guard ops >= 1_000, agents >= 1, joiners >= 1 else { throw BenchError("digest needs --ops >= 1000, --agents >= 1 and --joiners >= 1") }
    let relay = try await LocalRelay.start { storage in
        let (board, head) = try await fillLongBoard(storage, ops: ops)
        if compacted { try await storage.compact(board: board, through: head - head / 4) }
        await longBoard.set(board, head)
    }
    defer { Task { await relay.server.stop() } }
    let (board, head) = await longBoard.get()
    let storage = try SQLiteRelayStorage(path: relay.directory.appendingPathComponent("relay.sqlite").path)
    note("digest: \(head) operations on one board; rebuilding its state as the relay does")

    var (read, apply, hashing): (UInt64, UInt64, UInt64) = (0, 0, 0)
    var state = BoardState(id: board)
    // Agent i digests at its own sequence below the head, as agents that reconnect while others
    // write do (the relay answers them lowest first, each state rebuilt from the one before).
    let belowSeqs = (0..<agents).map { head - 1 - Int64(100 * $0) }
    var below: [Int64: String] = [:]
    var cursor: Int64 = 0
    if let stored = try await storage.snapshot(board: board) {
        state = stored.state.state
        cursor = stored.seq
    }
    while cursor < head {
        let t0 = nowNs()
        let entries = try await storage.operations(board: board, after: cursor, limit: 5_000)
        let t1 = nowNs()
        for entry in entries {
            state.apply(entry.op)
            if belowSeqs.contains(entry.seq) {
                let t = nowNs()
                below[entry.seq] = state.digest
                hashing += nowNs() - t
            }
        }
        apply += nowNs() - t1
        read += t1 - t0
        guard let last = entries.last else { break }
        cursor = last.seq
    }
    let t2 = nowNs()
    let atHead = state.digest
    let hash = nowNs() - t2
    printTable("Relay: rebuilding a long board's state from its log (SQLite), as for a digest\(compacted ? " (from its snapshot and the tail)" : "")",
               ["operations", "tasks", "read ms", "apply ms", "digest ms"],
               [["\(head)", "\(state.tasks.count)", ms(Double(read) / 1e6), ms(Double(apply - hashing) / 1e6), ms(Double(hash) / 1e6)]])

    // The pusher: one operation on its own board every 5 ms, each acknowledgment timed.
    // Its token sees only its own board: a hello without cursors would otherwise be sent the long one.
    let short = EntityID.make()
    let token = relay.token(boards: [board.rawValue])
    var factory = OpFactory(replica: "cpush", board: short, seed: 2)
    let sent = Mutex<[Int: UInt64]>([:])
    let latencies = Mutex<[(at: UInt64, ns: UInt64)]>([])
    let pusher = WireClient(url: relay.url, token: relay.token(boards: [short.rawValue]), deflate: true) { text in
        guard text.contains("\"acks\"") else { return }
        let now = nowNs()
        for n in integers(after: "cpush:", in: text) {
            if let t = sent.withLock({ $0.removeValue(forKey: n) }) { latencies.withLock { $0.append((now, now - t)) } }
        }
    }
    defer { pusher.close() }
    pusher.send(SyncMessage.hello(.init(replica: factory.replica, cursors: [:], client: "bench")).text)
    let first = factory.make(.createBoard(title: "Short"))
    sent.withLock { $0[1] = nowNs() }
    pusher.send(SyncMessage.push(.init(ops: [first])).text)
    let pushing = Task {
        while !Task.isCancelled {
            let op = factory.typical()
            sent.withLock { $0[Int(op.id.counter)] = nowNs() }
            pusher.send(SyncMessage.push(.init(ops: [op])).text)
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
    try await Task.sleep(for: .seconds(2))
    let rssBefore = trimmedRSSKiB()
    let start = nowNs()

    // The agents: a hello at the head (nothing to catch up), then a digest below it and one at it.
    let answered = Mutex<[UInt64]>([])
    let matches = Atomic<Int>(0)
    var clients: [WireClient] = []
    for i in 0..<agents {
        let client = WireClient(url: relay.url, token: token, deflate: true) { text in
            guard text.contains("\"type\":\"digest_result\"") else { return }
            if text.contains("\"match\":true") { matches.add(1, ordering: .relaxed) }
            answered.withLock { $0.append(nowNs() - start) }
        }
        client.send(SyncMessage.hello(.init(replica: ReplicaID("cdig\(i)")!, cursors: [board: head], client: "bench")).text)
        client.send(SyncMessage.digest(.init(board: board, seq: belowSeqs[i], digest: below[belowSeqs[i]]!)).text)
        client.send(SyncMessage.digest(.init(board: board, seq: head, digest: atHead)).text)
        clients.append(client)
    }
    let deadline = nowNs() + 300_000_000_000
    while answered.withLock({ $0.count }) < 2 * agents && nowNs() < deadline { try await Task.sleep(for: .milliseconds(10)) }
    let end = nowNs()
    // What the relay holds for the long board while its room is open (its state at the head,
    // the digest there, a state below it kept for the next digest), then once the room has
    // closed with its last member, which drops them.
    let rssOpen = trimmedRSSKiB()
    clients.forEach { $0.close() }
    try await Task.sleep(for: .seconds(1))
    let rssClosed = trimmedRSSKiB()

    // Then `joiners` new agents: a hello without cursors, so the relay sends them the whole board.
    let joinStart = nowNs()
    let caughtUp = Mutex<[UInt64]>([])
    let last = "\"seq\":\(head)}"
    var joining: [WireClient] = []
    for i in 0..<joiners {
        let client = WireClient(url: relay.url, token: token, deflate: true) { text in
            if text.contains(last) { caughtUp.withLock { $0.append(nowNs() - joinStart) } }
        }
        client.send(SyncMessage.hello(.init(replica: ReplicaID("cjoin\(i)")!, cursors: [:], client: "bench")).text)
        joining.append(client)
    }
    while caughtUp.withLock({ $0.count }) < joiners && nowNs() < joinStart + 300_000_000_000
            && !joining.allSatisfy({ $0.closed.load(ordering: .relaxed) }) {
        try await Task.sleep(for: .milliseconds(10))
    }
    let joinEnd = nowNs()
    try await Task.sleep(for: .seconds(1))
    pushing.cancel()
    joining.forEach { $0.close() }
    let joined = caughtUp.withLock { $0 }.sorted()
    guard joined.count == joiners else {
        throw BenchError("only \(joined.count) of \(joiners) new agents were caught up (in 300 s, or before their connections ended)")
    }
    let times = answered.withLock { $0 }.sorted()
    guard times.count == 2 * agents else { throw BenchError("only \(times.count) of \(2 * agents) digests were answered in 300 s") }
    let all = latencies.withLock { $0 }
    let before = LatencySummary(all.filter { $0.at < start }.map(\.ns))
    let during = LatencySummary(all.filter { $0.at >= start && $0.at <= end }.map(\.ns))
    let mib = { (kib: Int?) in kib.map { num(Double($0) / 1024) } ?? "?" }
    printTable("Relay: \(agents) agents' digests of a \(head)-operation board (one below the head at its own sequence, one at it, each), pushes to another board every 5 ms meanwhile",
               ["digests matched", "first answered s", "last answered s", "acks before: p50 / p99 / max ms", "acks during: n", "p50 / p99 / max ms",
                "process RSS MiB (after malloc_trim): before / answered, room open / room closed"],
               [["\(matches.load(ordering: .relaxed)) of \(2 * agents)", num(Double(times[0]) / 1e9), num(Double(times.last!) / 1e9),
                 "\(ms(before.p50)) / \(ms(before.p99)) / \(ms(before.max))", "\(during.count)",
                 "\(ms(during.p50)) / \(ms(during.p99)) / \(ms(during.max))",
                 "\(mib(rssBefore)) / \(mib(rssOpen)) / \(mib(rssClosed))"]])
    let joinAcks = LatencySummary(all.filter { $0.at >= joinStart && $0.at <= joinEnd }.map(\.ns))
    printTable("Relay: \(joiners) new agents sent the whole \(head)-operation board (catch-up\(compacted ? ": its snapshot and the tail" : "")), pushes to another board every 5 ms meanwhile",
               ["caught up: first s", "last s", "acks during: n", "p50 / p99 / max ms"],
               [[num(Double(joined[0]) / 1e9), num(Double(joined.last!) / 1e9), "\(joinAcks.count)",
                 "\(ms(joinAcks.p50)) / \(ms(joinAcks.p99)) / \(ms(joinAcks.max))"]])
}

/// Hands the long board's ID from the relay's set-up closure to the bench.
private actor LongBoard {
    var value: (EntityID, Int64)?
    func set(_ board: EntityID, _ head: Int64) { value = (board, head) }
    func get() -> (EntityID, Int64) { value! }
}
private let longBoard = LongBoard()
