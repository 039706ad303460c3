import Foundation
import KanbanModel
import KanbanProtocol
import KanbanStore
import Logging

/// What an agent sends, read in order and handed to the hub: the same rules whether the
/// messages come as WebSocket frames or as long-polling POSTs. One value per connection.
struct RelayInbound {
    let id: Int
    let hub: RelayHub
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

    /// `configuration` sets the push rate; it is not kept (this value lives as long as its
    /// connection, in the connection task's memory).
    init(id: Int, hub: RelayHub, configuration: RelayConfiguration, logger: Logger, traffic: RelayTraffic,
         close: @escaping @Sendable (UInt16, String) -> Void, pushes: PushWindow? = nil) {
        self.id = id
        self.hub = hub
        self.logger = logger
        self.traffic = traffic
        self.close = close
        self.pushes = pushes
        pushRate = TokenBucket(perSecond: configuration.maxOperationsPerSecond)
    }

    /// Handles one message; false when it broke the protocol (an error was queued and the
    /// connection asked to close), after which nothing more should be read.
    ///
    /// A task keeps the memory its deepest call ever needed until it ends, so what stays
    /// with every idle connection is this function's frame and whatever it awaited: it holds
    /// only a pointer-sized step, and everything but pushes (hello once, a digest after
    /// catch-up, presence; a hello's catch-up goes deep) runs in a child task whose memory
    /// goes back when the message is done.
    mutating func handle(text: String) async throws -> Bool {
        switch step(for: text) {
        case .push(let ops):
            return try await handle(push: ops)
        case .rare(let message):
            let handled = try await handleInChildTask(message)
            if handled { greeted = true }
            return handled
        case .violation(let violation):
            await fail(violation)
            return false
        }
    }

    private enum Step {
        case push([BoardOperation])
        indirect case rare(SyncMessage)
        indirect case violation(ProtocolViolation)
    }

    private func step(for text: String) -> Step {
        traffic.received(bytes: text.utf8.count)
        do throws(ProtocolViolation) {
            let decoded = try SyncMessage.decode(Data(text.utf8))
            if greeted, case .push(let push) = decoded { return .push(push.ops) }
            return .rare(decoded)
        } catch {
            return .violation(error)
        }
    }

    @inline(never)
    private func handleInChildTask(_ message: SyncMessage) async throws -> Bool {
        let (inbound, greeted) = (self, self.greeted)
        return try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask { try await inbound.handle(rare: message, greeted: greeted) }
            return try await group.next() ?? false
        }
    }

    /// A push from a greeted connection: the hot path, kept in the connection's task.
    @inline(never)
    private mutating func handle(push ops: [BoardOperation]) async throws -> Bool {
        // Over the rate, the next read waits: the sender is slowed down, nothing is dropped.
        let wait = pushRate.take(ops.count)
        if wait > .zero { try await Task.sleep(for: wait) }
        guard let pushes else {
            try await hub.push(id, ops)
            return true
        }
        if let failure = pushes.failure { throw failure }
        await pushes.acquire()
        let (id, logger, close) = (id, logger, close)
        let submitted = await hub.submit(id, ops) { error in
            if let error {
                // The hub logs the run of failed appends (not one line per push).
                logger.debug("could not store pushed operations", metadata: ["connection": "\(id)", "error": "\(error)"])
                pushes.fail(error)
                close(SyncCloseCode.internalError, (error as? AppendFailed)?.closeReason ?? "the relay could not store the operations")
            }
            pushes.release()
        }
        if !submitted {
            // Several boards: after the connection's earlier pushes, and waited for.
            pushes.release()
            await pushes.drain()
            try await hub.push(id, ops)
        }
        return true
    }

    /// Any message but a greeted connection's push; `greeted`: whether hello came already.
    @inline(never)
    private func handle(rare decoded: SyncMessage, greeted: Bool) async throws -> Bool {
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
            try await hub.hello(id, hello)
            return true
        }
        switch decoded {
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

    @inline(never)
    private func fail(_ violation: ProtocolViolation, code: UInt16 = SyncCloseCode.badMessage) async {
        logger.notice("protocol violation", metadata: ["connection": "\(id)", "code": "\(violation.code.rawValue)"])
        await hub.send(id, .error(.init(code: violation.code.rawValue, message: violation.message, fatal: true)))
        close(code, String(violation.message.prefix(120)))
    }
}
