import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KanbanModel
import KanbanProtocol
@testable import KanbanRelay
import Synchronization
import Testing

/// `/health/ready`: the relay answers 503 while its store does not (PostgreSQL down, a hung
/// read), 200 once it does; `/health` (liveness) stays 200 throughout.
@Suite struct RelayReadinessTests {
    enum Mode { case up, failing, hanging }

    /// The relay's SQLite log, with reads of a board's head that fail or hang on demand.
    final class Switchable: Sendable {
        let mode = Mutex(Mode.up)
        struct StoreDown: Error, CustomStringConvertible { var description: String { "connection refused (test)" } }

        func wrap(_ log: SQLiteRelayStorage) -> any RelayStorage { Storage(log: log, owner: self) }

        struct Storage: ForwardingToLog {
            let log: SQLiteRelayStorage
            let owner: Switchable

            func head(of board: EntityID) async throws -> Int64 {
                switch owner.mode.withLock({ $0 }) {
                case .up: return try log.head(of: board)
                case .failing: throw StoreDown()
                case .hanging:
                    // Until the test changes the mode.
                    while owner.mode.withLock({ $0 }) == .hanging { try await Task.sleep(for: .milliseconds(20)) }
                    return try log.head(of: board)
                }
            }
        }
    }

    func get(_ url: String) async throws -> (Int, [String: String]) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: String] ?? [:]
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, object)
    }

    @Test func readinessFollowsTheStoreAndLivenessDoesNot() async throws {
        let store = Switchable()
        let cluster = try await SyncCluster(agents: 0, wrapStorage: { store.wrap($0) })
        try await cluster.whileRunning {
            let base = "http://127.0.0.1:\(cluster.relayPort.withLock { $0 })"

            var (status, body) = try await get(base + "/health/ready")
            #expect(status == 200 && body == ["status": "ready", "store": "ok"], "\(status) \(body)")

            store.mode.withLock { $0 = .failing }
            (status, body) = try await get(base + "/health/ready")
            #expect(status == 503 && body["status"] == "unavailable" && body["store"]?.contains("connection refused") == true, "\(status) \(body)")
            #expect(try await get(base + "/health").0 == 200)

            // A store that does not answer: the check gives up after 2 s instead of hanging with it.
            store.mode.withLock { $0 = .hanging }
            let started = ContinuousClock.now
            (status, body) = try await get(base + "/health/ready")
            let took = ContinuousClock.now - started
            #expect(status == 503 && body["store"]?.contains("did not answer within") == true, "\(status) \(body)")
            #expect(took < .seconds(4), "the check waited \(took) for a hung store")

            // Probes while that read still hangs share it: no read per probe piles up.
            let relay = try #require(cluster.relayRef.withLock { $0 })
            let readsBefore = relay.readiness.reads.load(ordering: .relaxed)
            let answers = try await withThrowingTaskGroup(of: (Int, [String: String]).self) { group in
                for _ in 0..<5 { group.addTask { try await self.get(base + "/health/ready") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0.0 == 503 && $0.1["store"]?.contains("did not answer within") == true }, "\(answers)")
            #expect(relay.readiness.reads.load(ordering: .relaxed) == readsBefore, "a probe started a read of its own")
            #expect(answers.allSatisfy { $0.1["store"]?.contains("its read has been waiting for") == true }, "\(answers)")

            store.mode.withLock { $0 = .up }
            try await eventually("the hung read ends and the next probe reads again", timeout: .seconds(10)) {
                try await get(base + "/health/ready").0 == 200
            }
            (status, body) = try await get(base + "/health/ready")
            #expect(status == 200 && body["status"] == "ready", "\(status) \(body)")
        }
    }
}
