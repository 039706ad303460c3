import Foundation
import HTTPTypes
import KanbanAgent
import KanbanModel
import KanbanStore
import NIOCore
import KanbanProtocol
import KanbanRelay
import Logging
import NIOWebSocket
import Synchronization
import Testing
import WSClient
import WSCompression

#if canImport(Glibc)
import Glibc
#endif

/// Hostile or broken clients against a live relay: each gets a defined answer, nothing is
/// written, and the relay keeps serving everyone else.
@Suite(.serialized)
struct HostileRelayTests {
    final class Outcome: Sendable {
        let messages = Mutex<[String]>([])
    }

    /// Connects with `token`, sends `frames` (after a valid hello when `hello` is true), and
    /// returns what the relay sent and the close code.
    func session(_ cluster: SyncCluster, token: String?, hello: Bool, frames: [WebSocketMessage]) async throws
        -> (messages: [String], close: WebSocketErrorCode?)
    {
        let outcome = Outcome()
        var headers = HTTPFields()
        if let token { headers[.authorization] = "Bearer \(token)" }
        let close = try await WebSocketClient.connect(
            url: cluster.relayURL, configuration: .init(maxFrameSize: 1 << 22, additionalHeaders: headers), logger: quietLogger("hostile")
        ) { inbound, outbound, _ in
            if hello {
                try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID("hostile")!, cursors: [:])).text))
            }
            for frame in frames {
                switch frame {
                case .text(let text): try await outbound.write(.text(text))
                case .binary(let buffer): try await outbound.write(.binary(buffer))
                }
            }
            for try await message in inbound.messages(maxSize: 1 << 22) {
                if case .text(let text) = message { outcome.messages.withLock { $0.append(text) } }
            }
        }
        return (outcome.messages.withLock { $0 }, close?.closeCode)
    }

    @Test func badFramesGetACloseCodeAndChangeNothing() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            let a = cluster.agents[0]
            let board = try await a.createBoard(title: "Keep working").id
            try await eventually("the board reaches the relay") { try a.store.outboxCount() == 0 }
            let relay = try #require(cluster.relayRef.withLock { $0 })
            let before = try await relay.storage.operationCount()

            let badOp = #"{"type":"push","ops":[{"id":"hostile:1","hlc":"001700000000000.0000000000.hostile","board":"\#(board)","kind":"task.explode","task":"\#(board)"}]}"#
            let cases: [(String, [WebSocketMessage], Bool, UInt16)] = [
                ("garbage text", [.text("not json at all")], true, SyncCloseCode.badMessage),
                ("unknown type", [.text(#"{"type":"subscribe"}"#)], true, SyncCloseCode.badMessage),
                ("invalid operation", [.text(badOp)], true, SyncCloseCode.badMessage),
                ("binary frame", [.binary(.init(bytes: [0, 1, 2, 3]))], true, SyncCloseCode.badMessage),
                ("push before hello", [.text(#"{"type":"push","ops":[]}"#)], false, SyncCloseCode.badMessage),
                ("wrong protocol version", [.text(#"{"type":"hello","protocol":99,"replica":"hostile","cursors":{}}"#)], false,
                 SyncCloseCode.versionMismatch),
                ("deep nesting", [.text(#"{"type":"ping","t":"# + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}")],
                 true, SyncCloseCode.badMessage),
            ]
            for (name, frames, hello, expected) in cases {
                let (messages, close) = try await session(cluster, token: cluster.token, hello: hello, frames: frames)
                #expect(close.map { UInt16(webSocketErrorCode: $0) } == expected, "\(name): closed with \(String(describing: close))")
                #expect(messages.contains { $0.contains(#""type":"error""#) && $0.contains(#""fatal":true"#) }, "\(name): \(messages.suffix(1))")
            }
            // An oversized message (over 1 MiB after decompression) is refused at the frame layer.
            let huge = #"{"type":"ping","t":1,"pad":""# + String(repeating: "x", count: (1 << 20) + 10) + #""}"#
            let (_, hugeClose) = try await session(cluster, token: cluster.token, hello: true, frames: [.text(huge)])
            #expect(hugeClose.map { UInt16(webSocketErrorCode: $0) } == SyncCloseCode.messageTooBig)

            #expect(try await relay.storage.operationCount() == before, "no bad input was stored")
            // The relay still serves the good agent.
            _ = try await a.renameBoard(board, title: "Still here")
            try await eventually("the good agent still syncs") { try a.store.outboxCount() == 0 }
            #expect(try await relay.storage.operationCount() == before + 1)
        }
    }

    /// A small compressed frame that inflates past the limit, a message in thousands of one-byte
    /// fragments, and connections that never finish their HTTP request: each gets its answer
    /// and the relay keeps serving the real agent.
    @Test func bombsFragmentsAndStalledHandshakesGetDefinedAnswers() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            let a = cluster.agents[0]
            let board = try await a.createBoard(title: "Under attack").id
            try await eventually("the board reaches the relay") { try a.store.outboxCount() == 0 }
            let relay = try #require(cluster.relayRef.withLock { $0 })
            let before = try await relay.storage.operationCount()
            var headers = HTTPFields()
            headers[.authorization] = "Bearer \(cluster.token)"

            // Decompression bomb: 3 MiB of one letter deflates to a few KiB; inflated it passes 1 MiB.
            let bomb = #"{"type":"ping","t":1,"pad":""# + String(repeating: "x", count: 3 << 20) + #""}"#
            let deflating = WebSocketClientConfiguration(
                maxFrameSize: 1 << 22, additionalHeaders: headers,
                extensions: [.perMessageDeflate(maxDecompressedFrameSize: 1 << 22, minFrameSizeToCompress: 16)])
            let bombClose = try await WebSocketClient.connect(url: cluster.relayURL, configuration: deflating, logger: quietLogger("bomb")) {
                inbound, outbound, _ in
                try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID("bomber")!, cursors: [:])).text))
                try await outbound.write(.text(bomb))
                for try await _ in inbound.messages(maxSize: 1 << 22) {}
            }
            // The relay's inflater stops one byte past the limit and closes with 1009: nothing past
            // 1 MiB is inflated.
            #expect(bombClose.map { UInt16(webSocketErrorCode: $0.closeCode) } == SyncCloseCode.messageTooBig,
                    "closed with \(String(describing: bombClose))")

            // 3,000 one-byte fragments of one ping: joined and answered like any ping.
            let ping = Array(#"{"type":"ping","t":4242,"pad":""#.utf8) + Array(repeating: UInt8(ascii: "p"), count: 3_000) + Array(#""}"#.utf8)
            let answered = Outcome()
            _ = try await WebSocketClient.connect(
                url: cluster.relayURL, configuration: .init(maxFrameSize: 1 << 22, additionalHeaders: headers), logger: quietLogger("fragments")
            ) { inbound, outbound, _ in
                try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID("fragmenter")!, cursors: [:])).text))
                for (i, byte) in ping.enumerated() {
                    let frame = WebSocketFrame(fin: i == ping.count - 1, opcode: i == 0 ? .text : .continuation, data: ByteBuffer(bytes: [byte]))
                    try await outbound.write(.custom(frame))
                }
                for try await message in inbound.messages(maxSize: 1 << 22) {
                    guard case .text(let text) = message else { continue }
                    answered.messages.withLock { $0.append(text) }
                    if text.contains(#""type":"pong""#) { break }
                }
                try await outbound.close(.normalClosure, reason: nil)
            }
            #expect(answered.messages.withLock { $0 }.contains { $0.contains(#""type":"pong""#) && $0.contains("4242") },
                    "\(answered.messages.withLock { $0 }.suffix(2))")

            // Twenty connections that send half a request line and stop.
            let stalled = try (0..<20).map { _ in try StalledRequest(port: cluster.relayPort.withLock { $0 }) }
            _ = try await a.renameBoard(board, title: "Still here")
            try await eventually("the real agent syncs while handshakes hang") { try a.store.outboxCount() == 0 }
            #expect(try await relay.storage.operationCount() == before + 1, "only the real agent's operation was stored")
            withExtendedLifetime(stalled) {}
        }
    }

    /// A TCP connection that sends the start of an HTTP request and nothing more.
    final class StalledRequest {
        let fd: Int32
        init(port: Int) throws {
            fd = try connectLoopback(port: port)
            let partial = Array("GET /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr".utf8)
            _ = Glibc.write(fd, partial, partial.count)
        }
        deinit { close(fd) }
    }

    @Test func unauthenticatedUpgradesAreRefusedWithoutHurtingOthers() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<200 {
                    group.addTask {
                        do {
                            _ = try await session(cluster, token: i % 2 == 0 ? nil : "kb1.forged.token", hello: true, frames: [])
                            return false
                        } catch {
                            return true  // refused before the upgrade
                        }
                    }
                }
                var refused = 0
                for try await wasRefused in group where wasRefused { refused += 1 }
                #expect(refused == 200)
            }
            let a = cluster.agents[0]
            let board = try await a.createBoard(title: "After the storm").id
            try await eventually("the real agent still syncs") { try a.store.outboxCount() == 0 }
            let relayStorage = cluster.relayRef.withLock { $0 }!.storage
            #expect(try await relayStorage.team(of: board) == "team")
        }
    }
}
