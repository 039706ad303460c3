import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import KanbanAgent
import KanbanModel
import KanbanProtocol
import KanbanRelay
import KanbanStore
import Logging
import PostgresNIO
import Synchronization
import Testing

/// A PostgreSQL server for the tests: `Tools/test.sh` starts one (`Tools/postgres/start.sh`,
/// loopback, temporary directory), sets KANBAN_POSTGRES_URL and KANBAN_REQUIRE_POSTGRES=1, and
/// stops it on exit. Each test works in a new database of its own.
enum PostgresFixture {
    static let baseURL = ProcessInfo.processInfo.environment["KANBAN_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    static let required = ProcessInfo.processInfo.environment["KANBAN_REQUIRE_POSTGRES"] == "1"
    static var enabled: Bool { baseURL != nil || required }
    static let logger = quietLogger("postgres-test")

    /// A new empty database on the test server; returns its URL.
    static func freshDatabase() async throws -> String {
        guard let base = baseURL else {
            throw TestError("KANBAN_POSTGRES_URL is not set: run Tools/test.sh, or eval \"$(Tools/postgres/start.sh)\" first")
        }
        let name = "kanban_t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        try await admin { _ = try await $0.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger) }
        var components = URLComponents(string: base)!
        components.path = "/" + name
        return components.string!
    }

    static func database(of url: String) -> String { String(URLComponents(string: url)!.path.dropFirst()) }

    /// Runs `body` on a connection to `url` (default: the server's base database).
    static func admin<T: Sendable>(_ url: String? = nil, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        let components = URLComponents(string: url ?? baseURL!)!
        let configuration = PostgresConnection.Configuration(host: components.host!, port: components.port ?? 5432,
                                                             username: components.user!, password: components.password,
                                                             database: String(components.path.dropFirst()), tls: .disable)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: Int.random(in: 1..<1_000_000), logger: logger)
        do {
            let result = try await body(connection)
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    static func rows<each T: PostgresDecodable & Sendable>(_ url: String, _ sql: String, as: (repeat each T).Type) async throws -> [(repeat each T)] {
        try await admin(url) { connection in
            var rows: [(repeat each T)] = []
            for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode((repeat each T).self) {
                rows.append(row)
            }
            return rows
        }
    }
}

/// Errors for a bad `--store`: no server needed.
struct RelayStoreArgumentTests {
    @Test func aBadStoreURLOrAnUnreachableServerGetsAClearErrorNotACrash() async throws {
        for (url, expected) in [("mysql://u@127.0.0.1/db", "is not a PostgreSQL URL"), ("postgres://127.0.0.1/db", "names no user"),
                                ("postgres://u@127.0.0.1:5432/", "names no database"), ("postgres://u@127.0.0.1/db?sslmode=require", "TLS")] {
            await #expect(throws: RelayStoreError.self) { _ = try await PostgresRelayStorage.connect(url: url) }
            do { _ = try await PostgresRelayStorage.connect(url: url) } catch {
                #expect("\(error)".contains(expected), "\(url): \(error)")
            }
        }
        // Nothing listens on port 1: the error names the server and what to check, quickly.
        let start = ContinuousClock.now
        do {
            _ = try await PostgresRelayStorage.connect(url: "postgres://kanban:secret@127.0.0.1:1/kanban")
            Issue.record("connecting to a closed port succeeded")
        } catch {
            #expect("\(error)".contains("cannot use PostgreSQL at postgres://kanban@127.0.0.1:1/kanban"), "\(error)")
            #expect(!"\(error)".contains("secret"), "the password is not printed")
        }
        // No time bound here: alone this fails in well under a second, but inside the parallel
        // suite on two cores this task has waited over a minute for a thread, so a wall-clock
        // check says more about the other tests than about the connect.
        _ = start
        // The same through the command line, for both the server and token creation.
        for args in [["relay", "--port", "0", "--store", "postgres://kanban@127.0.0.1:1/kanban"],
                     ["relay", "token", "create", "--store", "not a url", "--team", "t"],
                     ["relay", "--port", "0", "--store", "postgres://k@127.0.0.1/db", "--data", "/tmp/x"]] {
            let (status, out) = try await CLITests().run(args)
            #expect(status != 0, "\(args)")
            #expect(out.contains("PostgreSQL") || out.contains("--store") || out.contains("not both"), "\(args): \(out)")
            #expect(!out.contains("Fatal error"), "\(out)")
        }
    }
}

@Suite(.serialized, .enabled(if: PostgresFixture.enabled, "needs KANBAN_POSTGRES_URL (Tools/test.sh starts PostgreSQL and sets it)"))
struct PostgresRelayTests {
    let logger = quietLogger("relay")

    func ops(_ count: Int, board: EntityID, replica: String, create: Bool = false) -> [BoardOperation] {
        var author = Author(replica: ReplicaID(replica)!)
        return (0..<count).map { i in
            author.make(create && i == 0 ? .createBoard(title: "B") : .renameBoard(title: "\(replica) \(i)"), board: board,
                        nowMillis: 1_000 + Int64(i))
        }
    }

    @Test func appendsFromTwoInstancesGetGapFreeUniqueSequences() async throws {
        let url = try await PostgresFixture.freshDatabase()
        let (a, b) = (try await PostgresRelayStorage.connect(url: url, listen: false, logger: logger),
                      try await PostgresRelayStorage.connect(url: url, listen: false, logger: logger))
        let board = EntityID.make()
        let other = EntityID.make()
        // 2 instances × 6 writers × 20 pushes × 3 operations on one board, some pushes also
        // touching a second board, all at once.
        let results = try await withThrowingTaskGroup(of: [AppendResult].self) { group in
            for (s, storage) in [a, b].enumerated() {
                for w in 0..<6 {
                    let replica = "s\(s)w\(w)"
                    group.addTask {
                        var author = Author(replica: ReplicaID(replica)!)
                        var all: [AppendResult] = []
                        for p in 0..<20 {
                            var batch = (0..<3).map { i in
                                author.make(.renameBoard(title: "\(replica) \(p).\(i)"), board: board, nowMillis: 1_000 + Int64(p * 3 + i))
                            }
                            if p % 4 == 0 { batch.append(author.make(.renameBoard(title: "x"), board: other, nowMillis: 5_000 + Int64(p))) }
                            all += try await storage.append(batch, team: "t")
                        }
                        return all
                    }
                }
            }
            var all: [AppendResult] = []
            for try await part in group { all += part }
            return all
        }
        var seqs: [EntityID: [Int64]] = [:]
        for result in results {
            guard case .stored(_, let board, let seq, true) = result else { Issue.record("not stored as new: \(result)"); continue }
            seqs[board, default: []].append(seq)
        }
        #expect(seqs[board]?.sorted() == Array(1...720), "one board: every sequence once, none missing")
        #expect(seqs[other]?.sorted() == Array(1...60))
        #expect(try await a.head(of: board) == 720)
        #expect(try await b.head(of: other) == 60)
        let log = try await b.operations(board: board, after: 0, limit: 10_000)
        #expect(log.map(\.seq) == Array(1...720))
        // Each writer's operations are in its own order in the log (a push is appended in order).
        var lastByReplica: [String: UInt64] = [:]
        for entry in log {
            let replica = entry.op.id.replica.rawValue
            #expect(entry.op.id.counter > lastByReplica[replica] ?? 0, "\(entry.op.id) after \(lastByReplica[replica] ?? 0)")
            lastByReplica[replica] = entry.op.id.counter
        }
        #expect(try await a.operationCount() == 780)
        await a.close()
        await b.close()
    }

    /// The horizon a catch-up checks first (`snapshotSeq`), without decoding the snapshot: the
    /// compacted board's, as another instance sees it, and none for a board never compacted.
    @Test func aCompactedBoardsHorizonIsReadWithoutItsSnapshot() async throws {
        let url = try await PostgresFixture.freshDatabase()
        let (a, b) = (try await PostgresRelayStorage.connect(url: url, listen: false, logger: logger),
                      try await PostgresRelayStorage.connect(url: url, listen: false, logger: logger))
        var author = Author(replica: ReplicaID("folder")!)
        let (board, other) = (EntityID.make(), EntityID.make())
        _ = try await a.append((0..<20).map { author.make(.renameBoard(title: "T\($0)"), board: board, nowMillis: 1_000 + Int64($0)) }, team: "t")
        _ = try await a.append([author.make(.renameBoard(title: "Other"), board: other, nowMillis: 2_000)], team: "t")
        #expect(try await b.snapshotSeq(board: board) == nil)
        try await a.compact(board: board, through: 15)
        #expect(try await b.snapshotSeq(board: board) == 15)
        #expect(try await b.snapshot(board: board)?.seq == 15)
        #expect(try await b.snapshotSeq(board: other) == nil)
        await a.close()
        await b.close()
    }

    @Test func duplicatesAreAckedWithTheFirstSequenceEvenWhenTwoInstancesRace() async throws {
        let url = try await PostgresFixture.freshDatabase()
        let (a, b) = (try await PostgresRelayStorage.connect(url: url, listen: false, logger: logger),
                      try await PostgresRelayStorage.connect(url: url, listen: false, logger: logger))
        let board = EntityID.make()
        let first = ops(5, board: board, replica: "r1", create: true)
        let stored = try await a.append(first, team: "t")
        #expect(stored.map { if case .stored(_, _, let seq, true) = $0 { seq } else { -1 } } == [1, 2, 3, 4, 5] as [Int64])
        // The same operations again, through the other instance, in another order.
        let again = try await b.append(first.reversed(), team: "t")
        #expect(again.map { if case .stored(_, _, let seq, false) = $0 { seq } else { -1 } } == [5, 4, 3, 2, 1] as [Int64])
        // Another team may not write to the board.
        #expect(try await b.append(first, team: "other").allSatisfy { if case .forbidden = $0 { true } else { false } })
        // A push that reaches both instances at once (agent reconnected mid-push): stored once,
        // both answers name the same sequence.
        for round in 0..<10 {
            let batch = ops(4, board: board, replica: "race\(round)")
            async let x = a.append(batch, team: "t")
            async let y = b.append(batch, team: "t")
            let (rx, ry) = try await (x, y)
            for (p, q) in zip(rx, ry) {
                guard case .stored(let op, _, let s1, let n1) = p, case .stored(_, _, let s2, let n2) = q else {
                    Issue.record("\(p) \(q)")
                    continue
                }
                #expect(s1 == s2, "\(op): \(s1) vs \(s2)")
                #expect(n1 != n2, "\(op) is new for exactly one instance")
            }
        }
        #expect(try await a.head(of: board) == 45)
        let seqs = try await PostgresFixture.rows(url, "SELECT seq FROM relay_op ORDER BY seq", as: Int64.self)
        #expect(seqs == Array(1...45))
        await a.close()
        await b.close()
    }

    @Test func instancesShareOneSecretAndHearEachOthersCommits() async throws {
        let url = try await PostgresFixture.freshDatabase()
        // Started together: the secret is created once.
        async let x = PostgresRelayStorage.connect(url: url, logger: logger)
        async let y = PostgresRelayStorage.connect(url: url, logger: logger)
        let (a, b) = try await (x, y)
        async let sa = a.secret()
        async let sb = b.secret()
        let (secretA, secretB) = try await (sa, sb)
        #expect(secretA == secretB && secretA.count == 32)
        let token = TokenAuthority(secret: secretA).sign(RelayToken(team: "t"))
        #expect(TokenAuthority(secret: try await b.secret()).verify(token).map(\.team) == .success("t"))
        // A token recorded on one instance and revoked on the other is revoked for both.
        let id = TokenAuthority.id(of: token)
        try await a.recordIssued(IssuedToken(id: id, token: RelayToken(team: "t", boards: ["b1"], write: false, issuedAt: 1_700_000_000)))
        #expect(try await b.revoke(tokenID: id) == .revoked)
        #expect(try await a.revoke(tokenID: id) == .alreadyRevoked)
        #expect(try await b.revoke(tokenID: "0000000000000000") == .unknown)
        #expect(try await a.revokedTokenIDs() == [id])
        let issued = try await b.issuedTokens()
        #expect(issued.count == 1 && issued[0].id == id && issued[0].boards == ["b1"] && !issued[0].write
                && issued[0].issuedAt == 1_700_000_000 && issued[0].revokedAt != nil, "\(issued)")

        final class Events: Sendable { let list = Mutex<[RelayClusterEvent]>([]) }
        let seen = Events()
        let listener = Task { for await event in b.events { seen.list.withLock { $0.append(event) } } }
        defer { listener.cancel() }
        try await eventually("B listens") { seen.list.withLock { $0.contains { if case .resync = $0 { true } else { false } } } }

        // Small commit: the operations ride in the notification. Large: only the range.
        let board = EntityID.make()
        let small = ops(3, board: board, replica: "small", create: true)
        _ = try await a.append(small, team: "t")
        var author = Author(replica: ReplicaID("large")!)
        let large = (0..<40).map { i in author.make(.renameBoard(title: String(repeating: "long title ", count: 30) + "\(i)"), board: board, nowMillis: 9_000 + Int64(i)) }
        _ = try await a.append(large, team: "t")
        _ = try await b.append(ops(2, board: board, replica: "own"), team: "t")  // B's own commits are not echoed to B
        try await a.publish(presence: .init(board: board, replica: ReplicaID("viewer"), user: "Ann", viewing: true), connection: 7)
        try await eventually("B heard both commits and the presence") { seen.list.withLock { $0.count >= 4 } }
        let events = seen.list.withLock { $0 }
        let commits = events.compactMap { event -> (Int64, Int64, Int?)? in
            if case .operations(let b, let team, let first, let last, let ops) = event, b == board, team == "t" { (first, last, ops?.count) } else { nil }
        }
        #expect(commits.count == 2)
        #expect(commits.first.map { $0.0 == 1 && $0.1 == 3 && $0.2 == 3 } == true, "\(commits)")
        #expect(commits.last.map { $0.0 == 4 && $0.1 == 43 && $0.2 == nil } == true, "too large for NOTIFY: range only; \(commits)")
        #expect(events.contains { if case .presence(a.instance, 7, let p) = $0 { p.user == "Ann" && p.viewing } else { false } })

        // The listener connection is killed: it reconnects and says so (the hub then reads the log).
        // Both instances' listeners first (A's may still be connecting: only B's was awaited).
        let listeners = """
            FROM pg_stat_activity
            WHERE application_name = 'kanban-relay-listener' AND datname = '\(PostgresFixture.database(of: url))'
            """
        try await eventually("both instances' listeners are connected") {
            try await PostgresFixture.rows(url, "SELECT pid \(listeners)", as: Int32.self).count == 2
        }
        let resyncsBefore = seen.list.withLock { $0.filter { if case .resync = $0 { true } else { false } }.count }
        let killed = try await PostgresFixture.rows(url, "SELECT pg_terminate_backend(pid) \(listeners)", as: Bool.self)
        #expect(killed.count == 2)
        try await eventually("B's listener is back") {
            seen.list.withLock { $0.filter { if case .resync = $0 { true } else { false } }.count } > resyncsBefore
        }
        await a.close()
        await b.close()
    }

    /// Two relays on one database in this process, an agent on each: live delivery and
    /// presence across instances, and catching up after notifications were lost.
    @Test func aRelayThatMissedNotificationsCatchesUpFromTheLog() async throws {
        let url = try await PostgresFixture.freshDatabase()
        var relays: [Relay] = []
        var servers: [RunningServer] = []
        for name in ["a", "b"] {
            let storage = try await PostgresRelayStorage.connect(url: url, logger: logger)
            let relay = try await Relay(storage: storage, configuration: .init(port: 0, relayName: name), logger: logger)
            relays.append(relay)
            servers.append(try await RunningServer.start { buildRelayApplication(relay: relay, logger: quietLogger("relay"), onListening: $0) })
        }
        let token = relays[0].tokens.sign(RelayToken(team: "team"))
        var agentServers: [RunningServer] = []
        let agents = try (0..<2).map { _ in Agent(store: try ReplicaStore.inMemory(configuration: .init(durability: .normal)), configuration: .init(port: 0)) }
        for (agent, server) in zip(agents, servers) {
            var configuration = SyncConfiguration(relayURL: "ws://127.0.0.1:\(server.port)/sync", token: token)
            configuration.backoffBase = .milliseconds(20)
            configuration.backoffCap = .milliseconds(300)
            let client = SyncClient(agent: agent, configuration: configuration, logger: quietLogger("sync"))
            agentServers.append(try await RunningServer.start {
                buildAgentApplication(agent: agent, logger: quietLogger("agent"), services: [client], onListening: $0)
            })
        }
        let (allServers, allRelays) = (agentServers + servers, relays)
        defer {
            Task {
                for server in allServers { await server.stop() }
                for relay in allRelays { await (relay.storage as? PostgresRelayStorage)?.close() }
            }
        }
        let (a, b) = (agents[0], agents[1])
        let board = try await a.createBoard(title: "Across").id
        guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil) else { throw TestError("column") }
        // The board and its column can arrive in separate commits: wait for the column B writes into.
        try await eventually("B (on the other relay) gets the new board and its column live") {
            try b.store.document(board)?.columns.contains { $0.id == column.id } == true
        }
        _ = try await b.createTask(column: column.id, title: "from B", description: nil, after: nil)
        try await eventually("A gets B's task live") { try a.store.document(board)?.columns.first?.tasks.count == 1 }

        // Presence crosses instances too.
        final class Seen: Sendable { let list = Mutex<[SyncMessage.Presence]>([]) }
        let seen = Seen()
        let (_, stream) = b.hub.subscribe(board: board)
        let watcher = Task { for await message in stream { if case .presence(let p) = message { seen.list.withLock { $0.append(p) } } } }
        defer { watcher.cancel() }
        a.updatePresence(board: board, client: 1, viewing: true)
        try await eventually("B sees A viewing, through the other relay") {
            seen.list.withLock { $0.contains { $0.viewing && $0.replica == a.store.replicaID } }
        }

        // Both listeners die and cannot come back for a while: A's operations are committed
        // but their notifications are lost.
        let database = PostgresFixture.database(of: url)
        try await PostgresFixture.admin { _ = try await $0.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) ALLOW_CONNECTIONS false"), logger: PostgresFixture.logger) }
        let killed = try await PostgresFixture.rows(PostgresFixture.baseURL!, """
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kanban-relay-listener' AND datname = '\(database)'
            """, as: Bool.self)
        #expect(killed.count == 2)
        for i in 0..<30 { _ = try await a.createTask(column: column.id, title: "while B was deaf \(i)", description: nil, after: nil) }
        try await eventually("A's relay stored them (on its open pool connections)") { try a.store.outboxCount() == 0 }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try b.store.document(board)?.columns.first?.tasks.count == 1, "B cannot have heard of them yet")
        // B's agent pushes: its operation lands above A's 30, so before acking, relay B sends
        // them from the log (an ack above a sequence the agent was not sent would skip it).
        _ = try await b.createTask(column: column.id, title: "B pushes while deaf", description: nil, after: nil)
        try await eventually("B's push brings A's operations along, in order") {
            try b.store.outboxCount() == 0 && b.store.document(board)?.columns.first?.tasks.count == 32
        }
        // More from A while B is still deaf; then B's listener comes back and B reads the log.
        for i in 0..<10 { _ = try await a.createTask(column: column.id, title: "still deaf \(i)", description: nil, after: nil) }
        try await eventually("A's relay stored them") { try a.store.outboxCount() == 0 }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try b.store.document(board)?.columns.first?.tasks.count == 32)
        try await PostgresFixture.admin { _ = try await $0.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) ALLOW_CONNECTIONS true"), logger: PostgresFixture.logger) }
        try await eventually("B catches up from the log once its listener is back") {
            try b.store.document(board)?.columns.first?.tasks.count == 42 && b.store.digest(board) == a.store.digest(board)
        }
        #expect(await relays[1].hub.gapFills >= 40)
    }

    /// A long-polling session is one instance's: its requests run over several HTTP connections at
    /// once (a poll waiting while a push is posted), which a balancer spreading connections sends
    /// to different instances, and every request then found no session (`poll_session_unknown`,
    /// found by the soak with two relays). `kanban-relays.conf` keeps `/sync/poll` on one instance
    /// per client address, so a long-polling agent syncs with a WebSocket agent on the other one.
    @Test func aLongPollingAgentBehindNginxKeepsItsSessionOnOneInstance() async throws {
        let pair = try await TwoRelaysBehindNginx.start()
        defer { pair.stop() }
        let (root, token, proxy) = (pair.root, pair.token, pair.proxy)
        let sync = ProcessSyncTests()
        let polling = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/polling", "--relay", proxy, "--token", token,
                                                  "--relay-transport", "long-polling"])
        defer { polling.kill() }
        let pollingPort = try await polling.port(after: "Board:")
        let socket = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/socket", "--relay", proxy, "--token", token])
        defer { socket.kill() }
        let socketPort = try await socket.port(after: "Board:")
        try await eventually("both agents are linked", timeout: .seconds(20)) {
            for port in [pollingPort, socketPort] {
                let health = try await sync.request("GET", "http://127.0.0.1:\(port)/health/websocket")
                guard health["state"] as? String == "connected" else { return false }
            }
            return true
        }
        let board = try await sync.request("POST", "http://127.0.0.1:\(socketPort)/api/boards", ["title": "Polling"])["id"] as! String
        let column = try await sync.request("POST", "http://127.0.0.1:\(socketPort)/api/boards/\(board)/columns", ["title": "Todo"])["id"] as! String
        try await eventually("the long-polling agent has the column", timeout: .seconds(20)) {
            let document = try? await sync.request("GET", "http://127.0.0.1:\(pollingPort)/api/boards/\(board)")
            return (document?["columns"] as? [[String: Any]])?.count == 1
        }
        // Pushes from the long-polling agent while its poll waits on the instance.
        for k in 0..<10 {
            _ = try await sync.request("POST", "http://127.0.0.1:\(pollingPort)/api/columns/\(column)/tasks", ["title": "p\(k)"])
            _ = try await sync.request("POST", "http://127.0.0.1:\(socketPort)/api/columns/\(column)/tasks", ["title": "s\(k)"])
        }
        let expected = Set((0..<10).flatMap { ["p\($0)", "s\($0)"] })
        try await eventually("both agents have all 20 tasks and nothing queued", timeout: .seconds(30)) {
            for port in [pollingPort, socketPort] {
                let health = try await sync.request("GET", "http://127.0.0.1:\(port)/health/websocket")
                guard health["queuedOperations"] as? Int == 0, health["state"] as? String == "connected" else { return false }
                guard Set(try await sync.taskTitles(port, board)) == expected else { return false }
            }
            return true
        }
        let health = try await sync.request("GET", "http://127.0.0.1:\(pollingPort)/health/websocket")
        #expect(health["transport"] as? String == "long-polling", "\(health)")
        let lost = (health["attempts"] as? [[String: Any]] ?? []).filter { $0["errorClass"] as? String == "poll_session_unknown" }
        #expect(lost.isEmpty, "requests of a session reached the other instance: \(health)")

        // `kanban doctor` checks the fallback too: it passes here, and names the balancer that
        // spreads /sync/poll (this config as it was before: /sync/poll on the least_conn upstream).
        let (okStatus, okOut) = try await CLITests().run(["doctor", "--relay", proxy, "--token", token, "--agent", "http://127.0.0.1:\(pollingPort)"])
        #expect(okStatus == 0 && okOut.contains("✔ fallback"), "\(okOut)")
        let (spread, spreadPort) = try await pair.anotherNginx(replacing: ["proxy_pass http://kanban_relays_by_client;": "proxy_pass http://kanban_relays;"])
        defer { spread.terminate(); spread.waitUntilExit() }
        let (status2, out) = try await CLITests().run(["doctor", "--json", "--relay", "ws://127.0.0.1:\(spreadPort)/sync", "--token", token,
                                                        "--agent", "http://127.0.0.1:\(pollingPort)"])
        #expect(status2 != 0)
        #expect(out.contains("\"fallback\"") && out.contains("\"poll_affinity\""), "\(out)")
        // An agent long-polling through it says the same in its status (and the board's panel).
        let split = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/split", "--relay",
                                                "ws://127.0.0.1:\(spreadPort)/sync", "--token", token, "--relay-transport", "long-polling"])
        defer { split.kill() }
        let splitPort = try await split.port(after: "Board:")
        try await eventually("the agent behind the spreading balancer names it", timeout: .seconds(20)) {
            let health = try await sync.request("GET", "http://127.0.0.1:\(splitPort)/health/websocket")
            return (health["attempts"] as? [[String: Any]] ?? []).contains { $0["errorClass"] as? String == "poll_affinity" }
        }
    }

    /// The issue's check: two `kanban relay` processes on one PostgreSQL behind nginx, agents on
    /// both, one relay SIGKILLed mid-stream, replicas compared.
    @Test func agentsOnTwoRelaysBehindNginxConvergeAndSurviveAnInstanceKill() async throws {
        let pair = try await TwoRelaysBehindNginx.start()
        defer { pair.stop() }
        let (url, root, token, relayPorts, proxy) = (pair.url, pair.root, pair.token, pair.relayPorts, pair.proxy)
        let sync = ProcessSyncTests()
        var agents: [ProcessSyncTests.Child] = []
        var ports: [Int] = []
        for i in 0..<4 {
            let agent = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/agent\(i)", "--relay", proxy, "--token", token])
            agents.append(agent)
            ports.append(try await agent.port(after: "Board:"))
        }
        defer { for agent in agents { agent.kill() } }
        func connections(_ relay: Int) async throws -> Int {
            try await sync.request("GET", "http://127.0.0.1:\(relayPorts[relay])/health/websocket")["connections"] as? Int ?? -1
        }
        try await eventually("all four agents are linked") {
            var linked = 0
            for port in ports where try await sync.request("GET", "http://127.0.0.1:\(port)/health/websocket")["state"] as? String == "connected" {
                linked += 1
            }
            return linked == 4
        }
        let spread = (try await connections(0), try await connections(1))
        #expect(spread.0 >= 1 && spread.1 >= 1 && spread.0 + spread.1 == 4, "nginx spread the agents over both relays: \(spread)")

        let board = try await sync.request("POST", "http://127.0.0.1:\(ports[0])/api/boards", ["title": "Two relays"])["id"] as! String
        let column = try await sync.request("POST", "http://127.0.0.1:\(ports[0])/api/boards/\(board)/columns", ["title": "Todo"])["id"] as! String
        for (i, port) in ports.enumerated() {
            try await eventually("agent \(i) has the board and its column") {
                let document = try? await sync.request("GET", "http://127.0.0.1:\(port)/api/boards/\(board)")
                return (document?["columns"] as? [[String: Any]])?.count == 1
            }
        }
        // Live across instances: each agent adds a task; all four see all four.
        for (i, port) in ports.enumerated() {
            _ = try await sync.request("POST", "http://127.0.0.1:\(port)/api/columns/\(column)/tasks", ["title": "live \(i)"])
        }
        let live = Set((0..<4).map { "live \($0)" })
        for (i, port) in ports.enumerated() {
            try await eventually("agent \(i) sees every agent's task live") { Set(try await sync.taskTitles(port, board)) == live }
        }

        // Mid-stream: every agent keeps adding tasks while relay r1 is SIGKILLed.
        final class Counter: Sendable { let value = Mutex(0) }
        let written = Counter()
        let perAgent = 30
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, port) in ports.enumerated() {
                group.addTask {
                    for k in 0..<perAgent {
                        _ = try await sync.request("POST", "http://127.0.0.1:\(port)/api/columns/\(column)/tasks", ["title": "w\(i)-\(k)"])
                        written.value.withLock { $0 += 1 }
                    }
                }
            }
            try await eventually("the stream is under way") { written.value.withLock { $0 } >= 20 }
            pair.relays[0].kill(SIGKILL)
            try await group.waitForAll()
        }
        var expected = live
        for i in 0..<4 { for k in 0..<perAgent { expected.insert("w\(i)-\(k)") } }
        try await eventually("every agent has every task and nothing queued", timeout: .seconds(60)) {
            for port in ports {
                let health = try await sync.request("GET", "http://127.0.0.1:\(port)/health/websocket")
                guard health["queuedOperations"] as? Int == 0, health["state"] as? String == "connected" else { return false }
                guard Set(try await sync.taskTitles(port, board)) == expected else { return false }
            }
            return true
        }
        #expect(try await connections(1) == 4, "r1's agents moved to r2 through nginx")
        // Same document everywhere (same order too); `version` is the replica's own log position.
        var documents = Set<String>()
        for port in ports {
            var document = try await sync.request("GET", "http://127.0.0.1:\(port)/api/boards/\(board)")
            document["version"] = nil
            documents.insert(String(decoding: try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys]), as: UTF8.self))
        }
        #expect(documents.count == 1, "the four replicas differ")
        // Every operation the agents had acknowledged is in the log, at gap-free sequences.
        let log = try await PostgresFixture.rows(url, "SELECT count(*), min(seq), max(seq) FROM relay_op WHERE board_id = '\(board)'",
                                                 as: (Int64, Int64, Int64).self)
        let expectedOps = Int64(2 + expected.count)  // board + column + one create per task
        #expect(log.first.map { $0.0 == expectedOps && $0.1 == 1 && $0.2 == expectedOps } == true, "log \(String(describing: log.first)), expected \(expectedOps)")
        // The surviving relay counts the log from the boards' heads: the same figure.
        let relayHealth = try await sync.request("GET", "http://127.0.0.1:\(pair.relayPorts[1])/health/websocket")
        #expect(relayHealth["logOperations"] as? Int == Int(expectedOps), "\(relayHealth)")
    }
}

/// Two `kanban relay --store` processes on a fresh PostgreSQL database behind nginx
/// (`Tools/nginx/kanban-relays.conf`), and a token of team "t" for them. `stop()` ends nginx and
/// the relays and removes the directory.
struct TwoRelaysBehindNginx {
    let url: String
    let root: String
    let token: String
    let relays: [ProcessSyncTests.Child]
    let relayPorts: [Int]
    let nginx: Process
    let proxyPort: Int
    var proxy: String { "ws://127.0.0.1:\(proxyPort)/sync" }

    static func start() async throws -> TwoRelaysBehindNginx {
        let url = try await PostgresFixture.freshDatabase()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-pg-\(UUID().uuidString)").path
        let (status, tokenOut) = try await CLITests().run(["relay", "token", "create", "--store", url, "--team", "t"])
        #expect(status == 0, "\(tokenOut)")
        let relays = try ["r1", "r2"].map { try ProcessSyncTests.Child(["relay", "--port", "0", "--store", url, "--name", $0]) }
        do {
            let relayPorts = [try await relays[0].port(after: "listening on ws://"), try await relays[1].port(after: "listening on ws://")]
            let (nginx, proxyPort) = try await NginxTests().startNginx("kanban-relays.conf", relayPort: relayPorts[0], root: root,
                                                                     extra: ["@RELAY_PORT_2@": String(relayPorts[1])])
            return TwoRelaysBehindNginx(url: url, root: root, token: tokenOut.trimmingCharacters(in: .whitespacesAndNewlines),
                                        relays: relays, relayPorts: relayPorts, nginx: nginx, proxyPort: proxyPort)
        } catch {
            for relay in relays { relay.kill() }
            try? FileManager.default.removeItem(atPath: root)
            throw error
        }
    }

    /// A second nginx in front of the same relays, its config changed by `replacing` (text → text).
    func anotherNginx(replacing: [String: String]) async throws -> (Process, Int) {
        try await NginxTests().startNginx("kanban-relays.conf", relayPort: relayPorts[0], root: root,
                                          extra: replacing.merging(["@RELAY_PORT_2@": String(relayPorts[1])]) { new, _ in new })
    }

    func stop() {
        nginx.terminate()
        nginx.waitUntilExit()
        for relay in relays { relay.kill() }
        try? FileManager.default.removeItem(atPath: root)
    }
}
