import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KanbanAgent
import KanbanModel
import KanbanProtocol
import KanbanRelay
import KanbanStore
import Synchronization
import Testing

/// Collects the events an agent's hub publishes (what its local WebSocket clients would see).
final class EventRecorder: Sendable {
    typealias Event = (type: String, origin: String, entity: EntitySnapshot)
    final class Box: Sendable { let list = Mutex<[Event]>([]) }
    let box = Box()
    let task: Task<Void, Never>

    init(_ agent: Agent) {
        let (_, stream) = agent.hub.subscribe(board: nil)
        let box = self.box
        task = Task {
            for await message in stream {
                guard case .changes(let changes) = message else { continue }
                box.list.withLock { list in
                    for change in changes.map(\.change) {
                        list.append((LocalEvent.name(of: change.operation.action.kind), change.local ? "local" : "remote", change.entity))
                    }
                }
            }
        }
    }

    func has(_ type: String, remote: Bool = true, where match: (EntitySnapshot) -> Bool = { _ in true }) -> Bool {
        box.list.withLock { $0.contains { $0.type == type && ($0.origin == "remote") == remote && match($0.entity) } }
    }

    deinit { task.cancel() }
}

func taskTitle(_ entity: EntitySnapshot) -> String? {
    if case .task(let t) = entity { return t.title }
    return nil
}

@Suite(.serialized)
struct SyncTests {
    @Test func everyKindOfChangeReachesTheOtherAgentsLive() async throws {
        let cluster = try await SyncCluster(agents: 3)
        try await cluster.whileRunning {
            for i in 0..<3 { try await cluster.connect(i) }
            let (a, b, c) = (cluster.agents[0], cluster.agents[1], cluster.agents[2])
            let recorders = [EventRecorder(b), EventRecorder(c)]

            let board = try await a.createBoard(title: "Shared").id
            let todo = try await a.createColumn(board: board, title: "Todo", after: nil)
            guard case .column(let todoColumn) = todo else { throw TestError("expected a column") }
            let done = try await a.createColumn(board: board, title: "Done", after: todoColumn.id)
            guard case .column(let doneColumn) = done else { throw TestError("expected a column") }
            guard case .task(let task) = try await a.createTask(column: todoColumn.id, title: "Write spec", description: nil, after: nil) else {
                throw TestError("expected a task")
            }
            for r in recorders {
                try await eventually("task:created reaches the others") { r.has("task:created") { taskTitle($0) == "Write spec" } }
            }
            _ = try await a.updateTask(task.id, title: "Write the spec", description: "v1")
            _ = try await a.moveTask(task.id, to: doneColumn.id, after: nil)
            _ = try await a.deleteTask(task.id)
            _ = try await a.restoreTask(task.id)
            _ = try await a.deleteColumn(todoColumn.id)
            for r in recorders {
                for type in ["board:created", "column:created", "task:updated", "task:moved", "task:deleted", "task:restored", "column:deleted"] {
                    try await eventually("\(type) reaches the others") { r.has(type) }
                }
            }
            // B's own edit reaches A and C; nobody gets an echo of its own operation as remote.
            _ = try await b.updateTask(task.id, title: "Edited by B", description: nil)
            try await eventually("B's edit reaches C") { recorders[1].has("task:updated") { taskTitle($0) == "Edited by B" } }
            #expect(!recorders[0].has("task:updated") { taskTitle($0) == "Edited by B" }, "B must not receive its own edit as remote")
            try await cluster.waitForConvergence(board: board)
            var fromB = try b.document(board), fromC = try c.document(board)
            (fromB.version, fromC.version) = (0, 0)
            #expect(fromB == fromC)
        }
    }

    /// Acknowledgments are recorded and written by the next transaction; with no further edit
    /// they still leave the outbox table shortly (the session's flush loop), not only when
    /// something reads the outbox count.
    @Test func acknowledgmentsAreWrittenWithoutAnotherEdit() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            let a = cluster.agents[0]
            let board = try await a.createBoard(title: "Acknowledged").id
            for i in 1...5 { _ = try await a.renameBoard(board, title: "Acknowledged \(i)") }
            // `outboxJSON` reads the table as it is, without writing recorded acknowledgments first.
            try await eventually("the acknowledged operations leave the outbox table") {
                try a.store.outboxJSON(after: 0, limit: 100).isEmpty
            }
            #expect(try a.store.cursors()[board] == 6)
        }
    }

    @Test func anAgentThatWasOfflineFor1000ChangesConverges() async throws {
        let cluster = try await SyncCluster(agents: 3)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            try await cluster.connect(1)
            let (a, b, c) = (cluster.agents[0], cluster.agents[1], cluster.agents[2])
            let board = try await a.createBoard(title: "Shared").id
            guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil) else { throw TestError("column") }
            try await cluster.connect(2)
            try await cluster.waitForConvergence(board: board)
            await cluster.disconnect(2)

            // C works offline: 1,000 changes, all queued.
            var mine: [EntityID] = []
            var live: [EntityID] = []
            for i in 0..<1_000 {
                if i % 4 == 0 || live.isEmpty {
                    guard case .task(let t) = try await c.createTask(column: column.id, title: "C \(i)", description: nil, after: live.last) else { continue }
                    mine.append(t.id)
                    live.append(t.id)
                } else if i % 4 == 1 {
                    _ = try await c.updateTask(mine.randomElement()!, title: "C edit \(i)", description: nil)
                } else if i % 4 == 2 {
                    _ = try await c.moveTask(live.randomElement()!, to: column.id, after: nil)
                } else {
                    let victim = live.remove(at: Int.random(in: 0..<live.count))
                    _ = try await c.deleteTask(victim)
                }
            }
            #expect(try c.store.outboxCount() == 1_000)
            // Meanwhile A and B change the same board, including inserts at the same spot.
            for i in 0..<50 {
                _ = try await a.createTask(column: column.id, title: "A \(i)", description: nil, after: nil)
                _ = try await b.createTask(column: column.id, title: "B \(i)", description: nil, after: nil)
            }
            try await cluster.connect(2)
            try await cluster.waitForConvergence(board: board, timeout: .seconds(60))
            let doc = try a.document(board)
            let titles = Set(doc.columns.flatMap(\.tasks).map(\.title) + doc.trash.map(\.title))
            #expect(titles.contains("A 49") && titles.contains("B 0"))
            let ids = Set(doc.columns.flatMap(\.tasks).map(\.id) + doc.trash.map(\.id))
            #expect(ids.isSuperset(of: mine), "every task C made offline is on A")
            #expect(Set(doc.trash.map(\.id)) == Set(mine).subtracting(live), "exactly C's deletions are in the trash")
            #expect(doc.columns.flatMap(\.tasks).count + doc.trash.count == 100 + mine.count)
        }
    }

    @Test func aRelayRestartLosesNothingAndAgentsReconnectByThemselves() async throws {
        let cluster = try await SyncCluster(agents: 2)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            try await cluster.connect(1)
            let (a, b) = (cluster.agents[0], cluster.agents[1])
            let board = try await a.createBoard(title: "Shared").id
            guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil) else { throw TestError("column") }
            try await cluster.waitForConvergence(board: board)
            await cluster.stopRelay()
            for i in 0..<20 { _ = try await a.createTask(column: column.id, title: "while down \(i)", description: nil, after: nil) }
            try await eventually("A reports the link down") { a.syncStatus.state != .connected }
            #expect(try a.store.outboxCount() == 20)
            try await cluster.startRelay()
            try await cluster.waitForConvergence(board: board)
            #expect(try b.document(board).columns.first?.tasks.count == 20)
            #expect(a.syncStatus.state == .connected)
        }
    }

    @Test func agentsBehindTheCompactionHorizonCatchUpFromASnapshot() async throws {
        var relayConfiguration = RelayConfiguration()
        relayConfiguration.compactionThreshold = 60
        relayConfiguration.compactionKeep = 10
        let cluster = try await SyncCluster(agents: 3, relayConfiguration: relayConfiguration)
        try await cluster.whileRunning {
            let (a, b, c) = (cluster.agents[0], cluster.agents[1], cluster.agents[2])
            try await cluster.connect(0)
            try await cluster.connect(1)
            let board = try await a.createBoard(title: "Long history").id
            guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil) else { throw TestError("column") }
            try await cluster.waitForConvergence(board: board, among: [0, 1])
            await cluster.disconnect(1)
            // B works offline while A's history grows past the horizon.
            let offline = try await b.createTask(column: column.id, title: "B offline", description: nil, after: nil)
            for i in 0..<150 {
                guard case .task(let t) = try await a.createTask(column: column.id, title: "A \(i)", description: nil, after: nil) else { continue }
                if i % 3 == 0 { _ = try await a.updateTask(t.id, title: "A \(i) edited", description: nil) }
            }
            try await eventually("A's work reaches the relay") { try a.store.outboxCount() == 0 }
            let relay = try #require(cluster.relayRef.withLock { $0 })
            // Compaction runs in the background, after the commit that crossed the threshold.
            try await eventually("the relay compacted the board") { await relay.hub.compactions > 0 }
            #expect(try await relay.storage.snapshot(board: board) != nil)
            // B (cursor behind the horizon) and C (never synced) catch up through the snapshot.
            try await cluster.connect(1)
            try await cluster.connect(2)
            try await cluster.waitForConvergence(board: board)
            guard case .task(let offlineTask) = offline else { throw TestError("task") }
            #expect(try c.document(board).columns[0].tasks.contains { $0.id == offlineTask.id })
            #expect(try c.store.stateFromLog(board) == c.store.stateFromDisk(board), "snapshot + log replays to the tables")
            #expect(try c.document(board).columns[0].tasks.count == 151)
        }
    }

    /// Compaction runs beside the board's lock, so it can fold the operations a catch-up is
    /// about to read after the catch-up looked at the snapshot. The catch-up goes on from the
    /// newer snapshot on the same link: the agent converges without its link failing.
    @Test func aCatchUpThatMeetsAFreshCompactionGoesOnFromTheNewSnapshot() async throws {
        let racing = CompactionBeforeRead()
        var relayConfiguration = RelayConfiguration()
        relayConfiguration.compactionThreshold = 0  // only the compaction this test sets off
        let cluster = try await SyncCluster(agents: 2, relayConfiguration: relayConfiguration) { racing.wrap($0) }
        try await cluster.whileRunning {
            let (a, c) = (cluster.agents[0], cluster.agents[1])
            try await cluster.connect(0)
            let board = try await a.createBoard(title: "Racing").id
            guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil) else { throw TestError("column") }
            for i in 0..<100 { _ = try await a.createTask(column: column.id, title: "T \(i)", description: nil, after: nil) }
            try await eventually("A's work reaches the relay") { try a.store.outboxCount() == 0 }
            // A leaves (its room closes), so the next read of the board's operations is C's catch-up.
            await cluster.disconnect(0)
            racing.arm(board: board, through: 80)
            try await cluster.connect(1)
            try await eventually("C has every task") { (try? c.document(board))?.columns.first?.tasks.count == 100 }
            #expect(racing.fired, "the compaction ran between the catch-up's snapshot and its operations")
            let failures = c.syncStatus.attempts.map(\.message)
            #expect(failures.isEmpty, "C's first link caught up")
            #expect(try c.store.digest(board) == a.store.digest(board))
        }
    }

    @Test func presenceIsRelayedLiveAndExpiresWithTheConnection() async throws {
        let cluster = try await SyncCluster(agents: 2)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            try await cluster.connect(1)
            let (a, b) = (cluster.agents[0], cluster.agents[1])
            let board = try await a.createBoard(title: "Shared").id
            guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil),
                  case .task(let task) = try await a.createTask(column: column.id, title: "T", description: nil, after: nil)
            else { throw TestError("setup") }
            try await cluster.waitForConvergence(board: board)
            final class Seen: Sendable { let list = Mutex<[SyncMessage.Presence]>([]) }
            let seen = Seen()
            let (_, stream) = b.hub.subscribe(board: board)
            let watcher = Task {
                for await message in stream { if case .presence(let p) = message { seen.list.withLock { $0.append(p) } } }
            }
            defer { watcher.cancel() }
            // A's web page opens the board and starts editing the task (what EventStream does).
            a.updatePresence(board: board, client: 1, viewing: true, editing: task.id)
            try await eventually("B sees A editing the task") {
                seen.list.withLock { $0.contains { $0.viewing && $0.editing == task.id && $0.replica == a.store.replicaID } }
            }
            #expect(try a.store.operationCount() == b.store.operationCount(), "presence is never written to the op log")
            // A's link dies: B is told A left.
            await cluster.disconnect(0)
            try await eventually("B sees A leave") {
                seen.list.withLock { $0.last.map { !$0.viewing && $0.replica == a.store.replicaID } ?? false }
            }
        }
    }

    @Test func agentAndRelayExposePrometheusMetrics() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            try await cluster.connect(0)
            let a = cluster.agents[0]
            let board = try await a.createBoard(title: "Metrics").id
            _ = try await a.createColumn(board: board, title: "Todo", after: nil)
            try await eventually("operations reach the relay") { try a.store.outboxCount() == 0 && a.syncStatus.state == .connected }
            func scrape(_ port: Int) async throws -> String {
                let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
                #expect((response as? HTTPURLResponse)?.value(forHTTPHeaderField: "Content-Type")?.hasPrefix("text/plain") == true)
                return String(decoding: data, as: UTF8.self)
            }
            let agentPort = try #require(cluster.syncServers.withLock { $0[0]?.port })
            let agentText = try await scrape(agentPort)
            #expect(agentText.contains("kanban_operations_authored_total 2"), "\(agentText)")
            #expect(agentText.contains("kanban_link_connects_total 1"))
            #expect(agentText.contains("kanban_link_up 1"))
            #expect(agentText.contains("kanban_queued_operations 0"))
            #expect(agentText.contains("kanban_operation_commit_seconds_count 2"))
            let relayText = try await scrape(cluster.relayPort.withLock { $0 })
            #expect(relayText.contains("kanban_relay_connections 1"), "\(relayText)")
            #expect(relayText.contains("kanban_relay_log_operations 2"))
            #expect(relayText.contains("kanban_relay_slow_closes_total 0"))

            // Traffic counters: message payload bytes and messages, both directions, on both sides.
            let linkNames = ["kanban_link_bytes_sent_total", "kanban_link_bytes_received_total",
                             "kanban_link_messages_sent_total", "kanban_link_messages_received_total"]
            let relayNames = ["kanban_relay_bytes_sent_total", "kanban_relay_bytes_received_total",
                              "kanban_relay_messages_sent_total", "kanban_relay_messages_received_total"]
            func values(_ text: String, _ names: [String]) -> [Double] {
                names.map { name in
                    text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
                        .flatMap { Double($0.split(separator: " ")[1]) } ?? -1
                }
            }
            #expect(agentText.contains("# HELP kanban_link_bytes_sent_total Payload bytes of WebSocket messages sent to the relay, before compression."))
            #expect(relayText.contains("# HELP kanban_relay_bytes_sent_total Payload bytes of WebSocket messages sent to agents, before compression."))
            // Once nothing is in flight, what one side sent is what the other received (one agent).
            func quiescent() async throws -> (agent: [Double], relay: [Double]) {
                var last: ([Double], [Double]) = ([], [])
                try await eventually("agent and relay agree on the traffic between them") {
                    let agent = values(try await scrape(agentPort), linkNames)
                    let relay = values(try await scrape(cluster.relayPort.withLock { $0 }), relayNames)
                    last = (agent, relay)
                    return agent[0] == relay[1] && agent[1] == relay[0] && agent[2] == relay[3] && agent[3] == relay[2]
                }
                return last
            }
            let before = try await quiescent()
            // hello + push from the agent; welcome, catch-up and ack from the relay.
            #expect(before.agent.allSatisfy { $0 > 0 }, "\(linkNames) = \(before.agent)")
            #expect(before.relay.allSatisfy { $0 > 0 }, "\(relayNames) = \(before.relay)")
            #expect(before.agent[0] > before.agent[2] * 10, "bytes, not messages: \(before.agent)")

            let title = String(repeating: "x", count: 400)
            for i in 0..<5 { _ = try await a.createColumn(board: board, title: "\(title) \(i)", after: nil) }
            try await eventually("the new columns reach the relay") { try a.store.outboxCount() == 0 }
            let after = try await quiescent()
            // Five pushes of at least 400 bytes each went out, and acks came back.
            #expect(after.agent[0] - before.agent[0] >= 5 * 400, "\(before.agent) -> \(after.agent)")
            #expect(after.agent[2] > before.agent[2])
            #expect(after.agent[1] > before.agent[1] && after.agent[3] > before.agent[3])
            #expect(after.relay[1] - before.relay[1] >= 5 * 400, "\(before.relay) -> \(after.relay)")
        }
    }

    /// The board's status panel shows the round-trip time: it must be known as soon as the link
    /// is up, not one probe interval (10 s) later.
    @Test func roundTripTimeIsKnownRightAfterConnecting() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            let a = cluster.agents[0]
            let start = ContinuousClock.now
            try await cluster.connect(0)
            try await eventually("the link is up") { a.syncStatus.state == .connected }
            try await eventually("a round-trip time is measured", timeout: .seconds(5)) { a.syncStatus.roundTripMs != nil }
            #expect(ContinuousClock.now - start < SyncConfiguration(relayURL: "", token: "").probeInterval)
            #expect(a.syncStatus.clockSkewMs != nil)
        }
    }

    @Test func tokensAreEnforced() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            let port = cluster.relayPort.withLock { $0 }
            // No token / bad token: 401 with a reason, before any upgrade.
            for header in [nil, "Bearer kb1.bogus.sig", "Bearer " + cluster.token.dropLast(2) + "xx"] as [String?] {
                var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/sync")!)
                request.setValue(header, forHTTPHeaderField: "Authorization")
                let (data, response) = try await URLSession.shared.data(for: request)
                #expect((response as? HTTPURLResponse)?.statusCode == 401)
                #expect(String(decoding: data, as: UTF8.self).contains("token_"))
            }
            // The same on a real WebSocket upgrade request: 401 with the reason, never a 101.
            for (token, code) in [(nil, "token_missing"), ("kb1.bogus.sig", "token_invalid"), (String(cluster.token.dropLast(2)) + "xx", "token_invalid")]
                as [(String?, String)] {
                let answer = try await upgradeAnswer(cluster.relayURL, token: token)
                #expect(answer.status == 401, "\(answer.status) \(answer.body)")
                #expect(answer.body.contains(code), "\(answer.body)")
                #expect(answer.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            }
            #expect(try await upgradeAnswer(cluster.relayURL, token: cluster.token).status == 101)
            // A read-only token may read but its pushes change nothing.
            let storage = try SQLiteRelayStorage(path: cluster.relayDirectory.appendingPathComponent("relay.sqlite").path)
            let authority = TokenAuthority(secret: try storage.secret())
            let readOnly = authority.sign(RelayToken(team: "team", write: false))
            let reader = Agent(store: try ReplicaStore.inMemory(), configuration: .init(port: 0))
            let board = try await reader.createBoard(title: "Mine").id
            var config = SyncConfiguration(relayURL: cluster.relayURL, token: readOnly)
            config.backoffCap = .milliseconds(200)
            let server = try await RunningServer.start { onListening in
                buildAgentApplication(agent: reader, logger: quietLogger("a"), services: [SyncClient(agent: reader, configuration: config, logger: quietLogger("s"))],
                                      onListening: onListening)
            }
            try await eventually("the relay refuses the read-only push") { reader.syncStatus.lastError?.contains("read_only") == true }
            #expect(try storage.operationCount() == 0)
            #expect(try reader.store.outboxCount() == 1, "a refused operation stays queued locally")
            // The status says which board's changes were refused, why, and what to do.
            try await eventually("the refusal is in the status") { !reader.syncStatus.refused.isEmpty }
            let refusal = try #require(reader.syncStatus.refused.first)
            #expect(reader.syncStatus.refused.count == 1)
            #expect(refusal.board == board.rawValue && refusal.boardTitle == "Mine" && refusal.code == "read_only", "\(refusal)")
            #expect(refusal.fix.contains("read-write token"), "\(refusal.fix)")
            await server.stop()
            // With a read-write token the queued operation goes through and the refusal is gone.
            var writeConfig = SyncConfiguration(relayURL: cluster.relayURL, token: cluster.token)
            writeConfig.backoffCap = .milliseconds(200)
            let rewritten = try await RunningServer.start { onListening in
                buildAgentApplication(agent: reader, logger: quietLogger("a"), services: [SyncClient(agent: reader, configuration: writeConfig, logger: quietLogger("s"))],
                                      onListening: onListening)
            }
            try await eventually("the queued operation is stored once the token may write") {
                try reader.store.outboxCount() == 0 && reader.syncStatus.refused.isEmpty
            }
            #expect(try storage.operationCount() == 1)
            await rewritten.stop()
            // A token scoped to one board does not see the team's other boards.
            let writer = cluster.agents[0]
            try await cluster.connect(0)
            let visible = try await writer.createBoard(title: "Visible").id
            let hidden = try await writer.createBoard(title: "Hidden").id
            try await eventually("both boards reach the relay") { try writer.store.outboxCount() == 0 }
            let scoped = authority.sign(RelayToken(team: "team", boards: [visible.rawValue]))
            let viewer = Agent(store: try ReplicaStore.inMemory(), configuration: .init(port: 0))
            var scopedConfig = SyncConfiguration(relayURL: cluster.relayURL, token: scoped)
            scopedConfig.backoffCap = .milliseconds(200)
            let viewerServer = try await RunningServer.start { onListening in
                buildAgentApplication(agent: viewer, logger: quietLogger("a"),
                                      services: [SyncClient(agent: viewer, configuration: scopedConfig, logger: quietLogger("s"))], onListening: onListening)
            }
            try await eventually("the scoped agent gets the visible board") { try viewer.store.document(visible) != nil }
            #expect(try viewer.store.document(hidden) == nil)
            #expect(board != visible)
            // A board of its own outside the token's scope: refused and named, while the visible one syncs.
            let local = try await viewer.createBoard(title: "Local only").id
            try await eventually("the scoped agent's own board is refused") {
                viewer.syncStatus.refused.contains { $0.board == local.rawValue && $0.code == "forbidden_board" && $0.boardTitle == "Local only" }
            }
            #expect(viewer.syncStatus.refused.allSatisfy { $0.board == local.rawValue }, "\(viewer.syncStatus.refused)")
            await viewerServer.stop()
        }
    }

    /// The relay's acknowledgments of an agent's own operations reach its local subscribers
    /// (`sync:acked` on the event stream), for the board they belong to: what lets a page clear
    /// its "not on the relay yet" marks.
    @Test func acknowledgmentsReachTheBoardsSubscribers() async throws {
        let cluster = try await SyncCluster(agents: 1)
        try await cluster.whileRunning {
            let agent = cluster.agents[0]
            let board = try await agent.createBoard(title: "Acked").id
            let other = try await agent.createBoard(title: "Elsewhere").id
            let (_, stream) = agent.hub.subscribe(board: board)
            final class Seen: Sendable { let ops = Mutex<[OperationID]>([]); let boards = Mutex<Set<EntityID>>([]) }
            let seen = Seen()
            let reader = Task {
                for await message in stream {
                    guard case .acknowledged(let b, let ops) = message else { continue }
                    seen.boards.withLock { _ = $0.insert(b) }
                    seen.ops.withLock { $0 += ops }
                }
            }
            defer { reader.cancel() }
            guard case .column(let column) = try await agent.createColumn(board: board, title: "Todo", after: nil) else { throw TestError("column") }
            _ = try await agent.createTask(column: column.id, title: "T", description: nil, after: nil)
            _ = try await agent.createColumn(board: other, title: "Not this board", after: nil)
            let expected = try agent.store.operations(board).map(\.id)
            #expect(expected.count == 3)  // board, column, task
            try await cluster.connect(0)
            try await eventually("the board's three operations are acknowledged to its subscriber") {
                Set(seen.ops.withLock { $0 }) == Set(expected)
            }
            try await eventually("everything is acknowledged") { try agent.store.outboxCount() == 0 }
            #expect(seen.boards.withLock { $0 } == [board], "only this board's acknowledgments reach its subscriber")
            #expect(Set(seen.ops.withLock { $0 }) == Set(expected))
        }
    }

    /// A relay that never heard of a board an agent holds a cursor for tells it the head is 0
    /// (it lost the board: see ProcessSyncTests' restored relay), and the agent pushes the board,
    /// but only to a relay of the team it synced the board with: pointed at another team's
    /// relay, it keeps that board to itself.
    @Test func aBoardIsNotHandedToAnotherTeamsRelay() async throws {
        let acme = try await SyncCluster(agents: 1, team: "acme")
        try await acme.whileRunning {
            let other = try await SyncCluster(agents: 0, team: "other")
            try await other.whileRunning {
                let agent = acme.agents[0]
                try await acme.connect(0)
                let board = try await agent.boardWithTasks(2, title: "Acme plans")
                try await eventually("the board reaches acme's relay") {
                    try agent.store.outboxCount() == 0 && agent.syncStatus.cursors[board.rawValue] == 4
                }
                await acme.disconnect(0)

                // The same agent, now with the other team's relay and token, and a board for it.
                let mine = try await agent.createBoard(title: "For the other team").id
                var configuration = SyncConfiguration(relayURL: other.relayURL, token: other.token)
                configuration.backoffCap = .milliseconds(200)
                let server = try await RunningServer.start { onListening in
                    buildAgentApplication(agent: agent, logger: quietLogger("a"),
                                          services: [SyncClient(agent: agent, configuration: configuration, logger: quietLogger("s"))],
                                          onListening: onListening)
                }
                // The relay answers the hello (its head-0 notice for acme's board included) before
                // it reads the push of the new board, so once that is acknowledged, whatever the
                // notice made the agent queue is pushed and acknowledged too before the outbox empties.
                try await eventually("the new board reaches the other relay") {
                    try agent.store.outboxCount() == 0 && agent.syncStatus.team == "other"
                }
                #expect(try agent.store.cursors()[board] == nil, "the cursor from acme's relay is forgotten")
                await server.stop()
                let storage = try SQLiteRelayStorage(path: other.relayDirectory.appendingPathComponent("relay.sqlite").path)
                #expect(try storage.boards(team: "other").map(\.id) == [mine], "acme's board stays off the other team's relay")
                #expect(try storage.team(of: board) == nil)
            }
        }
    }

    /// The relay's data is put back to an older copy, and its log grows back past an agent's
    /// cursor (with other operations) before that agent reconnects: the cursor cannot show that
    /// the relay's history differs (a soak found it), and here neither can the hello's marks
    /// (the relay cannot check them, as for a sequence it compacted; the next test has them
    /// checked). The agent had an edit queued, so it was not settled when the catch-up ended,
    /// and the relay sent it nothing after acknowledging the edit. The digest it compares once
    /// that acknowledgment settles it finds the difference: the relay resends the board, and the
    /// agent pushes back the operations the relay lost.
    @Test func aRestoredRelayWhoseLogGrewPastACursorIsFoundOut() async throws {
        let cluster = try await SyncCluster(agents: 3, wrapStorage: { UncheckedMarks.Storage(log: $0) })
        try await cluster.whileRunning {
            let (a, b, c) = (cluster.agents[0], cluster.agents[1], cluster.agents[2])
            try await cluster.connect(0)
            try await cluster.connect(1)
            let board = try await a.boardWithTasks(3, title: "Restored")  // sequences 1-5
            let column = try #require(try a.document(board).columns.first).id
            try await cluster.waitForConvergence(board: board, among: [0, 1])
            let backup = try await cluster.backUpRelay()
            for i in 0..<3 { _ = try await a.createTask(column: column, title: "late \(i)", description: nil, after: nil) }
            try await eventually("B has the late tasks") { b.syncStatus.cursors[board.rawValue] == 8 }
            await cluster.disconnect(0)
            await cluster.disconnect(1)

            // Back to the copy (head 5); C's four tasks take sequences 6-9, past B's cursor 8.
            try await cluster.restoreRelay(from: backup)
            try await cluster.connect(2)
            try await eventually("C has the board as the copy had it") { (try? c.document(board).columns.first?.tasks.count) == 3 }
            for i in 0..<4 { _ = try await c.createTask(column: column, title: "from C \(i)", description: nil, after: nil) }
            try await eventually("the relay's log is past B's cursor") {
                try c.store.outboxCount() == 0 && c.syncStatus.cursors[board.rawValue] == 9
            }
            _ = try await b.createTask(column: column, title: "B offline", description: nil, after: nil)
            try await cluster.connect(1)
            try await cluster.waitForConvergence(board: board, among: [1, 2])
            let titles = Set(try c.document(board).columns.flatMap(\.tasks).map(\.title))
            #expect(titles.count == 11 && titles.contains("late 2") && titles.contains("from C 0") && titles.contains("B offline"), "\(titles)")
            #expect(b.syncStatus.repairs == 1)
        }
    }

    /// As above, but the operation the agent lacks in the relay's regrown log changes nothing
    /// in its state (a later edit won over it), so digests cannot see it (a soak found one such
    /// delete missing on one agent). The hello names the operation at each cursor; the relay
    /// has another one there, and sends the agent the whole board.
    @Test func aCursorWhoseOperationDiffersFromTheRelaysIsCaughtUpFromTheStart() async throws {
        // C's clock is an hour behind: its offline rename loses to A's later one.
        let cluster = try await SyncCluster(agents: 3, store: { i in
            let clock = i == 2 ? WallClock { WallClock.system.nowMillis() - 3_600_000 } : .system
            return try ReplicaStore.inMemory(configuration: .init(durability: .normal, clock: clock))
        })
        try await cluster.whileRunning {
            let (a, b, c) = (cluster.agents[0], cluster.agents[1], cluster.agents[2])
            for i in 0..<3 { try await cluster.connect(i) }
            let board = try await a.boardWithTasks(1, title: "Marked")  // sequences 1-3
            let task = try #require(try a.document(board).columns.first?.tasks.first).id
            try await cluster.waitForConvergence(board: board)
            let backup = try await cluster.backUpRelay()
            await cluster.disconnect(2)
            _ = try await c.updateTask(task, title: "from C", description: nil)
            let fromCID = try #require(try c.store.queuedOperations(board).last?.id)
            _ = try await a.updateTask(task, title: "v2", description: nil)
            try await eventually("B has A's rename at sequence 4") { b.syncStatus.cursors[board.rawValue] == 4 }
            await cluster.disconnect(0)
            await cluster.disconnect(1)

            // Back to the copy (head 3): C's rename takes sequence 4, where A and B have A's.
            try await cluster.restoreRelay(from: backup)
            try await cluster.connect(2)
            try await eventually("C's rename is at sequence 4") { try c.store.outboxCount() == 0 && c.syncStatus.cursors[board.rawValue] == 4 }
            // A gets the board back to the relay: its rename takes sequence 5.
            try await cluster.connect(0)
            try await eventually("A's rename is on the relay again") { try a.store.outboxCount() == 0 && (a.syncStatus.cursors[board.rawValue] ?? 0) >= 5 }
            try await cluster.connect(1)
            try await eventually("B gets C's rename") { try b.store.contains(fromCID) }
            try await cluster.waitForConvergence(board: board)
            for agent in [a, b, c] {
                #expect(try agent.document(board).columns.first?.tasks.first?.title == "v2", "A's later rename wins everywhere")
            }
            // A and B each came back with a mark the restored relay had not got at their cursor.
            let relay = try #require(cluster.relayRef.withLock { $0 })
            let metrics = await relay.metricsText().split(separator: "\n").filter { $0.hasPrefix("kanban_relay_history_mismatches ") }
            #expect(metrics.compactMap { Double($0.split(separator: " ").last ?? "") } == [2], "\(metrics)")
        }
    }

    @Test func pushingTheSameOperationTwiceReturnsTheFirstSequence() async throws {
        let dir = try temporaryRelayDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let storage = try SQLiteRelayStorage(path: dir.appendingPathComponent("relay.sqlite").path)
        var author = Author(replica: ReplicaID("r1")!)
        let board = EntityID.make()
        let ops = (0..<5).map { i in author.make(i == 0 ? .createBoard(title: "B") : .renameBoard(title: "B\(i)"), board: board, nowMillis: 1_000 + Int64(i)) }
        let first = try await storage.append(ops, team: "t")
        let again = try await storage.append(ops.reversed(), team: "t")
        #expect(first.map { if case .stored(_, _, let seq, true) = $0 { seq } else { -1 } } == [1, 2, 3, 4, 5] as [Int64])
        #expect(Set(again.map { if case .stored(let op, _, let seq, false) = $0 { "\(op)@\(seq)" } else { "new" } })
            == Set(first.map { if case .stored(let op, _, let seq, _) = $0 { "\(op)@\(seq)" } else { "?" } }))
        #expect(try storage.operationCount() == 5)
        let otherTeam = try await storage.append(ops, team: "other")
        #expect(otherTeam.allSatisfy { if case .forbidden = $0 { true } else { false } })
    }
}

/// Relay storage that, once armed, folds a board's operations through a sequence right before
/// the next read of them from below it: a compaction finishing at that moment.
final class CompactionBeforeRead: Sendable {
    private let armed = Mutex<(board: EntityID, through: Int64)?>(nil)
    private let didFire = Atomic<Bool>(false)
    var fired: Bool { didFire.load(ordering: .acquiring) }

    func arm(board: EntityID, through: Int64) { armed.withLock { $0 = (board, through) } }
    func wrap(_ log: SQLiteRelayStorage) -> any RelayStorage { Storage(log: log, owner: self) }

    struct Storage: ForwardingToLog {
        let log: SQLiteRelayStorage
        let owner: CompactionBeforeRead

        func operations(board: EntityID, after: Int64, limit: Int) async throws -> [SyncMessage.Ops.Sequenced] {
            let through = owner.armed.withLock { armed -> Int64? in
                guard let target = armed, target.board == board, after < target.through else { return nil }
                armed = nil
                return target.through
            }
            if let through {
                try await log.compact(board: board, through: through)
                owner.didFire.store(true, ordering: .releasing)
            }
            return try await log.operations(board: board, after: after, limit: limit)
        }
    }
}

/// Relay storage that cannot say which operation has a sequence, so hello marks go unchecked.
enum UncheckedMarks {
    struct Storage: ForwardingToLog {
        let log: SQLiteRelayStorage
        func operationID(board: EntityID, seq: Int64) async throws -> OperationID? { nil }
    }
}

/// Relay storage that passes every call to the SQLite log: a test's wrapper conforms and
/// implements only the calls it changes.
protocol ForwardingToLog: RelayStorage {
    var log: SQLiteRelayStorage { get }
}

extension ForwardingToLog {
    func append(_ ops: [BoardOperation], team: String) async throws -> [AppendResult] { try await log.append(ops, team: team) }
    func operations(board: EntityID, after: Int64, limit: Int) async throws -> [SyncMessage.Ops.Sequenced] {
        try await log.operations(board: board, after: after, limit: limit)
    }
    func boards(team: String) async throws -> [SyncMessage.BoardHead] { try log.boards(team: team) }
    func head(of board: EntityID) async throws -> Int64 { try log.head(of: board) }
    func team(of board: EntityID) async throws -> String? { try log.team(of: board) }
    func secret() async throws -> Data { try log.secret() }
    func operationCount() async throws -> Int { try log.operationCount() }
    func snapshot(board: EntityID) async throws -> (seq: Int64, state: BoardSnapshot)? { try await log.snapshot(board: board) }
    func snapshotSeq(board: EntityID) async throws -> Int64? { try await log.snapshotSeq(board: board) }
    func compact(board: EntityID, through seq: Int64) async throws { try await log.compact(board: board, through: seq) }
    func close() async throws { try log.close() }
    func recordIssued(_ token: IssuedToken) async throws { try log.recordIssued(token) }
    func issuedTokens() async throws -> [IssuedToken] { try log.issuedTokens() }
    func revoke(tokenID: String) async throws -> RevokeResult { try log.revoke(tokenID: tokenID) }
    func revokedTokenIDs() async throws -> Set<String> { try log.revokedTokenIDs() }
}
