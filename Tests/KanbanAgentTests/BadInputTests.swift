import HTTPTypes
import KanbanAgent
import KanbanStore
import NIOCore
import Testing

/// Bad requests get the right status and error JSON, and change nothing.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct BadInputTests {
    /// A board with two live columns, a deleted one, and tasks.
    struct Fixture: Sendable {
        let board: String
        let todo: String
        let doing: String
        let gone: String
        let t1: String
        let t2: String
        let t3: String
        /// A column of a second board.
        let elsewhere: String

        static func make(on server: AgentServer) async throws -> Fixture {
            let board = try await server.createBoard("Fixture")
            let todo = try await server.createColumn(board: board, "Todo")
            let doing = try await server.createColumn(board: board, "Doing", after: todo)
            let gone = try await server.createColumn(board: board, "Gone", after: doing)
            let t1 = try await server.createTask(column: todo, "One")
            let t2 = try await server.createTask(column: todo, "Two", after: t1)
            let t3 = try await server.createTask(column: doing, "Three")
            _ = try await server.createTask(column: gone, "Orphan")
            try await server.expectJSON(.delete, "/api/columns/\(gone)")
            let other = try await server.createBoard("Other")
            let elsewhere = try await server.createColumn(board: other, "Elsewhere")
            return Fixture(board: board, todo: todo, doing: doing, gone: gone, t1: t1, t2: t2, t3: t3, elsewhere: elsewhere)
        }
    }

    struct BadRequest: Sendable, CustomTestStringConvertible {
        let name: String
        let method: HTTPRequest.Method
        let path: @Sendable (Fixture) -> String
        let body: @Sendable (Fixture) -> String?
        let status: HTTPResponse.Status
        let code: String
        let field: String?

        init(_ name: String, _ method: HTTPRequest.Method, _ path: @escaping @Sendable (Fixture) -> String,
             body: @escaping @Sendable (Fixture) -> String? = { _ in nil },
             _ status: HTTPResponse.Status = .badRequest, code: String = "invalid_request", field: String? = nil) {
            self.name = name
            self.method = method
            self.path = path
            self.body = body
            self.status = status
            self.code = code
            self.field = field
        }

        var testDescription: String { name }
    }

    static let tooLongTitle = String(repeating: "x", count: 501)

    static let cases: [BadRequest] = [
        // Bodies that are not a JSON object.
        BadRequest("broken JSON", .post, { "/api/columns/\($0.todo)/tasks" }, body: { _ in "{\"title\": " }),
        BadRequest("JSON array", .post, { "/api/columns/\($0.todo)/tasks" }, body: { _ in #"["title"]"# }),
        BadRequest("JSON string", .patch, { "/api/boards/\($0.board)" }, body: { _ in #""title""# }),
        BadRequest("JSON number", .post, { _ in "/api/boards" }, body: { _ in "42" }),
        BadRequest("JSON null", .patch, { "/api/tasks/\($0.t1)" }, body: { _ in "null" }),
        BadRequest("empty body", .post, { "/api/boards/\($0.board)/columns" }, body: { _ in "" }),
        BadRequest("no body", .post, { "/api/tasks/\($0.t1)/move" }),
        // Unknown fields, missing fields, wrong types.
        BadRequest("unknown field", .post, { "/api/columns/\($0.todo)/tasks" },
                   body: { _ in #"{"title": "T", "colour": "red"}"# }, field: "colour"),
        BadRequest("field of another route", .patch, { "/api/tasks/\($0.t1)" },
                   body: { #"{"title": "T", "columnId": "\#($0.doing)"}"# }, field: "columnId"),
        BadRequest("missing title", .post, { "/api/boards/\($0.board)/columns" }, body: { _ in "{}" }, field: "title"),
        BadRequest("null title", .patch, { "/api/boards/\($0.board)" }, body: { _ in #"{"title": null}"# }, field: "title"),
        BadRequest("missing columnId", .post, { "/api/tasks/\($0.t1)/move" }, body: { _ in "{}" }, field: "columnId"),
        BadRequest("null columnId", .post, { "/api/tasks/\($0.t1)/move" }, body: { _ in #"{"columnId": null}"# }, field: "columnId"),
        BadRequest("number title", .post, { "/api/columns/\($0.todo)/tasks" }, body: { _ in #"{"title": 42}"# }, field: "title"),
        BadRequest("boolean description", .patch, { "/api/tasks/\($0.t1)" },
                   body: { _ in #"{"description": true}"# }, field: "description"),
        BadRequest("object title", .patch, { "/api/columns/\($0.todo)" }, body: { _ in #"{"title": {"text": "T"}}"# }, field: "title"),
        BadRequest("non-UUID after", .post, { "/api/columns/\($0.todo)/tasks" },
                   body: { _ in #"{"title": "T", "after": "not-a-uuid"}"# }, field: "after"),
        BadRequest("number columnId", .post, { "/api/tasks/\($0.t1)/move" }, body: { _ in #"{"columnId": 7}"# }, field: "columnId"),
        // Values out of bounds.
        BadRequest("501-character title", .post, { "/api/columns/\($0.todo)/tasks" },
                   body: { _ in #"{"title": "\#(tooLongTitle)"}"# }, field: "title"),
        BadRequest("501-character board title", .post, { _ in "/api/boards" }, body: { _ in #"{"title": "\#(tooLongTitle)"}"# }, field: "title"),
        BadRequest("501-character column rename", .patch, { "/api/columns/\($0.todo)" },
                   body: { _ in #"{"title": "\#(tooLongTitle)"}"# }, field: "title"),
        BadRequest("20001-character description", .patch, { "/api/tasks/\($0.t1)" },
                   body: { _ in #"{"description": "\#(String(repeating: "d", count: 20_001))"}"# }, field: "description"),
        BadRequest("blank title", .patch, { "/api/tasks/\($0.t1)" }, body: { _ in #"{"title": " \t "}"# }, field: "title"),
        BadRequest("empty title", .post, { _ in "/api/boards" }, body: { _ in #"{"title": ""}"# }, field: "title"),
        BadRequest("nothing to change in a task", .patch, { "/api/tasks/\($0.t1)" }, body: { _ in "{}" }),
        BadRequest("nothing to change in a column", .patch, { "/api/columns/\($0.todo)" }, body: { _ in #"{"title": null}"# }),
        BadRequest("body over 64 KiB", .post, { "/api/columns/\($0.todo)/tasks" },
                   body: { _ in #"{"title": "T", "description": "\#(String(repeating: "z", count: 70_000))"}"# },
                   .contentTooLarge, code: "body_too_large"),
        // Unknown IDs.
        BadRequest("unknown board", .get, { _ in "/api/boards/\(randomID())" }, .notFound, code: "not_found"),
        BadRequest("unknown board rename", .patch, { _ in "/api/boards/\(randomID())" }, body: { _ in #"{"title": "T"}"# },
                   .notFound, code: "not_found"),
        BadRequest("unknown board's column", .post, { _ in "/api/boards/\(randomID())/columns" }, body: { _ in #"{"title": "T"}"# },
                   .notFound, code: "not_found"),
        BadRequest("unknown board's conflicts", .get, { _ in "/api/boards/\(randomID())/conflicts" }, .notFound, code: "not_found"),
        BadRequest("unknown conflict", .post, { "/api/boards/\($0.board)/conflicts/nobody:1/restore" }, .notFound, code: "not_found"),
        BadRequest("unknown column", .post, { _ in "/api/columns/\(randomID())/tasks" }, body: { _ in #"{"title": "T"}"# },
                   .notFound, code: "not_found"),
        BadRequest("unknown column rename", .patch, { _ in "/api/columns/\(randomID())" }, body: { _ in #"{"title": "T"}"# },
                   .notFound, code: "not_found"),
        BadRequest("unknown column delete", .delete, { _ in "/api/columns/\(randomID())" }, .notFound, code: "not_found"),
        BadRequest("unknown column restore", .post, { _ in "/api/columns/\(randomID())/restore" }, .notFound, code: "not_found"),
        BadRequest("unknown task edit", .patch, { _ in "/api/tasks/\(randomID())" }, body: { _ in #"{"title": "T"}"# },
                   .notFound, code: "not_found"),
        BadRequest("unknown task move", .post, { _ in "/api/tasks/\(randomID())/move" },
                   body: { #"{"columnId": "\#($0.todo)"}"# }, .notFound, code: "not_found"),
        BadRequest("unknown task delete", .delete, { _ in "/api/tasks/\(randomID())" }, .notFound, code: "not_found"),
        BadRequest("unknown task restore", .post, { _ in "/api/tasks/\(randomID())/restore" }, .notFound, code: "not_found"),
        BadRequest("move to an unknown column", .post, { "/api/tasks/\($0.t1)/move" },
                   body: { _ in #"{"columnId": "\#(randomID())"}"# }, .notFound, code: "not_found", field: "columnId"),
        BadRequest("move to another board's column", .post, { "/api/tasks/\($0.t1)/move" },
                   body: { #"{"columnId": "\#($0.elsewhere)"}"# }, .notFound, code: "not_found", field: "columnId"),
        // Malformed IDs in the path.
        BadRequest("malformed board ID", .get, { _ in "/api/boards/not-a-uuid" }),
        BadRequest("malformed board ID in rename", .patch, { _ in "/api/boards/1234" }, body: { _ in #"{"title": "T"}"# }),
        BadRequest("malformed column ID", .delete, { _ in "/api/columns/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz" }),
        BadRequest("malformed task ID", .patch, { _ in "/api/tasks/42" }, body: { _ in #"{"title": "T"}"# }),
        BadRequest("malformed task ID in move", .post, { _ in "/api/tasks/x/move" }, body: { #"{"columnId": "\#($0.todo)"}"# }),
        BadRequest("malformed operation ID", .post, { "/api/boards/\($0.board)/conflicts/not-an-op/restore" }),
        // `after` in the wrong place.
        BadRequest("create after a task of another column", .post, { "/api/columns/\($0.doing)/tasks" },
                   body: { #"{"title": "T", "after": "\#($0.t1)"}"# }, field: "after"),
        BadRequest("move after a task of another column", .post, { "/api/tasks/\($0.t1)/move" },
                   body: { #"{"columnId": "\#($0.todo)", "after": "\#($0.t3)"}"# }, field: "after"),
        BadRequest("move below itself", .post, { "/api/tasks/\($0.t1)/move" },
                   body: { #"{"columnId": "\#($0.todo)", "after": "\#($0.t1)"}"# }, field: "after"),
        BadRequest("column after a deleted column", .post, { "/api/boards/\($0.board)/columns" },
                   body: { #"{"title": "C", "after": "\#($0.gone)"}"# }, field: "after"),
        BadRequest("column after a task", .patch, { "/api/columns/\($0.todo)" }, body: { #"{"after": "\#($0.t1)"}"# }, field: "after"),
        BadRequest("column after itself", .patch, { "/api/columns/\($0.todo)" }, body: { #"{"after": "\#($0.todo)"}"# }, field: "after"),
        // Deleted columns.
        BadRequest("move into a deleted column", .post, { "/api/tasks/\($0.t1)/move" },
                   body: { #"{"columnId": "\#($0.gone)"}"# }, .conflict, code: "column_deleted", field: "columnId"),
        BadRequest("create in a deleted column", .post, { "/api/columns/\($0.gone)/tasks" },
                   body: { _ in #"{"title": "T"}"# }, .conflict, code: "column_deleted"),
        BadRequest("rename a deleted column", .patch, { "/api/columns/\($0.gone)" },
                   body: { _ in #"{"title": "T"}"# }, .conflict, code: "column_deleted"),
    ]

    /// The board document after a refused request must equal the one before, version included.
    func expectUnchanged(_ before: String, _ after: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (old, new) = (try JSONValue(parsing: before), try JSONValue(parsing: after))
        #expect(new["version"] == old["version"], "the board's version changed", sourceLocation: sourceLocation)
        var (oldFields, newFields) = (old.object ?? [:], new.object ?? [:])
        oldFields["version"] = nil
        newFields["version"] = nil
        #expect(newFields == oldFields, "the board's content changed", sourceLocation: sourceLocation)
    }

    @Test(arguments: cases)
    func badRequestIsRefusedAndChangesNothing(_ bad: BadRequest) async throws {
        try await withAgent { server in
            let fixture = try await Fixture.make(on: server)
            let before = try await server.boardBytes(fixture.board)
            let boardsBefore = try await server.send(.get, "/api/boards")
            let operations = try server.agent.store.operationCount()

            let reply = try await server.send(bad.method, bad.path(fixture), json: bad.body(fixture))
            expectError(reply, bad.status, code: bad.code, field: bad.field)

            try expectUnchanged(before, try await server.boardBytes(fixture.board))
            #expect(try server.agent.store.operationCount() == operations, "an operation was logged")
            #expect(try await server.send(.get, "/api/boards").text == boardsBefore.text, "the board list changed")
        }
    }

    /// Renaming and moving a column in one PATCH must be all or nothing: a bad `after` must not
    /// leave the rename behind.
    @Test(arguments: ["unknown", "itself", "task"])
    func columnRenameWithBadAfterChangesNothing(_ after: String) async throws {
        try await withAgent { server in
            let fixture = try await Fixture.make(on: server)
            let before = try await server.boardBytes(fixture.board)
            let target = switch after {
            case "unknown": randomID()
            case "itself": fixture.todo
            default: fixture.t1
            }
            let reply = try await server.send(.patch, "/api/columns/\(fixture.todo)",
                                              json: #"{"title": "Renamed", "after": "\#(target)"}"#)
            expectError(reply, .badRequest, code: "invalid_request", field: "after")
            let after = try await server.board(fixture.board)
            #expect(after["columns"]?[0]?["title"]?.string == "Todo", "the rename was committed although the request was refused")
            try expectUnchanged(before, try await server.boardBytes(fixture.board))
        }
    }

    /// After a request is refused by a check made inside the store's write transaction (here: a
    /// move into a deleted column, 409), the next write must still succeed. Run in a child
    /// process because the failure mode is a crash of the whole agent.
    @Test func writesStillWorkAfterARefusedEdit() async {
        await #expect(processExitsWith: .success) {
            try await withAgent { server in
                let fixture = try await Fixture.make(on: server)
                let version = server.agent.store.version
                let refused = try await server.send(.post, "/api/tasks/\(fixture.t1)/move", json: #"{"columnId": "\#(fixture.gone)"}"#)
                guard refused.status == .conflict else { throw RawWebSocket.Failure.malformed("expected 409, got \(refused)") }
                guard server.agent.store.version == version else {
                    throw RawWebSocket.Failure.malformed("version went from \(version) to \(server.agent.store.version)")
                }
                let created = try await server.send(.post, "/api/columns/\(fixture.todo)/tasks", json: #"{"title": "after"}"#)
                guard created.status == .created else { throw RawWebSocket.Failure.malformed("expected 201, got \(created)") }
            }
        }
    }

    @Test func titlesOfExactly500CharactersAreAccepted() async throws {
        try await withAgent { server in
            let fixture = try await Fixture.make(on: server)
            let title = String(repeating: "é", count: 500)
            let task = try await server.expectJSON(.post, "/api/columns/\(fixture.todo)/tasks",
                                                   json: #"{"title": "\#(title)", "description": "\#(String(repeating: "d", count: 20_000))"}"#,
                                                   status: .created)
            #expect(task["title"]?.string == title)
            #expect(task["description"]?.string?.count == 20_000)
        }
    }

    @Test func aRefusedBodyDoesNotSpoilTheNextRequest() async throws {
        try await withAgent { server in
            let fixture = try await Fixture.make(on: server)
            let big = ByteBuffer(repeating: UInt8(ascii: " "), count: 200 * 1024)
            let reply = try await server.send(.post, "/api/columns/\(fixture.todo)/tasks", bytes: big)
            expectError(reply, .contentTooLarge, code: "body_too_large")
            try await server.expectJSON(.post, "/api/columns/\(fixture.todo)/tasks", json: #"{"title": "after"}"#, status: .created)
        }
    }
}
