import ArgumentParser
import Foundation
import Hummingbird
import KanbanAgent
import KanbanModel
import KanbanRelay
import KanbanStore
import Logging
import ServiceLifecycle
import UnixSignals

/// One relay and two agents in one process, for seeing live sync in two browser windows.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start a relay and two agents (own data directories, free ports) and print two board URLs.")

    @Option(help: "Directory for the demo's data, kept after the demo stops (default: a new temporary directory, removed when the demo stops).") var data: String?

    func run() async throws {
        var logger = Logger(label: "kanban.demo")
        logger.logLevel = .warning
        let root = data ?? (NSTemporaryDirectory() + "kanban-demo-\(UUID().uuidString.prefix(8))")
        for sub in ["relay", "alice", "bob"] {
            try FileManager.default.createDirectory(atPath: root + "/" + sub, withIntermediateDirectories: true)
        }
        let lock = try DirectoryLock.acquire(root, for: "demo")
        let storage = try SQLiteRelayStorage(path: root + "/relay/relay.sqlite")
        let relay = try await Relay(storage: storage, configuration: .init(port: 0), logger: logger)
        let token = relay.tokens.sign(RelayToken(team: "demo"))
        let relayPort = Port()
        let relayApp = buildRelayApplication(relay: relay, logger: logger) { relayPort.set($0) }
        let relayGroup = ServiceGroup(configuration: .init(services: [relayApp], logger: logger))
        let relayTask = Task { try await relayGroup.run() }
        let port = await relayPort.value()

        let urls = Port.List()
        var agentApps: [any Service] = []
        var agents: [Agent] = []
        for name in ["alice", "bob"] {
            let store = try ReplicaStore(path: "\(root)/\(name)/replica.sqlite")
            let agent = Agent(store: store, configuration: .init(port: 0))
            agents.append(agent)
            let sync = SyncClient(agent: agent, configuration: .init(relayURL: "ws://127.0.0.1:\(port)/sync", token: token), logger: logger)
            agentApps.append(buildAgentApplication(agent: agent, logger: logger, services: [sync]) { urls.append(name, $0) })
        }
        if try agents[0].store.boards().isEmpty {
            let board = try await agents[0].createBoard(title: "Demo board")
            guard case .column(let todo) = try await agents[0].createColumn(board: board.id, title: "To do", after: nil) else { return }
            guard case .column(let doing) = try await agents[0].createColumn(board: board.id, title: "Doing", after: todo.id) else { return }
            _ = try await agents[0].createColumn(board: board.id, title: "Done", after: doing.id)
            _ = try await agents[0].createTask(column: todo.id, title: "Drag me to Doing", description: "", after: nil)
        }
        let group = ServiceGroup(configuration: .init(services: agentApps, gracefulShutdownSignals: [.sigint, .sigterm], logger: logger))
        let printer = Task {
            let all = await urls.wait(count: 2)
            print("Relay: ws://127.0.0.1:\(port)/sync   data: \(root)")
            for (name, agentPort) in all.sorted(by: { $0.0 < $1.0 }) {
                print("\(name): http://127.0.0.1:\(agentPort)/")
            }
            print("Open both URLs side by side; changes in one appear in the other. Ctrl-C stops the demo.")
            fflush(nil)
        }
        try await group.run()
        printer.cancel()
        await relayGroup.triggerGracefulShutdown()
        _ = try? await relayTask.value
        withExtendedLifetime(lock) {}
        if data == nil {
            for agent in agents { try? agent.store.close() }
            try? storage.close()
            try? FileManager.default.removeItem(atPath: root)
            print("Removed the demo's data (\(root)); run `kanban demo --data DIR` to keep it between runs.")
        }
    }
}

/// A value published once by a server callback and awaited by the command.
final class Port: Sendable {
    private let stream = AsyncStream<Int>.makeStream()
    func set(_ port: Int) { stream.continuation.yield(port) }
    func value() async -> Int {
        var iterator = stream.stream.makeAsyncIterator()
        return await iterator.next() ?? 0
    }

    final class List: Sendable {
        private let stream = AsyncStream<(String, Int)>.makeStream()
        func append(_ name: String, _ port: Int) { stream.continuation.yield((name, port)) }
        func wait(count: Int) async -> [(String, Int)] {
            var out: [(String, Int)] = []
            for await item in stream.stream {
                out.append(item)
                if out.count == count { break }
            }
            return out
        }
    }
}
