import Foundation
import KanbanModel
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
    let long = EntityID.make()
    var writer = OpFactory(replica: "clong", board: long, seed: 1)
    _ = try await storage.append([writer.make(.createBoard(title: "Long"))], team: "bench")
    var left = ops - 1
    while left > 0 {
        let n = min(1_000, left)
        _ = try await storage.append((0..<n).map { _ in writer.typical() }, team: "bench")
        left -= n
    }
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
    let snapshot = try storage.snapshot(board: long)
    let s = LatencySummary(samples)
    printTable("Relay log compaction under load (SQLite, synchronous=FULL): one board folded while another is appended to",
               ["operations folded", "compaction s", "appends meanwhile", "append p50 ms", "p99 ms", "max ms", "snapshot at"],
               [["\(through)", num(seconds), "\(samples.count) at \(Int(rate))/s", ms(s.p50), ms(s.p99), ms(s.max),
                 snapshot.map { "\($0.seq)" } ?? "none"]])
}
