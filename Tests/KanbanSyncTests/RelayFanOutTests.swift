import Foundation
import HTTPTypes
import KanbanAgent
import KanbanModel
import KanbanProtocol
import KanbanStore
@testable import KanbanRelay
import Logging
import Synchronization
import Testing
import WSClient
import WSCompression

/// Fan-out through the relay's own permessage-deflate, read by swift-websocket's client (an
/// independent RFC 7692 inflater, with context takeover).
@Suite(.timeLimit(.minutes(2)))
struct RelayFanOutTests {
    final class Seen: Sendable {
        let titles = Mutex<[String]>([])
        var count: Int { titles.withLock { $0.count } }
    }

    /// Two subscribers that joined at different times read every operation, in order, and once
    /// the relay has put them on one deflate stream each broadcast costs one compression for both.
    @Test func subscribersThatJoinedAtDifferentTimesDecodeEveryBroadcastCompressedOnce() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            let a = cluster.agents[0]
            let board = try await a.createBoard(title: "Fan-out").id
            guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil) else { throw TestError("column") }
            try await eventually("the board reaches the relay") { try a.store.outboxCount() == 0 }
            let relay = try #require(cluster.relayRef.withLock { $0 })

            var headers = HTTPFields()
            headers[.authorization] = "Bearer \(cluster.token)"
            let configuration = WebSocketClientConfiguration(
                maxFrameSize: 1 << 20, additionalHeaders: headers,
                extensions: [.perMessageDeflate(maxWindow: 12, maxDecompressedFrameSize: 1 << 20)], autoPing: .disabled)
            func subscribe(_ name: String, _ seen: Seen) -> Task<Void, any Error> {
                Task {
                    _ = try await WebSocketClient.connect(url: cluster.relayURL, configuration: configuration, logger: quietLogger(name)) {
                        inbound, outbound, _ in
                        try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID(name)!, cursors: [:])).text))
                        for try await message in inbound.messages(maxSize: 1 << 20) {
                            guard case .text(let text) = message, case .ops(let ops) = try SyncMessage.decode(Data(text.utf8)) else { continue }
                            for entry in ops.ops {
                                if case .createTask(_, _, _, let title, _) = entry.op.action { seen.titles.withLock { $0.append(title) } }
                            }
                        }
                    }
                }
            }
            var last: EntityID?
            func create(_ range: Range<Int>, seenBy subscribers: [Seen]) async throws {
                for i in range {
                    guard case .task(let task) = try await a.createTask(column: column.id, title: "task \(i) with a title long enough to compress",
                                                                      description: nil, after: last) else { throw TestError("task") }
                    last = task.id
                    // One push per operation: each is its own broadcast.
                    try await eventually("task \(i) delivered") { subscribers.allSatisfy { $0.count >= i + 1 } }
                }
            }

            let early = Seen(), late = Seen()
            let earlyTask = subscribe("early", early)
            try await create(0..<10, seenBy: [early])
            let lateTask = subscribe("late", late)
            try await eventually("the late subscriber caught up") { late.count == 10 }
            // Until the relay regroups them (RelayCompressor.regroupAfter), early and late are
            // compressed apart; then together.
            try await create(10..<(10 + RelayCompressor.regroupAfter + 5), seenBy: [early, late])
            let before = await relay.hub.compressions
            let n = 20
            let start = 10 + RelayCompressor.regroupAfter + 5
            try await create(start..<(start + n), seenBy: [early, late])
            let spent = await relay.hub.compressions - before
            // Per push: the broadcast (early + late together) and the author's ack; compressing for
            // each subscriber would take 3.
            #expect(spent <= 2 * n + 2, "\(spent) compressions for \(n) pushes")
            let expected = (0..<(start + n)).map { "task \($0) with a title long enough to compress" }
            #expect(early.titles.withLock { $0 } == expected)
            #expect(late.titles.withLock { $0 } == expected)
            earlyTask.cancel()
            lateTask.cancel()
        }
    }
}
