import ArgumentParser
import Foundation
import Hummingbird
import KanbanRelay
import Logging

struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Run a relay that shares boards between agents, or manage its tokens.",
        subcommands: [Serve.self, Token.self],
        defaultSubcommand: Serve.self
    )

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve", abstract: "Serve /sync (the default when no subcommand is given).")

        // `.unconditional`: `--port -1` reaches the range check instead of reading as a missing value.
        @Option(parsing: .unconditional, help: "Port to listen on (0 picks a free one and prints it).")
        var port: Int = RelayConfiguration.defaultPort
        @Option(help: "Interface to listen on; 0.0.0.0 for every interface.")
        var host: String = "127.0.0.1"
        @OptionGroup var data: RelayDataDirectory
        @Option(help: "Name reported to agents in welcome, to tell instances apart.")
        var name: String = "relay"
        @Option(help: "Seconds between WebSocket pings; a peer that misses one is dropped.")
        var heartbeat: Int = 15
        @Option(help: "Log level: trace, debug, info, notice, warning, error.")
        var logLevel: String = "info"
        @Option(help: "Seconds a graceful shutdown (SIGTERM/SIGINT) may take before the relay exits anyway (a stalled peer cannot hold it open).")
        var shutdownTimeout: Int = 10
        @Option(help: "Largest message after decompression, in bytes (at least 1 MiB, the most an agent sends); larger ones close the link with 1009.")
        var maxMessageBytes: Int = RelayConfiguration().maxMessageBytes
        @Option(help: "Messages queued for one slow connection before it is dropped (4008); it catches up on reconnect.")
        var maxQueuedMessages: Int = RelayConfiguration().maxQueuedMessages
        @Option(help: "Bytes queued for one slow connection before it is dropped (4008).")
        var maxQueuedBytes: Int = RelayConfiguration().maxQueuedBytes
        @Option(help: "Open connections allowed per token; more are refused with 4029.")
        var maxConnectionsPerToken: Int = RelayConfiguration().maxConnectionsPerToken
        @Option(name: .customLong("max-ops-per-second"),
                help: "Operations one connection may push per second; faster pushers are read more slowly, nothing is dropped.")
        var maxOperationsPerSecond: Int = RelayConfiguration().maxOperationsPerSecond
        @Option(help: "Seconds an HTTP connection may stay idle, one that never finishes its first request included, before the relay closes it (WebSockets are watched by --heartbeat instead).")
        var httpIdleSeconds: Int = RelayConfiguration().httpIdleSeconds

        func validate() throws {
            guard (0...65535).contains(port) else { throw ValidationError("--port must be 0-65535 (got \(port))") }
            guard (1...600).contains(heartbeat) else { throw ValidationError("--heartbeat must be 1-600 seconds") }
            guard (1...600).contains(shutdownTimeout) else { throw ValidationError("--shutdown-timeout must be 1-600 seconds") }
            guard ((1 << 20)...(64 << 20)).contains(maxMessageBytes) else {
                throw ValidationError("--max-message-bytes must be 1048576-67108864 (got \(maxMessageBytes)): agents send messages of up to 1 MiB")
            }
            guard maxQueuedMessages >= 16 else { throw ValidationError("--max-queued-messages must be at least 16 (got \(maxQueuedMessages))") }
            guard maxQueuedBytes >= maxMessageBytes else {
                throw ValidationError("--max-queued-bytes must be at least --max-message-bytes (\(maxMessageBytes)); got \(maxQueuedBytes)")
            }
            guard maxConnectionsPerToken >= 1 else { throw ValidationError("--max-connections-per-token must be at least 1") }
            guard maxOperationsPerSecond >= 1 else { throw ValidationError("--max-ops-per-second must be at least 1") }
            guard (1...3600).contains(httpIdleSeconds) else {
                throw ValidationError("--http-idle-seconds must be 1-3600 seconds (got \(httpIdleSeconds))")
            }
            guard Logger.Level(rawValue: logLevel) != nil else {
                throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error")
            }
        }

        func run() async throws {
            var logger = Logger(label: "kanban.relay")
            logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            // Several relays share a PostgreSQL log by design; a SQLite log belongs to one.
            let lock = data.postgresURL == nil ? try DirectoryLock.acquire(try data.directory(), for: "relay") : nil
            let storage = try await data.open(logger: logger)
            var configuration = RelayConfiguration(host: host, port: port, relayName: name)
            configuration.heartbeatSeconds = heartbeat
            configuration.maxMessageBytes = maxMessageBytes
            configuration.maxQueuedMessages = maxQueuedMessages
            configuration.maxQueuedBytes = maxQueuedBytes
            configuration.maxConnectionsPerToken = maxConnectionsPerToken
            configuration.maxOperationsPerSecond = maxOperationsPerSecond
            configuration.httpIdleSeconds = httpIdleSeconds
            let relay = try await Relay(storage: storage, configuration: configuration, logger: logger)
            let host = self.host
            let location = data.description
            let app = buildRelayApplication(relay: relay, logger: logger) { port in
                print("Kanban relay listening on ws://\(host):\(port)/sync (log: \(location))")
                fflush(nil)
            }
            let deadline = ShutdownDeadline(limit: .seconds(Int64(shutdownTimeout)), logger: logger)
            try await app.runService()
            do { try await storage.close() } catch { logger.warning("closing the relay log: \(error)") }
            withExtendedLifetime((deadline, lock)) {}
        }
    }

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "token", abstract: "Manage relay tokens.", subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "create", abstract: "Print a signed token, alone on stdout.")
            @OptionGroup var data: RelayDataDirectory
            @Option(help: "Team the token belongs to.") var team: String
            @Option(name: .customLong("board"), parsing: .singleValue, help: "Limit the token to this board ID (repeatable).")
            var boards: [String] = []
            @Flag(name: .customLong("read-only"), help: "The token may read but not write.") var readOnly = false

            func validate() throws {
                guard !team.isEmpty, team.count <= 100 else { throw ValidationError("--team must be 1-100 characters") }
                for board in boards where UUID(uuidString: board) == nil {
                    throw ValidationError("--board '\(board)' is not a board ID (a UUID)")
                }
            }

            func run() async throws {
                var logger = Logger(label: "kanban.relay")
                logger.logLevel = .error
                let storage = try await data.open(listen: false, logger: logger)
                let authority = TokenAuthority(secret: try await storage.secret())
                do { try await storage.close() } catch { logger.warning("closing the relay log: \(error)") }
                let token = RelayToken(team: team, boards: boards.isEmpty ? nil : boards.map { $0.lowercased() }, write: !readOnly)
                print(authority.sign(token))
            }
        }
    }
}

/// Where the relay keeps its log: `--store postgres://...` (or `$KANBAN_RELAY_STORE`), shared by
/// several relay instances; else SQLite in `--data DIR`, else `$KANBAN_RELAY_DATA`, else `./relay-data`.
struct RelayDataDirectory: ParsableArguments, CustomStringConvertible {
    @Option(name: .customLong("data"), help: ArgumentHelp("Relay data directory (holds relay.sqlite).", valueName: "DIR"))
    var path: String?
    @Option(name: .customLong("store"), help: ArgumentHelp(
        "PostgreSQL shared by several relay instances, as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (default: SQLite in --data).",
        valueName: "URL"))
    var store: String?

    var postgresURL: String? { store ?? ProcessInfo.processInfo.environment["KANBAN_RELAY_STORE"].flatMap { $0.isEmpty ? nil : $0 } }

    func validate() throws {
        if store != nil && path != nil { throw ValidationError("give either --store (PostgreSQL) or --data (SQLite), not both") }
    }

    var description: String {
        if let url = postgresURL, let components = URLComponents(string: url) {
            return "PostgreSQL \(components.user ?? "")@\(components.host ?? ""):\(components.port ?? 5432)\(components.path)"
        }
        return "SQLite in \(path ?? ProcessInfo.processInfo.environment["KANBAN_RELAY_DATA"] ?? "relay-data")"
    }

    /// Opens the store; a bad URL or an unreachable server is a plain error, not a crash.
    func open(listen: Bool = true, logger: Logger) async throws -> any RelayStorage {
        if let url = postgresURL {
            return try await PostgresRelayStorage.connect(url: url, listen: listen, logger: logger)
        }
        let path = try logPath()
        do {
            return try SQLiteRelayStorage(path: path)
        } catch {
            throw CommandFailure.opening(path, error)
        }
    }

    func logPath() throws -> String { try directory() + "/relay.sqlite" }

    /// The SQLite log's directory, created if needed.
    func directory() throws -> String {
        let dir = path ?? ProcessInfo.processInfo.environment["KANBAN_RELAY_DATA"] ?? "relay-data"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw CommandFailure("cannot create relay data directory \(dir): \(sentence(error.localizedDescription)) Pass --data with a writable directory.")
        }
        return dir
    }
}
