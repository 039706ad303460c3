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

/// The HTTP long-polling fallback: the relay's session routes, and agents syncing over them.
@Suite(.serialized)
struct LongPollingTests {
    /// A relay whose polls wait at most 2 s and whose idle sessions expire after 1 s.
    static var relayConfiguration: RelayConfiguration {
        var configuration = RelayConfiguration()
        configuration.pollWaitSeconds = 2
        configuration.pollSessionTimeoutSeconds = 1
        return configuration
    }

    struct Answer {
        let status: Int
        let headers: [String: String]
        let body: String
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
        var lines: [String] { body.split(separator: "\n").map(String.init) }
        var batch: Int? { headers["Kanban-Poll-Batch"].flatMap(Int.init) }
    }

    func call(_ method: String, _ url: String, token: String?, body: Data? = nil) async throws -> Answer {
        var request = URLRequest(url: URL(string: url)!, timeoutInterval: 15)
        request.httpMethod = method
        request.httpBody = body
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var headers: [String: String] = [:]
        for (key, value) in http.allHeaderFields { headers["\(key)"] = "\(value)" }
        return Answer(status: http.statusCode, headers: headers, body: String(decoding: data, as: UTF8.self))
    }

    func types(_ answer: Answer) -> [String] {
        answer.lines.map { line in
            ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])?["type"] as? String ?? "?"
        }
    }

    @Test func sessionsCarryTheProtocolInNumberedBatchesAndResendALostOne() async throws {
        // This test's session must not expire between its requests, which can be seconds apart
        // when the whole suite runs at once on two cores; expiry is the next test's subject.
        var configuration = Self.relayConfiguration
        configuration.pollSessionTimeoutSeconds = 60
        let cluster = try await SyncCluster(agents: 0, relayConfiguration: configuration)
        try await cluster.whileRunning {
            let base = "http://127.0.0.1:\(cluster.relayPort.withLock { $0 })/sync/poll"

            // A session needs a valid token, like the WebSocket.
            let anonymous = try await call("POST", base, token: nil)
            #expect(anonymous.status == 401 && anonymous.body.contains("token_missing"), "\(anonymous.body)")
            #expect(try await call("POST", base, token: "kb1.bogus.sig").status == 401)

            let opened = try await call("POST", base, token: cluster.token)
            #expect(opened.status == 201, "\(opened.body)")
            let session = try #require(opened.json["session"] as? String)
            #expect(opened.json["wait"] as? Int == 2)
            let url = base + "/" + session
            // Another token cannot use the session.
            #expect(try await call("GET", url + "?after=0", token: "kb1.bogus.sig").status == 401)

            // hello, then the first poll brings welcome; asking again after 0 (the answer was
            // "lost") gets the same batch again.
            let replica = ReplicaID("pollreplica1")!
            let hello = SyncMessage.hello(.init(replica: replica, cursors: [:], client: "test"))
            #expect(try await call("POST", url, token: cluster.token, body: Data(hello.text.utf8)).status == 204)
            let first = try await call("GET", url + "?after=0", token: cluster.token)
            #expect(first.status == 200 && first.batch == 1, "\(first.status) \(first.body)")
            #expect(types(first).first == "welcome", "\(first.body)")
            let again = try await call("GET", url + "?after=0", token: cluster.token)
            #expect(again.batch == 1 && again.body == first.body)

            // A push is stored and acked; the ack comes in the next batch.
            var author = Author(replica: replica)
            let board = EntityID.make()
            let op = author.make(.createBoard(title: "Polled"), board: board, nowMillis: 1_000)
            let push = SyncMessage.pushText(encodedOperations: [op.jsonBytes()])
            #expect(try await call("POST", url, token: cluster.token, body: Data(push.utf8)).status == 204)
            let second = try await call("GET", url + "?after=1", token: cluster.token)
            #expect(second.batch == 2 && types(second).contains("ack"), "\(second.body)")
            let stored = try await call("GET", "http://127.0.0.1:\(cluster.relayPort.withLock { $0 })/health/websocket", token: nil)
            #expect(stored.json["logOperations"] as? Int == 1 && stored.json["pollSessions"] as? Int == 1, "\(stored.body)")

            // Nothing to send: the poll waits, then answers an empty batch with the same number.
            let started = ContinuousClock.now
            let empty = try await call("GET", url + "?after=2", token: cluster.token)
            #expect(empty.status == 200 && empty.batch == 2 && empty.body.isEmpty)
            #expect(ContinuousClock.now - started >= .milliseconds(1_500), "the poll should have waited for the relay's wait")

            // A poll out of order ends the session.
            let skipped = try await call("GET", url + "?after=7", token: cluster.token)
            #expect(skipped.status == 409 && skipped.body.contains("poll_out_of_order"), "\(skipped.body)")
            let gone = try await call("GET", url + "?after=2", token: cluster.token)
            #expect(gone.status == 404 && gone.body.contains("poll_session_unknown"), "\(gone.body)")
        }
    }

    @Test func badMessagesCloseTheSessionAndIdleSessionsExpire() async throws {
        // Sessions expire after 5 s here, not 1: in a loaded CI run the 1 MiB post below came
        // more than 1 s after its session opened, which had expired by then (404, not 413).
        var configuration = Self.relayConfiguration
        configuration.pollSessionTimeoutSeconds = 5
        let cluster = try await SyncCluster(agents: 0, relayConfiguration: configuration)
        try await cluster.whileRunning {
            let port = cluster.relayPort.withLock { $0 }
            let base = "http://127.0.0.1:\(port)/sync/poll"
            func open() async throws -> String {
                let opened = try await call("POST", base, token: cluster.token)
                return base + "/" + (try #require(opened.json["session"] as? String))
            }

            // Not JSON: the relay queues an error and closes, as it would close a WebSocket (4002).
            let broken = try await open()
            let garbage = try await call("POST", broken, token: cluster.token, body: Data("not json".utf8))
            #expect(garbage.status == 410, "\(garbage.status) \(garbage.body)")
            #expect(garbage.json["close"] as? Int == Int(SyncCloseCode.badMessage), "\(garbage.body)")

            // Larger than a message may be: 413 with what to do.
            let large = try await open()
            let oversized = try await call("POST", large, token: cluster.token, body: Data(repeating: UInt8(ascii: "a"), count: (1 << 20) + 1))
            #expect(oversized.status == 413 && oversized.body.contains("message_too_large"), "\(oversized.status) \(oversized.body)")

            // Sessions nobody polls expire and leave the hub.
            let health = "http://127.0.0.1:\(port)/health/websocket"
            try await eventually("idle sessions expire", timeout: .seconds(20)) {
                let answer = try await call("GET", health, token: nil)
                return answer.json["pollSessions"] as? Int == 0 && answer.json["connections"] as? Int == 0
            }
            #expect(try await call("GET", large + "?after=0", token: cluster.token).status == 404)
        }
    }

    @Test func aLongPollingAgentSyncsLiveBothWaysAndConvergesAfterOfflineChanges() async throws {
        let cluster = try await SyncCluster(agents: 2)
        try await cluster.whileRunning {
            try await cluster.connect(0, transport: .webSocket)
            try await cluster.connect(1, transport: .longPolling)
            let (a, b) = (cluster.agents[0], cluster.agents[1])
            let (seenByA, seenByB) = (EventRecorder(a), EventRecorder(b))
            try await eventually("B is connected over long-polling") {
                b.syncStatus.state == .connected && b.syncStatus.transport == "long-polling"
            }
            #expect(b.syncStatus.compression?.contains("long-polling") == true)

            let board = try await a.createBoard(title: "Polled").id
            guard case .column(let column) = try await a.createColumn(board: board, title: "Todo", after: nil) else {
                throw TestError("expected a column")
            }
            _ = try await a.createTask(column: column.id, title: "from A", description: nil, after: nil)
            try await eventually("B sees A's task live") { seenByB.has("task:created") { taskTitle($0) == "from A" } }
            _ = try await b.createTask(column: column.id, title: "from B", description: nil, after: nil)
            try await eventually("A sees B's task live") { seenByA.has("task:created") { taskTitle($0) == "from B" } }

            // B offline for 300 changes while A makes 50; both converge once B is back.
            await cluster.disconnect(1)
            for i in 0..<300 { _ = try await b.createTask(column: column.id, title: "b\(i)", description: nil, after: nil) }
            for i in 0..<50 { _ = try await a.createTask(column: column.id, title: "a\(i)", description: nil, after: nil) }
            try await cluster.connect(1, transport: .longPolling)
            try await cluster.waitForConvergence(board: board)
            #expect(try a.store.document(board)?.columns.first?.tasks.count == 352)

            // A relay restart: B reconnects by itself, over long-polling again.
            await cluster.stopRelay()
            _ = try await b.createTask(column: column.id, title: "during the restart", description: nil, after: nil)
            try await cluster.startRelay()
            try await cluster.waitForConvergence(board: board)
            #expect(try a.store.document(board)?.columns.first?.tasks.contains { $0.title == "during the restart" } == true)
            #expect(b.syncStatus.transport == "long-polling")
        }
    }
}
