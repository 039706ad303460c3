public import Foundation
public import KanbanModel
public import KanbanProtocol
public import Logging
import Prometheus

/// The relay's rooms: which connection sees which board, the durable append, and fan-out.
///
/// One actor orders everything that touches a board: a push is stored, acknowledged to its
/// author and broadcast to the room in sequence order, and a joining connection gets its
/// catch-up before any live message, so every connection sees each board's operations in
/// sequence order with no gaps.
public actor RelayHub {
    public struct Connection: Sendable {
        public let id: Int
        public let token: RelayToken
        public var replica: ReplicaID?
        let send: @Sendable (String) -> Bool
        let close: @Sendable (UInt16, String) -> Void
    }

    let storage: any RelayStorage
    let configuration: RelayConfiguration
    let logger: Logger
    private var connections: [Int: Connection] = [:]
    private var rooms: [EntityID: Set<Int>] = [:]
    private var states: [EntityID: BoardState] = [:]
    private var presence: [EntityID: [Int: SyncMessage.Presence]] = [:]
    private var nextID = 0
    public private(set) var digestMismatches = 0
    public private(set) var acceptedOperations = 0
    public private(set) var compactions = 0

    let traffic: RelayTraffic

    public init(storage: any RelayStorage, configuration: RelayConfiguration, logger: Logger,
                traffic: RelayTraffic = RelayTraffic()) {
        self.storage = storage
        self.configuration = configuration
        self.logger = logger
        self.traffic = traffic
    }

    public func register(token: RelayToken, send: @escaping @Sendable (String) -> Bool,
                         close: @escaping @Sendable (UInt16, String) -> Void) -> Int {
        nextID += 1
        connections[nextID] = Connection(id: nextID, token: token, replica: nil, send: send, close: close)
        return nextID
    }

    public func unregister(_ id: Int) {
        connections.removeValue(forKey: id)
        for board in rooms.keys { rooms[board]?.remove(id) }
        for board in presence.keys where presence[board]?[id] != nil {
            let gone = presence[board]!.removeValue(forKey: id)!
            broadcast(.presence(.init(board: board, replica: gone.replica, user: gone.user, viewing: false, editing: nil)),
                      board: board, except: id)
        }
    }

    public var stats: (connections: Int, rooms: Int) { (connections.count, rooms.values.filter { !$0.isEmpty }.count) }

    /// Answers a hello: joins the boards the token may see and sends the welcome, then every
    /// operation after the agent's cursor (all of a board the agent does not know).
    func hello(_ id: Int, _ hello: SyncMessage.Hello) throws {
        guard var connection = connections[id] else { return }
        connection.replica = hello.replica
        connections[id] = connection
        let heads = try storage.boards(team: connection.token.team).filter { connection.token.allows(board: $0.id.rawValue) }
        send(id, .welcome(.init(relay: configuration.relayName, team: connection.token.team, writable: connection.token.write,
                                boards: heads, serverTime: Int64(Date().timeIntervalSince1970 * 1000),
                                heartbeatSeconds: configuration.heartbeatSeconds)))
        for head in heads {
            rooms[head.id, default: []].insert(id)
            var cursor = hello.cursors[head.id.rawValue] ?? 0
            if cursor > head.head {
                // The agent has seen more than this relay holds (relay restored from an older
                // backup): send everything; the agent re-pushes what the relay lost.
                logger.warning("agent cursor ahead of relay log", metadata: ["board": "\(head.id)", "cursor": "\(cursor)", "head": "\(head.head)"])
                cursor = 0
            }
            try sendCatchUp(id, board: head.id, after: cursor, head: head.head)
            for (_, p) in presence[head.id] ?? [:] { send(id, .presence(p)) }
        }
    }

    private func sendCatchUp(_ id: Int, board: EntityID, after: Int64, head: Int64) throws {
        var cursor = after
        if let snapshot = try storage.snapshot(board: board), snapshot.seq > after {
            // Past the compaction horizon: the state at the horizon, then the tail.
            if !send(id, .snapshot(.init(board: board, seq: snapshot.seq, head: head, state: snapshot.state))) { return }
            cursor = snapshot.seq
        }
        while cursor < head {
            let batch = try storage.operations(board: board, after: cursor, limit: configuration.catchUpBatch)
            guard let last = batch.last else { break }
            if !send(id, .ops(.init(board: board, ops: batch, head: head))) { return }
            cursor = last.seq
        }
        if after >= head || cursor >= head {
            // Nothing (more) to send; still tell the agent the head so it knows it is caught up.
            send(id, .ops(.init(board: board, ops: [], head: head)))
        }
    }

    /// Stores pushed operations, acknowledges them to the author and broadcasts the new ones.
    func push(_ id: Int, _ ops: [BoardOperation]) throws {
        guard let connection = connections[id] else { return }
        let token = connection.token
        guard token.write else {
            send(id, .error(.init(code: "read_only", message: "this token may not write; ask for a read-write token",
                                  op: ops.first?.id, board: ops.first?.board)))
            return
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
        guard !allowed.isEmpty else { return }
        let results = try storage.append(allowed, team: token.team)
        var acks: [SyncMessage.Ack.Entry] = []
        var fresh: [EntityID: [SyncMessage.Ops.Sequenced]] = [:]
        let byID = Dictionary(allowed.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for result in results {
            switch result {
            case .stored(let op, let board, let seq, let new):
                acks.append(.init(op: op, board: board, seq: seq))
                if new, let operation = byID[op] {
                    fresh[board, default: []].append(.init(seq: seq, op: operation))
                    states[board]?.apply(operation)
                    acceptedOperations += 1
                }
            case .forbidden(let op, let board):
                send(id, .error(.init(code: "forbidden_board", message: "board \(board) belongs to another team", op: op, board: board)))
            }
        }
        // The author's ack goes first; then the room, in sequence order.
        send(id, .ack(.init(acks: acks)))
        for (board, ops) in fresh {
            if rooms[board] == nil || !(rooms[board]!.contains(id)) {
                // A new board: the author joins its room, and so does every connection of the
                // team whose token covers all boards (the board is announced by its first ops).
                rooms[board, default: []].insert(id)
                for other in connections.values where other.id != id && other.token.team == token.team
                    && other.token.boards == nil && !(rooms[board]!.contains(other.id)) {
                    rooms[board]!.insert(other.id)
                }
            }
            let head = ops.last!.seq
            broadcast(.ops(.init(board: board, ops: ops, head: head)), board: board, except: id)
            try compactIfNeeded(board, head: head)
        }
    }

    /// Relays presence to the rest of the room; it is kept only while the connection lives.
    func presence(_ id: Int, _ message: SyncMessage.Presence) {
        guard let connection = connections[id], rooms[message.board]?.contains(id) == true else { return }
        var p = message
        p.replica = connection.replica
        if p.user.map({ $0.count > 100 }) == true { p.user = String(p.user!.prefix(100)) }
        if p.viewing { presence[message.board, default: [:]][id] = p } else { presence[message.board]?.removeValue(forKey: id) }
        broadcast(.presence(p), board: message.board, except: id)
    }

    /// Compares an agent's digest with the relay's at the same sequence; on mismatch resends
    /// the whole board so the agent can repair.
    func digest(_ id: Int, _ message: SyncMessage.Digest) throws {
        guard let connection = connections[id], connection.token.allows(board: message.board.rawValue),
              try storage.team(of: message.board) == connection.token.team
        else { return }
        let state = try state(of: message.board)
        let head = try storage.boards(team: connection.token.team).first { $0.id == message.board }?.head ?? 0
        guard message.seq == head else { return }  // the board moved on; the agent will ask again
        let match = state.digest == message.digest
        send(id, .digestResult(.init(board: message.board, seq: message.seq, match: match)))
        if !match {
            digestMismatches += 1
            logger.warning("digest mismatch; resending board", metadata: ["board": "\(message.board)"])
            try sendCatchUp(id, board: message.board, after: 0, head: head)
        }
    }

    /// Folds old operations into a snapshot once a board's live log passes the threshold.
    private func compactIfNeeded(_ board: EntityID, head: Int64) throws {
        let threshold = Int64(configuration.compactionThreshold)
        guard threshold > 0 else { return }
        let horizon = try storage.snapshot(board: board)?.seq ?? 0
        guard head - horizon > threshold else { return }
        let through = head - Int64(configuration.compactionKeep)
        try storage.compact(board: board, through: through)
        compactions += 1
        logger.info("compacted board", metadata: ["board": "\(board)", "through": "\(through)"])
    }

    private func state(of board: EntityID) throws -> BoardState {
        if let state = states[board] { return state }
        var state = BoardState(id: board)
        var cursor: Int64 = 0
        if let snapshot = try storage.snapshot(board: board) {
            state = snapshot.state.state
            cursor = snapshot.seq
        }
        while true {
            let batch = try storage.operations(board: board, after: cursor, limit: 5_000)
            guard let last = batch.last else { break }
            for entry in batch { state.apply(entry.op) }
            cursor = last.seq
        }
        states[board] = state
        return state
    }

    /// false when the connection is gone or was closed for falling behind.
    @discardableResult
    func send(_ id: Int, _ message: SyncMessage) -> Bool {
        guard let connection = connections[id] else { return false }
        if connection.send(message.text) { return true }
        slow(id)
        return false
    }

    private func broadcast(_ message: SyncMessage, board: EntityID, except: Int) {
        guard let members = rooms[board] else { return }
        let text = message.text  // encoded once for the whole room
        for member in members where member != except {
            guard let connection = connections[member] else { continue }
            if !connection.send(text) { slow(member) }
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
