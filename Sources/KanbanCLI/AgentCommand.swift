import ArgumentParser
import Foundation
import Hummingbird
import KanbanAgent
import KanbanStore
import Logging
import ServiceLifecycle

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run your local agent: the board at a localhost URL, the API, and sync.",
        discussion: """
            The agent keeps your boards in DIR/replica.sqlite and works fully offline.
            It listens on 127.0.0.1 only. Stop it with Ctrl-C (SIGINT) or SIGTERM.
            With --relay and --token (or KANBAN_RELAY and KANBAN_TOKEN) it syncs with a relay.
            """
    )

    // `.unconditional`: `--port -1` reaches the range check instead of reading as a missing value.
    @Option(parsing: .unconditional, help: "Port to listen on (0 picks a free one and prints it).")
    var port: Int = AgentConfiguration.defaultPort

    @OptionGroup var data: DataDirectory

    @Option(name: .customLong("allow-origin"), parsing: .singleValue,
            help: ArgumentHelp("An extra origin allowed to use the API, e.g. http://localhost:5173 (repeatable).", valueName: "URL"))
    var allowOrigins: [String] = []

    @Option(name: .customLong("allow-host"), parsing: .singleValue,
            help: ArgumentHelp("An extra Host header value to accept, e.g. kanban.local:7420 (repeatable).", valueName: "HOST"))
    var allowHosts: [String] = []

    @Option(help: ArgumentHelp("Relay to sync with, e.g. ws://relay.example:7421/sync (default: $KANBAN_RELAY).", valueName: "URL"))
    var relay: String?

    @Option(help: ArgumentHelp("Relay token from `kanban relay token create` (default: $KANBAN_TOKEN).", valueName: "TOKEN"))
    var token: String?

    @Option(help: ArgumentHelp("""
        How to reach the relay: auto (WebSocket; HTTP long-polling when something in the way blocks the upgrade), \
        websocket, or long-polling (default: $KANBAN_RELAY_TRANSPORT, else auto).
        """, valueName: "MODE"))
    var relayTransport: String?

    @Option(help: ArgumentHelp("While long-polling in auto mode, try the WebSocket again every this many seconds.", valueName: "SECONDS"))
    var websocketRetry: Int = 60

    @Option(help: ArgumentHelp("""
        Longest wait between reconnection attempts, in seconds: waits double from 0.25 s up to this,         each drawn at random below its ceiling (full jitter). Larger spreads many agents' retries further.
        """, valueName: "SECONDS"))
    var maxReconnectDelay: Int = 10

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    var transportChoice: String {
        relayTransport ?? ProcessInfo.processInfo.environment["KANBAN_RELAY_TRANSPORT"].flatMap { $0.isEmpty ? nil : $0 } ?? "auto"
    }

    var relayURL: String? { relay ?? ProcessInfo.processInfo.environment["KANBAN_RELAY"].flatMap { $0.isEmpty ? nil : $0 } }
    var relayToken: String? { token ?? ProcessInfo.processInfo.environment["KANBAN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0-65535 (got \(port))") }
        for origin in allowOrigins {
            guard let url = URL(string: origin), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil,
                  url.path.isEmpty || url.path == "/"
            else {
                throw ValidationError("--allow-origin '\(origin)' is not an origin; use scheme://host[:port], e.g. http://localhost:5173")
            }
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error")
        }
        guard SyncTransportChoice(rawValue: transportChoice) != nil else {
            throw ValidationError("--relay-transport must be auto, websocket or long-polling (got '\(transportChoice)')")
        }
        guard (1...3_600).contains(maxReconnectDelay) else {
            throw ValidationError("--max-reconnect-delay must be 1-3600 seconds (got \(maxReconnectDelay))")
        }
        guard (1...86_400).contains(websocketRetry) else {
            throw ValidationError("--websocket-retry must be 1-86400 seconds (got \(websocketRetry))")
        }
        if let relayURL {
            guard let url = URL(string: relayURL), let scheme = url.scheme, ["ws", "wss"].contains(scheme), url.host != nil else {
                throw ValidationError("--relay '\(relayURL)' must be a ws:// or wss:// URL, e.g. ws://127.0.0.1:7421/sync")
            }
            guard relayToken != nil else {
                throw ValidationError("--relay needs --token (or KANBAN_TOKEN); create one with `kanban relay token create --team T`")
            }
        }
    }

    func run() async throws {
        var logger = Logger(label: "kanban.agent")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let path = try data.replicaPath()
        let lock = try DirectoryLock.acquire(data.resolved, for: "agent")
        let store: ReplicaStore
        do {
            store = try ReplicaStore(path: path)
        } catch {
            throw CommandFailure.opening(path, error)
        }
        let configuration = AgentConfiguration(port: port, allowedOrigins: allowOrigins, allowedHosts: allowHosts)
        let agent = Agent(store: store, configuration: configuration)
        var services: [any Service] = []
        if let relayURL, let relayToken {
            var sync = SyncConfiguration(relayURL: relayURL, token: relayToken)
            sync.transport = SyncTransportChoice(rawValue: transportChoice) ?? .auto
            sync.webSocketRetryInterval = .seconds(websocketRetry)
            sync.backoffCap = .seconds(maxReconnectDelay)
            services.append(SyncClient(agent: agent, configuration: sync, logger: logger))
        }
        let relayURL = self.relayURL
        let app = buildAgentApplication(agent: agent, logger: logger, services: services) { port in
            print("Kanban agent \(store.replicaID) serving \(path)")
            print(relayURL.map { "Syncing with \($0)" } ?? "Local only (no relay configured)")
            print("Board: http://127.0.0.1:\(port)/")
            fflush(nil)
        }
        // A stalled relay link must not keep the agent from exiting.
        let deadline = ShutdownDeadline(limit: .seconds(10), logger: logger)
        try await app.runService()
        // Every service has stopped: SQLite folds the write-ahead log into the replica file.
        do { try store.close() } catch { logger.warning("closing \(path): \(error)") }
        withExtendedLifetime((deadline, lock)) {}
    }
}
