import Foundation
import HTTPTypes
import KanbanModel
import KanbanProtocol
import KanbanRelay
import Synchronization
import Testing
import WSClient

#if canImport(Glibc)
import Glibc
#endif

/// The relay's heartbeat: one service pings every WebSocket connection each period; a peer
/// that sent nothing since the previous ping is closed with 4009, one that answers stays.
@Suite(.serialized)
struct RelayHeartbeatTests {
    @Test func silentPeersAreClosedAndAnsweringPeersStay() async throws {
        let cluster = try await SyncCluster(agents: 1, relayConfiguration: .init(heartbeatSeconds: 1))
        try await cluster.whileRunning {

            // A peer whose WebSocket library answers pings but that sends nothing itself: its
            // pongs are all the relay hears from it.
            let answeringClosed = Mutex<Bool>(false)
            let answeringSince = ContinuousClock.now
            var headers = HTTPFields()
            headers[.authorization] = "Bearer \(cluster.token)"
            let answering = Task {
                _ = try await WebSocketClient.connect(
                    url: cluster.relayURL, configuration: .init(additionalHeaders: headers, autoPing: .disabled),
                    logger: quietLogger("answering")
                ) { inbound, outbound, _ in
                    try await outbound.write(.text(SyncMessage.hello(.init(replica: ReplicaID("answering")!, cursors: [:])).text))
                    for try await _ in inbound.messages(maxSize: 1 << 20) {}
                }
                answeringClosed.withLock { $0 = true }
            }

            // A peer that upgrades, says hello and then never sends a byte (not even a pong).
            let silent = try SlowSubscriberTests.StalledClient(port: cluster.relayPort.withLock { $0 }, token: cluster.token,
                                                               replica: "silent", receiveBuffer: nil)
            let fd = silent.fd

            // Read everything the relay sends the silent peer until it closes the connection.
            let start = ContinuousClock.now
            var received: [UInt8] = []
            var closedByRelay = false
            while ContinuousClock.now - start < .seconds(15) {
                // Never block a thread of the shared pool: the relay under test runs on it too.
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 0) > 0 else {
                    try await Task.sleep(for: .milliseconds(20))
                    continue
                }
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { closedByRelay = true; break }
                received += buffer[0..<n]
            }
            let waited = ContinuousClock.now - start
            #expect(closedByRelay, "the relay kept a peer that answered no ping open for \(waited)")
            // Two periods and a one-second grace; generous for a loaded machine, well under the
            // relay's 60 s HTTP idle timeout and its default 15 s heartbeat.
            #expect(waited < .seconds(10), "closed after \(waited); the heartbeat is 1 s")
            // A close frame (0x88) with code 4009 (0x0F 0xA9), after at least one ping (0x89).
            #expect(received.contains(0x89), "the relay never pinged")
            let closeFrame = received.indices.first { i in
                i + 3 < received.count && received[i] == 0x88 && received[i + 2] == 0x0F && received[i + 3] == 0xA9
            }
            #expect(closeFrame != nil, "no close frame with code 4009 among \(received.count) bytes")

            // The answering peer outlives several periods.
            try await Task.sleep(until: answeringSince + .seconds(3.5))
            #expect(!answeringClosed.withLock { $0 }, "a peer that answered every ping was closed")
            answering.cancel()
            withExtendedLifetime(silent) {}
        }
    }
}
