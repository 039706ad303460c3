import Foundation
import KanbanModel
import KanbanProtocol
import Logging

/// What an agent sends, read in order and handed to the hub: the same rules whether the
/// messages come as WebSocket frames or as long-polling POSTs. One value per connection.
struct RelayInbound {
    let id: Int
    let hub: RelayHub
    let configuration: RelayConfiguration
    let logger: Logger
    let traffic: RelayTraffic
    /// Asks the connection to close with a code and reason (the transport carries it out).
    let close: @Sendable (UInt16, String) -> Void
    /// WebSocket: pushes are handed to the hub without waiting for their commit, so one group
    /// commit can hold several of a connection's pushes. nil (long-polling): each push is
    /// committed before `handle` returns, so the POST's answer means stored.
    let pushes: PushWindow?
    private var greeted = false
    private var pushRate: TokenBucket

    init(id: Int, hub: RelayHub, configuration: RelayConfiguration, logger: Logger, traffic: RelayTraffic,
         close: @escaping @Sendable (UInt16, String) -> Void, pushes: PushWindow? = nil) {
        self.id = id
        self.hub = hub
        self.configuration = configuration
        self.logger = logger
        self.traffic = traffic
        self.close = close
        self.pushes = pushes
        pushRate = TokenBucket(perSecond: configuration.maxOperationsPerSecond)
    }

    /// Handles one message; false when it broke the protocol (an error was queued and the
    /// connection asked to close), after which nothing more should be read.
    mutating func handle(text: String) async throws -> Bool {
        traffic.received(bytes: text.utf8.count)
        let decoded: SyncMessage
        do throws(ProtocolViolation) {
            decoded = try SyncMessage.decode(Data(text.utf8))
        } catch {
            await fail(error)
            return false
        }
        if !greeted {
            guard case .hello(let hello) = decoded else {
                await fail(.init(.unexpected, "the first message must be hello"))
                return false
            }
            guard hello.protocol == SyncMessage.protocolVersion else {
                await fail(.init(.versionMismatch,
                    "agent speaks protocol \(hello.protocol), this relay speaks \(SyncMessage.protocolVersion); upgrade the older side"),
                    code: SyncCloseCode.versionMismatch)
                return false
            }
            greeted = true
            try await hub.hello(id, hello)
            return true
        }
        switch decoded {
        case .push(let push):
            // Over the rate, the next read waits: the sender is slowed down, nothing is dropped.
            let wait = pushRate.take(push.ops.count)
            if wait > .zero { try await Task.sleep(for: wait) }
            guard let pushes else {
                try await hub.push(id, push.ops)
                return true
            }
            if let failure = pushes.failure { throw failure }
            await pushes.acquire()
            let (id, logger, close) = (id, logger, close)
            let submitted = await hub.submit(id, push.ops) { error in
                if let error {
                    logger.error("could not store pushed operations", metadata: ["connection": "\(id)", "error": "\(error)"])
                    pushes.fail(error)
                    close(SyncCloseCode.internalError, "the relay could not store the operations")
                }
                pushes.release()
            }
            if !submitted {
                // Several boards: after the connection's earlier pushes, and waited for.
                pushes.release()
                await pushes.drain()
                try await hub.push(id, push.ops)
            }
        case .presence(let presence): await hub.presence(id, presence)
        case .digest(let digest):
            // Compared with the log once the connection's own pushes are in it.
            await pushes?.drain()
            try await hub.digest(id, digest)
        case .ping(let ping):
            await hub.send(id, .pong(.init(t: ping.t, serverTime: Int64(Date().timeIntervalSince1970 * 1000))))
        default:
            await fail(.init(.unexpected, "a relay does not accept '\(decoded.type)' from an agent"))
            return false
        }
        return true
    }

    /// A binary frame or other non-text payload.
    func rejectBinary() async {
        await fail(.init(.malformed, "binary frames are not part of the protocol; send JSON text"))
    }

    private func fail(_ violation: ProtocolViolation, code: UInt16 = SyncCloseCode.badMessage) async {
        logger.notice("protocol violation", metadata: ["connection": "\(id)", "code": "\(violation.code.rawValue)"])
        await hub.send(id, .error(.init(code: violation.code.rawValue, message: violation.message, fatal: true)))
        close(code, String(violation.message.prefix(120)))
    }
}
