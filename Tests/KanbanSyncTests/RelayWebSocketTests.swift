import Foundation
import HTTPTypes
import KanbanAgent
import KanbanModel
import KanbanProtocol
@testable import KanbanRelay
import KanbanStore
import NIOCore
import NIOWebSocket
import Synchronization
import Testing
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// The relay's own WebSocket layer (`RelayChildChannel`, `RelayFrameHandler`): RFC 6455 rules
/// for frames, the close handshake both ways, pings, refused upgrades, and a shutdown that
/// closes every connection with 1001.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct RelayWebSocketTests {
    /// Says hello, sends `frames` as they are, reads until the relay closes; the close code.
    func closeCode(_ cluster: SyncCluster, sending frames: [WebSocketFrame]) async throws -> UInt16? {
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(cluster.token)"
        let close = try await WebSocketClient.connect(
            url: cluster.relayURL, configuration: .init(maxFrameSize: 1 << 22, additionalHeaders: headers), logger: quietLogger("frames")
        ) { inbound, outbound, _ in
            try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID("framer")!, cursors: [:])).text))
            for frame in frames { try await outbound.write(.custom(frame)) }
            for try await _ in inbound.messages(maxSize: 1 << 22) {}
        }
        return close.map { UInt16(webSocketErrorCode: $0.closeCode) }
    }

    @Test func framesThatBreakRFC6455GetTheirCloseCodes() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            let ping = #"{"type":"ping","t":1}"#
            let cases: [(String, [WebSocketFrame], UInt16)] = [
                ("a text message that is not UTF-8",
                 [WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: [0x7B, 0xFF, 0xFE, 0x7D]))], SyncCloseCode.invalidPayload),
                ("a continuation frame with nothing to continue",
                 [WebSocketFrame(fin: true, opcode: .continuation, data: ByteBuffer(string: ping))], SyncCloseCode.protocolError),
                ("a new message inside a fragmented one",
                 [WebSocketFrame(fin: false, opcode: .text, data: ByteBuffer(string: "{")),
                  WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: ping))], SyncCloseCode.protocolError),
                ("reserved bit 2", [WebSocketFrame(fin: true, rsv2: true, opcode: .text, data: ByteBuffer(string: ping))],
                 SyncCloseCode.protocolError),
                ("RSV1 without permessage-deflate negotiated",
                 [WebSocketFrame(fin: true, rsv1: true, opcode: .text, data: ByteBuffer(string: ping))], SyncCloseCode.protocolError),
                ("RSV1 on a ping", [WebSocketFrame(fin: true, rsv1: true, opcode: .ping, data: ByteBuffer(string: "x"))],
                 SyncCloseCode.protocolError),
                ("reserved opcode 3", [WebSocketFrame(fin: true, opcode: WebSocketOpcode(encodedWebSocketOpcode: 3)!, data: ByteBuffer())],
                 SyncCloseCode.protocolError),
                ("fragments joined past 1 MiB",
                 (0..<5).map { i in WebSocketFrame(fin: i == 4, opcode: i == 0 ? .text : .continuation,
                                                   data: ByteBuffer(repeating: UInt8(ascii: "x"), count: 300_000)) },
                 SyncCloseCode.messageTooBig),
            ]
            for (name, frames, expected) in cases {
                let code = try await closeCode(cluster, sending: frames)
                #expect(code == expected, "\(name): closed with \(String(describing: code))")
            }
            // The relay still serves an agent, and every connection above has left the hub.
            try await cluster.connect(0)
            let a = cluster.agents[0]
            _ = try await a.createBoard(title: "Still served")
            try await eventually("the agent syncs") { try a.store.outboxCount() == 0 }
            let relay = try #require(cluster.relayRef.withLock { $0 })
            try await eventually("only the agent's connection is left") { await relay.hub.stats.connections == 1 && relay.sessions.count == 1 }
        }
    }

    @Test func aPingIsAnsweredWithItsPayloadAndAPeersCloseWithItsCode() async throws {
        let cluster = try await SyncCluster(agents: 0)
        try await cluster.whileRunning {
            let client = try SlowSubscriberTests.StalledClient(port: cluster.relayPort.withLock { $0 }, token: cluster.token,
                                                               replica: "pinger", receiveBuffer: nil)
            // Masked (zero key) ping with "abc", then a close with 4321 (0x10E1) and reason "bye".
            try client.write([0x89, 0x83, 0, 0, 0, 0] + Array("abc".utf8))
            try client.write([0x88, 0x85, 0, 0, 0, 0, 0x10, 0xE1] + Array("bye".utf8))
            let received = await Self.readUntilClosed(client.fd, timeout: .seconds(10))
            #expect(received.closed, "the relay did not close the TCP connection after the close handshake")
            let bytes = received.bytes
            let pong: [UInt8] = [0x8A, 0x03] + Array("abc".utf8)
            #expect(bytes.indices.contains { bytes[$0...].starts(with: pong) }, "no pong with the ping's payload in \(bytes.count) bytes")
            // The answer carries the peer's code (and nothing after it: it is the last frame).
            #expect(bytes.suffix(4).elementsEqual([0x88, 0x02, 0x10, 0xE1]), "last bytes \(Array(bytes.suffix(8)))")
            let relay = try #require(cluster.relayRef.withLock { $0 })
            try await eventually("the connection left the hub") { await relay.hub.stats.connections == 0 && relay.sessions.count == 0 }
        }
    }

    @Test func anUpgradeAnywhereButSyncIsRefusedWithAReason() async throws {
        let cluster = try await SyncCluster(agents: 0)
        try await cluster.whileRunning {
            let fd = try connectLoopback(port: cluster.relayPort.withLock { $0 })
            defer { close(fd) }
            let request = "GET /elsewhere HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer \(cluster.token)\r\n\r\n"
            _ = Array(request.utf8).withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            let received = await Self.readUntilClosed(fd, timeout: .seconds(10))
            let text = String(decoding: received.bytes, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 400"), "\(text.prefix(200))")
            #expect(text.contains(#""code":"upgrade_refused""#) && text.contains("/elsewhere is not a WebSocket endpoint"), "\(text)")
            #expect(received.closed)
        }
    }

    /// A connection that sends half a request line and stops is closed after the HTTP idle time
    /// (before its first request head there is no per-request timer to do it).
    @Test func aRequestThatNeverFinishesIsClosedAfterTheIdleTime() async throws {
        var configuration = RelayConfiguration()
        configuration.httpIdleSeconds = 1
        let cluster = try await SyncCluster(agents: 0, relayConfiguration: configuration)
        try await cluster.whileRunning {
            let fd = try connectLoopback(port: cluster.relayPort.withLock { $0 })
            defer { close(fd) }
            let partial = Array("GET /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr".utf8)
            _ = partial.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            let start = ContinuousClock.now
            let received = await Self.readUntilClosed(fd, timeout: .seconds(10))
            let waited = ContinuousClock.now - start
            #expect(received.closed, "still open after \(waited)")
            #expect(waited >= .milliseconds(900) && waited < .seconds(5), "closed after \(waited); the idle time is 1 s")
        }
    }

    @Test func aShutdownClosesEveryWebSocketWith1001AndWaitsForThem() async throws {
        let cluster = try await SyncCluster(agents: 0)
        try await cluster.whileRunning {
            let headers: HTTPFields = [.authorization: "Bearer \(cluster.token)"]
            final class Welcomed: Sendable { let count = Mutex(0) }
            let welcomed = Welcomed()
            let sessions = (0..<3).map { i in
                Task {
                    try await WebSocketClient.connect(url: cluster.relayURL, configuration: .init(additionalHeaders: headers),
                                                      logger: quietLogger("closing")) { inbound, outbound, _ in
                        try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID("closing\(i)")!, cursors: [:])).text))
                        for try await message in inbound.messages(maxSize: 1 << 20) {
                            if case .text(let text) = message, text.contains(#""type":"welcome""#) { welcomed.count.withLock { $0 += 1 } }
                        }
                    }
                }
            }
            try await eventually("all three are welcomed") { welcomed.count.withLock { $0 } == 3 }
            let relay = try #require(cluster.relayRef.withLock { $0 })
            #expect(relay.sessions.count == 3)
            let start = ContinuousClock.now
            await cluster.stopRelay()
            let took = ContinuousClock.now - start
            // Stopped after the close handshakes, not after the 5 s limit for peers that never answer.
            #expect(relay.sessions.count == 0, "the server stopped with \(relay.sessions.count) WebSockets still open")
            #expect(took < .seconds(4), "the shutdown took \(took)")
            for session in sessions {
                let close = try await session.value
                #expect(close.map { UInt16(webSocketErrorCode: $0.closeCode) } == SyncCloseCode.goingAway, "\(String(describing: close))")
            }
        }
    }

    /// A sender over its push rate fills its connection's queue: the relay stops reading it
    /// (counted), reads on as the queue drains, and acknowledges every push, in order.
    @Test func readingPausesWhileMessagesWaitAndResumes() async throws {
        var configuration = RelayConfiguration()
        configuration.maxOperationsPerSecond = 40
        let cluster = try await SyncCluster(agents: 1, relayConfiguration: configuration)
        try await cluster.whileRunning {
            // Agent A stays offline: its outbox supplies valid operations to push by hand.
            let a = cluster.agents[0]
            _ = try await a.boardWithTasks(118, title: "Paced")
            let ops = try a.store.outbox(limit: 1_000)
            #expect(ops.count == 120)

            final class Acked: Sendable { let ids = Mutex<[String]>([]) }
            let acked = Acked()
            let headers: HTTPFields = [.authorization: "Bearer \(cluster.token)"]
            let replica = a.store.replicaID
            let start = ContinuousClock.now
            _ = try await WebSocketClient.connect(url: cluster.relayURL, configuration: .init(additionalHeaders: headers),
                                                  logger: quietLogger("pusher")) { inbound, outbound, _ in
                try await outbound.write(.text(SyncMessage.hello(.init(replica: replica, cursors: [:])).text))
                // All at once, one operation per push: far more than the relay handles at 40/s.
                for op in ops { try await outbound.write(.text(SyncMessage.push(.init(ops: [op])).text)) }
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message, case .ack(let ack) = try SyncMessage.decode(Data(text.utf8)) else { continue }
                    let count = acked.ids.withLock { ids in
                        ids += ack.acks.map { $0.op.description }
                        return ids.count
                    }
                    if count >= ops.count { break }
                }
                try await outbound.close(.normalClosure, reason: nil)
            }
            let elapsed = ContinuousClock.now - start
            #expect(acked.ids.withLock { $0 } == ops.map { $0.id.description }, "every push acknowledged once, in order")
            // 40 at once (one second of burst), the other 80 at 40/s.
            #expect(elapsed >= .milliseconds(1_500), "120 pushes at 40/s took only \(elapsed)")
            let relay = try #require(cluster.relayRef.withLock { $0 })
            let metrics = await relay.metricsText()
            let pauses = metrics.split(separator: "\n").first { $0.hasPrefix("kanban_relay_read_pauses_total ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            #expect(pauses >= 1, "reading never paused: \(metrics.split(separator: "\n").filter { $0.contains("read_pauses") })")
            #expect(try await relay.storage.operationCount() == 120)
        }
    }

    /// A digest an agent took below the relay's head (others wrote before it arrived): the relay
    /// compares it with the board's state at that sequence, rebuilt from its log (it used to
    /// ignore it, and the agent, which compares once per connection, never asked again). A
    /// matching digest is answered `match`, a wrong one `false` and the whole board resent. The
    /// relay keeps the last state it rebuilt and goes on from it for a higher sequence: asked at
    /// 2, then 4 (from 2's), then 3 (below it: from the start again), then at the head (as
    /// before), then 4 and 3 wrong: each answer has to be right.
    @Test func aDigestBelowTheHeadIsComparedAtItsSequence() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            let a = cluster.agents[0]
            let board = try await a.boardWithTasks(3, title: "Checked")
            let ops = try a.store.outbox()
            try await cluster.connect(0)
            try await eventually("the relay has the board") { try a.store.outboxCount() == 0 }
            await cluster.disconnect(0)
            #expect(ops.count == 5)
            let states = (0...ops.count).map { n in
                var state = BoardState(id: board)
                for op in ops.prefix(n) { state.apply(op) }
                return state
            }
            let wrong = String(repeating: "0", count: 64)
            let asked: [(seq: Int64, digest: String)] = [
                (2, states[2].digest), (4, states[4].digest), (3, states[3].digest), (5, states[5].digest), (4, wrong), (3, wrong),
            ]

            final class Replies: Sendable { let list = Mutex<[SyncMessage]>([]) }
            let replies = Replies()
            let headers: HTTPFields = [.authorization: "Bearer \(cluster.token)"]
            _ = try await WebSocketClient.connect(url: cluster.relayURL, configuration: .init(additionalHeaders: headers),
                                                  logger: quietLogger("checker")) { inbound, outbound, _ in
                try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID("checker")!, cursors: [board: 5])).text))
                var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                // One digest at a time, each after the answer to the one before (the suite's time
                // limit bounds the waits).
                for (seq, digest) in asked {
                    try await outbound.write(.text(SyncMessage.digest(.init(board: board, seq: seq, digest: digest)).text))
                    while let message = try await messages.next() {
                        guard case .text(let text) = message else { continue }
                        let decoded = try SyncMessage.decode(Data(text.utf8))
                        replies.list.withLock { $0.append(decoded) }
                        if case .digestResult = decoded { break }
                    }
                }
                // After the last mismatch, the board resent through its head.
                while let message = try await messages.next() {
                    guard case .text(let text) = message else { continue }
                    let decoded = try SyncMessage.decode(Data(text.utf8))
                    replies.list.withLock { $0.append(decoded) }
                    if case .ops(let batch) = decoded, batch.ops.last?.seq == 5 { break }
                }
                try await outbound.close(.normalClosure, reason: nil)
            }
            let list = replies.list.withLock { $0 }
            let results = list.compactMap { message -> SyncMessage.DigestResult? in
                if case .digestResult(let result) = message { result } else { nil }
            }
            #expect(results.map { "\($0.seq) \($0.match)" } == ["2 true", "4 true", "3 true", "5 true", "4 false", "3 false"])
            let resent = list.split { if case .digestResult(let r) = $0 { !r.match } else { false } }
                .map { part in part.flatMap { message -> [Int64] in if case .ops(let batch) = message { batch.ops.map(\.seq) } else { [] } } }
            #expect(resent.dropFirst().map { $0 } == [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], "the board resent after each mismatch: \(resent)")
        }
    }

    /// Broadcasts that reach connections already closing (here: a shutdown while one agent
    /// writes and two listen) are dropped quietly, not counted as slow subscribers (which an
    /// alert watches).
    @Test func aShutdownUnderLoadCountsNoSlowConnection() async throws {
        let cluster = try await SyncCluster(agents: 3)
        try await cluster.whileRunning {
            for i in 0..<3 { try await cluster.connect(i) }
            let a = cluster.agents[0]
            let board = try await a.boardWithTasks(0, title: "Busy")
            try await cluster.waitForConvergence(board: board)
            let column = try #require(try a.store.document(board)?.columns.first?.id)
            let writer = Task {
                var i = 0
                while !Task.isCancelled {
                    _ = try? await a.createTask(column: column, title: "W\(i)", description: nil, after: nil)
                    i += 1
                }
            }
            try await eventually("the others see the writes") { try cluster.agents[1].store.document(board)?.columns.first?.tasks.count ?? 0 >= 20 }
            let relay = try #require(cluster.relayRef.withLock { $0 })
            await cluster.stopRelay()
            writer.cancel()
            let metrics = await relay.metricsText()
            let slow = metrics.split(separator: "\n").first { $0.hasPrefix("kanban_relay_slow_closes_total ") }
            #expect(slow == "kanban_relay_slow_closes_total 0", "\(String(describing: slow))")
            #expect(relay.sessions.count == 0)
        }
    }

    /// Reads until the peer closes the connection or `timeout`, on a thread of its own (not the
    /// pool the relay under test runs on).
    static func readUntilClosed(_ fd: Int32, timeout: Duration) async -> (bytes: [UInt8], closed: Bool) {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var timeoutValue = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeoutValue, socklen_t(MemoryLayout<timeval>.size))
                var bytes: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = read(fd, &buffer, buffer.count)
                    if n <= 0 { return continuation.resume(returning: (bytes, n == 0)) }
                    bytes += buffer[0..<n]
                }
            }
        }
    }
}
