import Foundation
import HTTPTypes
import KanbanAgent
import KanbanModel
import KanbanStore
import Testing

/// `GET /api/events?board=ID`: a snapshot, then every change of that board, exactly once.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct EventStreamTests {
    /// Opens the event stream as the agent's own page would (no `Origin` needed), checks the
    /// upgrade, reads the snapshot and hands both to `body`.
    static func subscribe<T: Sendable>(
        _ server: AgentServer, board: String, _ body: (RawWebSocket, JSONValue) async throws -> T
    ) async throws -> T {
        try await RawWebSocket.connect(port: server.port, path: "/api/events?board=\(board)", host: "127.0.0.1:\(server.port)") { ws in
            let head = try await ws.handshake()
            try #require(head.status == 101, "upgrade refused: \(head.status) \(head.body)")
            let snapshot = try await ws.nextJSON()
            try #require(snapshot["type"]?.string == "snapshot", "first message: \(snapshot)")
            return try await body(ws, snapshot)
        }
    }

    /// The next change event, skipping sync-status and presence messages; never one the snapshot
    /// at `since` already includes.
    static func nextChange(_ ws: RawWebSocket, after since: Int64, sourceLocation: SourceLocation = #_sourceLocation) async throws -> JSONValue {
        while true {
            let message = try await ws.nextJSON()
            let type = message["type"]?.string ?? ""
            if type == "sync:status" || type == "presence" { continue }
            let version = try #require(message["version"]?.int, "\(message)", sourceLocation: sourceLocation)
            #expect(version > since, "event \(type) v\(version) is not newer than \(since)", sourceLocation: sourceLocation)
            return message
        }
    }

    @Test func firstMessageIsTheBoardDocumentAndSyncStatus() async throws {
        let document = try OpenAPIDocument.load()
        try await withAgent { server in
            let board = try await server.createBoard("Streamed")
            let column = try await server.createColumn(board: board, "Todo")
            let task = try await server.createTask(column: column, "Existing")
            let current = try await server.board(board)
            try await Self.subscribe(server, board: board) { _, snapshot in
                #expect(snapshot["version"] == current["version"])
                #expect(snapshot["board"] == current, "the snapshot is the board document")
                #expect(snapshot["sync"]?["state"]?.string == "disabled")
                // Without a relay nothing waits for one: nothing is pending.
                #expect(snapshot["pending"]?.array?.isEmpty == true, "\(snapshot)")
                #expect(document.violations(of: snapshot, against: document.schema("EventSnapshotMessage")) == [])
            }
            // With a relay configured (out of reach here), the three changes wait for it: each with what it changes.
            server.agent.updateSyncStatus { $0.state = .reconnecting }
            try await Self.subscribe(server, board: board) { _, snapshot in
                #expect(snapshot["pending"]?.array?.compactMap { $0["entity"]?.string } == [board, column, task], "\(snapshot)")
                #expect(snapshot["pending"]?.array?.allSatisfy { $0["op"]?.string?.contains(":") == true } == true)
                #expect(document.violations(of: snapshot, against: document.schema("EventSnapshotMessage")) == [])
            }
        }
    }

    @Test func taskChangesArriveInOrderCarryingTheFullTask() async throws {
        let document = try OpenAPIDocument.load()
        try await withAgent { server in
            let board = try await server.createBoard("Streamed")
            let todo = try await server.createColumn(board: board, "Todo")
            let done = try await server.createColumn(board: board, "Done", after: todo)
            try await Self.subscribe(server, board: board) { ws, snapshot in
                var last = try #require(snapshot["version"]?.int)
                let created = try await server.expectJSON(.post, "/api/columns/\(todo)/tasks",
                                                          json: #"{"title": "Write tests", "description": "all of them"}"#, status: .created)
                let task = try #require(created["id"]?.string)
                let steps: [(type: String, reply: JSONValue)] = [
                    ("task:created", created),
                    ("task:updated", try await server.expectJSON(.patch, "/api/tasks/\(task)", json: #"{"title": "Write more tests"}"#)),
                    ("task:moved", try await server.expectJSON(.post, "/api/tasks/\(task)/move", json: #"{"columnId": "\#(done)"}"#)),
                    ("task:deleted", try await server.expectJSON(.delete, "/api/tasks/\(task)")),
                    ("task:restored", try await server.expectJSON(.post, "/api/tasks/\(task)/restore")),
                ]
                let finalVersion = try #require(try await server.expectJSON(.get, "/health")["version"]?.int)
                for step in steps {
                    let event = try await Self.nextChange(ws, after: last)
                    #expect(event["type"]?.string == step.type)
                    let version = try #require(event["version"]?.int)
                    #expect(version > last, "versions increase")
                    last = version
                    #expect(event["origin"]?.string == "local")
                    #expect(event["boardId"]?.string == board)
                    #expect(event["opId"]?.string?.hasPrefix(server.agent.store.replicaID.rawValue + ":") == true)
                    #expect(event["task"] == step.reply, "\(step.type) carries the task as the API returned it")
                    #expect(event["column"] == nil && event["board"] == nil)
                    #expect(document.violations(of: event, against: document.schema("ChangeEventMessage")) == [], "\(step.type)")
                }
                #expect(last == finalVersion, "one event per change, the last at the agent's version")
                #expect(steps[2].reply["columnId"]?.string == done)
                #expect(steps[3].reply["deleted"]?.bool == true)
                #expect(steps[4].reply["deleted"]?.bool == false)
            }
        }
    }

    @Test func columnAndBoardChangesAreStreamed() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Streamed")
            let todo = try await server.createColumn(board: board, "Todo")
            try await Self.subscribe(server, board: board) { ws, snapshot in
                let since = try #require(snapshot["version"]?.int)
                let created = try await server.expectJSON(.post, "/api/boards/\(board)/columns", json: #"{"title": "Done"}"#, status: .created)
                let done = try #require(created["id"]?.string)
                let calls: [(type: String, key: String, reply: JSONValue)] = [
                    ("column:created", "column", created),
                    ("column:updated", "column", try await server.expectJSON(.patch, "/api/columns/\(done)", json: #"{"title": "Finished"}"#)),
                    ("column:moved", "column", try await server.expectJSON(.patch, "/api/columns/\(done)", json: #"{"after": "\#(todo)"}"#)),
                    ("column:deleted", "column", try await server.expectJSON(.delete, "/api/columns/\(done)")),
                    ("column:restored", "column", try await server.expectJSON(.post, "/api/columns/\(done)/restore")),
                    ("board:updated", "board", try await server.expectJSON(.patch, "/api/boards/\(board)", json: #"{"title": "Renamed"}"#)),
                ]
                for call in calls {
                    let event = try await Self.nextChange(ws, after: since)
                    #expect(event["type"]?.string == call.type)
                    if call.key == "column" {
                        #expect(event["column"] == call.reply, "\(call.type)")
                    } else {
                        #expect(event["board"] == .object(["id": .string(board), "title": .string("Renamed")]))
                    }
                }
            }
        }
    }

    @Test func syncStatusChangesAreStreamed() async throws {
        let document = try OpenAPIDocument.load()
        try await withAgent { server in
            let board = try await server.createBoard("Streamed")
            try await Self.subscribe(server, board: board) { ws, _ in
                server.agent.updateSyncStatus {
                    $0.state = .reconnecting
                    $0.relayURL = "ws://127.0.0.1:1/sync"
                    $0.lastError = "connection refused"
                }
                let message = try await ws.nextJSON()
                #expect(message["type"]?.string == "sync:status")
                #expect(message["sync"]?["state"]?.string == "reconnecting")
                #expect(message["sync"]?["relayURL"]?.string == "ws://127.0.0.1:1/sync")
                #expect(document.violations(of: message, against: document.schema("SyncStatusEventMessage")) == [])
                let health = try await server.expectJSON(.get, "/health/websocket")
                #expect(health == message["sync"], "/health/websocket shows the same status")
            }
        }
    }

    @Test func otherBoardsChangesAreNotSent() async throws {
        try await withAgent { server in
            let mine = try await server.createBoard("Mine")
            let other = try await server.createBoard("Other")
            let myColumn = try await server.createColumn(board: mine, "Todo")
            let otherColumn = try await server.createColumn(board: other, "Todo")
            try await Self.subscribe(server, board: mine) { ws, snapshot in
                let since = try #require(snapshot["version"]?.int)
                _ = try await server.createTask(column: otherColumn, "Not for me")
                let task = try await server.createTask(column: myColumn, "For me")
                let event = try await Self.nextChange(ws, after: since)
                #expect(event["boardId"]?.string == mine)
                #expect(event["task"]?["id"]?.string == task)
            }
        }
    }

    /// Writes committed while a client subscribes must show up exactly once: in the snapshot or
    /// as an event, never both, never neither.
    @Test func changesRacingTheSnapshotAreNeitherLostNorDuplicated() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Busy")
            let column = try await server.createColumn(board: board, "Todo")
            let columnID = try #require(EntityID(column))
            let total = 300
            let subscribers = 6
            enum Outcome: Sendable {
                case created(Set<String>)
                case seen(Set<String>)
            }
            try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask {
                    var ids = Set<String>()
                    for i in 0..<total {
                        let snapshot = try await server.agent.createTask(column: columnID, title: "T\(i)", description: nil, after: nil)
                        guard case .task(let task) = snapshot else { throw RawWebSocket.Failure.malformed("not a task: \(snapshot)") }
                        ids.insert(task.id.rawValue)
                        if i % 10 == 0 { await Task.yield() }
                    }
                    return .created(ids)
                }
                for _ in 0..<subscribers {
                    group.addTask {
                        try await Self.subscribe(server, board: board) { ws, snapshot in
                            let since = try #require(snapshot["version"]?.int)
                            let inSnapshot = (snapshot["board"]?["columns"]?[0]?["tasks"]?.ids ?? [])
                            #expect(Set(inSnapshot).count == inSnapshot.count)
                            var seen = Set(inSnapshot)
                            var last = since
                            while seen.count < total {
                                let event = try await Self.nextChange(ws, after: since)
                                let version = try #require(event["version"]?.int)
                                #expect(version > last, "versions increase")
                                last = version
                                #expect(event["type"]?.string == "task:created")
                                let id = try #require(event["task"]?["id"]?.string)
                                let (inserted, _) = seen.insert(id)
                                #expect(inserted, "task \(id) arrived twice (snapshot v\(since))")
                            }
                            return .seen(seen)
                        }
                    }
                }
                var created: Set<String> = []
                var views: [Set<String>] = []
                for try await outcome in group {
                    switch outcome {
                    case .created(let ids): created = ids
                    case .seen(let ids): views.append(ids)
                    }
                }
                #expect(created.count == total)
                #expect(views.count == subscribers)
                for view in views { #expect(view == created, "a subscriber saw other tasks than were created") }
            }
        }
    }

    @Test func streamForAMissingOrUnknownBoardIsNotUpgraded() async throws {
        try await withAgent { server in
            for query in ["", "?board=", "?board=not-a-uuid", "?board=\(randomID())"] {
                let head = try await RawWebSocket.connect(port: server.port, path: "/api/events\(query)",
                                                          host: "127.0.0.1:\(server.port)") { try await $0.handshake() }
                #expect(head.status != 101, "\(query) was upgraded")
                #expect((400..<500).contains(head.status), "\(query): \(head.status)")
            }
            #expect(server.agent.hub.subscriberCount == 0)
            // Without an upgrade the HTTP route explains how to connect.
            let plain = try await server.send(.get, "/api/events?board=\(randomID())")
            expectError(plain, .upgradeRequired, code: "websocket_required")
        }
    }

    @Test func closingTheStreamUnsubscribes() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Short")
            #expect(server.agent.hub.subscriberCount == 0)
            try await Self.subscribe(server, board: board) { _, _ in
                #expect(server.agent.hub.subscriberCount == 1)
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while server.agent.hub.subscriberCount > 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(server.agent.hub.subscriberCount == 0, "the subscription outlived its WebSocket")
        }
    }
}
