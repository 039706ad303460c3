import Foundation
public import KanbanModel
import KanbanProtocol
public import Logging
import Prometheus

/// The relay's rooms: which connection sees which board, the durable append, and fan-out.
///
/// Every connection sees each board's operations in sequence order with no gaps: catch-up
/// first, then live. Storage calls suspend (and an actor is reentrant across them), so all that
/// sends a board's operations (a push's append + ack + broadcast, a join's catch-up, operations
/// another instance committed) runs under that board's lock, and each room remembers the
/// sequence its members have been sent up to (`delivered`). Operations that reach a room out of
/// order or after a gap (another instance's commit whose notification has not arrived yet, a
/// missed notification) are read from the log first, so a room only ever moves forward by the
/// next sequence.
public actor RelayHub {
    public struct Connection: Sendable {
        public let id: Int
        public let token: RelayToken
        public var replica: ReplicaID?
        /// The cursors from `hello`; nil until the connection said hello.
        var cursors: [String: Int64]?
        /// The hello's marks: per board, the operation the agent has at its cursor.
        var marks: [String: OperationID] = [:]
        /// The relay → client deflate state (nil: no permessage-deflate on this connection).
        let deflate: ConnectionDeflate?
        /// Queues a message; `live` marks broadcasts, which the per-connection byte bound applies
        /// to (catch-up and replies are bounded by count only, so a large board can still be sent).
        let send: @Sendable (_ item: OutboundItem, _ live: Bool) -> Bool
        let close: @Sendable (UInt16, String) -> Void
        /// WebSocket connections: what the heartbeat watches (nil: long-polling, which has
        /// its own idle expiry).
        let activity: InboundActivity?
    }

    /// The connections of this instance that see a board, and the sequence all of them were sent.
    struct Room {
        let team: String
        var members: Set<Int> = []
        var delivered: Int64
        /// Compressions spent on members kept in separate deflate streams (RelayCompressor).
        var deflateWaste = 0
    }

    let storage: any RelayStorage
    let configuration: RelayConfiguration
    let logger: Logger
    private var connections: [Int: Connection] = [:]
    /// Connections that said hello, by team (who may join a board new to this instance).
    private var greeted: [String: Set<Int>] = [:]
    private var rooms: [EntityID: Room] = [:]
    private var states: [EntityID: BoardState] = [:]
    /// Per board: the digest of `states` at the sequence it was taken.
    private var headDigests: [EntityID: (seq: Int64, digest: String)] = [:]
    /// Per board: the last state rebuilt below the head for a digest (see `digest(of:at:)`).
    private var pastStates: [EntityID: PastState] = [:]
    private struct PastState {
        let seq: Int64
        let state: BoardState
        let digest: String
    }
    /// Per board: digests below the head waiting for `answerBelowHead` (present while it runs).
    private var belowHead: [EntityID: [(id: Int, message: SyncMessage.Digest)]] = [:]
    /// Rebuilding and hashing board states, off this actor.
    private let stateWork = BoardStateWork()
    /// Encoding and compressing large messages for one connection (snapshots, long catch-up
    /// batches), off this actor and not queued behind a digest's rebuild.
    private let largeMessages = BoardStateWork(label: "kanban.relay.large-messages")
    private var horizons: [EntityID: Int64] = [:]
    /// Boards whose compaction is running.
    private var compacting: Set<EntityID> = []
    private var presence: [EntityID: [Int: SyncMessage.Presence]] = [:]
    /// Presence of agents on other instances, by "instance/connection".
    private var remotePresence: [EntityID: [String: SyncMessage.Presence]] = [:]
    private var instancesSeen: [String: ContinuousClock.Instant] = [:]
    private var nextID = 0
    private var lockedBoards: Set<EntityID> = []
    private var lockWaiters: [(boards: Set<EntityID>, resume: CheckedContinuation<Void, Never>)] = []
    private var pending: [EntityID: [PendingPush]] = [:]
    private var committing: Set<EntityID> = []
    public private(set) var digestMismatches = 0
    /// Hellos whose mark named another operation than the relay's at that cursor (its data
    /// restored from an older copy, most likely).
    public private(set) var historyMismatches = 0
    public private(set) var acceptedOperations = 0
    public private(set) var compactions = 0
    public private(set) var remoteOperationCount = 0
    /// Operations read from the log to fill a gap before live delivery (cross-instance).
    public private(set) var gapFills = 0
    /// The run of failed appends, if the log does not take writes now.
    private(set) var writes = StoreWrites()

    let traffic: RelayTraffic
    /// permessage-deflate settings (negotiation happens in the WebSocket upgrade).
    nonisolated let deflateSettings: RelayDeflate
    /// Compresses everything sent (on this actor, in the order it is queued).
    let compressor: RelayCompressor
    /// Deflate compressions made (a broadcast to a room of quiet subscribers costs one).
    public var compressions: Int { compressor.compressions }

    public init(storage: any RelayStorage, configuration: RelayConfiguration, logger: Logger,
                traffic: RelayTraffic = RelayTraffic()) {
        self.storage = storage
        self.configuration = configuration
        self.logger = logger
        self.traffic = traffic
        deflateSettings = RelayDeflate()
        compressor = RelayCompressor(settings: deflateSettings)
    }

    func register(token: RelayToken, deflate: ConnectionDeflate?, send: @escaping @Sendable (_ item: OutboundItem, _ live: Bool) -> Bool,
                  close: @escaping @Sendable (UInt16, String) -> Void, activity: InboundActivity? = nil) -> Int {
        nextID += 1
        connections[nextID] = Connection(id: nextID, token: token, replica: nil, deflate: deflate, send: send, close: close,
                                         activity: activity)
        return nextID
    }

    var connectionList: Dictionary<Int, Connection>.Values { connections.values }

    /// Closes every connection that came with one of these tokens (4003: they were revoked);
    /// returns how many.
    func close(revoked tokenIDs: Set<String>) -> Int {
        var closed = 0
        for connection in connections.values where connection.token.id.map(tokenIDs.contains) == true {
            connection.close(SyncCloseCode.forbidden, "the token was revoked")
            closed += 1
        }
        return closed
    }

    public func unregister(_ id: Int) {
        guard let gone = connections.removeValue(forKey: id) else { return }
        gone.deflate?.leave()
        greeted[gone.token.team]?.remove(id)
        if greeted[gone.token.team]?.isEmpty == true { greeted[gone.token.team] = nil }
        for board in rooms.keys where rooms[board]?.members.contains(id) == true {
            rooms[board]?.members.remove(id)
            if rooms[board]?.members.isEmpty == true { forget(board) }
        }
        for board in presence.keys where presence[board]?[id] != nil {
            let gone = presence[board]!.removeValue(forKey: id)!
            let message = SyncMessage.Presence(board: board, replica: gone.replica, user: gone.user, viewing: false, editing: nil)
            broadcast(.presence(message), board: board, except: [id])
            if let cluster = storage.cluster {
                Task { [logger] in
                    do { try await cluster.publish(presence: message, connection: id) } catch {
                        logger.notice("could not publish presence", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    /// A room nobody on this instance is in: drop what is kept for it.
    private func forget(_ board: EntityID) {
        rooms[board] = nil
        states[board] = nil
        headDigests[board] = nil
        pastStates[board] = nil
    }

    public var stats: (connections: Int, rooms: Int) { (connections.count, rooms.values.filter { !$0.members.isEmpty }.count) }

    // MARK: Board locks

    /// Waits until none of `boards` is locked, then locks them all (first come, first served
    /// among waiters that want a common board; no lock is held while waiting, so no deadlock).
    private func lock(_ boards: Set<EntityID>) async {
        if lockedBoards.isDisjoint(with: boards), !lockWaiters.contains(where: { !$0.boards.isDisjoint(with: boards) }) {
            lockedBoards.formUnion(boards)
            return
        }
        await withCheckedContinuation { lockWaiters.append((boards, $0)) }
    }

    private func unlock(_ boards: Set<EntityID>) {
        lockedBoards.subtract(boards)
        var blocked = Set<EntityID>()
        var index = 0
        while index < lockWaiters.count {
            let waiter = lockWaiters[index]
            if lockedBoards.isDisjoint(with: waiter.boards), blocked.isDisjoint(with: waiter.boards) {
                lockedBoards.formUnion(waiter.boards)
                lockWaiters.remove(at: index)
                waiter.resume.resume()
            } else {
                blocked.formUnion(waiter.boards)
                index += 1
            }
        }
    }

    // MARK: Joining

    /// Answers a hello: joins the boards the token may see and sends the welcome, then every
    /// operation after the agent's cursor (all of a board the agent does not know).
    func hello(_ id: Int, _ hello: SyncMessage.Hello) async throws {
        guard let token = connections[id]?.token else { return }
        let heads = try await storage.boards(team: token.team).filter { token.allows(board: $0.id.rawValue) }
        guard var connection = connections[id] else { return }
        connection.replica = hello.replica
        connection.cursors = hello.cursors
        connection.marks = hello.marks ?? [:]
        connections[id] = connection
        greeted[token.team, default: []].insert(id)
        // From here on the connection also joins rooms created for boards new to it.
        send(id, .welcome(.init(relay: configuration.relayName, team: token.team, writable: token.write,
                                boards: heads, serverTime: Int64(Date().timeIntervalSince1970 * 1000),
                                heartbeatSeconds: configuration.heartbeatSeconds)), keepContext: false)
        // Heads read again now that the connection counts as greeted: anything committed after
        // this read reaches it live (a notification finds it eligible), anything before is in
        // its catch-up. (Also catches boards created since the list above.)
        var known: Set<EntityID> = []
        for head in try await storage.boards(team: token.team) where token.allows(board: head.id.rawValue) {
            known.insert(head.id)
            try await join(id, board: head.id, team: token.team, head: head.head)
        }
        // Boards the agent holds a cursor for, which the token covers and this relay has never
        // heard of: the relay lost them (its data restored from a copy older than the board).
        // An empty `ops` at head 0 says so; the agent, its cursor above that, pushes the board
        // again. Without it such a board came back only when someone wrote to it, and until then
        // no new agent saw it. A board of another team is known here, so it is never announced.
        for (raw, cursor) in hello.cursors.sorted(by: { $0.key < $1.key })
        where cursor > 0 && token.allows(board: raw) {
            guard let board = EntityID(raw), !known.contains(board), try await storage.team(of: board) == nil,
                  connections[id] != nil else { continue }
            logger.warning("agent has a board this relay does not know (restored from an older copy?); telling it the head is 0",
                           metadata: ["board": "\(board)", "cursor": "\(cursor)"])
            send(id, .ops(.init(board: board, ops: [], head: 0)), keepContext: false)
        }
    }

    /// Under no lock: joins one board, catching the connection up from its hello cursor to at
    /// least `head` (read from the log before; anything newer reaches the room live).
    private func join(_ id: Int, board: EntityID, team: String, head: Int64) async throws {
        await lock([board])
        defer { unlock([board]) }
        guard connections[id] != nil, rooms[board]?.members.contains(id) != true else { return }
        if rooms[board]?.members.isEmpty ?? true {
            try await openRoom(board, team: team, through: head, greeting: id)
        } else {
            try await advance(board, through: head)
            guard connections[id] != nil, rooms[board]?.members.contains(id) != true, let through = rooms[board]?.delivered else { return }
            try await admit(id, board: board, team: team, through: through, greeting: true)
        }
    }

    /// Under the board's lock, for a board nobody here is in: the room opens at `through` with
    /// every connection of the team that may see the board and said hello (the board is new to
    /// them, or `greeting` is joining it now), each caught up from its hello cursor.
    private func openRoom(_ board: EntityID, team: String, through: Int64, greeting: Int? = nil) async throws {
        let eligible = eligible(for: board, team: team).sorted()
        guard !eligible.isEmpty else { return }
        rooms[board] = Room(team: team, delivered: through)
        for member in eligible where connections[member] != nil && rooms[board]?.members.contains(member) != true {
            try await admit(member, board: board, team: team, through: through, greeting: member == greeting)
        }
    }

    /// Connections of the team that said hello and whose token covers the board.
    private func eligible(for board: EntityID, team: String) -> [Int] {
        (greeted[team] ?? []).filter { connections[$0]?.token.allows(board: board.rawValue) == true }
    }

    /// Under the board's lock: sends one connection the board from its hello cursor through
    /// `through` (the room's delivered sequence), then makes it a member. `greeting`: it joins
    /// because of its hello, so it hears the head even when there is nothing to send.
    private func admit(_ id: Int, board: EntityID, team: String, through: Int64, greeting: Bool) async throws {
        guard let connection = connections[id] else { return }
        var cursor = connection.cursors?[board.rawValue] ?? 0
        if cursor > through {
            // The agent has seen more than this relay holds (relay restored from an older
            // backup): send everything; the agent re-pushes what the relay lost.
            logger.warning("agent cursor ahead of relay log", metadata: ["board": "\(board)", "cursor": "\(cursor)", "head": "\(through)"])
            cursor = 0
        } else if cursor > 0, let mark = connection.marks[board.rawValue],
                  let here = try await storage.operationID(board: board, seq: cursor), here != mark {
            // The log grew back past the agent's cursor after a restore, with other operations:
            // head 0 makes the agent forget the cursor and push the board again (as for a lost
            // board), then it gets the whole board.
            historyMismatches += 1
            logger.warning("agent's operation at its cursor is not the relay's (restored from an older copy?); resending the board",
                           metadata: ["board": "\(board)", "cursor": "\(cursor)", "agentOp": "\(mark)", "relayOp": "\(here)"])
            guard send(id, .ops(.init(board: board, ops: [], head: 0)), keepContext: false), connections[id] != nil else { return }
            cursor = 0
        }
        guard try await sendCatchUp(id, board: board, after: cursor, head: through, announce: greeting) else { return }
        guard connections[id] != nil else { return }
        rooms[board, default: Room(team: team, delivered: through)].members.insert(id)
        for (_, p) in presence[board] ?? [:] { send(id, .presence(p)) }
        for (_, p) in remotePresence[board] ?? [:] { send(id, .presence(p)) }
    }

    /// false when the connection is gone or fell behind.
    private func sendCatchUp(_ id: Int, board: EntityID, after: Int64, head: Int64, announce: Bool = true) async throws -> Bool {
        var sent = false
        let reached = try await readLog(board, after: after, through: head, batch: configuration.catchUpBatch) { seq, state in
            // Past the compaction horizon: the state at the horizon, then the tail.
            await sendLarge(id, .snapshot(.init(board: board, seq: seq, head: head, state: state)))
        } operations: { entries in
            let message = SyncMessage.ops(.init(board: board, ops: entries, head: head))
            // A long batch (a few ms to encode and compress) is made off the hub, where every
            // push waits; a short one, the usual reconnect, is not worth the hand-off.
            let queued = entries.count >= Self.largeBatch ? await sendLarge(id, message) : send(id, message, keepContext: false)
            guard queued else { return false }
            sent = true
            return true
        }
        if !reached { return false }
        if !sent && announce {
            // Nothing (more) to send; still tell the agent the head so it knows it is caught up.
            return send(id, .ops(.init(board: board, ops: [], head: head)), keepContext: false)
        }
        return connections[id] != nil
    }

    // MARK: Delivery

    /// Under the board's lock: brings every member of the board's room to `target`, sending
    /// what lies between (from `known` when it covers the range, else from the log).
    private func advance(_ board: EntityID, through target: Int64, known: [SyncMessage.Ops.Sequenced] = []) async throws {
        guard let delivered = rooms[board]?.delivered, delivered < target, rooms[board]?.members.isEmpty == false else { return }
        var entries = known.filter { $0.seq > delivered && $0.seq <= target }
        if entries.first?.seq != delivered + 1 || entries.last?.seq != target || entries.count != Int(target - delivered) {
            entries = []
            var cursor = delivered
            do {
                while cursor < target {
                    let batch = try await storage.operations(board: board, after: cursor, limit: min(5_000, Int(target - cursor)))
                    guard let last = batch.last else { break }
                    entries += batch
                    cursor = last.seq
                }
            } catch {
                entries = []  // compacted meanwhile (by another instance): see below
            }
            gapFills += entries.count
            // A compacted range cannot be sent as operations: members get the snapshot first.
            if entries.first.map({ $0.seq != delivered + 1 }) ?? true {
                for member in rooms[board]?.members ?? [] {
                    _ = try await sendCatchUp(member, board: board, after: delivered, head: target, announce: false)
                }
                rooms[board]?.delivered = target
                states[board] = nil
                return
            }
        }
        deliver(board, entries, except: [])
    }

    /// Under the board's lock: sends consecutive operations (the next after `delivered`) to the
    /// room, except their authors (who get acks and are sent the others' operations around them).
    private func deliver(_ board: EntityID, _ entries: [SyncMessage.Ops.Sequenced], except: Set<Int>) {
        guard let delivered = rooms[board]?.delivered else { return }
        let fresh = entries.filter { $0.seq > delivered }
        guard let last = fresh.last else { return }
        for entry in fresh { states[board]?.apply(entry.op) }
        var start = 0
        while start < fresh.count {
            let end = min(start + configuration.catchUpBatch, fresh.count)
            broadcast(.ops(.init(board: board, ops: Array(fresh[start..<end]), head: last.seq)), board: board, except: except)
            start = end
        }
        rooms[board]?.delivered = last.seq
    }

    /// Stores pushed operations, acknowledges them to the author and broadcasts the new ones.
    func push(_ id: Int, _ ops: [BoardOperation]) async throws {
        guard let (allowed, team) = admitted(id, ops) else { return }
        let boards = Set(allowed.map(\.board))
        if boards.count == 1, let board = boards.first {
            try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
                enqueue(board, PendingPush(id: id, ops: allowed, team: team) { error in
                    if let error { done.resume(throwing: error) } else { done.resume() }
                })
            }
            return
        }
        await lock(boards)
        defer { unlock(boards) }
        try await commit([(id, allowed)], boards: boards, team: team)
    }

    /// A push to one board, without waiting for it: it joins the board's next group commit and
    /// `done` is called once it is stored, acknowledged and broadcast (or failed). Pushes a
    /// connection submits to a board are committed in the order submitted. Returns false when
    /// the push touches several boards: the caller uses `push` (after its submitted ones are done).
    func submit(_ id: Int, _ ops: [BoardOperation], done: @escaping @Sendable ((any Error)?) -> Void) -> Bool {
        guard Set(ops.map(\.board)).count <= 1 else { return false }
        guard let (allowed, team) = admitted(id, ops), let board = allowed.first?.board else {
            done(nil)
            return true
        }
        enqueue(board, PendingPush(id: id, ops: allowed, team: team, done: done))
        return true
    }

    private func enqueue(_ board: EntityID, _ push: PendingPush) {
        // Group commit: pushes to one board that arrive while its previous transaction runs
        // are stored together in the next one (one commit, one fsync, one row lock).
        pending[board, default: []].append(push)
        if committing.insert(board).inserted { Task { await self.commitPending(board) } }
    }

    /// The operations of a push the connection may write (errors sent for the others), and its team.
    private func admitted(_ id: Int, _ ops: [BoardOperation]) -> ([BoardOperation], String)? {
        guard let connection = connections[id] else { return nil }
        let token = connection.token
        guard token.write else {
            send(id, .error(.init(code: "read_only", message: "this token may not write; ask for a read-write token",
                                  op: ops.first?.id, board: ops.first?.board)))
            return nil
        }
        var allowed: [BoardOperation] = []
        for op in ops {
            if token.allows(board: op.board.rawValue) {
                allowed.append(op)
            } else {
                send(id, .error(.init(code: "forbidden_board", message: "this token may not see board \(op.board)",
                                      op: op.id, board: op.board)))
            }
        }
        guard !allowed.isEmpty else { return nil }
        return (allowed, token.team)
    }

    struct PendingPush {
        let id: Int
        let ops: [BoardOperation]
        let team: String
        let done: @Sendable ((any Error)?) -> Void
    }

    /// Commits the pushes waiting for a board, a batch per transaction, until none is left.
    /// (A connection may have several pushes waiting: its session bounds them, `RelayConnection`.)
    private func commitPending(_ board: EntityID) async {
        while let queue = pending.removeValue(forKey: board), !queue.isEmpty {
            // One team per transaction (another team's push is refused per operation), and a
            // bounded transaction; the rest goes in the next.
            let team = queue[0].team
            var batch: [PendingPush] = []
            var rest: [PendingPush] = []
            var count = 0
            for push in queue {
                if rest.isEmpty, push.team == team, batch.isEmpty || count + push.ops.count <= Self.maxBatchOperations {
                    batch.append(push)
                    count += push.ops.count
                } else {
                    rest.append(push)
                }
            }
            if !rest.isEmpty { pending[board] = rest }
            await lock([board])
            do {
                try await commit(batch.map { ($0.id, $0.ops) }, boards: [board], team: team)
                for push in batch { push.done(nil) }
            } catch {
                for push in batch { push.done(error) }
            }
            unlock([board])
        }
        committing.remove(board)
    }

    static let maxBatchOperations = 5_000

    /// One line for the first failed append of a run, a summary at most every 10 s while they
    /// go on, and one when appends work again.
    private func log(_ report: StoreWrites.Report, error: (any Error)? = nil) {
        switch report {
        case .none: break
        case .started:
            logger.error("could not store pushed operations; pushes are refused until the log takes writes again",
                         metadata: ["error": "\(error.map(RelayStoreError.reason) ?? "")",
                                    "diskFull": "\(error.map(relayStoreIsFull) ?? false)"])
        case .still(let failures):
            logger.error("still cannot store pushed operations", metadata: [
                "failedAppends": "\(failures)", "error": "\(error.map(RelayStoreError.reason) ?? "")"])
        case .recovered(let failures, let lasted):
            logger.notice("the log takes writes again", metadata: [
                "failedAppends": "\(failures)", "after": "\(StoreWrites.seconds(lasted))"])
        }
    }

    /// Under the boards' locks: stores the pushes' operations in one transaction, acknowledges
    /// each push to its author and broadcasts the new operations, in sequence order.
    private func commit(_ pushes: [(id: Int, ops: [BoardOperation])], boards: Set<EntityID>, team: String) async throws {
        let results: [AppendResult]
        do {
            results = try await storage.append(pushes.flatMap(\.ops), team: team)
        } catch {
            log(writes.failed(error), error: error)
            throw AppendFailed(underlying: error)
        }
        if writes.failing != nil { log(writes.succeeded()) }
        var byOperation: [OperationID: [AppendResult]] = [:]
        for result in results {
            switch result {
            case .stored(let op, _, _, _), .forbidden(let op, _): byOperation[op, default: []].append(result)
            }
        }
        struct Outcome {
            var acks: [SyncMessage.Ack.Entry] = []
            var fresh: [EntityID: [SyncMessage.Ops.Sequenced]] = [:]
            var forbidden: [(OperationID, EntityID)] = []
        }
        var outcomes: [Outcome] = []
        var firstFresh: [EntityID: Int64] = [:]
        var acked: [EntityID: Int64] = [:]
        for push in pushes {
            var outcome = Outcome()
            for op in push.ops {
                // An operation pushed twice in the batch has two results: new, then duplicate.
                guard let result = byOperation[op.id]?.first else { continue }
                byOperation[op.id]?.removeFirst()
                switch result {
                case .stored(let id, let board, let seq, let new):
                    outcome.acks.append(.init(op: id, board: board, seq: seq))
                    acked[board] = max(acked[board] ?? 0, seq)
                    if new {
                        outcome.fresh[board, default: []].append(.init(seq: seq, op: op))
                        firstFresh[board] = min(firstFresh[board] ?? .max, seq)
                        acceptedOperations += 1
                    }
                case .forbidden(let id, let board):
                    outcome.forbidden.append((id, board))
                }
            }
            outcomes.append(outcome)
        }
        // Before any ack, every room is brought up to just below the new operations (or to the
        // acked sequence of a duplicate): an author must not get a sequence above one it has
        // not been sent, or its cursor would skip it. A board new to this instance opens its
        // room here, with the authors and every connection of the team that may see it.
        for board in acked.keys.sorted(by: { $0.rawValue < $1.rawValue }) where boards.contains(board) {
            let target = firstFresh[board].map { $0 - 1 } ?? acked[board]!
            if rooms[board]?.members.isEmpty ?? true {
                try await openRoom(board, team: team, through: target)
            } else {
                try await advance(board, through: target)
            }
        }
        // The room gets the batch's new operations together, in sequence order (one message for
        // the whole group commit, compressed once); their authors get acks instead of echoes.
        let authors = Set(pushes.map(\.id))
        var start: [EntityID: Int64] = [:]
        var freshByBoard: [EntityID: [SyncMessage.Ops.Sequenced]] = [:]
        for outcome in outcomes {
            for (board, entries) in outcome.fresh where boards.contains(board) { freshByBoard[board, default: []] += entries }
        }
        for (board, entries) in freshByBoard {
            guard let delivered = rooms[board]?.delivered else { continue }
            start[board] = delivered
            deliver(board, entries, except: authors)
        }
        // Each author, push by push: the others' operations before its push, its ack, the
        // others' after it (an ack never names a sequence above one the author was sent).
        for author in authors {
            var others: [EntityID: [SyncMessage.Ops.Sequenced]] = [:]
            func flush() {
                for (board, entries) in others where rooms[board]?.members.contains(author) == true {
                    var first = 0
                    while first < entries.count {
                        let end = min(first + configuration.catchUpBatch, entries.count)
                        send(author, .ops(.init(board: board, ops: Array(entries[first..<end]), head: entries[end - 1].seq)))
                        first = end
                    }
                }
                others = [:]
            }
            for (push, outcome) in zip(pushes, outcomes) {
                if push.id == author {
                    flush()
                    for (op, board) in outcome.forbidden {
                        send(push.id, .error(.init(code: "forbidden_board", message: "board \(board) belongs to another team", op: op, board: board)))
                    }
                    send(push.id, .ack(.init(acks: outcome.acks)))
                } else {
                    for (board, entries) in outcome.fresh {
                        guard let from = start[board] else { continue }
                        others[board, default: []] += entries.filter { $0.seq > from }
                    }
                }
            }
            flush()
        }
        for (board, first) in firstFresh where boards.contains(board) {
            _ = first
            if let head = rooms[board]?.delivered ?? acked[board] { try await compactIfNeeded(board, head: head) }
        }
    }

    /// Operations another instance committed: the room (if any here) gets them in order, after
    /// whatever it missed; a board new to this instance opens a room for the connections that
    /// may see it.
    func remote(board: EntityID, team: String, first: Int64, last: Int64, ops: [SyncMessage.Ops.Sequenced]?) async throws {
        remoteOperationCount += Int(last - first + 1)
        try await arrive(board, team: team, through: last, known: ops ?? [])
    }

    private func arrive(_ board: EntityID, team: String, through last: Int64, known ops: [SyncMessage.Ops.Sequenced]) async throws {
        if rooms[board]?.members.isEmpty ?? true, eligible(for: board, team: team).isEmpty { return }
        await lock([board])
        defer { unlock([board]) }
        if rooms[board]?.members.isEmpty ?? true {
            try await openRoom(board, team: team, through: last)
        } else {
            try await advance(board, through: last, known: ops)
        }
    }

    /// After notifications may have been lost (the listener reconnected): every room catches up
    /// to the log's head, and boards created meanwhile open rooms for the connections that may
    /// see them.
    func resync() async throws {
        for board in Array(rooms.keys) {
            await lock([board])
            defer { unlock([board]) }
            try await advance(board, through: try await storage.head(of: board))
        }
        for team in greeted.keys.sorted() {
            for head in try await storage.boards(team: team) where rooms[head.id]?.members.isEmpty ?? true {
                try await arrive(head.id, team: team, through: head.head, known: [])
            }
        }
    }

    // MARK: Presence

    /// Relays presence to the rest of the room (and to other instances); it is kept only while
    /// the connection lives.
    func presence(_ id: Int, _ message: SyncMessage.Presence) async {
        guard let connection = connections[id], rooms[message.board]?.members.contains(id) == true else { return }
        var p = message
        p.replica = connection.replica
        if p.user.map({ $0.count > 100 }) == true { p.user = String(p.user!.prefix(100)) }
        if p.viewing { presence[message.board, default: [:]][id] = p } else { presence[message.board]?.removeValue(forKey: id) }
        broadcast(.presence(p), board: message.board, except: [id])
        if let cluster = storage.cluster {
            do { try await cluster.publish(presence: p, connection: id) } catch {
                logger.notice("could not publish presence", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Presence of an agent on another instance.
    func remote(instance: String, connection: Int, presence p: SyncMessage.Presence) {
        instancesSeen[instance] = .now
        let key = "\(instance)/\(connection)"
        if p.viewing { remotePresence[p.board, default: [:]][key] = p } else { remotePresence[p.board]?.removeValue(forKey: key) }
        broadcast(.presence(p), board: p.board, except: [])
    }

    func alive(instance: String) { instancesSeen[instance] = .now }

    /// Drops the presence of agents on instances not heard from within `timeout` (killed).
    func expireInstances(olderThan timeout: Duration) {
        let now = ContinuousClock.now
        for (instance, seen) in instancesSeen where now - seen > timeout {
            instancesSeen[instance] = nil
            for board in remotePresence.keys {
                for (key, p) in remotePresence[board] ?? [:] where key.hasPrefix(instance + "/") {
                    remotePresence[board]?.removeValue(forKey: key)
                    broadcast(.presence(.init(board: board, replica: p.replica, user: p.user, viewing: false, editing: nil)), board: board, except: [])
                }
            }
        }
    }

    // MARK: Digest and compaction

    /// Compares an agent's digest with the relay's at the same sequence; on mismatch resends
    /// the whole board so the agent can repair. The agent sends it when it has exactly the
    /// relay's operations up to `seq`, which may be below the head by the time it arrives (others
    /// wrote meanwhile): the state at `seq` is then rebuilt from the log. Not answered when `seq`
    /// is above the head (the agent finds that out from the head itself) or folded into a
    /// snapshot.
    func digest(_ id: Int, _ message: SyncMessage.Digest) async throws {
        guard let connection = connections[id], connection.token.allows(board: message.board.rawValue),
              try await storage.team(of: message.board) == connection.token.team
        else { return }
        if try await compareAtHead(id, message) { return }
        let board = message.board
        let idle = belowHead[board] == nil
        belowHead[board, default: []].append((id, message))
        if idle { Task { await self.answerBelowHead(board) } }
    }

    /// Answers the board's digests taken below its head, the lowest sequence first, so that
    /// each state is rebuilt from the one before it: several agents that reconnect while others
    /// write cost one pass over the log, not one each. The log up to a sequence never changes
    /// (short of being folded into a snapshot, when that digest is not answered), so it is read
    /// without the board's lock, which pushes to the board wait for: a long log takes a while.
    private func answerBelowHead(_ board: EntityID) async {
        while let waiting = belowHead[board], !waiting.isEmpty {
            belowHead[board] = []
            for (id, message) in waiting.sorted(by: { $0.message.seq < $1.message.seq }) where connections[id] != nil {
                do {
                    guard let digest = try await digest(of: board, at: message.seq) else { continue }
                    await lock([board])
                    defer { unlock([board]) }
                    try await answer(id, message, match: digest == message.digest)
                } catch {
                    logger.warning("could not compare a digest", metadata: ["board": "\(board)", "seq": "\(message.seq)", "error": "\(error)"])
                }
            }
        }
        belowHead[board] = nil
    }

    /// Under the board's lock: compares a digest taken at the head with the state delivery
    /// keeps. false when `seq` is below the head (nothing done).
    private func compareAtHead(_ id: Int, _ message: SyncMessage.Digest) async throws -> Bool {
        await lock([message.board])
        defer { unlock([message.board]) }
        let head = try await storage.head(of: message.board)
        guard message.seq > 0, message.seq <= head else { return true }
        guard message.seq == head else { return false }
        try await advance(message.board, through: head)
        let digest: String
        if let known = headDigests[message.board], known.seq == head {
            digest = known.digest
        } else {
            digest = await stateWork.digest(of: try await state(of: message.board, through: head))
            // Every agent that reconnects at this head compares with the same digest.
            if rooms[message.board]?.members.isEmpty == false { headDigests[message.board] = (head, digest) }
        }
        try await answer(id, message, match: digest == message.digest)
        return true
    }

    /// Under the board's lock: the result, and after a mismatch the whole board through its head.
    private func answer(_ id: Int, _ message: SyncMessage.Digest, match: Bool) async throws {
        send(id, .digestResult(.init(board: message.board, seq: message.seq, match: match)))
        guard !match else { return }
        digestMismatches += 1
        logger.warning("digest mismatch; resending board", metadata: ["board": "\(message.board)", "seq": "\(message.seq)"])
        let head = try await storage.head(of: message.board)
        try await advance(message.board, through: head)
        _ = try await sendCatchUp(id, board: message.board, after: 0, head: head)
    }

    /// The digest of the board's state at an older sequence, rebuilt from the log: from the last
    /// state rebuilt for the board when that lies at or below `seq` (agents that reconnect while
    /// others write digest at rising sequences), else from the start. nil when `seq` lies inside
    /// the compacted part (a snapshot past it).
    private func digest(of board: EntityID, at seq: Int64) async throws -> String? {
        let past = pastStates[board]
        if let past, past.seq == seq { return past.digest }
        if let horizon = try await storage.snapshotSeq(board: board), horizon > seq { return nil }
        let state: BoardState
        do {
            state = try await replayLog(board, through: seq, from: past.flatMap { $0.seq < seq ? ($0.seq, $0.state) : nil })
        } catch let error as RelayError where error.compacted {
            return nil  // compacted past `seq` meanwhile
        }
        let digest = await stateWork.digest(of: state)
        if rooms[board]?.members.isEmpty == false, (pastStates[board]?.seq ?? 0) < seq {
            pastStates[board] = PastState(seq: seq, state: state, digest: digest)
        }
        return digest
    }

    /// Folds old operations into a snapshot once a board's live log passes the threshold.
    private func compactIfNeeded(_ board: EntityID, head: Int64) async throws {
        let threshold = Int64(configuration.compactionThreshold)
        guard threshold > 0 else { return }
        let horizon: Int64
        if let known = horizons[board] {
            horizon = known
        } else {
            horizon = try await storage.snapshotSeq(board: board) ?? 0
            horizons[board] = horizon
        }
        guard head - horizon > threshold, !compacting.contains(board) else { return }
        let through = head - Int64(configuration.compactionKeep)
        // In the background, one per board at a time: folding takes seconds, and the caller holds
        // the board's lock, which every push to the board waits for. Readers that meet operations
        // folded meanwhile go on from the new snapshot (`readLog`).
        compacting.insert(board)
        Task { await self.compact(board, through: through) }
    }

    private func compact(_ board: EntityID, through: Int64) async {
        defer { compacting.remove(board) }
        do {
            try await storage.compact(board: board, through: through)
            horizons[board] = through
            compactions += 1
            logger.info("compacted board", metadata: ["board": "\(board)", "through": "\(through)"])
        } catch {
            // The log is as it was (or folded by another instance); the next commit tries again.
            logger.error("compacting a board failed", metadata: ["board": "\(board)", "error": "\(error)"])
        }
    }

    /// Reads the board's log after `cursor` through `head`: its snapshot first when that lies
    /// past `cursor`, then the operations, at most `batch` at a time. A compaction runs beside
    /// the board's lock, so it can fold what this is about to read after the snapshot was looked
    /// at; the read then goes on from the newer snapshot (up to three times), which is correct
    /// because joining a snapshot into what came before it is. `snapshot` and `operations`
    /// return false to stop; so does this function, then.
    /// Runs on the caller's actor (this hub's for a catch-up, none for a rebuild).
    private func readLog(
        _ board: EntityID, after cursor: Int64, through head: Int64, batch: Int,
        isolation: isolated (any Actor)? = #isolation,
        snapshot: (Int64, BoardSnapshot) async -> Bool, operations: ([SyncMessage.Ops.Sequenced]) async -> Bool
    ) async throws -> Bool {
        var cursor = cursor
        var retries = 0
        while true {
            do {
                // The snapshot is read only when it lies past `cursor` (a large one takes a while
                // to decode): most catch-ups start above it.
                if cursor < head, let horizon = try await storage.snapshotSeq(board: board), horizon > cursor, horizon <= head,
                   let stored = try await storage.snapshot(board: board), stored.seq > cursor, stored.seq <= head {
                    guard await snapshot(stored.seq, stored.state) else { return false }
                    cursor = stored.seq
                }
                while cursor < head {
                    let entries = try await storage.operations(board: board, after: cursor, limit: min(batch, Int(head - cursor)))
                    guard let last = entries.last else { break }
                    guard await operations(entries) else { return false }
                    cursor = last.seq
                }
                return true
            } catch let error as RelayError where error.compacted && retries < 3 {
                retries += 1
            }
        }
    }

    /// The board's state at `head`, the room's delivered sequence (kept while the room is open
    /// here; delivery keeps it current).
    private func state(of board: EntityID, through head: Int64) async throws -> BoardState {
        if let state = states[board] { return state }
        // From a state rebuilt below the head for another digest, if there is one.
        let past = pastStates[board].flatMap { $0.seq <= head ? ($0.seq, $0.state) : nil }
        let state = try await replayLog(board, through: head, from: past)
        if rooms[board]?.members.isEmpty == false { states[board] = state }
        return state
    }

    /// The board's state after its log through `seq`: the snapshot (when it lies at or below
    /// `seq`), then the operations; from `start` (a state at a lower sequence) when given. Off
    /// this actor: the reads go through the storage, the rest is `stateWork`'s.
    private nonisolated func replayLog(_ board: EntityID, through seq: Int64, from start: (seq: Int64, state: BoardState)?) async throws -> BoardState {
        let rebuild = BoardStateWork.Rebuild(start?.state ?? BoardState(id: board))
        _ = try await readLog(board, after: start?.seq ?? 0, through: seq, batch: 5_000) { _, snapshot in
            // Covers every operation below its sequence.
            await self.stateWork.run { rebuild.replace(with: snapshot.state) }
            return true
        } operations: { entries in
            await self.stateWork.run { rebuild.apply(entries) }
            return true
        }
        return rebuild.result
    }

    // MARK: Sending

    /// false when the connection is gone or was closed for falling behind.
    /// `keepContext`: compress on the connection's own deflate stream (small, frequent replies);
    /// false for one-off messages (welcome, catch-up), compressed from a fresh stream.
    @discardableResult
    func send(_ id: Int, _ message: SyncMessage, keepContext: Bool = true) -> Bool {
        guard let connection = connections[id] else { return false }
        if connection.send(compressor.message(message.text, for: connection.deflate, keepContext: keepContext), false) { return true }
        slow(id)
        return false
    }

    /// Catch-up batches of at least this many operations are sent with `sendLarge`.
    static let largeBatch = 100

    /// A large message for one connection (a board's snapshot: a 50,000-task board's takes
    /// about a second to encode and compress; a catch-up batch of 500 operations a few ms),
    /// encoded and compressed on `largeMessages`' thread, then queued. Callers hold the board's
    /// lock, so nothing of the board overtakes it.
    private func sendLarge(_ id: Int, _ message: SyncMessage) async -> Bool {
        guard let connection = connections[id] else { return false }
        let compress = compressor.standalone(for: connection.deflate)
        let item = await largeMessages.run { compress(message.text) }
        guard let connection = connections[id] else { return false }
        compressor.sendingStandalone(connection.deflate)
        if connection.send(item, false) { return true }
        slow(id)
        return false
    }

    /// Encoded once for the whole room, and compressed once per group of members sharing a
    /// deflate stream (RelayCompressor).
    private func broadcast(_ message: SyncMessage, board: EntityID, except: Set<Int>) {
        guard let members = rooms[board]?.members else { return }
        let recipients = members.subtracting(except).compactMap { connections[$0] }
        guard !recipients.isEmpty else { return }
        var waste = rooms[board]?.deflateWaste ?? 0
        let items = compressor.broadcast(message.text, to: recipients.map(\.deflate), waste: &waste)
        rooms[board]?.deflateWaste = waste
        for (connection, item) in zip(recipients, items) where !connection.send(item, true) {
            slow(connection.id)
        }
    }

    private func slow(_ id: Int) {
        guard let connection = connections[id] else { return }
        logger.notice("closing slow connection", metadata: ["connection": "\(id)"])
        traffic.slowCloses.increment()
        connection.close(SyncCloseCode.tooSlow, "too far behind; reconnect and catch up")
        unregister(id)
    }
}
