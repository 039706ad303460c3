public import Foundation
public import KanbanModel
public import KanbanProtocol
public import Logging
import NIOCore
import PostgresNIO

/// The relay log in PostgreSQL, shared by several relay instances (`kanban relay --store
/// postgres://...`).
///
/// - Sequences: an append locks its boards' rows (`SELECT ... FOR UPDATE`, in board order), so
///   writers of one board, on any instance, take turns; each gets the next sequences after the
///   locked head, and `(board_id, seq)` and `op_id` are unique. A duplicate push is found under
///   the same lock and answered with its first sequence.
/// - Live delivery between instances: the append's transaction also runs `pg_notify` (delivered
///   on commit, in commit order, so in sequence order per board) with the board, the first and
///   last sequence, the team and, when it fits well under the 8000-byte limit, the operations.
///   Each instance LISTENs on its own connection; after that connection (re)connects it reports
///   `.resync`, and the hub compares its rooms with the log.
/// - The token secret is created once (INSERT ... ON CONFLICT DO NOTHING, then SELECT), so every
///   instance signs and accepts the same tokens.
public final class PostgresRelayStorage: RelayStorage, RelayCluster, Sendable {
    static let channel = "kanban_relay"
    /// NOTIFY payloads must stay below 8000 bytes; operations are included only below this.
    static let maxInlinePayload = 7_000

    public let instance: String
    public let events: AsyncStream<RelayClusterEvent>
    public let endpoint: String
    let client: PostgresClient
    let logger: Logger
    /// Read (or created) once at connect; it never changes.
    private let tokenSecret: Data
    private let eventsContinuation: AsyncStream<RelayClusterEvent>.Continuation
    private let tasks: [Task<Void, Never>]

    public var cluster: (any RelayCluster)? { self }

    private init(client: PostgresClient, instance: String, endpoint: String, logger: Logger, secret: Data,
                 events: AsyncStream<RelayClusterEvent>, continuation: AsyncStream<RelayClusterEvent>.Continuation,
                 tasks: [Task<Void, Never>]) {
        self.client = client
        self.tokenSecret = secret
        self.instance = instance
        self.endpoint = endpoint
        self.logger = logger
        self.events = events
        self.eventsContinuation = continuation
        self.tasks = tasks
    }

    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, no TLS),
    /// creates the tables if needed and, with `listen`, starts listening for other instances.
    /// Throws `RelayStoreError` with a plain message for a bad URL or an unreachable server.
    public static func connect(url: String, listen: Bool = true, logger: Logger = Logger(label: "kanban.relay.postgres"),
                               maxConnections: Int = 10) async throws -> PostgresRelayStorage {
        let target = try PostgresURL(url)
        // One plain connection first: it fails fast with a clear error, sets up the schema and
        // reads (or creates) the token secret.
        let secret: Data
        do {
            let connection = try await PostgresConnection.connect(configuration: target.connectionConfiguration, id: 1, logger: logger)
            do {
                try await migrate(connection, logger: logger)
                // Race-safe across instances: the first insert wins and everyone reads the winner.
                try await connection.query("""
                    INSERT INTO relay_meta (key, value) VALUES ('token_secret', \(TokenAuthority.makeSecret())) ON CONFLICT (key) DO NOTHING
                    """, logger: logger)
                let rows = try await connection.query("SELECT value FROM relay_meta WHERE key = 'token_secret'", logger: logger)
                guard let value = try await first(rows, Data.self) else { throw RelayError.corrupt("the token secret is missing") }
                secret = value
            } catch {
                try? await connection.close()
                throw error
            }
            try? await connection.close()
        } catch {
            throw RelayStoreError.unreachable(target, error)
        }
        var configuration = PostgresClient.Configuration(host: target.host, port: target.port, username: target.user,
                                                         password: target.password, database: target.database,
                                                         tls: .disable)
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.maximumConnections = maxConnections
        configuration.options.minimumConnections = min(2, maxConnections - 1)
        configuration.options.additionalStartupParameters = [("application_name", "kanban-relay")]
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let (events, continuation) = AsyncStream<RelayClusterEvent>.makeStream()
        let instance = UUID().uuidString.lowercased()
        var tasks = [Task { await client.run() }]
        if listen {
            tasks.append(Task {
                await listenLoop(target: target, instance: instance, continuation: continuation, logger: logger)
            })
        }
        return PostgresRelayStorage(client: client, instance: instance, endpoint: target.description, logger: logger, secret: secret,
                                    events: events, continuation: continuation, tasks: tasks)
    }

    /// Stops the pool and the listener.
    public func close() async {
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        eventsContinuation.finish()
    }

    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        // Instances may start together: one migrates at a time.
        // (A failure closes the connection, which releases the lock.)
        try await connection.query("SELECT pg_advisory_lock(74210001)", logger: logger)
        for statement: PostgresQuery in [
            "CREATE TABLE IF NOT EXISTS relay_meta (key text PRIMARY KEY, value bytea NOT NULL)",
            """
            CREATE TABLE IF NOT EXISTS relay_board (
                id text PRIMARY KEY,
                team text NOT NULL,
                head bigint NOT NULL CHECK (head >= 0)
            )
            """,
            "CREATE INDEX IF NOT EXISTS relay_board_by_team ON relay_board (team)",
            """
            CREATE TABLE IF NOT EXISTS relay_op (
                board_id text NOT NULL REFERENCES relay_board (id),
                seq bigint NOT NULL CHECK (seq > 0),
                op_id text NOT NULL UNIQUE,
                body text, -- NULL once compacted into relay_snapshot
                PRIMARY KEY (board_id, seq)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS relay_snapshot (
                board_id text PRIMARY KEY REFERENCES relay_board (id),
                seq bigint NOT NULL CHECK (seq > 0),
                body text NOT NULL
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS relay_token (
                id text PRIMARY KEY,
                team text NOT NULL,
                boards text, -- JSON array; NULL: every board of the team
                write boolean NOT NULL,
                issued_at bigint NOT NULL,
                revoked_at bigint
            )
            """,
        ] {
            try await connection.query(statement, logger: logger)
        }
        try await connection.query("SELECT pg_advisory_unlock(74210001)", logger: logger)
    }

    // MARK: Log

    public func append(_ ops: [BoardOperation], team: String) async throws -> [AppendResult] {
        guard !ops.isEmpty else { return [] }
        var attempt = 0
        while true {
            do {
                return try await appendOnce(ops, team: team)
            } catch where attempt < 5 && Self.isRetryable(error) {
                // Another instance stored one of these IDs concurrently (now found as a duplicate),
                // or a deadlock between multi-board pushes was broken by the server.
                attempt += 1
            }
        }
    }

    private func appendOnce(_ ops: [BoardOperation], team: String) async throws -> [AppendResult] {
        let logger = self.logger
        let instance = self.instance
        return try await client.withTransaction(logger: logger) { connection in
            let boardIDs = Array(Set(ops.map(\.board.rawValue))).sorted()
            try await connection.query("""
                INSERT INTO relay_board (id, team, head) SELECT unnest(\(boardIDs)::text[]), \(team), 0 ON CONFLICT (id) DO NOTHING
                """, logger: logger)
            // The row locks serialize every writer of these boards, on every instance.
            var heads: [String: (team: String, head: Int64)] = [:]
            for try await (id, owner, head) in try await connection.query("""
                SELECT id, team, head FROM relay_board WHERE id = ANY(\(boardIDs)::text[]) ORDER BY id FOR UPDATE
                """, logger: logger).decode((String, String, Int64).self) {
                heads[id] = (owner, head)
            }
            var known: [String: (board: String, seq: Int64)] = [:]
            let opIDs = ops.map(\.id.description)
            for try await (opID, board, seq) in try await connection.query("""
                SELECT op_id, board_id, seq FROM relay_op WHERE op_id = ANY(\(opIDs)::text[])
                """, logger: logger).decode((String, String, Int64).self) {
                known[opID] = (board, seq)
            }
            var results: [AppendResult] = []
            results.reserveCapacity(ops.count)
            var rows: (boards: [String], seqs: [Int64], ids: [String], bodies: [String]) = ([], [], [], [])
            var fresh: [String: [(seq: Int64, op: BoardOperation)]] = [:]
            for op in ops {
                let board = op.board.rawValue
                guard let row = heads[board], row.team == team else {
                    results.append(.forbidden(op: op.id, board: op.board))
                    continue
                }
                let id = op.id.description
                if let existing = known[id] {
                    guard let existingBoard = EntityID(existing.board) else { continue }
                    results.append(.stored(op: op.id, board: existingBoard, seq: existing.seq, new: false))
                    continue
                }
                let seq = row.head + 1
                heads[board]!.head = seq
                known[id] = (board, seq)
                rows.boards.append(board)
                rows.seqs.append(seq)
                rows.ids.append(id)
                rows.bodies.append(String(decoding: op.jsonData(), as: UTF8.self))
                fresh[board, default: []].append((seq, op))
                results.append(.stored(op: op.id, board: op.board, seq: seq, new: true))
            }
            guard !rows.ids.isEmpty else { return results }
            try await connection.query("""
                INSERT INTO relay_op (board_id, seq, op_id, body)
                SELECT * FROM unnest(\(rows.boards)::text[], \(rows.seqs)::bigint[], \(rows.ids)::text[], \(rows.bodies)::text[])
                """, logger: logger)
            let changed = fresh.keys.sorted()
            let newHeads = changed.map { heads[$0]!.head }
            try await connection.query("""
                UPDATE relay_board AS b SET head = v.head FROM unnest(\(changed)::text[], \(newHeads)::bigint[]) AS v(id, head)
                WHERE b.id = v.id
                """, logger: logger)
            // Delivered to every listener when (and only if) this transaction commits.
            for board in changed {
                guard let entries = fresh[board], let id = EntityID(board) else { continue }
                let payload = Self.operationsPayload(instance: instance, board: id, team: team, entries: entries)
                try await connection.query("SELECT pg_notify(\(Self.channel), \(payload))", logger: logger)
            }
            return results
        }
    }

    public func operations(board: EntityID, after: Int64, limit: Int) async throws -> [SyncMessage.Ops.Sequenced] {
        var result: [SyncMessage.Ops.Sequenced] = []
        let rows = try await client.query("""
            SELECT seq, body FROM relay_op WHERE board_id = \(board.rawValue) AND seq > \(after) ORDER BY seq LIMIT \(limit)
            """, logger: logger)
        for try await (seq, body) in rows.decode((Int64, String?).self) {
            guard let body else { throw RelayError.compacted(board, seq) }
            guard let op = try? BoardOperation.decode(json: Data(body.utf8)) else {
                throw RelayError.corrupt("operation at \(board)#\(seq) does not decode")
            }
            result.append(.init(seq: seq, op: op))
        }
        return result
    }

    public func boards(team: String) async throws -> [SyncMessage.BoardHead] {
        var result: [SyncMessage.BoardHead] = []
        let rows = try await client.query("SELECT id, head FROM relay_board WHERE team = \(team) ORDER BY id", logger: logger)
        for try await (id, head) in rows.decode((String, Int64).self) {
            if let board = EntityID(id) { result.append(.init(id: board, head: head)) }
        }
        return result
    }

    public func head(of board: EntityID) async throws -> Int64 {
        let rows = try await client.query("SELECT head FROM relay_board WHERE id = \(board.rawValue)", logger: logger)
        return try await Self.first(rows, Int64.self) ?? 0
    }

    public func team(of board: EntityID) async throws -> String? {
        let rows = try await client.query("SELECT team FROM relay_board WHERE id = \(board.rawValue)", logger: logger)
        return try await Self.first(rows, String.self)
    }

    public func secret() async throws -> Data { tokenSecret }

    public func recordIssued(_ token: IssuedToken) async throws {
        let boards = token.boards.map { String(decoding: try! JSONEncoder().encode($0), as: UTF8.self) }
        try await client.query("""
            INSERT INTO relay_token (id, team, boards, write, issued_at, revoked_at)
            VALUES (\(token.id), \(token.team), \(boards), \(token.write), \(token.issuedAt), \(token.revokedAt))
            ON CONFLICT (id) DO NOTHING
            """, logger: logger)
    }

    public func issuedTokens() async throws -> [IssuedToken] {
        let rows = try await client.query("SELECT id, team, boards, write, issued_at, revoked_at FROM relay_token ORDER BY issued_at, id",
                                          logger: logger)
        var tokens: [IssuedToken] = []
        for try await (id, team, boards, write, issuedAt, revokedAt) in rows.decode((String, String, String?, Bool, Int64, Int64?).self) {
            let scope = boards.flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
            tokens.append(IssuedToken(id: id, token: RelayToken(team: team, boards: scope, write: write, issuedAt: issuedAt), revokedAt: revokedAt))
        }
        return tokens
    }

    public func revoke(tokenID: String) async throws -> RevokeResult {
        let now = Int64(Date().timeIntervalSince1970)
        let rows = try await client.query("""
            WITH target AS (SELECT id, revoked_at FROM relay_token WHERE id = \(tokenID)),
                 changed AS (UPDATE relay_token SET revoked_at = \(now) WHERE id = \(tokenID) AND revoked_at IS NULL RETURNING id)
            SELECT (SELECT count(*) FROM target), (SELECT count(*) FROM changed)
            """, logger: logger)
        guard let (found, changed) = try await Self.first(rows, (Int64, Int64).self), found > 0 else { return .unknown }
        return changed > 0 ? .revoked : .alreadyRevoked
    }

    public func revokedTokenIDs() async throws -> Set<String> {
        let rows = try await client.query("SELECT id FROM relay_token WHERE revoked_at IS NOT NULL", logger: logger)
        var ids = Set<String>()
        for try await id in rows.decode(String.self) { ids.insert(id) }
        return ids
    }

    /// Operations in the log: the sum of the boards' heads (see `SQLiteRelayStorage`).
    public func operationCount() async throws -> Int {
        let rows = try await client.query("SELECT COALESCE(SUM(head), 0)::bigint FROM relay_board", logger: logger)
        return Int(try await Self.first(rows, Int64.self) ?? 0)
    }

    public func snapshot(board: EntityID) async throws -> (seq: Int64, state: BoardSnapshot)? {
        let rows = try await client.query("SELECT seq, body FROM relay_snapshot WHERE board_id = \(board.rawValue)", logger: logger)
        guard let (seq, body) = try await Self.first(rows, (Int64, String).self) else { return nil }
        guard let snapshot = try? JSONDecoder().decode(BoardSnapshot.self, from: Data(body.utf8)) else {
            throw RelayError.corrupt("snapshot of \(board) does not decode")
        }
        return (seq, snapshot)
    }

    public func snapshotSeq(board: EntityID) async throws -> Int64? {
        let rows = try await client.query("SELECT seq FROM relay_snapshot WHERE board_id = \(board.rawValue)", logger: logger)
        return try await Self.first(rows, Int64.self)
    }

    /// The first row of a result, reading the result to its end: the pooled connection goes
    /// back to the pool only once its rows were all read.
    static func first<Row: PostgresDecodable & Sendable>(_ rows: PostgresRowSequence, _: Row.Type) async throws -> Row? {
        var first: Row?
        for try await row in rows.decode(Row.self) where first == nil { first = row }
        return first
    }

    static func first<A: PostgresDecodable & Sendable, B: PostgresDecodable & Sendable>(_ rows: PostgresRowSequence, _: (A, B).Type) async throws -> (A, B)? {
        var first: (A, B)?
        for try await row in rows.decode((A, B).self) where first == nil { first = row }
        return first
    }

    public func compact(board: EntityID, through seq: Int64) async throws {
        let logger = self.logger
        try await client.withTransaction(logger: logger) { connection in
            // One compaction of a board at a time, across instances (appends are not blocked:
            // they only add operations above the horizon).
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(board.rawValue)))", logger: logger)
            var state = BoardState(id: board)
            var from: Int64 = 0
            for try await (snapshotSeq, body) in try await connection.query("""
                SELECT seq, body FROM relay_snapshot WHERE board_id = \(board.rawValue)
                """, logger: logger).decode((Int64, String).self) {
                from = snapshotSeq
                state = try JSONDecoder().decode(BoardSnapshot.self, from: Data(body.utf8)).state
            }
            guard from < seq else { return }
            var through: Int64 = from
            for try await (opSeq, body) in try await connection.query("""
                SELECT seq, body FROM relay_op WHERE board_id = \(board.rawValue) AND seq > \(from) AND seq <= \(seq) ORDER BY seq
                """, logger: logger).decode((Int64, String?).self) {
                guard let body, let op = try? BoardOperation.decode(json: Data(body.utf8)) else {
                    throw RelayError.corrupt("operation \(board)#\(opSeq) does not decode")
                }
                state.apply(op)
                through = opSeq
            }
            guard through > from else { return }
            let body = String(decoding: try JSONEncoder().encode(BoardSnapshot(state)), as: UTF8.self)
            try await connection.query("""
                INSERT INTO relay_snapshot (board_id, seq, body) VALUES (\(board.rawValue), \(through), \(body))
                ON CONFLICT (board_id) DO UPDATE SET seq = EXCLUDED.seq, body = EXCLUDED.body
                """, logger: logger)
            try await connection.query("""
                UPDATE relay_op SET body = NULL WHERE board_id = \(board.rawValue) AND seq <= \(through) AND body IS NOT NULL
                """, logger: logger)
        }
    }

    // MARK: Cluster

    public func publish(presence: SyncMessage.Presence, connection: Int) async throws {
        let note = Note(k: "presence", i: instance, c: connection, m: SyncMessage.presence(presence).text)
        try await client.query("SELECT pg_notify(\(Self.channel), \(note.json))", logger: logger)
    }

    public func publishAlive() async throws {
        try await client.query("SELECT pg_notify(\(Self.channel), \(Note(k: "alive", i: instance).json))", logger: logger)
    }

    /// What goes through NOTIFY (short keys: payloads are limited to 8000 bytes).
    struct Note: Codable {
        var k: String
        var i: String
        var t: String?
        var b: String?
        var f: Int64?
        var l: Int64?
        var c: Int?
        var m: String?

        var json: String { String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self) }
    }

    static func operationsPayload(instance: String, board: EntityID, team: String, entries: [(seq: Int64, op: BoardOperation)]) -> String {
        var note = Note(k: "ops", i: instance, t: team, b: board.rawValue, f: entries.first!.seq, l: entries.last!.seq)
        let message = SyncMessage.ops(.init(board: board, ops: entries.map { .init(seq: $0.seq, op: $0.op) }, head: entries.last!.seq))
        // The escaped message roughly grows by its quotes; measure the real payload.
        if message.text.utf8.count < maxInlinePayload {
            note.m = message.text
            let inline = note.json
            if inline.utf8.count < maxInlinePayload { return inline }
            note.m = nil
        }
        return note.json
    }

    static func event(_ payload: String, self instance: String) -> RelayClusterEvent? {
        guard let note = try? JSONDecoder().decode(Note.self, from: Data(payload.utf8)), note.i != instance else { return nil }
        switch note.k {
        case "ops":
            guard let board = note.b.flatMap(EntityID.init), let team = note.t, let first = note.f, let last = note.l, first <= last
            else { return nil }
            var ops: [SyncMessage.Ops.Sequenced]?
            if let text = note.m, case .ops(let message)? = try? SyncMessage.decode(Data(text.utf8)),
               message.ops.count == Int(last - first + 1) {
                ops = message.ops
            }
            return .operations(board: board, team: team, first: first, last: last, ops: ops)
        case "presence":
            guard let text = note.m, let connection = note.c, case .presence(let presence)? = try? SyncMessage.decode(Data(text.utf8))
            else { return nil }
            return .presence(instance: note.i, connection: connection, presence)
        case "alive":
            return .alive(instance: note.i)
        default:
            return nil
        }
    }

    /// LISTENs on a connection of its own; after every (re)connect reports `.resync` so the hub
    /// compares its rooms with the log (notifications sent while it was away are lost).
    static func listenLoop(target: PostgresURL, instance: String, continuation: AsyncStream<RelayClusterEvent>.Continuation,
                           logger: Logger) async {
        var delay: Duration = .milliseconds(50)
        var id = 1_000_000
        var configuration = target.connectionConfiguration
        configuration.options.additionalStartupParameters = [("application_name", "kanban-relay-listener")]
        while !Task.isCancelled {
            id += 1
            do {
                let connection = try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
                do {
                    try await connection.listen(on: channel) { notifications in
                        delay = .milliseconds(50)
                        continuation.yield(.resync)
                        for try await notification in notifications {
                            if let event = event(notification.payload, self: instance) { continuation.yield(event) }
                        }
                    }
                } catch {
                    if !Task.isCancelled { logger.warning("relay listener connection lost; reconnecting", metadata: ["error": "\(String(reflecting: error))"]) }
                }
                try? await connection.close()
            } catch {
                if !Task.isCancelled { logger.warning("relay listener cannot connect; retrying", metadata: ["error": "\(RelayStoreError.reason(error))"]) }
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
        }
    }

    static func isRetryable(_ error: any Error) -> Bool {
        ["23505", "40P01", "40001"].contains(sqlState(error) ?? "")
    }

    static func sqlState(_ error: any Error) -> String? {
        if let error = error as? PSQLError { return error.serverInfo?[.sqlState] }
        if let error = error as? PostgresTransactionError {
            for inner in [error.closureError, error.commitError, error.beginError].compactMap({ $0 }) {
                if let state = sqlState(inner) { return state }
            }
        }
        return nil
    }
}

/// A parsed `postgres://` URL.
struct PostgresURL: CustomStringConvertible {
    var host: String
    var port: Int
    var user: String
    var password: String?
    var database: String

    static let form = "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"

    init(_ text: String) throws {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "postgres" || scheme == "postgresql"
        else { throw RelayStoreError(description: "--store '\(Self.redacted(text))' is not a PostgreSQL URL; expected \(Self.form)") }
        guard let host = components.host, !host.isEmpty else {
            throw RelayStoreError(description: "--store '\(Self.redacted(text))' names no host; expected \(Self.form)")
        }
        if let port = components.port, !(1...65535).contains(port) {
            throw RelayStoreError(description: "--store '\(Self.redacted(text))': port must be 1-65535")
        }
        guard let user = components.user, !user.isEmpty else {
            throw RelayStoreError(description: "--store '\(Self.redacted(text))' names no user; expected \(Self.form)")
        }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw RelayStoreError(description: "--store '\(Self.redacted(text))' names no database; expected \(Self.form)")
        }
        for item in components.queryItems ?? [] where !(item.name == "sslmode" && item.value == "disable") {
            // TLS to the database is not built in yet: keep PostgreSQL on a private network or
            // loopback, or put a TLS tunnel in between.
            throw RelayStoreError(description: "--store: unsupported parameter '\(item.name)=\(item.value ?? "")' (only sslmode=disable; TLS to PostgreSQL is not supported yet)")
        }
        self.host = host
        self.port = components.port ?? 5432
        self.user = components.percentEncodedUser?.removingPercentEncoding ?? user
        self.password = components.percentEncodedPassword?.removingPercentEncoding
        self.database = database.removingPercentEncoding ?? database
    }

    var connectionConfiguration: PostgresConnection.Configuration {
        var configuration = PostgresConnection.Configuration(host: host, port: port, username: user, password: password,
                                                             database: database, tls: .disable)
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }

    /// Without the password.
    var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    static func redacted(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.password != nil else { return text }
        components.password = "***"
        return components.string ?? text
    }
}

/// A store that cannot be used, in words for the person starting the relay.
public struct RelayStoreError: Error, CustomStringConvertible {
    public let description: String

    static func unreachable(_ target: PostgresURL, _ error: any Error) -> RelayStoreError {
        RelayStoreError(description: "cannot use PostgreSQL at \(target): \(reason(error)). "
                        + "Check that the server is running and that the URL's host, port, user, password and database are right.")
    }

    /// Whether PostgreSQL refused a write because its disk is full (SQLSTATE 53100).
    static func isDiskFull(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] == "53100"
    }

    static func reason(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return "the server said: \(message)" }
            if let underlying = error.underlying { return "\(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }
}
