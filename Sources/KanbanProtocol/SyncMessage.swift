public import KanbanModel
import Foundation

/// Every message between an agent and a relay: one JSON object per WebSocket text frame, with a
/// `type` field. `Protocol/sync-protocol.md` is the written spec; `Protocol/frames/` holds golden
/// examples that `SyncMessageCodecTests` decodes and re-encodes.
public enum SyncMessage: Sendable, Hashable {
    case hello(Hello)
    case welcome(Welcome)
    case push(Push)
    case ack(Ack)
    case ops(Ops)
    case snapshot(Snapshot)
    case presence(Presence)
    case digest(Digest)
    case digestResult(DigestResult)
    case ping(Ping)
    case pong(Pong)
    case error(ErrorMessage)

    /// The protocol version this build speaks.
    public static let protocolVersion = 1

    /// Agent → relay, first message: who I am and what I already have.
    public struct Hello: Codable, Sendable, Hashable {
        public var `protocol`: Int
        public var replica: ReplicaID
        /// Highest relay sequence applied, per board.
        public var cursors: [String: Int64]
        /// Per board, where the agent knows it: the ID of the operation the relay gave the
        /// sequence in `cursors` (the last one the agent received or had acknowledged). The relay
        /// checks it against its own log to notice a history that differs from the agent's.
        public var marks: [String: OperationID]?
        public var client: String?

        public init(protocol: Int = SyncMessage.protocolVersion, replica: ReplicaID, cursors: [EntityID: Int64],
                    marks: [EntityID: OperationID] = [:], client: String? = nil) {
            self.protocol = `protocol`
            self.replica = replica
            self.cursors = Dictionary(uniqueKeysWithValues: cursors.map { ($0.key.rawValue, $0.value) })
            self.marks = marks.isEmpty ? nil : Dictionary(uniqueKeysWithValues: marks.map { ($0.key.rawValue, $0.value) })
            self.client = client
        }
    }

    /// Relay → agent, answer to hello: the boards this token may see and their heads.
    public struct Welcome: Codable, Sendable, Hashable {
        public var `protocol`: Int
        public var relay: String
        public var team: String
        public var writable: Bool
        public var boards: [BoardHead]
        /// Relay wall clock (ms since 1970), for the skew check.
        public var serverTime: Int64
        public var heartbeatSeconds: Int

        public init(protocol: Int = SyncMessage.protocolVersion, relay: String, team: String, writable: Bool,
                    boards: [BoardHead], serverTime: Int64, heartbeatSeconds: Int) {
            self.protocol = `protocol`
            self.relay = relay
            self.team = team
            self.writable = writable
            self.boards = boards
            self.serverTime = serverTime
            self.heartbeatSeconds = heartbeatSeconds
        }
    }

    public struct BoardHead: Codable, Sendable, Hashable {
        public var id: EntityID
        public var head: Int64
        public init(id: EntityID, head: Int64) { self.id = id; self.head = head }
    }

    /// Agent → relay: operations from the outbox, oldest first.
    public struct Push: Codable, Sendable, Hashable {
        public var ops: [BoardOperation]
        public init(ops: [BoardOperation]) { self.ops = ops }
    }

    /// Relay → agent: the relay stored these operations durably at these sequences.
    public struct Ack: Codable, Sendable, Hashable {
        public var acks: [Entry]
        public struct Entry: Codable, Sendable, Hashable {
            public var op: OperationID
            public var board: EntityID
            public var seq: Int64
            public init(op: OperationID, board: EntityID, seq: Int64) { self.op = op; self.board = board; self.seq = seq }
        }
        public init(acks: [Entry]) { self.acks = acks }
    }

    /// Relay → agent: operations of one board in sequence order (catch-up or live).
    public struct Ops: Codable, Sendable, Hashable {
        public var board: EntityID
        public var ops: [Sequenced]
        /// The board's head when this batch was sent.
        public var head: Int64
        public struct Sequenced: Codable, Sendable, Hashable {
            public var seq: Int64
            public var op: BoardOperation
            public init(seq: Int64, op: BoardOperation) { self.seq = seq; self.op = op }
        }
        public init(board: EntityID, ops: [Sequenced], head: Int64) { self.board = board; self.ops = ops; self.head = head }
    }

    /// Relay → agent: the board's merged state at `seq`, sent instead of the operations up to
    /// `seq` when the agent's cursor is behind the relay's compaction horizon. `ops` follow.
    public struct Snapshot: Codable, Sendable, Hashable {
        public var board: EntityID
        public var seq: Int64
        public var head: Int64
        public var state: BoardSnapshot
        public init(board: EntityID, seq: Int64, head: Int64, state: BoardSnapshot) {
            self.board = board
            self.seq = seq
            self.head = head
            self.state = state
        }
    }

    /// Either direction: who is looking at a board and what they are editing. Never stored.
    public struct Presence: Codable, Sendable, Hashable {
        public var board: EntityID
        /// Filled in by the relay from the connection.
        public var replica: ReplicaID?
        public var user: String?
        public var viewing: Bool
        public var editing: EntityID?
        public init(board: EntityID, replica: ReplicaID? = nil, user: String? = nil, viewing: Bool, editing: EntityID? = nil) {
            self.board = board
            self.replica = replica
            self.user = user
            self.viewing = viewing
            self.editing = editing
        }
    }

    /// Agent → relay after catch-up: my digest of a board at this sequence.
    public struct Digest: Codable, Sendable, Hashable {
        public var board: EntityID
        public var seq: Int64
        public var digest: String
        public init(board: EntityID, seq: Int64, digest: String) { self.board = board; self.seq = seq; self.digest = digest }
    }

    /// Relay → agent: whether the digests matched; on a mismatch the relay resends the board.
    public struct DigestResult: Codable, Sendable, Hashable {
        public var board: EntityID
        public var seq: Int64
        public var match: Bool
        public init(board: EntityID, seq: Int64, match: Bool) { self.board = board; self.seq = seq; self.match = match }
    }

    public struct Ping: Codable, Sendable, Hashable {
        /// Sender's clock, echoed back in the pong.
        public var t: Int64
        public init(t: Int64) { self.t = t }
    }

    public struct Pong: Codable, Sendable, Hashable {
        public var t: Int64
        public var serverTime: Int64
        public init(t: Int64, serverTime: Int64) { self.t = t; self.serverTime = serverTime }
    }

    /// Relay → agent: something was refused. `fatal` errors are followed by a close.
    public struct ErrorMessage: Codable, Sendable, Hashable {
        public var code: String
        public var message: String
        public var op: OperationID?
        public var board: EntityID?
        public var fatal: Bool
        public init(code: String, message: String, op: OperationID? = nil, board: EntityID? = nil, fatal: Bool = false) {
            self.code = code
            self.message = message
            self.op = op
            self.board = board
            self.fatal = fatal
        }
    }
}
