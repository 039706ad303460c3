import Foundation
import KanbanAgent
import KanbanStore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A TCP server on 127.0.0.1 that reads each request head and closes without answering: what
/// a relay killed mid-handshake, or a proxy with no healthy upstream, looks like to the agent.
/// With `holdOpen` it keeps the connection open instead (a paused link), until `stop`.
final class SilentCloser: Sendable {
    let port: Int
    private let fd: Int32
    private let counter = Counter()
    var accepted: Int { counter.value.load(ordering: .relaxed) }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    init(holdOpen: Bool = false) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw TestError("cannot listen") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let listener = fd
        let counter = self.counter
        Thread.detachNewThread {
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }  // closed by `stop`
                counter.value.add(1, ordering: .relaxed)
                var head = [UInt8]()
                var buffer = [UInt8](repeating: 0, count: 4096)
                while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
                    let n = read(client, &buffer, buffer.count)
                    if n <= 0 { break }
                    head += buffer[0..<n]
                }
                if holdOpen {
                    // Until the peer gives up (or the process ends): nothing is ever answered.
                    while read(client, &buffer, buffer.count) > 0 {}
                }
                close(client)
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// A TCP socket connected to 127.0.0.1:`port`; `receiveBuffer` sets SO_RCVBUF before connecting
/// (a small one makes the peer's writes back up quickly).
func connectLoopback(port: Int, receiveBuffer: Int32? = nil) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if var size = receiveBuffer {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw TestError("cannot connect to 127.0.0.1:\(port)")
    }
    return fd
}

/// The link must not wedge when the peer reads the upgrade request and closes without a word.
@Suite(.timeLimit(.minutes(2)))
struct HandshakeTests {
    @Test func aPeerThatClosesDuringTheHandshakeIsRetriedAndShutdownStaysPrompt() async throws {
        let closer = try SilentCloser()
        defer { closer.stop() }
        let (agent, server) = try await startAgent(syncingWith: closer.port) {
            $0.backoffBase = .milliseconds(20)
            $0.backoffCap = .milliseconds(100)
            $0.handshakeTimeout = .milliseconds(300)
        }
        try await eventually("three attempts, each abandoned at the handshake timeout", timeout: .seconds(20)) {
            closer.accepted >= 3
                && agent.syncStatus.attempts.contains { $0.errorClass == "handshake_timeout" }
        }
        // Local edits keep working and queue meanwhile.
        _ = try await agent.createBoard(title: "Offline")
        #expect(try agent.store.outboxCount() == 1)

        let start = ContinuousClock.now
        await server.stop()
        #expect(ContinuousClock.now - start < .seconds(5), "graceful shutdown must not wait for a hung handshake")
    }

    /// "Reconnect now" while an attempt hangs drops it and starts a fresh one at once, instead
    /// of after the handshake timeout (60 s here). A WebSocket upgrade hangs when the peer
    /// closes without answering; a long-polling session request when the peer never answers.
    @Test(arguments: [SyncTransportChoice.webSocket, .longPolling])
    func reconnectNowAbandonsAHangingAttempt(transport: SyncTransportChoice) async throws {
        let peer = try SilentCloser(holdOpen: transport == .longPolling)
        defer { peer.stop() }
        let (agent, server) = try await startAgent(syncingWith: peer.port) {
            $0.transport = transport
            $0.handshakeTimeout = .seconds(60)
        }
        try await eventually("the first attempt reaches the peer", timeout: .seconds(10)) { peer.accepted >= 1 }
        for expected in 2...3 {
            agent.reconnectNow()
            try await eventually("attempt \(expected) starts right after reconnect-now", timeout: .seconds(5)) {
                peer.accepted >= expected
            }
        }
        #expect(agent.syncStatus.state == .connecting)
        #expect(agent.syncStatus.attempts.isEmpty, "no attempt failed or timed out: each was dropped on request")
        await server.stop()
    }

    /// An agent syncing with 127.0.0.1:`port` (as `configure` sets it up), serving its API on a free port.
    private func startAgent(
        syncingWith port: Int, _ configure: (inout SyncConfiguration) -> Void
    ) async throws -> (Agent, RunningServer) {
        let agent = Agent(store: try ReplicaStore.inMemory(configuration: .init(durability: .normal)), configuration: .init(port: 0))
        var configuration = SyncConfiguration(relayURL: "ws://127.0.0.1:\(port)/sync", token: "kb1.x.y")
        configure(&configuration)
        let client = SyncClient(agent: agent, configuration: configuration, logger: quietLogger("sync"))
        let server = try await RunningServer.start { onListening in
            buildAgentApplication(agent: agent, logger: quietLogger("agent"), services: [client], onListening: onListening)
        }
        return (agent, server)
    }
}
