import CoreMetrics
import Foundation
import KanbanModel
import KanbanProtocol
import KanbanStore
import Logging
import Synchronization
import WSClient

/// How a session reaches the relay: a WebSocket, or HTTP long-polling when the upgrade is
/// blocked. The protocol messages are the same on both.
enum SyncTransport: Sendable {
    case webSocket(WebSocketInboundStream, WebSocketOutboundWriter)
    case longPolling(LongPollLink)

    /// As `/health/websocket` reports it.
    var name: String {
        switch self {
        case .webSocket: "websocket"
        case .longPolling: "long-polling"
        }
    }
}

/// A long-polling session ending on schedule so the WebSocket is tried again.
struct RetryWebSocket: Error {}

/// The protocol on one live connection: hello, then three loops: apply what arrives, push the
/// outbox, and probe round-trip time.
struct SyncSession {
    let agent: Agent
    let configuration: SyncConfiguration
    let logger: Logger
    let welcomed: LinkFlags
    /// When set, the session ends then (long-polling in `auto` mode, to try the WebSocket again).
    var endAt: ContinuousClock.Instant? = nil

    /// Fired when the relay acknowledges operations (recorded with `acknowledgeLater`).
    let acknowledged = Signal()

    /// How long a recorded acknowledgment waits for a transaction to take it before it is
    /// written on its own.
    static let acknowledgmentFlushDelay: Duration = .milliseconds(50)

    var store: ReplicaStore { agent.store }

    func run(_ transport: SyncTransport) async throws {
        // Acknowledged operations of an earlier link leave the outbox before this link pushes it.
        try await store.flushAcknowledgments()
        let cursors = try store.cursors()
        welcomed.cursors.withLock { $0 = cursors }
        let hello = SyncMessage.hello(.init(replica: store.replicaID, cursors: cursors, marks: try store.cursorMarks(), client: "kanban-agent"))
        try await Self.fresh { try await send(hello, transport) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            // One task reads (and decodes) what the relay sends, another handles it in order:
            // under load, consecutive `ops` (and `ack`) messages that queued up meanwhile are
            // committed together, one transaction and one fsync instead of one per message.
            let inbox = Inbox(capacity: 256)
            group.addTask {
                // However reading ends, the handler is not left waiting.
                defer { inbox.finish() }
                switch transport {
                case .webSocket(let inbound, _):
                    for try await message in inbound.messages(maxSize: ProtocolLimits.maxRelayMessageBytes) {
                        guard case .text(let text) = message else { throw ProtocolViolation(.malformed, "binary frame from relay") }
                        await inbox.append(try decode(text))
                    }
                case .longPolling(let link):
                    var after = 0
                    while !Task.isCancelled {
                        let (batch, messages) = after == 0 ? try await Self.fresh { try await link.poll(after: 0) }
                                                           : try await link.poll(after: after)
                        for text in messages { await inbox.append(try decode(text)) }
                        after = batch
                    }
                }
                // The relay closed the link: what it sent before (an `error`, say) is still handled.
                inbox.finish()
                await inbox.waitDrained()
            }
            group.addTask {
                defer { inbox.close() }
                while let messages = await inbox.next() {
                    try await handle(messages, transport)
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    await agent.localChange.wait()
                    if welcomed.welcomed.load(ordering: .relaxed) { try await pushOutbox(transport) }
                }
            }
            group.addTask {
                // Acknowledgments are written with the next local edit's transaction (or the next
                // operations from the relay); when none comes, here, and local subscribers then
                // see the outbox shrink.
                while await acknowledged.wait() {
                    try await Task.sleep(for: Self.acknowledgmentFlushDelay)
                    try await store.flushAcknowledgments()
                    agent.updateSyncStatus { _ in }
                    let boards = welcomed.acknowledgedBoards.withLock { boards in defer { boards = [] }; return boards }
                    for board in boards.sorted() { try await compareDigest(board, transport) }
                }
            }
            group.addTask {
                // Presence and other messages other parts of the agent send while the link is up.
                let (extra, continuation) = AsyncStream<SyncMessage>.makeStream(bufferingPolicy: .bufferingNewest(256))
                agent.setRelayLink { continuation.yield($0) }
                defer { agent.setRelayLink(nil) }
                for await message in extra { try await send(message, transport) }
            }
            group.addTask {
                // First probe at once, so the round-trip time and clock skew are known as soon as
                // the link is up (the board's status panel shows them), then every probeInterval.
                while !Task.isCancelled {
                    let now = Int64(Date().timeIntervalSince1970 * 1000)
                    try await send(.ping(.init(t: now)), transport)
                    try await Task.sleep(for: configuration.probeInterval)
                }
            }
            if let until = endAt {
                // Long-polling in `auto` mode ends here so the WebSocket is tried again.
                group.addTask {
                    try await Task.sleep(until: until)
                    throw RetryWebSocket()
                }
            }
            // The link is over when the inbound stream ends or any loop fails.
            try await group.next()
            group.cancelAll()
        }
    }

    /// Runs one of the first requests of a long-polling session. The relay opened the session a
    /// moment before, so "no such session" means this request reached another relay instance:
    /// a balancer in the way spreads the session's connections (`LinkProblem.pollAffinity`).
    private static func fresh<T>(_ request: () async throws -> T) async throws -> T {
        do {
            return try await request()
        } catch let problem as LinkProblem where problem.code == "poll_session_unknown" {
            throw LinkProblem.pollAffinity
        }
    }

    /// One message from the relay, decoded.
    private func decode(_ text: String) throws -> SyncMessage {
        agent.metrics.received(bytes: text.utf8.count)
        return try SyncMessage.decode(Data(text.utf8), limit: ProtocolLimits.maxRelayMessageBytes)
    }

    /// Messages from the relay, in order; runs of `ops` and of `ack` are committed together.
    func handle(_ messages: [SyncMessage], _ transport: SyncTransport) async throws {
        var index = 0
        while index < messages.count {
            switch messages[index] {
            case .ops:
                var run: [SyncMessage.Ops] = []
                while index < messages.count, case .ops(let batch) = messages[index] {
                    run.append(batch)
                    index += 1
                }
                try await applyOperations(run, transport)
            case .ack:
                var run: [SyncMessage.Ack] = []
                while index < messages.count, case .ack(let ack) = messages[index] {
                    run.append(ack)
                    index += 1
                }
                try await acknowledge(run)
            default:
                let message = messages[index]
                index += 1
                try await handle(message, transport)
                if case .welcome = message {
                    // Push whatever is queued now that the relay knows us.
                    agent.localChange.fire()
                }
            }
        }
    }

    /// Others' operations, applied in one transaction with the cursors they advance.
    private func applyOperations(_ run: [SyncMessage.Ops], _ transport: SyncTransport) async throws {
        var cursors: [EntityID: Int64] = [:]
        var marks: [EntityID: OperationID] = [:]
        var heads: [EntityID: Int64] = [:]
        var ops: [BoardOperation] = []
        for batch in run {
            ops += batch.ops.map(\.op)
            if let last = batch.ops.last, last.seq > cursors[batch.board] ?? 0 {
                cursors[batch.board] = last.seq
                marks[batch.board] = last.op.id
            }
            heads[batch.board] = batch.head
        }
        // A head below this link's cursor: the relay lost operations this replica had from it
        // (its data restored from an older copy). The catch-up after the welcome shows it (the
        // relay sends every board's head, from its start when the hello's cursor is above it),
        // and so does the first operation of a board the copy lacked entirely. Checked before
        // the operations are applied, so that the cursor is rebuilt from these sequences.
        // Without this, the lost operations stayed on the replicas that had them, and this
        // agent, its cursor above the relay's new sequences, skipped the next ones.
        let linkCursors = welcomed.cursors.withLock { $0 }
        var lost: [EntityID: Int64] = [:]
        for batch in run where batch.head < linkCursors[batch.board] ?? 0 { lost[batch.board] = min(lost[batch.board] ?? .max, batch.head) }
        for (board, head) in lost.sorted(by: { $0.key < $1.key }) {
            try await relayLost(board, head: head, cursor: linkCursors[board] ?? 0)
        }
        welcomed.cursors.withLock { link in
            for (board, seq) in cursors { link[board] = max(link[board] ?? 0, seq) }
        }
        if !ops.isEmpty {
            try await store.apply(ops, cursors: cursors, marks: marks)
            welcomed.progressed.store(true, ordering: .relaxed)
        }
        // Caught up with a board (at the head the relay sent): compare digests, if nothing of
        // ours is in flight (else once the acknowledgment loop sees the board settled).
        let unchecked = heads.filter { board, _ in !welcomed.digested.withLock { $0.contains(board) } }
        let known = unchecked.isEmpty ? [:] : try store.cursors()
        for (board, head) in unchecked.sorted(by: { $0.key < $1.key }) where known[board] ?? 0 == head {
            try await compareDigest(board, transport)
        }
        if !cursors.isEmpty {
            agent.updateSyncStatus(publish: false) { status in
                for (board, seq) in cursors { status.cursors[board.rawValue] = max(status.cursors[board.rawValue] ?? 0, seq) }
            }
        }
    }

    /// Once per board per link, when this replica is settled on it (nothing of its own in
    /// flight, so it holds exactly the relay's operations up to its cursor), sends the board's
    /// digest at that cursor; the relay answers a mismatch by resending the board, and this
    /// replica pushes again what the relay lacks (`digestResult`). The check that catches what
    /// cursors cannot show: a relay restored from an older copy whose log grew back past this
    /// replica's cursor with other operations. Checked when the relay's head arrives (catch-up,
    /// live operations) and after acknowledgments: an agent writing while it catches up is
    /// settled only by the acknowledgment of its last push, and the relay may send nothing after.
    private func compareDigest(_ board: EntityID, _ transport: SyncTransport) async throws {
        // Claimed first: the message handler and the acknowledgment loop may both get here.
        guard welcomed.digested.withLock({ $0.insert(board).inserted }) else { return }
        // Cursor, outbox and state read together (`settledDigest`): a local edit committing
        // between an outbox check and the digest would be hashed before the relay has it.
        guard let settled = try await store.settledDigest(board), settled.seq > 0 else {
            welcomed.digested.withLock { _ = $0.remove(board) }
            return
        }
        try await send(.digest(.init(board: board, seq: settled.seq, digest: settled.digest)), transport)
    }

    /// The relay stored our operations: out of the outbox, cursors advanced, in one transaction,
    /// the next one on the store (`acknowledgeLater`; the flush loop in `run` writes them if no
    /// other comes soon, and publishes the status then).
    private func acknowledge(_ run: [SyncMessage.Ack]) async throws {
        var cursors: [EntityID: Int64] = [:]
        var marks: [EntityID: OperationID] = [:]
        let acks = run.flatMap(\.acks)
        for entry in acks where entry.seq > cursors[entry.board] ?? 0 {
            cursors[entry.board] = entry.seq
            marks[entry.board] = entry.op
        }
        store.acknowledgeLater(acks.map(\.op), cursors: cursors, marks: marks)
        welcomed.acknowledgedBoards.withLock { $0.formUnion(cursors.keys) }
        if agent.hub.subscriberCount > 0 { agent.hub.publishAcknowledged(acks.map { ($0.op, $0.board) }) }
        welcomed.cursors.withLock { link in
            for (board, seq) in cursors { link[board] = max(link[board] ?? 0, seq) }
        }
        if !acks.isEmpty { welcomed.progressed.store(true, ordering: .relaxed) }
        var refusalsCleared = false
        agent.updateSyncStatus(publish: false) { status in
            for (board, seq) in cursors { status.cursors[board.rawValue] = max(status.cursors[board.rawValue] ?? 0, seq) }
            // The relay stores these boards' operations now (a token that allows them).
            guard !status.refused.isEmpty else { return }
            let before = status.refused.count
            status.refused.removeAll { refusal in cursors.keys.contains { $0.rawValue == refusal.board } }
            refusalsCleared = status.refused.count != before
        }
        if refusalsCleared { agent.updateSyncStatus { _ in } }
        acknowledged.fire()
    }

    /// The relay's head for `board` is below this replica's cursor: forget the cursor and, with
    /// a token that may write, queue every operation of the board it has to be pushed again
    /// (from the start of the outbox on this link); the relay stores what it lost and every
    /// replica gets it. With a read-only token the relay would refuse them: the cursor only.
    /// A board the relay does not know at all (head 0) is pushed only to a relay of the team
    /// this replica synced it with: an agent pointed at another team's relay does not hand it
    /// that team's boards.
    private func relayLost(_ board: EntityID, head: Int64, cursor: Int64) async throws {
        let sameTeam = head > 0 || welcomed.sameTeam.load(ordering: .relaxed)
        let writable = welcomed.writable.load(ordering: .relaxed) && sameTeam
        let queued = try await store.requeueForRelay(board, push: writable)
        welcomed.cursors.withLock { $0[board] = nil }
        agent.metrics.relayBehind.increment()
        agent.updateSyncStatus(publish: false) { $0.cursors[board.rawValue] = nil }
        let action = writable ? "pushing them again"
            : sameTeam ? "not pushed: the token is read-only" : "not pushed: this agent synced the board with another team"
        logger.warning("the relay has fewer of this board's operations than this agent received from it (restored from an older copy?); \(action)",
                       metadata: ["board": "\(board)", "relayHead": "\(head)", "cursor": "\(cursor)", "queued": "\(queued)"])
        if queued > 0 { pushFromTheStart() }
    }

    /// Older outbox rows were queued again: the push loop starts over from the outbox's start.
    private func pushFromTheStart() {
        welcomed.repush.store(true, ordering: .relaxed)
        agent.localChange.fire()
    }

    /// Every message to the relay goes through here, so the byte and message counters see it.
    func send(_ message: SyncMessage, _ transport: SyncTransport) async throws {
        try await send(text: message.text, transport)
    }

    func send(text: String, _ transport: SyncTransport) async throws {
        switch transport {
        case .webSocket(_, let outbound): try await outbound.write(.text(text))
        case .longPolling(let link): try await link.send(text)
        }
        agent.metrics.sent(bytes: text.utf8.count)
    }

    func pushOutbox(_ transport: SyncTransport) async throws {
        while true {
            if welcomed.repush.exchange(false, ordering: .relaxed) { welcomed.pushed.withLock { $0 = 0 } }
            let after = welcomed.pushed.withLock { $0 }
            // The operations' JSON as logged: nothing is decoded and encoded again.
            let batch = try store.outboxJSON(after: after, limit: configuration.pushBatch)
            guard !batch.isEmpty else { return }
            // A push must stay under the relay's message limit (1 MiB): up to 500 operations of
            // up to 64 KiB each would not, so the batch is cut by size as well.
            var encoded: [[UInt8]] = []
            var bytes = 64
            var last = after
            for entry in batch {
                let json = entry.json
                if !encoded.isEmpty && bytes + json.count + 1 > Self.maxPushBytes { break }
                encoded.append(json)
                bytes += json.count + 1
                last = entry.seq
            }
            try await send(text: SyncMessage.pushText(encodedOperations: encoded), transport)
            welcomed.pushed.withLock { $0 = max($0, last) }
        }
    }

    /// What to do about a refusal, by the relay's error code.
    static func fix(forRefusal code: String) -> String {
        switch code {
        case "forbidden_board":
            "Your relay token does not cover this board, so its changes stay on this machine. Ask for a token that includes it "
                + "(`kanban relay token create --board ID`, or one without --board for the whole team), then restart the agent with it; "
                + "or throw the changes away: `kanban queued BOARD --discard`."
        case "read_only":
            "Your relay token may only read: changes made here stay on this machine. Ask for a read-write token, then restart the agent with it; "
                + "or throw the changes away and take the team's board again: `kanban queued BOARD --discard`."
        default:
            "Check the relay's log; the changes stay queued on this machine (`kanban queued BOARD` lists them)."
        }
    }

    /// Payload budget of one push, under `ProtocolLimits.maxMessageBytes` with room to spare.
    static let maxPushBytes = ProtocolLimits.maxMessageBytes - 64 * 1024

    func handle(_ message: SyncMessage, _ transport: SyncTransport) async throws {
        switch message {
        case .welcome(let welcome):
            guard welcome.protocol == SyncMessage.protocolVersion else {
                throw ProtocolViolation(.versionMismatch, "relay speaks protocol \(welcome.protocol), agent \(SyncMessage.protocolVersion)")
            }
            welcomed.writable.store(welcome.writable, ordering: .relaxed)
            // Whether this replica's cursors come from this team (see `relayLost`).
            let previousTeam = try store.syncedTeam()
            welcomed.sameTeam.store(previousTeam == nil || previousTeam == welcome.team, ordering: .relaxed)
            if previousTeam != welcome.team { try await store.recordSyncedTeam(welcome.team) }
            welcomed.welcomed.store(true, ordering: .relaxed)
            agent.metrics.linkConnects.increment()
            agent.metrics.linkUp.record(1)
            let skew = welcome.serverTime - Int64(Date().timeIntervalSince1970 * 1000)
            agent.metrics.clockSkew.record(Double(skew) / 1000)
            agent.updateSyncStatus { status in
                status.state = .connected
                status.connectedSince = Date()
                status.lastError = nil
                status.consecutiveFailures = 0
                status.team = welcome.team
                status.clockSkewMs = skew
                status.transport = transport.name
                if case .longPolling = transport {
                    status.compression = "none (HTTP long-polling)"
                } else {
                    status.compression = "permessage-deflate (requested)"
                    status.fallbackReason = nil
                    status.webSocketRetryAt = nil
                }
            }
            logger.info("relay link up", metadata: ["team": "\(welcome.team)", "boards": "\(welcome.boards.count)"])
            if abs(skew) > LinkProblem.clockSkewLimitMs {
                logger.warning("this machine's clock is \(LinkProblem.describeSkew(skew)) \(skew > 0 ? "behind" : "ahead of") the relay's",
                               metadata: ["skewMs": "\(skew)", "fix": "\(LinkProblem.clockSkew.fix)"])
            }
        case .ops(let batch):
            try await applyOperations([batch], transport)
        case .ack(let ack):
            try await acknowledge([ack])
        case .snapshot(let snapshot):
            try store.applySnapshot(snapshot.state, seq: snapshot.seq)
            welcomed.progressed.store(true, ordering: .relaxed)
            agent.hub.publishResync(board: snapshot.board)
        case .digestResult(let result):
            if !result.match {
                agent.updateSyncStatus { $0.repairs += 1 }
                logger.warning("digest mismatch after catch-up; relay is resending the board", metadata: ["board": "\(result.board)"])
                // The resend supplies missing operations; a state that differs with every
                // operation present is rebuilt from the log first.
                if try store.rematerialize(result.board) {
                    logger.warning("board rebuilt from its operation log", metadata: ["board": "\(result.board)"])
                    agent.hub.publishResync(board: result.board)
                }
                // The digest was taken at the relay's head with nothing of this board queued, so
                // the relay has everything this replica got from it: a difference means this
                // replica has operations the relay lacks (lost in a restore, with the board).
                // They are pushed again; the relay stores what it lacks and acknowledges the rest.
                if welcomed.writable.load(ordering: .relaxed),
                   try await store.requeueForRelay(result.board, forgetCursor: false) > 0 {
                    pushFromTheStart()
                }
            }
        case .pong(let pong):
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let rtt = Double(now - pong.t)
            let skew = pong.serverTime - (pong.t + Int64(rtt / 2))
            agent.metrics.clockSkew.record(Double(skew) / 1000)
            agent.updateSyncStatus(publish: false) { status in
                status.roundTripMs = rtt
                status.clockSkewMs = skew
            }
        case .presence(let presence):
            agent.hub.publishPresence(presence)
        case .error(let error):
            logger.warning("relay refused", metadata: ["code": "\(error.code)", "message": "\(error.message)"])
            // A refused push whose operations were discarded meanwhile (it was on its way) leaves nothing to report.
            let refusal = error.board.flatMap { board -> SyncStatus.Refusal? in
                guard (try? store.queuedCount(board)) != 0 else { return nil }
                return SyncStatus.Refusal(board: board.rawValue, boardTitle: try? store.document(board)?.title, code: error.code,
                                          message: error.message, fix: Self.fix(forRefusal: error.code), at: Date())
            }
            agent.updateSyncStatus { status in
                status.lastError = "\(error.code): \(error.message)"
                if let refusal { status.refuse(refusal) }
            }
        case .hello, .push, .digest, .ping:
            throw ProtocolViolation(.unexpected, "an agent does not accept '\(message.type)' from a relay")
        }
    }

}

/// Messages read from the relay and not yet handled: bounded (the reader waits when it is
/// full, so a fast relay slows down through TCP); the handler takes everything queued at once.
final class Inbox: Sendable {
    private struct State {
        var items: [SyncMessage] = []
        /// The reader is done (or the handler is gone): nothing more will be queued.
        var finished = false
        /// The handler has handled everything, or is gone.
        var drained = false
        var reader: CheckedContinuation<Void, Never>?
        var handler: CheckedContinuation<[SyncMessage]?, Never>?
        var drainWaiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// Queues a message, waiting while `capacity` are queued (not after `close`).
    func append(_ message: SyncMessage) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (handler, ready): (CheckedContinuation<[SyncMessage]?, Never>?, Bool) = state.withLock { state in
                if state.drained { return (nil, true) }
                if let handler = state.handler {
                    state.handler = nil
                    return (handler, true)
                }
                state.items.append(message)
                if state.items.count < capacity { return (nil, true) }
                state.reader = continuation
                return (nil, false)
            }
            handler?.resume(returning: [message])
            if ready { continuation.resume() }
        }
    }

    /// Everything queued, waiting if nothing is; nil once finished and drained.
    func next() async -> [SyncMessage]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[SyncMessage]?, Never>) in
            let (ready, reader, drainWaiter): ([SyncMessage]??, CheckedContinuation<Void, Never>?, CheckedContinuation<Void, Never>?) =
                state.withLock { state in
                    if !state.items.isEmpty {
                        defer { state.items = []; state.reader = nil }
                        return (.some(state.items), state.reader, nil)
                    }
                    if state.finished {
                        state.drained = true
                        defer { state.drainWaiter = nil }
                        return (.some(nil), nil, state.drainWaiter)
                    }
                    state.handler = continuation
                    return (.none, nil, nil)
                }
            reader?.resume()
            drainWaiter?.resume()
            if case .some(let items) = ready { continuation.resume(returning: items) }
        }
    }

    /// The reader is done; the handler drains what is queued, then gets nil.
    func finish() {
        let handler = state.withLock { state in
            state.finished = true
            defer { state.handler = nil }
            return state.handler
        }
        handler?.resume(returning: nil)
    }

    /// The handler is gone (done or failed): nothing waits for it any more.
    func close() {
        let (handler, reader, drainWaiter) = state.withLock { state in
            state.finished = true
            state.drained = true
            defer { state.handler = nil; state.reader = nil; state.drainWaiter = nil }
            return (state.handler, state.reader, state.drainWaiter)
        }
        handler?.resume(returning: nil)
        reader?.resume()
        drainWaiter?.resume()
    }

    /// Waits until the handler has handled everything queued (or is gone, or this task is cancelled).
    func waitDrained() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = state.withLock { state in
                    if state.drained || Task.isCancelled { return true }
                    state.drainWaiter = continuation
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.drainWaiter = nil }
                return state.drainWaiter
            }
            waiter?.resume()
        }
    }
}
