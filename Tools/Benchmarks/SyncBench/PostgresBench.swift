import Foundation
import KanbanModel
import KanbanProtocol
import KanbanRelay
import Synchronization

// MARK: - PostgreSQL store limits (issue 6): commit rate per board and in all, NOTIFY rate

/// Appends through `PostgresRelayStorage` (what a relay instance does per push): `writers`
/// concurrent writers, each a closed loop of `perPush`-operation pushes, over `boards` boards
/// (writer w writes board w % boards). Returns a table row.
func pgAppend(storages: [PostgresRelayStorage], writers: Int, boards: Int, perPush: Int, duration: Double) async throws -> [String] {
    let boardIDs = (0..<boards).map { _ in EntityID.make() }
    // Operation IDs new to this run (the database keeps earlier runs').
    let counterBase = UInt64(Date().timeIntervalSince1970 * 1000) * 1_000
    // Create the boards first (not measured).
    for (i, board) in boardIDs.enumerated() {
        var factory = OpFactory(replica: "pgsetup\(i)", board: board, seed: UInt64(i))
        factory.counter = counterBase
        _ = try await storages[0].append([factory.make(.createBoard(title: "B\(i)"))], team: "bench")
    }
    let sink = SampleSink()
    final class Total: Sendable { let pushes = Atomic<Int>(0) }
    let total = Total()
    let cpu = CPUWindow(otherPIDs: [], postgres: true)
    let start = nowNs()
    let end = start + UInt64(duration * 1e9)
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
            let storage = storages[w % storages.count]
            let board = boardIDs[w % boards]
            group.addTask {
                var factory = OpFactory(replica: "pgw\(w)", board: board, seed: UInt64(100 + w))
                factory.counter = counterBase
                var samples: [UInt64] = []
                while nowNs() < end {
                    let ops = (0..<perPush).map { _ in factory.update() }
                    let t0 = nowNs()
                    _ = try await storage.append(ops, team: "bench")
                    samples.append(nowNs() - t0)
                    total.pushes.add(1, ordering: .relaxed)
                }
                sink.add(contentsOf: samples)
            }
        }
        try await group.waitForAll()
    }
    let seconds = Double(nowNs() - start) / 1e9
    let c = cpu.stop()
    let pushes = total.pushes.load(ordering: .relaxed)
    let s = LatencySummary(sink.all)
    return ["\(storages.count)", "\(writers)", "\(boards)", "\(perPush)", num(Double(pushes) / seconds), num(Double(pushes * perPush) / seconds),
            ms(s.p50), ms(s.p99), c.short]
}

/// NOTIFY throughput: `senders` tasks publish through instance A as fast as they can; instance B
/// counts what its listener receives.
func pgNotify(a: PostgresRelayStorage, b: PostgresRelayStorage, senders: Int, duration: Double) async throws -> [String] {
    final class Received: Sendable { let count = Atomic<Int>(0) }
    let received = Received()
    let listener = Task {
        for await event in b.events { if case .presence = event { received.count.add(1, ordering: .relaxed) } }
    }
    try await Task.sleep(for: .milliseconds(300))
    let board = EntityID.make()
    let presence = SyncMessage.Presence(board: board, replica: ReplicaID("bench"), user: "someone", viewing: true)
    let cpu = CPUWindow(otherPIDs: [], postgres: true)
    let start = nowNs()
    let end = start + UInt64(duration * 1e9)
    let sent = Received()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for s in 0..<senders {
            group.addTask {
                while nowNs() < end {
                    try await a.publish(presence: presence, connection: s)
                    sent.count.add(1, ordering: .relaxed)
                }
            }
        }
        try await group.waitForAll()
    }
    let sendSeconds = Double(nowNs() - start) / 1e9
    let total = sent.count.load(ordering: .relaxed)
    let deadline = nowNs() + 10_000_000_000
    while received.count.load(ordering: .relaxed) < total && nowNs() < deadline { try await Task.sleep(for: .milliseconds(10)) }
    let receiveSeconds = Double(nowNs() - start) / 1e9
    let c = cpu.stop()
    listener.cancel()
    return ["\(senders)", "\(total)", num(Double(total) / sendSeconds), "\(received.count.load(ordering: .relaxed))",
            num(Double(received.count.load(ordering: .relaxed)) / receiveSeconds), c.short]
}

func runPostgresStoreBench(postgres: String, duration: Double) async throws {
    let a = try await PostgresRelayStorage.connect(url: postgres, listen: true, logger: quietLogger("pg"), maxConnections: 20)
    let b = try await PostgresRelayStorage.connect(url: postgres, listen: true, logger: quietLogger("pg"), maxConnections: 20)
    var rows: [[String]] = []
    for (instances, writers, boards, perPush) in [(1, 1, 1, 1), (1, 4, 1, 1), (2, 8, 1, 1), (1, 16, 16, 1), (2, 16, 16, 1),
                                                  (1, 4, 1, 50), (2, 16, 16, 50)] {
        note("pg append: \(instances) instances, \(writers) writers, \(boards) boards, \(perPush) ops/push")
        rows.append(try await pgAppend(storages: Array([a, b].prefix(instances)), writers: writers, boards: boards, perPush: perPush,
                                       duration: duration))
    }
    printTable("PostgreSQL store: appends (each push = 1 transaction: lock the board row, dedupe, insert, bump head, NOTIFY, commit; fsync on)",
               ["instances", "writers", "boards", "ops/push", "pushes/s", "ops/s", "push p50 ms", "push p99 ms", "CPU %"], rows)
    await a.close()
    await b.close()
    var notifyRows: [[String]] = []
    for senders in [1, 8] {
        note("pg notify: \(senders) senders")
        // New instances each time: an instance's event stream has one consumer for its life.
        let a = try await PostgresRelayStorage.connect(url: postgres, listen: false, logger: quietLogger("pg"), maxConnections: 20)
        let b = try await PostgresRelayStorage.connect(url: postgres, listen: true, logger: quietLogger("pg"))
        notifyRows.append(try await pgNotify(a: a, b: b, senders: senders, duration: duration))
        await a.close()
        await b.close()
    }
    printTable("PostgreSQL NOTIFY: presence notifications (~200 B) from instance A, received by instance B's listener",
               ["senders", "sent", "sent/s", "received", "received/s", "CPU %"], notifyRows)
}
