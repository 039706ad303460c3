/// How a relay runs and what it bounds.
public struct RelayConfiguration: Sendable {
    public static let defaultPort = 7421

    public var host: String = "127.0.0.1"
    public var port: Int = RelayConfiguration.defaultPort
    /// Name reported in `welcome`, to tell instances apart.
    public var relayName: String = "relay"
    /// Server-initiated WebSocket ping period; a peer that misses one is disconnected.
    public var heartbeatSeconds: Int = 15
    /// Largest message after decompression.
    public var maxMessageBytes: Int = 1 << 20
    /// Messages queued for one connection before it is closed as too slow (it catches up later).
    public var maxQueuedMessages: Int = 2_048
    /// Bytes (before compression) queued for one connection before it is closed as too slow.
    public var maxQueuedBytes: Int = 8 << 20
    /// Open connections allowed per token (agents sharing a token share the allowance).
    public var maxConnectionsPerToken: Int = 64
    /// Operations a connection may push per second, sustained; bursts up to one second's worth.
    /// Pushes beyond it are not refused but read more slowly (TCP backpressure on the sender).
    public var maxOperationsPerSecond: Int = 5_000
    /// Operations sent per `ops` message during catch-up.
    public var catchUpBatch: Int = 500
    /// When a board has more than this many operations after its snapshot, the relay compacts
    /// all but the newest `compactionKeep` into a snapshot. 0 disables compaction.
    public var compactionThreshold: Int = 200_000
    public var compactionKeep: Int = 50_000
    /// Longest a long-polling GET waits for something to send (agents whose WebSocket is blocked).
    public var pollWaitSeconds: Int = 25
    /// A long-polling session with no request for this long is ended (its agent is gone).
    public var pollSessionTimeoutSeconds: Int = 60
    /// An HTTP connection idle this long is closed, one that has not finished its first request
    /// included (WebSockets are watched by the heartbeat instead).
    public var httpIdleSeconds: Int = 60

    public init(host: String = "127.0.0.1", port: Int = RelayConfiguration.defaultPort, relayName: String = "relay",
                heartbeatSeconds: Int = 15, maxMessageBytes: Int = 1 << 20, maxQueuedMessages: Int = 2_048) {
        self.host = host
        self.port = port
        self.relayName = relayName
        self.heartbeatSeconds = heartbeatSeconds
        self.maxMessageBytes = maxMessageBytes
        self.maxQueuedMessages = maxQueuedMessages
    }
}
