import Foundation
import KanbanAgent
import KanbanModel
import KanbanProtocol
@testable import KanbanRelay
import KanbanStore
import Synchronization
import Testing

/// The relay's configurable limits (`RelayConfiguration`): connections per token, operations per
/// second per connection, queued messages and bytes per connection.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct RelayLimitsTests {
    @Test func aTokenGetsNoMoreConnectionsThanAllowedAndTheRefusedAgentGetsInWhenOneLeaves() async throws {
        var configuration = RelayConfiguration()
        configuration.maxConnectionsPerToken = 2
        let cluster = try await SyncCluster(agents: 3, relayConfiguration: configuration)
        defer { Task { await cluster.shutdown() } }
        for i in 0..<3 { try await cluster.connect(i) }
        let connected = { cluster.agents.indices.filter { cluster.agents[$0].syncStatus.state == .connected } }
        try await eventually("two agents connected, the third refused with 4029") {
            connected().count == 2 && cluster.agents.contains { $0.syncStatus.attempts.contains { $0.errorClass == "close_4029" } }
        }
        let refused = try #require(cluster.agents.indices.first { !connected().contains($0) })
        #expect(cluster.agents[refused].syncStatus.attempts.first?.fix?.contains("max-connections-per-token") == true)
        let relay = try #require(cluster.relayRef.withLock { $0 })
        #expect(await relay.hub.stats.connections <= 2)

        await cluster.disconnect(connected().first { $0 != refused }!)
        try await eventually("the refused agent connects once a slot is free") {
            cluster.agents[refused].syncStatus.state == .connected
        }
    }

    @Test func pushesOverTheRateAreSlowedNotDropped() async throws {
        var configuration = RelayConfiguration()
        configuration.maxOperationsPerSecond = 200
        let cluster = try await SyncCluster(agents: 1, relayConfiguration: configuration)
        defer { Task { await cluster.shutdown() } }
        let a = cluster.agents[0]
        let board = try await a.createBoard(title: "Rate").id
        guard case .column(let column) = try await a.createColumn(board: board, title: "C", after: nil) else {
            throw TestError("no column")
        }
        for i in 0..<598 { _ = try await a.createTask(column: column.id, title: "T\(i)", description: nil, after: nil) }
        #expect(try a.store.outboxCount() == 600)

        let start = ContinuousClock.now
        try await cluster.connect(0)
        try await eventually("all 600 operations acknowledged", timeout: .seconds(30)) { try a.store.outboxCount() == 0 }
        let elapsed = ContinuousClock.now - start
        // One second of burst (200), then 400 more at 200/s: at least ~2 s; unlimited it takes well under 1 s.
        #expect(elapsed >= .milliseconds(1_500), "600 operations at 200/s took only \(elapsed)")
        let relay = try #require(cluster.relayRef.withLock { $0 })
        #expect(try await relay.storage.operationCount() == 600)
    }

    @Test func theOutboundQueueIsBoundedByMessagesAndBytes() async {
        let byCount = OutboundQueue(maxMessages: 3, maxBytes: 1 << 20)
        #expect(byCount.enqueue("a") && byCount.enqueue("b") && byCount.enqueue("c"))
        #expect(!byCount.enqueue("d"), "a fourth message overflows")
        #expect(await byCount.next() == ["a", "b", "c"])
        #expect(byCount.enqueue("e"), "draining frees room")

        let byBytes = OutboundQueue(maxMessages: 100, maxBytes: 10)
        #expect(byBytes.enqueue("12345") && byBytes.enqueue("67890"))
        #expect(!byBytes.enqueue("x"), "one byte over the byte bound")

        byBytes.finish(discardingQueued: true)
        #expect(await byBytes.next() == nil, "a slow connection's backlog is dropped, so its close goes out at once")
        #expect(!byBytes.enqueue("late"))

        let draining = OutboundQueue(maxMessages: 10, maxBytes: 100)
        _ = draining.enqueue("last words")
        draining.finish()
        #expect(await draining.next() == ["last words"])
        #expect(await draining.next() == nil)
    }

    @Test func theTokenBucketAllowsOneSecondOfBurstThenTheRate() {
        var bucket = TokenBucket(perSecond: 100)
        #expect(bucket.take(100) == .zero)
        let wait = bucket.take(50)
        #expect(wait >= .milliseconds(450) && wait <= .milliseconds(520), "\(wait)")
    }
}
