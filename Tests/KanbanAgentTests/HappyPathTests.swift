import HTTPTypes
import KanbanAgent
import KanbanModel
import KanbanStore
import Testing

/// Boards, columns and tasks through the HTTP API, checked against the board document.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct HappyPathTests {
    /// Titles of the visible columns, in order.
    static func columnTitles(_ doc: JSONValue) -> [String] {
        (doc["columns"]?.array ?? []).compactMap { $0["title"]?.string }
    }

    /// Titles of the tasks of the column called `title`, in order.
    static func taskTitles(_ doc: JSONValue, in title: String) -> [String] {
        let column = (doc["columns"]?.array ?? []).first { $0["title"]?.string == title }
        return (column?["tasks"]?.array ?? []).compactMap { $0["title"]?.string }
    }

    @Test func boardIsCreatedListedReadAndRenamed() async throws {
        try await withAgent { server in
            let created = try await server.expectJSON(.post, "/api/boards", json: #"{"title": "Launch"}"#, status: .created)
            let board = try #require(created["id"]?.string)
            #expect(created["title"]?.string == "Launch")
            #expect(created["columns"]?.array == [])
            #expect(created["orphans"]?.array == [])
            #expect(created["trash"]?.array == [])
            let version = try #require(created["version"]?.int)
            #expect(version > 0)

            let list = try await server.expectJSON(.get, "/api/boards")
            #expect(list.array == [.object(["id": .string(board), "title": .string("Launch")])])
            #expect(try await server.board(board) == created)

            let renamed = try await server.expectJSON(.patch, "/api/boards/\(board)", json: #"{"title": "Launch v2"}"#)
            #expect(renamed["title"]?.string == "Launch v2")
            #expect((renamed["version"]?.int ?? 0) > version)
            #expect(try await server.expectJSON(.get, "/api/boards")[0]?["title"]?.string == "Launch v2")
        }
    }

    @Test func everyWriteNamesItsOperationsAndTheLogListsThem() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Audit")
            let column = try await server.createColumn(board: board, "Todo")
            let created = try await server.send(.post, "/api/columns/\(column)/tasks", json: #"{"title": "A"}"#)
            #expect(created.status == .created)
            let createOp = try #require(created.headers[HTTPField.Name("Kanban-Operations")!])
            #expect(createOp.split(separator: ":").count == 2)
            let task = try #require(try created.json()["id"]?.string)

            // A column update with title and place commits two operations, named in order.
            let second = try await server.createColumn(board: board, "Done")
            let both = try await server.send(.patch, "/api/columns/\(column)", json: #"{"title": "Doing", "after": "\#(second)"}"#)
            let twoOps = try #require(both.headers[HTTPField.Name("Kanban-Operations")!]).split(separator: ",").map(String.init)
            #expect(twoOps.count == 2)

            // A refused write commits nothing and names nothing.
            let refused = try await server.send(.patch, "/api/tasks/\(task)", json: #"{}"#)
            #expect(refused.status == .badRequest)
            #expect(refused.headers[HTTPField.Name("Kanban-Operations")!] == nil)
            // Reads name nothing.
            #expect(try await server.send(.get, "/api/boards/\(board)").headers[HTTPField.Name("Kanban-Operations")!] == nil)

            let listed = try await server.expectJSON(.get, "/api/boards/\(board)/operations")
            let ids = (listed["operations"]?.array ?? []).compactMap(\.string)
            #expect(ids.count == 6)  // board, two columns, the task, rename + move
            #expect(ids.contains(createOp))
            #expect(ids.suffix(2) == twoOps[...])

            let digest = try await server.expectJSON(.get, "/api/boards/\(board)/digest")
            #expect(digest["digest"]?.string?.count == 64)
            #expect(digest["operations"]?.int == 6)
            #expect(digest["version"]?.int == (try await server.board(board))["version"]?.int)
            #expect(digest["digest"]?.string == (try server.agent.store.digest(EntityID(board)!)))
            expectError(try await server.send(.get, "/api/boards/\(randomID())/digest"), .notFound, code: "not_found")
        }
    }

    @Test func columnsGoFirstWithoutAfterAndDirectlyRightOfAfter() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Columns")
            let todo = try await server.createColumn(board: board, "Todo")
            let done = try await server.createColumn(board: board, "Done", after: todo)
            let doing = try await server.createColumn(board: board, "Doing", after: todo)
            let column = try await server.expectJSON(.post, "/api/boards/\(board)/columns",
                                                     json: #"{"title": "Backlog", "after": null}"#, status: .created)
            #expect(column["boardId"]?.string == board)
            #expect(column["deleted"]?.bool == false)
            #expect(column["created"]?.bool == true)
            #expect(Self.columnTitles(try await server.board(board)) == ["Backlog", "Todo", "Doing", "Done"])

            // Move: right of another column, then first with `after: null`; rename alone keeps the place.
            let moved = try await server.expectJSON(.patch, "/api/columns/\(todo)", json: #"{"after": "\#(done)"}"#)
            #expect(moved["id"]?.string == todo)
            #expect(Self.columnTitles(try await server.board(board)) == ["Backlog", "Doing", "Done", "Todo"])
            try await server.expectJSON(.patch, "/api/columns/\(done)", json: #"{"after": null}"#)
            #expect(Self.columnTitles(try await server.board(board)) == ["Done", "Backlog", "Doing", "Todo"])
            let renamed = try await server.expectJSON(.patch, "/api/columns/\(doing)", json: #"{"title": "In progress"}"#)
            #expect(renamed["title"]?.string == "In progress")
            #expect(Self.columnTitles(try await server.board(board)) == ["Done", "Backlog", "In progress", "Todo"])
        }
    }

    @Test func tasksGoOnTopWithoutAfterAndDirectlyBelowAfter() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Tasks")
            let todo = try await server.createColumn(board: board, "Todo")
            let a = try await server.createTask(column: todo, "A")
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["A"])
            let b = try await server.createTask(column: todo, "B")
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["B", "A"])
            _ = try await server.createTask(column: todo, "C", after: b)
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["B", "C", "A"])
            _ = try await server.createTask(column: todo, "D", after: a)
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["B", "C", "A", "D"])
            let task = try await server.expectJSON(.post, "/api/columns/\(todo)/tasks",
                                                   json: #"{"title": "E", "description": "details", "after": null}"#, status: .created)
            #expect(task["columnId"]?.string == todo)
            #expect(task["boardId"]?.string == board)
            #expect(task["description"]?.string == "details")
            #expect(task["deleted"]?.bool == false)
            #expect(task["created"]?.bool == true)
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["E", "B", "C", "A", "D"])
            // The document lists the task exactly as it was returned.
            let listed = try #require(try await server.board(board)["columns"]?[0]?["tasks"]?[0])
            for key in ["id", "columnId", "position", "title", "description", "deleted"] {
                #expect(listed[key] == task[key], "\(key)")
            }
        }
    }

    @Test func tasksMoveWithinAndBetweenColumns() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Moves")
            let todo = try await server.createColumn(board: board, "Todo")
            let doing = try await server.createColumn(board: board, "Doing", after: todo)
            let a = try await server.createTask(column: todo, "A")
            let b = try await server.createTask(column: todo, "B", after: a)
            let c = try await server.createTask(column: todo, "C", after: b)
            let d = try await server.createTask(column: todo, "D", after: c)
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["A", "B", "C", "D"])

            // Within the column: to the top, then below another task.
            let moved = try await server.expectJSON(.post, "/api/tasks/\(c)/move", json: #"{"columnId": "\#(todo)"}"#)
            #expect(moved["id"]?.string == c)
            #expect(moved["columnId"]?.string == todo)
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["C", "A", "B", "D"])
            try await server.expectJSON(.post, "/api/tasks/\(a)/move", json: #"{"columnId": "\#(todo)", "after": "\#(d)"}"#)
            #expect(Self.taskTitles(try await server.board(board), in: "Todo") == ["C", "B", "D", "A"])

            // Between columns: into an empty column, then below a task there.
            let across = try await server.expectJSON(.post, "/api/tasks/\(b)/move", json: #"{"columnId": "\#(doing)", "after": null}"#)
            #expect(across["columnId"]?.string == doing)
            try await server.expectJSON(.post, "/api/tasks/\(d)/move", json: #"{"columnId": "\#(doing)", "after": "\#(b)"}"#)
            try await server.expectJSON(.post, "/api/tasks/\(c)/move", json: #"{"columnId": "\#(doing)", "after": "\#(b)"}"#)
            let doc = try await server.board(board)
            #expect(Self.taskTitles(doc, in: "Todo") == ["A"])
            #expect(Self.taskTitles(doc, in: "Doing") == ["B", "C", "D"])
            #expect(doc["columns"]?[1]?["tasks"]?.array?.allSatisfy { $0["columnId"]?.string == doing } == true)
        }
    }

    @Test func tasksAreEditedDeletedAndRestored() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Edits")
            let todo = try await server.createColumn(board: board, "Todo")
            let a = try await server.createTask(column: todo, "A")
            let b = try await server.createTask(column: todo, "B", after: a)
            _ = try await server.createTask(column: todo, "C", after: b)

            let edited = try await server.expectJSON(.patch, "/api/tasks/\(a)", json: #"{"title": "A1", "description": "first"}"#)
            #expect(edited["title"]?.string == "A1")
            #expect(edited["description"]?.string == "first")
            let described = try await server.expectJSON(.patch, "/api/tasks/\(a)", json: #"{"description": "second"}"#)
            #expect(described["title"]?.string == "A1", "an absent title is kept")
            #expect(described["description"]?.string == "second")
            let titled = try await server.expectJSON(.patch, "/api/tasks/\(a)", json: #"{"title": "A2", "description": null}"#)
            #expect(titled["title"]?.string == "A2")
            #expect(titled["description"]?.string == "second", "a null description is kept")

            let deleted = try await server.expectJSON(.delete, "/api/tasks/\(b)")
            #expect(deleted["deleted"]?.bool == true)
            var doc = try await server.board(board)
            #expect(Self.taskTitles(doc, in: "Todo") == ["A2", "C"])
            #expect(doc["trash"]?.ids == [b])
            #expect(doc["trash"]?[0]?["deleted"]?.bool == true)

            let restored = try await server.expectJSON(.post, "/api/tasks/\(b)/restore")
            #expect(restored["deleted"]?.bool == false)
            doc = try await server.board(board)
            #expect(Self.taskTitles(doc, in: "Todo") == ["A2", "B", "C"], "a restored task returns to its place")
            #expect(doc["trash"]?.array == [])
        }
    }

    @Test func deletedColumnsHideTheirTasksAsOrphansUntilRestored() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Columns")
            let todo = try await server.createColumn(board: board, "Todo")
            let doing = try await server.createColumn(board: board, "Doing", after: todo)
            let x = try await server.createTask(column: doing, "X")
            let y = try await server.createTask(column: doing, "Y", after: x)

            let deleted = try await server.expectJSON(.delete, "/api/columns/\(doing)")
            #expect(deleted["deleted"]?.bool == true)
            var doc = try await server.board(board)
            #expect(Self.columnTitles(doc) == ["Todo"])
            #expect(doc["orphans"]?.ids == [x, y])
            #expect(doc["deletedColumns"]?.ids == [doing], "listed so it can be restored")
            // Deleting again is harmless.
            try await server.expectJSON(.delete, "/api/columns/\(doing)")

            let restored = try await server.expectJSON(.post, "/api/columns/\(doing)/restore")
            #expect(restored["deleted"]?.bool == false)
            doc = try await server.board(board)
            #expect(Self.columnTitles(doc) == ["Todo", "Doing"])
            #expect(Self.taskTitles(doc, in: "Doing") == ["X", "Y"])
            #expect(doc["orphans"]?.array == [])
            #expect(doc["deletedColumns"]?.array == [])
        }
    }

    @Test func everyWriteRaisesTheVersionAndReadsDoNot() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Versions")
            var last = try #require(try await server.board(board)["version"]?.int)
            #expect(try await server.board(board)["version"]?.int == last)
            let column = try await server.createColumn(board: board, "Todo")
            let task = try await server.createTask(column: column, "T")
            let writes: [(HTTPRequest.Method, String, String?)] = [
                (.patch, "/api/tasks/\(task)", #"{"title": "T2"}"#),
                (.post, "/api/tasks/\(task)/move", #"{"columnId": "\#(column)"}"#),
                (.delete, "/api/tasks/\(task)", nil),
                (.post, "/api/tasks/\(task)/restore", nil),
                (.patch, "/api/columns/\(column)", #"{"title": "Todo 2"}"#),
                (.patch, "/api/boards/\(board)", #"{"title": "V2"}"#),
            ]
            last = try #require(try await server.board(board)["version"]?.int)
            for (method, path, body) in writes {
                let reply = try await server.send(method, path, json: body)
                #expect(reply.status == .ok, "\(method) \(path) -> \(reply)")
                let version = try #require(try await server.board(board)["version"]?.int)
                #expect(version > last, "\(method) \(path)")
                last = version
            }
            let health = try await server.expectJSON(.get, "/health")
            #expect(health["version"]?.int == last)
            #expect(health["status"]?.string == "ok")
            #expect(health["replicaId"]?.string == server.agent.store.replicaID.rawValue)
        }
    }
}
