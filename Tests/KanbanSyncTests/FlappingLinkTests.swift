import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GRDB
import KanbanAgent
import KanbanModel
import KanbanRelay
import KanbanStore
import Synchronization
import Testing

/// A relay that welcomes every agent and then cannot store its pushes (a full disk) closes each
/// link right after the welcome. Such links must not count as successes: the agent's backoff
/// grows across them instead of starting over, and once the relay can store again the queue
/// drains and the backoff starts over.
struct FlappingLinkTests {
    final class FailingAppends: Sendable {
        let failing = Atomic<Bool>(true)
        let refused = Atomic<Int>(0)
        func wrap(_ log: SQLiteRelayStorage) -> any RelayStorage { Storage(log: log, owner: self) }

        struct Storage: ForwardingToLog {
            let log: SQLiteRelayStorage
            let owner: FailingAppends
            func append(_ ops: [BoardOperation], team: String) async throws -> [AppendResult] {
                if owner.failing.load(ordering: .acquiring) {
                    owner.refused.add(1, ordering: .relaxed)
                    throw DatabaseError(resultCode: .SQLITE_FULL, message: "database or disk is full")
                }
                return try await log.append(ops, team: team)
            }
        }
    }

    @Test func linksThatFailEveryPushGrowTheBackoff() async throws {
        let storage = FailingAppends()
        let cluster = try await SyncCluster(agents: 1, wrapStorage: storage.wrap)
        try await cluster.whileRunning {
            let agent = cluster.agents[0]
            let board = try await agent.boardWithTasks(3, title: "Queued")
            try await cluster.connect(0)  // backoff 20 ms base, 300 ms cap

            // Each link is welcomed, pushes, and is closed by the relay. Reset on every welcome, the
            // count of consecutive failures would stay at 1.
            // (The status is read once per check: a new link's welcome clears both fields.)
            var seen: SyncStatus?
            try await eventually("the backoff grows across welcomed links that store nothing") {
                let status = agent.syncStatus
                if status.consecutiveFailures >= 4 { seen = status }
                return seen != nil
            }
            #expect(storage.refused.load(ordering: .relaxed) >= 4)
            #expect(seen?.lastError?.contains("its disk is full") == true, "\(seen?.lastError ?? "no error")")
            #expect(try agent.store.outboxCount() == 5)

            // The relay says so: not ready (its store reads fine but takes no writes), and counted.
            let relayURL = "http://127.0.0.1:\(cluster.relayPort.withLock { $0 })"
            let (ready, readyBody) = try await httpGet(relayURL + "/health/ready")
            #expect(ready == 503 && readyBody.contains("its disk is full") && readyBody.contains("failed appends"), "\(ready) \(readyBody)")
            let metrics = try await httpGet(relayURL + "/metrics").1
            #expect(metrics.contains("kanban_relay_log_writes_failing 1"), "\(metrics)")
            #expect(metricValue(metrics, "kanban_relay_append_failures").map { $0 >= 4 } == true)

            storage.failing.store(false, ordering: .releasing)
            try await eventually("the queue drains once the relay stores again", timeout: .seconds(20)) {
                try agent.store.outboxCount() == 0 && agent.syncStatus.state == .connected
            }
            #expect(agent.syncStatus.consecutiveFailures == 0)
            let relay = try #require(cluster.relayRef.withLock { $0 })
            #expect(try await relay.storage.head(of: board) == 5)
            #expect(try await httpGet(relayURL + "/health/ready").0 == 200)
            #expect(try await httpGet(relayURL + "/metrics").1.contains("kanban_relay_log_writes_failing 0"))
        }
    }
}

/// Status and body of a GET.
func httpGet(_ url: String) async throws -> (Int, String) {
    let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
}

/// The value of an unlabelled sample in a Prometheus text exposition.
func metricValue(_ text: String, _ name: String) -> Double? {
    text.split(separator: "\n").lazy.compactMap { line -> Double? in
        let parts = line.split(separator: " ")
        return parts.count == 2 && parts[0] == name ? Double(parts[1]) : nil
    }.first
}
