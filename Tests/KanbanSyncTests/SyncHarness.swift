import Foundation
import Hummingbird
import KanbanAgent
import KanbanModel
import KanbanRelay
import KanbanStore
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// Runs servers in-process on loopback ports and stops them on demand.
final class RunningServer: Sendable {
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    private init(port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.port = port
        self.group = group
        self.task = task
    }

    /// Starts `build(onListening)` and returns once it accepts connections.
    static func start<App: ApplicationProtocol>(
        _ build: (@escaping @Sendable (Int) async -> Void) -> App
    ) async throws -> RunningServer {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = build { port in continuation.yield(port) }
        let logger = Logger(label: "test")
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestError("server did not start") }
        return RunningServer(port: port, group: group, task: task)
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    // TEST_LOG=debug shows what the servers and sync clients do.
    logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
    return logger
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; fails the test on timeout.
func eventually(
    _ what: String, timeout: Duration = .seconds(20), sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("timed out after \(timeout) waiting for: \(what)", sourceLocation: sourceLocation)
    throw TestError("timed out waiting for \(what)")
}

/// A new directory for a relay log under the temporary directory (the caller removes it).
func temporaryRelayDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-relay-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// One relay and some agents, all in this process.
final class SyncCluster: Sendable {
    let relayDirectory: URL
    let relayPort: Mutex<Int>
    let relayServer: Mutex<RunningServer?>
    let token: String
    let agents: [Agent]
    let syncServers: Mutex<[Int: RunningServer]>
    let relayConfiguration: RelayConfiguration
    let relayRef = Mutex<Relay?>(nil)
    /// What the relay stores through, given its SQLite log (the log itself by default).
    let wrapStorage: @Sendable (SQLiteRelayStorage) -> any RelayStorage

    init(agents count: Int, team: String = "team", relayConfiguration: RelayConfiguration = .init(),
         wrapStorage: @escaping @Sendable (SQLiteRelayStorage) -> any RelayStorage = { $0 },
         store: (Int) throws -> ReplicaStore = { _ in try ReplicaStore.inMemory(configuration: .init(durability: .normal)) }) async throws {
        self.relayConfiguration = relayConfiguration
        self.wrapStorage = wrapStorage
        relayDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-relay-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: relayDirectory, withIntermediateDirectories: true)
        let storage = try SQLiteRelayStorage(path: relayDirectory.appendingPathComponent("relay.sqlite").path)
        token = TokenAuthority(secret: try storage.secret()).sign(RelayToken(team: team))
        relayPort = Mutex(0)
        relayServer = Mutex(nil)
        agents = try (0..<count).map { Agent(store: try store($0), configuration: .init(port: 0)) }
        syncServers = Mutex([:])
        try await startRelay()
    }

    func startRelay() async throws {
        let storage = try SQLiteRelayStorage(path: relayDirectory.appendingPathComponent("relay.sqlite").path)
        var configuration = relayConfiguration
        configuration.port = relayPort.withLock { $0 }
        let relay = try await Relay(storage: wrapStorage(storage), configuration: configuration, logger: quietLogger("relay"))
        relayRef.withLock { $0 = relay }
        let server = try await RunningServer.start { onListening in
            buildRelayApplication(relay: relay, logger: quietLogger("relay"), onListening: onListening)
        }
        relayPort.withLock { $0 = server.port }
        relayServer.withLock { $0 = server }
    }

    func stopRelay() async {
        let server = relayServer.withLock { s -> RunningServer? in defer { s = nil }; return s }
        await server?.stop()
    }

    var relayURL: String { "ws://127.0.0.1:\(relayPort.withLock { $0 })/sync" }

    private static let relayFiles = ["relay.sqlite", "relay.sqlite-wal", "relay.sqlite-shm"]

    /// Stops the relay, copies its data aside (a backup) and starts it again; returns the copy.
    func backUpRelay() async throws -> URL {
        let backup = relayDirectory.appendingPathComponent("backup-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: backup, withIntermediateDirectories: true)
        await stopRelay()
        for file in Self.relayFiles where FileManager.default.fileExists(atPath: relayDirectory.appendingPathComponent(file).path) {
            try FileManager.default.copyItem(at: relayDirectory.appendingPathComponent(file), to: backup.appendingPathComponent(file))
        }
        try await startRelay()
        return backup
    }

    /// Stops the relay, puts a `backUpRelay()` copy back (a restore: whatever it stored since
    /// is gone) and starts it again.
    func restoreRelay(from backup: URL) async throws {
        await stopRelay()
        for file in Self.relayFiles {
            try? FileManager.default.removeItem(at: relayDirectory.appendingPathComponent(file))
            if FileManager.default.fileExists(atPath: backup.appendingPathComponent(file).path) {
                try FileManager.default.copyItem(at: backup.appendingPathComponent(file), to: relayDirectory.appendingPathComponent(file))
            }
        }
        try await startRelay()
    }

    /// Starts agent `i`'s sync client (inside a small agent server, as `kanban agent` runs it).
    func connect(_ i: Int, transport: SyncTransportChoice = .auto, token: String? = nil) async throws {
        var configuration = SyncConfiguration(relayURL: relayURL, token: token ?? self.token)
        configuration.backoffBase = .milliseconds(20)
        configuration.backoffCap = .milliseconds(300)
        configuration.transport = transport
        let client = SyncClient(agent: agents[i], configuration: configuration, logger: quietLogger("sync"))
        let agent = agents[i]
        let server = try await RunningServer.start { onListening in
            buildAgentApplication(agent: agent, logger: quietLogger("agent"), services: [client], onListening: onListening)
        }
        syncServers.withLock { $0[i] = server }
    }

    func disconnect(_ i: Int) async {
        let server = syncServers.withLock { $0.removeValue(forKey: i) }
        await server?.stop()
    }

    /// Runs `body`, then shuts the cluster down and waits for that (servers stopped, the relay's
    /// directory removed), whether `body` returned or threw. A `defer` cannot await: a shutdown
    /// started from one in a new task was often cut off by the test process's exit.
    func whileRunning<T>(_ body: () async throws -> T) async throws -> T {
        let result: T
        do {
            result = try await body()
        } catch {
            await shutdown()
            throw error
        }
        await shutdown()
        return result
    }

    func shutdown() async {
        for i in agents.indices { await disconnect(i) }
        await stopRelay()
        try? FileManager.default.removeItem(at: relayDirectory)
    }

    /// Waits until every agent has an empty outbox and the same digest for `board`.
    func waitForConvergence(board: EntityID, among indices: [Int]? = nil, timeout: Duration = .seconds(30)) async throws {
        try await eventually("agents converge on \(board)", timeout: timeout) {
            var digests = Set<String>()
            for agent in (indices ?? Array(agents.indices)).map({ agents[$0] }) {
                guard try agent.store.outboxCount() == 0, try agent.store.document(board) != nil else { return false }
                digests.insert(try agent.store.digest(board))
            }
            return digests.count == 1
        }
    }
}

extension Agent {
    /// Creates a board with one column holding `tasks` tasks: `tasks + 2` operations in the outbox
    /// (all of them, while the agent is not connected).
    func boardWithTasks(_ tasks: Int, title: String) async throws -> EntityID {
        let board = try await createBoard(title: title).id
        guard case .column(let column) = try await createColumn(board: board, title: "C", after: nil) else {
            throw TestError("no column")
        }
        for i in 0..<tasks { _ = try await createTask(column: column.id, title: "T\(i)", description: nil, after: nil) }
        return board
    }
}

/// A WebSocket upgrade request's answer (`RelayProbe.upgrade`). The probe blocks its thread, so
/// it runs on a Dispatch thread: on one of Swift's two pool threads it could hold up the
/// in-process relay it asks.
func upgradeAnswer(_ url: String, token: String?, asUpgrade: Bool = true) async throws -> RelayProbe.UpgradeAnswer {
    let target = try RelayProbe.parse(url).get()
    return try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: RelayProbe.upgrade(target, token: token, asUpgrade: asUpgrade, timeout: 10).mapError { $0 as any Error })
        }
    }
}
