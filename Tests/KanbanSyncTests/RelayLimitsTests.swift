import Foundation
import KanbanAgent
import KanbanModel
import KanbanProtocol
@testable import KanbanRelay
import KanbanStore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The relay's configurable limits (`RelayConfiguration`): connections per token, operations per
/// second per connection, queued messages and bytes per connection.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct RelayLimitsTests {
    @Test func aTokenGetsNoMoreConnectionsThanAllowedAndTheRefusedAgentGetsInWhenOneLeaves() async throws {
        var configuration = RelayConfiguration()
        configuration.maxConnectionsPerToken = 2
        let cluster = try await SyncCluster(agents: 3, relayConfiguration: configuration)
        try await cluster.whileRunning {
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
    }

    @Test func pushesOverTheRateAreSlowedNotDropped() async throws {
        var configuration = RelayConfiguration()
        configuration.maxOperationsPerSecond = 200
        let cluster = try await SyncCluster(agents: 1, relayConfiguration: configuration)
        try await cluster.whileRunning {
            let a = cluster.agents[0]
            _ = try await a.boardWithTasks(598, title: "Rate")
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
    }

    @Test func theOutboundQueueIsBoundedByMessagesAndBytes() async {
        let byCount = OutboundQueue<String>(maxMessages: 3, maxBytes: 1 << 20)
        #expect(byCount.enqueue("a") && byCount.enqueue("b") && byCount.enqueue("c"))
        #expect(!byCount.enqueue("d"), "a fourth message overflows")
        #expect(await byCount.next() == ["a", "b", "c"])
        #expect(byCount.enqueue("e"), "draining frees room")

        let byBytes = OutboundQueue<String>(maxMessages: 100, maxBytes: 10)
        #expect(byBytes.enqueue("12345") && byBytes.enqueue("67890"))
        #expect(!byBytes.enqueue("x"), "one byte over the byte bound")
        #expect(byBytes.enqueue("a catch-up larger than the byte bound", boundedByBytes: false),
                "catch-up and replies are bounded by count only")

        byBytes.finish(discardingQueued: true)
        #expect(await byBytes.next() == nil, "a slow connection's backlog is dropped, so its close goes out at once")
        #expect(!byBytes.enqueue("late"))

        let draining = OutboundQueue<String>(maxMessages: 10, maxBytes: 100)
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

/// A subscriber that stops reading: its outbound queue hits the byte bound, the relay drops it
/// (4008) instead of buffering without end, keeps serving the writer, and an agent on the same
/// token later catches up from its cursor.
@Suite(.timeLimit(.minutes(2)))
struct SlowSubscriberTests {
    /// A raw WebSocket client (by default with a 4 KiB receive buffer): upgrades, says hello as
    /// `replica`, and never sends anything again.
    final class StalledClient {
        let fd: Int32

        init(port: Int, token: String, replica: String = "stalled", receiveBuffer: Int32? = 4096) throws {
            fd = try connectLoopback(port: port, receiveBuffer: receiveBuffer)
            try write(Array(("GET /sync HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                + "Authorization: Bearer \(token)\r\n\r\n").utf8))
            var head = [UInt8]()
            var byte: UInt8 = 0
            while !head.suffix(4).elementsEqual([13, 10, 13, 10]), read(fd, &byte, 1) == 1 { head.append(byte) }
            guard String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
                throw TestError("upgrade refused: \(String(decoding: head, as: UTF8.self))")
            }
            // One masked text frame (zero mask key) with the hello.
            let hello = Array(SyncMessage.hello(.init(replica: ReplicaID(replica)!, cursors: [:])).text.utf8)
            var frame: [UInt8] = [0x81]
            if hello.count < 126 { frame.append(0x80 | UInt8(hello.count)) } else {
                frame += [0x80 | 126, UInt8(hello.count >> 8), UInt8(hello.count & 0xFF)]
            }
            try write(frame + [0, 0, 0, 0] + hello)
        }

        func write(_ bytes: [UInt8]) throws {
            guard Glibc.write(fd, bytes, bytes.count) == bytes.count else { throw TestError("write failed") }
        }

        /// Reads everything left, until the relay closes the connection; the bytes read. The
        /// blocking reads run on a thread of their own, not on the pool the relay needs.
        func drain(timeout: Duration) async -> Int {
            await withCheckedContinuation { continuation in
                let fd = fd
                Thread.detachNewThread { continuation.resume(returning: Self.drainBlocking(fd, timeout: timeout)) }
            }
        }

        private static func drainBlocking(_ fd: Int32, timeout: Duration) -> Int {
            var timeoutValue = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeoutValue, socklen_t(MemoryLayout<timeval>.size))
            var total = 0
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { return n == 0 ? total : -1 }
                total += n
            }
        }

        deinit { close(fd) }
    }

    @Test func aSubscriberThatStopsReadingIsDroppedAndCatchesUpLater() async throws {
        var configuration = RelayConfiguration()
        configuration.maxQueuedBytes = 64 << 10
        let cluster = try await SyncCluster(agents: 2, relayConfiguration: configuration)
        try await cluster.whileRunning {
            let relay = try #require(cluster.relayRef.withLock { $0 })
            let (writer, late) = (cluster.agents[0], cluster.agents[1])
            try await cluster.connect(0)
            let board = try await writer.createBoard(title: "Firehose").id
            guard case .column(let column) = try await writer.createColumn(board: board, title: "C", after: nil) else { throw TestError("column") }
            try await eventually("the board reaches the relay") { try writer.store.outboxCount() == 0 }

            let stalled = try StalledClient(port: cluster.relayPort.withLock { $0 }, token: cluster.token)
            try await eventually("the stalled client joined") { await relay.hub.stats.connections == 2 }
            // About 12 MB, more than the kernel buffers between relay and client (4 MiB each way at most).
            let description = String(repeating: "d", count: 20_000)
            for i in 0..<600 {
                _ = try await writer.createTask(column: column.id, title: "T\(i)", description: description, after: nil)
            }
            try await eventually("the relay drops the stalled subscriber", timeout: .seconds(60)) {
                await relay.metricsText().contains("kanban_relay_slow_closes_total 1")
            }
            try await eventually("the writer is still served", timeout: .seconds(60)) { try writer.store.outboxCount() == 0 }
            #expect(await relay.hub.stats.connections == 1)
            // What reached the client was bounded by the kernel's buffers plus at most 64 KiB queued,
            // far less than the ~12 MB written; then the connection ends.
            let buffered = await stalled.drain(timeout: .seconds(10))
            #expect(buffered >= 0 && buffered < 9_000_000, "read \(buffered) bytes before the close")

            // An agent (on the same token) that was away catches up from its cursor.
            try await cluster.connect(1)
            try await cluster.waitForConvergence(board: board, among: [0, 1])
            #expect(try late.document(board).columns.first?.tasks.count == 600)
        }
    }
}
