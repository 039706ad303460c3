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
        @Option(parsing: .unconditional, help: "Operations in a board's log past its snapshot before the relay folds the older ones into a new snapshot; 0 never compacts.")
        var compactionThreshold: Int = RelayConfiguration().compactionThreshold
        @Option(parsing: .unconditional, help: "Newest operations a compaction keeps as operations (agents this close behind catch up without the snapshot).")
        var compactionKeep: Int = RelayConfiguration().compactionKeep

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
            guard compactionThreshold >= 0 else { throw ValidationError("--compaction-threshold must be 0 (never) or more (got \(compactionThreshold))") }
            guard compactionKeep >= 0, compactionThreshold == 0 || compactionKeep < compactionThreshold else {
                throw ValidationError("--compaction-keep must be 0 or more and below --compaction-threshold (\(compactionThreshold)); got \(compactionKeep)")
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
            configuration.compactionThreshold = compactionThreshold
            configuration.compactionKeep = compactionKeep
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
        static let configuration = CommandConfiguration(commandName: "token", abstract: "Manage relay tokens.",
                                                        subcommands: [Create.self, List.self, Revoke.self])

        /// Opens the store for a token command and closes it after `body`.
        static func withStorage<T>(_ data: RelayDataDirectory, _ body: (any RelayStorage) async throws -> T) async throws -> T {
            var logger = Logger(label: "kanban.relay")
            logger.logLevel = .error
            let storage = try await data.open(listen: false, logger: logger)
            do {
                let result = try await body(storage)
                do { try await storage.close() } catch { logger.warning("closing the relay log: \(error)") }
                return result
            } catch {
                try? await storage.close()
                throw error
            }
        }

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
                let token = RelayToken(team: team, boards: boards.isEmpty ? nil : boards.map { $0.lowercased() }, write: !readOnly)
                let text = try await Token.withStorage(data) { storage in
                    let text = TokenAuthority(secret: try await storage.secret()).sign(token)
                    // Recorded (its ID and claims, not the token) for `token list` and `token revoke`.
                    try await storage.recordIssued(IssuedToken(id: TokenAuthority.id(of: text), token: token))
                    return text
                }
                print(text)
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "list", abstract: "List the tokens this relay issued: ID, team, scope, access, when issued, whether revoked.")
            @OptionGroup var data: RelayDataDirectory
            @Flag(help: "Print JSON (an array of tokens) instead of a table.") var json = false

            func run() async throws {
                let tokens = try await Token.withStorage(data) { try await $0.issuedTokens() }
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(decoding: try encoder.encode(tokens), as: UTF8.self))
                    return
                }
                guard !tokens.isEmpty else {
                    print("No tokens recorded. Create one with `kanban relay token create --team T`. "
                          + "(Tokens created before tokens were recorded are not listed; revoke one by passing the whole token.)")
                    return
                }
                let rows = [["ID", "TEAM", "BOARDS", "ACCESS", "ISSUED", "STATUS"]] + tokens.map { token in
                    [token.id, token.team, token.boards.map { $0.count == 1 ? $0[0] : "\($0.count) boards" } ?? "all",
                     token.write ? "read-write" : "read-only", Self.time(token.issuedAt),
                     token.revokedAt.map { "revoked \(Self.time($0))" } ?? "valid"]
                }
                let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
                for row in rows {
                    print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                        .trimmingCharacters(in: .whitespaces))
                }
            }

            static func time(_ seconds: Int64) -> String {
                ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "revoke",
                abstract: "Revoke a token: a running relay refuses it within 2 s and closes its connections.",
                discussion: "Name the token by its ID (from `kanban relay token list`) or pass the whole token.")
            @OptionGroup var data: RelayDataDirectory
            @Argument(help: ArgumentHelp("The token's ID, or the token itself.", valueName: "ID-OR-TOKEN")) var token: String

            func validate() throws {
                let isID = token.count == 16 && token.allSatisfy(\.isHexDigit)
                guard isID || token.hasPrefix("kb1.") else {
                    throw ValidationError("'\(token.prefix(40))' is neither a token ID (16 hex digits, see `kanban relay token list`) nor a token (kb1.…)")
                }
            }

            func run() async throws {
                let given = token
                let (id, result) = try await Token.withStorage(data) { storage -> (String, RevokeResult) in
                    var id = given.lowercased()
                    if given.hasPrefix("kb1.") {
                        // The whole token: it must be this relay's; recorded first if it predates the records.
                        switch TokenAuthority(secret: try await storage.secret()).verify(given) {
                        case .success(let claims):
                            id = TokenAuthority.id(of: given)
                            try await storage.recordIssued(IssuedToken(id: id, token: claims))
                        case .failure(let failure):
                            throw CommandFailure("cannot revoke that token: \(failure.rawValue).")
                        }
                    }
                    return (id, try await storage.revoke(tokenID: id))
                }
                switch result {
                case .revoked:
                    print("revoked token \(id): a running relay refuses it within 2 s and closes its connections")
                case .alreadyRevoked:
                    print("token \(id) was already revoked")
                case .unknown:
                    throw CommandFailure("no token with ID \(id) is recorded here. `kanban relay token list` shows the recorded ones; "
                                         + "to revoke a token created before tokens were recorded, pass the whole token.")
                }
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
