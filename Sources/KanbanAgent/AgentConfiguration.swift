import Foundation

/// How an agent runs. Every field has a default that works for one person on one machine.
public struct AgentConfiguration: Sendable {
    /// The documented default port of the local agent.
    public static let defaultPort = 7420

    /// Interface to listen on. Loopback only unless you know why not.
    public var host: String = "127.0.0.1"
    /// Port to listen on; 0 picks a free one.
    public var port: Int = AgentConfiguration.defaultPort
    /// Extra origins (scheme://host:port) allowed to call the API and open the event stream,
    /// e.g. a front-end dev server on another port. The agent's own origin is always allowed.
    public var allowedOrigins: [String] = []
    /// Extra `Host` header values accepted besides 127.0.0.1, localhost and [::1] at our port.
    public var allowedHosts: [String] = []
    /// Largest accepted request body.
    public var maxBodyBytes: Int = 64 * 1024
    /// Events buffered for one local WebSocket client before it is disconnected as too slow.
    public var maxQueuedEvents: Int = 10_000
    /// Name shown to others in presence (default: $USER, else the replica ID).
    public var userName: String? = ProcessInfo.processInfo.environment["USER"]

    public init(
        host: String = "127.0.0.1", port: Int = AgentConfiguration.defaultPort, allowedOrigins: [String] = [],
        allowedHosts: [String] = [], maxBodyBytes: Int = 64 * 1024, maxQueuedEvents: Int = 10_000
    ) {
        self.host = host
        self.port = port
        self.allowedOrigins = allowedOrigins
        self.allowedHosts = allowedHosts
        self.maxBodyBytes = maxBodyBytes
        self.maxQueuedEvents = maxQueuedEvents
    }
}
