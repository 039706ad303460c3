public import Foundation

/// The state of the agent's link to the relay, as `/health/websocket`, the event stream and the
/// web board show it.
public struct SyncStatus: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        /// No relay configured: the agent works alone.
        case disabled
        case connecting
        case connected
        /// Waiting before the next attempt (`nextAttemptAt`).
        case reconnecting
    }

    /// One connection attempt that failed or ended.
    public struct Attempt: Sendable, Codable, Equatable {
        public var at: Date
        /// A `LinkProblem` code, shared with `kanban doctor`.
        public var errorClass: String
        public var message: String
        /// What to do about it.
        public var fix: String?
    }

    /// Operations of a board that the relay refused (the token does not cover the board, or
    /// may not write): they stay queued, and this says why, until the relay takes that board's
    /// operations (a token that allows them).
    public struct Refusal: Sendable, Codable, Equatable {
        public var board: String
        public var boardTitle: String?
        /// The relay's error code: `forbidden_board`, `read_only`.
        public var code: String
        public var message: String
        public var fix: String
        public var at: Date
    }

    public var state: State
    public var relayURL: String?
    public var queuedOperations: Int
    public var connectedSince: Date?
    public var nextAttemptAt: Date?
    public var lastError: String?
    /// The most recent failed attempts, newest first (at most 10).
    public var attempts: [Attempt] = []
    public var consecutiveFailures: Int = 0
    public var roundTripMs: Double?
    /// Relay clock minus local clock, estimated at the last ping.
    public var clockSkewMs: Int64?
    public var cursors: [String: Int64] = [:]
    public var team: String?
    public var compression: String?
    /// How the link reaches the relay: "websocket", or "long-polling" when something in the way
    /// blocks the WebSocket upgrade.
    public var transport: String?
    /// Why the agent syncs over long-polling: what the WebSocket attempt ran into.
    public var fallbackReason: String?
    /// When the agent tries the WebSocket again while it syncs over long-polling.
    public var webSocketRetryAt: Date?
    /// Digest mismatches found after catch-up (each one repaired by a full resend).
    public var repairs: Int = 0
    /// Boards whose queued operations the relay refused, and why.
    public var refused: [Refusal] = []

    /// Records a refusal of `board`'s operations (one entry per board and code, the newest).
    mutating func refuse(_ refusal: Refusal) {
        refused.removeAll { $0.board == refusal.board && $0.code == refusal.code }
        refused.append(refusal)
        refused.sort { ($0.board, $0.code) < ($1.board, $1.code) }
    }

    /// Adds a failed attempt, newest first, keeping the last 10.
    mutating func record(_ attempt: Attempt) {
        attempts.insert(attempt, at: 0)
        if attempts.count > 10 { attempts.removeLast(attempts.count - 10) }
    }

    public init(state: State, relayURL: String? = nil, queuedOperations: Int = 0, connectedSince: Date? = nil,
                nextAttemptAt: Date? = nil, lastError: String? = nil) {
        self.state = state
        self.relayURL = relayURL
        self.queuedOperations = queuedOperations
        self.connectedSince = connectedSince
        self.nextAttemptAt = nextAttemptAt
        self.lastError = lastError
    }
}
