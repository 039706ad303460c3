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
        case offline
    }

    public var state: State
    public var relayURL: String?
    public var queuedOperations: Int
    public var connectedSince: Date?
    public var nextAttemptAt: Date?
    public var lastError: String?

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
