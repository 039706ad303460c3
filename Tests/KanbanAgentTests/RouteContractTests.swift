import Foundation
import HTTPTypes
import KanbanAgent
import KanbanModel
import KanbanStore
import Testing

/// `Protocol/agent-api.openapi.json` and the routes the agent really serves must agree.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct RouteContractTests {
    /// The routes registered in `AgentRoutes.swift` and `AgentApplication.swift` (the web board's
    /// static files aside). Update this list and the OpenAPI document together.
    static let serverRoutes: Set<Route> = [
        Route("GET", "/api/boards"),
        Route("POST", "/api/boards"),
        Route("GET", "/api/boards/{id}"),
        Route("PATCH", "/api/boards/{id}"),
        Route("POST", "/api/boards/{id}/columns"),
        Route("GET", "/api/boards/{id}/conflicts"),
        Route("GET", "/api/boards/{id}/digest"),
        Route("GET", "/api/boards/{id}/operations"),
        Route("GET", "/api/boards/{id}/queued"),
        Route("POST", "/api/boards/{id}/queued/discard"),
        Route("POST", "/api/boards/{id}/conflicts/{op}/restore"),
        Route("PATCH", "/api/columns/{id}"),
        Route("DELETE", "/api/columns/{id}"),
        Route("POST", "/api/columns/{id}/restore"),
        Route("POST", "/api/columns/{id}/tasks"),
        Route("PATCH", "/api/tasks/{id}"),
        Route("POST", "/api/tasks/{id}/move"),
        Route("DELETE", "/api/tasks/{id}"),
        Route("POST", "/api/tasks/{id}/restore"),
        Route("POST", "/api/sync/reconnect"),
        Route("GET", "/api/events"),
        Route("GET", "/health"),
        Route("GET", "/health/websocket"),
        Route("GET", "/metrics"),
    ]

    /// One planned call of a documented route.
    struct Call: Sendable {
        let route: Route
        let parameters: [String: String]
        let query: String
        let body: String?
        let status: Int

        init(_ method: String, _ path: String, _ parameters: [String: String] = [:], query: String = "",
             body: String? = nil, expect status: Int) {
            self.route = Route(method, path)
            self.parameters = parameters
            self.query = query
            self.body = body
            self.status = status
        }

        var uri: String { route.uri(parameters) + query }
    }

    @Test func documentDescribesExactlyTheServersRoutes() throws {
        let document = try OpenAPIDocument.load()
        let documented = document.routes
        #expect(documented.subtracting(Self.serverRoutes).sorted() == [], "documented but not served")
        #expect(Self.serverRoutes.subtracting(documented).sorted() == [], "served but not documented")
    }

    @Test func documentIsOpenAPI3WithResolvableReferences() throws {
        let document = try OpenAPIDocument.load()
        #expect(document.root["openapi"]?.string?.hasPrefix("3.") == true)
        var unresolved: [String] = []
        func walk(_ value: JSONValue, _ path: String) {
            switch value {
            case .object(let fields):
                if let ref = fields["$ref"]?.string, document.resolve(value)["x-unresolved"] != nil { unresolved.append("\(path): \(ref)") }
                for (key, child) in fields { walk(child, "\(path)/\(key)") }
            case .array(let items):
                for (index, child) in items.enumerated() { walk(child, "\(path)/\(index)") }
            default:
                break
            }
        }
        walk(document.root, "#")
        #expect(unresolved == [])
        // Every operation documents a success status and the errors every route can give.
        for route in document.routes.sorted() {
            let statuses = document.statuses(route)
            #expect(statuses.contains { (200..<300).contains($0) || $0 == 101 }, "\(route) has no success response")
            #expect(statuses.isSuperset(of: [421, 500]), "\(route) lacks 421/500: \(statuses.sorted())")
            if route.method != "GET" { #expect(statuses.contains(403), "\(route) lacks 403 origin_not_allowed") }
            if route.path.contains("{") { #expect(statuses.isSuperset(of: [400, 404]), "\(route) lacks 400/404") }
            if document.operation(route)?["requestBody"] != nil {
                #expect(statuses.isSuperset(of: [400, 413]), "\(route) has a body but lacks 400/413")
            }
        }
    }

    @Test func requestBodySchemasAreStrict() throws {
        let document = try OpenAPIDocument.load()
        for route in document.routes.sorted() {
            guard let body = document.operation(route)?["requestBody"] else { continue }
            let schema = document.resolve(body["content"]?["application/json"]?["schema"] ?? .null)
            #expect(schema["type"]?.string == "object", "\(route)")
            #expect(schema["additionalProperties"]?.bool == false, "\(route) accepts unknown fields")
            for (name, property) in schema["properties"]?.object ?? [:] {
                let property = document.resolve(property)
                switch name {
                case "title": #expect(property["maxLength"]?.int == 500, "\(route).title")
                case "description": #expect(property["maxLength"]?.int == 20_000, "\(route).description")
                case "after", "columnId": #expect(property["format"]?.string == "uuid", "\(route).\(name)")
                default: Issue.record("\(route) has an unexpected body field \(name)")
                }
            }
        }
        let create = document.resolve(document.schema("CreateTaskRequest"))
        #expect(create["required"]?.array == [.string("title")])
        let move = document.resolve(document.schema("MoveTaskRequest"))
        #expect(move["required"]?.array == [.string("columnId")])
    }

    @Test func schemaCheckerRejectsWhatTheDocumentForbids() throws {
        // The checker used below must be able to fail, or its passes mean nothing.
        let document = try OpenAPIDocument.load()
        let task = try JSONValue(parsing: #"""
            {"id": "0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6e", "boardId": "0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6f",
             "title": "t", "description": "", "deleted": false, "created": true}
            """#)
        #expect(document.violations(of: task, against: document.schema("TaskSnapshot")) == [])
        #expect(document.violations(of: task, against: document.schema("EntitySnapshot")) == [])
        var broken = task.object!
        broken["deleted"] = .string("no")
        broken["extra"] = .null
        broken["title"] = nil
        let problems = document.violations(of: .object(broken), against: document.schema("TaskSnapshot"))
        #expect(problems.count == 3, "\(problems)")
        #expect(!document.violations(of: task, against: document.schema("ColumnSnapshot")).isEmpty)
        #expect(!document.violations(of: .string("not-a-uuid"), against: document.schema("EntityID")).isEmpty)
    }

    /// Calls every documented route on a live agent and checks that routing found it, that the
    /// status is documented for it, and that the body matches the documented schema.
    @Test func everyDocumentedRouteIsServedAndAnswersAsDocumented() async throws {
        let document = try OpenAPIDocument.load()
        try await withAgent { server in
            // The control: an unknown route is reported as `no_route`, so its absence below counts.
            let unknown = try await server.send(.get, "/api/nothing-here")
            expectError(unknown, .notFound, code: "no_route")
            let wrongMethod = try await server.send(.put, "/api/boards")
            #expect(wrongMethod.status == .notFound || wrongMethod.status == .methodNotAllowed)
            #expect(["no_route", "method_not_allowed"].contains(wrongMethod.errorCode ?? ""))

            let board = try await server.createBoard("Contract")
            let todo = try await server.createColumn(board: board, "Todo")
            let done = try await server.createColumn(board: board, "Done", after: todo)
            let first = try await server.createTask(column: todo, "First")
            let second = try await server.createTask(column: todo, "Second", after: first)
            // Two writes from another replica with old stamps lose and become conflicts.
            let remote = try #require(ReplicaID("remote-replica"))
            let boardID = try #require(EntityID(board))
            try await server.agent.store.apply([
                BoardOperation(id: OperationID(replica: remote, counter: 1),
                               stamp: HLCStamp(wallMillis: 1, counter: 0, replica: remote), board: boardID,
                               action: .renameBoard(title: "An old remote title")),
                BoardOperation(id: OperationID(replica: remote, counter: 2),
                               stamp: HLCStamp(wallMillis: 2, counter: 0, replica: remote), board: boardID,
                               action: .moveTask(task: try #require(EntityID(first)), column: try #require(EntityID(done)),
                                                 position: try #require(PositionKey("V")))),
            ])
            let loser = "remote-replica:1"
            // As if a relay were configured and out of reach: discarding queued changes is refused without one.
            server.agent.updateSyncStatus { $0.state = .reconnecting }

            let b = ["id": board]
            let calls: [Call] = [
                Call("GET", "/health", expect: 200),
                Call("GET", "/health/websocket", expect: 200),
                Call("GET", "/metrics", expect: 200),
                Call("GET", "/api/boards", expect: 200),
                Call("POST", "/api/boards", body: #"{"title": "Another"}"#, expect: 201),
                Call("GET", "/api/boards/{id}", b, expect: 200),
                Call("PATCH", "/api/boards/{id}", b, body: #"{"title": "Renamed"}"#, expect: 200),
                Call("POST", "/api/boards/{id}/columns", b, body: #"{"title": "Doing", "after": null}"#, expect: 201),
                Call("GET", "/api/boards/{id}/conflicts", b, expect: 200),
                Call("GET", "/api/boards/{id}/digest", b, expect: 200),
                Call("GET", "/api/boards/{id}/operations", b, expect: 200),
                Call("POST", "/api/boards/{id}/conflicts/{op}/restore", ["id": board, "op": loser], expect: 200),
                Call("PATCH", "/api/columns/{id}", ["id": todo], body: #"{"title": "To do", "after": "\#(done)"}"#, expect: 200),
                Call("POST", "/api/columns/{id}/tasks", ["id": todo], body: #"{"title": "Third", "description": "d", "after": null}"#, expect: 201),
                Call("PATCH", "/api/tasks/{id}", ["id": first], body: #"{"description": "more"}"#, expect: 200),
                Call("POST", "/api/tasks/{id}/move", ["id": first], body: #"{"columnId": "\#(todo)", "after": "\#(second)"}"#, expect: 200),
                Call("DELETE", "/api/tasks/{id}", ["id": second], expect: 200),
                Call("POST", "/api/tasks/{id}/restore", ["id": second], expect: 200),
                Call("DELETE", "/api/columns/{id}", ["id": done], expect: 200),
                Call("POST", "/api/columns/{id}/restore", ["id": done], expect: 200),
                Call("POST", "/api/sync/reconnect", expect: 202),
                Call("GET", "/api/boards/{id}/queued", b, expect: 200),
                // Last but one: the board was made here and never synced, so this discards all of it.
                Call("POST", "/api/boards/{id}/queued/discard", b, expect: 200),
                Call("GET", "/api/events", query: "?board=\(board)", expect: 426),
            ]
            #expect(Set(calls.map(\.route)) == document.routes, "every documented route is called once")

            for call in calls {
                let reply = try await server.send(HTTPRequest.Method(call.route.method)!, call.uri, json: call.body)
                try check(reply, of: call.route, in: document)
                #expect(Int(reply.status.code) == call.status, "\(call.route) -> \(reply)")
            }

            // The same routes with IDs that name nothing: routed (not `no_route`), and answered as documented.
            let nobody = ["id": randomID(), "op": "nobody:1"]
            for call in calls where !call.route.parameterNames.isEmpty {
                let reply = try await server.send(HTTPRequest.Method(call.route.method)!, call.route.uri(nobody) + call.query,
                                                  json: call.body)
                try check(reply, of: call.route, in: document)
                expectError(reply, .notFound, code: "not_found")
            }
        }
    }

    /// The response must not come from the router's "no such route" path, its status must be
    /// documented for the route, and a JSON body must match the documented schema.
    func check(_ reply: Reply, of route: Route, in document: OpenAPIDocument,
               sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(reply.errorCode != "no_route" && reply.errorCode != "method_not_allowed" && reply.status != .methodNotAllowed,
                "\(route) is not routed: \(reply)", sourceLocation: sourceLocation)
        let status = Int(reply.status.code)
        #expect(document.statuses(route).contains(status), "\(route) answered undocumented \(reply)", sourceLocation: sourceLocation)
        guard let schema = document.responseSchema(route, status: status) else { return }
        #expect(reply.headers[.contentType]?.hasPrefix("application/json") == true, sourceLocation: sourceLocation)
        let problems = document.violations(of: try reply.json(), against: schema)
        #expect(problems == [], "\(route) \(status) body does not match the document", sourceLocation: sourceLocation)
    }

    @Test func conflictsAreListedAndRestoredAsDocumented() async throws {
        let document = try OpenAPIDocument.load()
        try await withAgent { server in
            let board = try await server.createBoard("Conflicts")
            let column = try await server.createColumn(board: board, "Todo")
            let other = try await server.createColumn(board: board, "Done", after: column)
            let task = try await server.createTask(column: column, "Task")
            let remote = try #require(ReplicaID("remote"))
            let boardID = try #require(EntityID(board))
            try await server.agent.store.apply([
                BoardOperation(id: OperationID(replica: remote, counter: 7),
                               stamp: HLCStamp(wallMillis: 1, counter: 0, replica: remote), board: boardID,
                               action: .moveTask(task: try #require(EntityID(task)), column: try #require(EntityID(other)),
                                                 position: try #require(PositionKey("a")))),
            ])
            let route = Route("GET", "/api/boards/{id}/conflicts")
            let listed = try await server.send(.get, "/api/boards/\(board)/conflicts")
            try check(listed, of: route, in: document)
            let conflicts = try #require(try listed.json().array)
            try #require(conflicts.count == 1, "\(conflicts)")
            #expect(conflicts[0]["entity"]?.string == "task")
            #expect(conflicts[0]["field"]?.string == "place")
            #expect(conflicts[0]["loser"]?.string == "remote:7")
            #expect(conflicts[0]["loserValue"]?["column"]?.string == other)

            let restoreRoute = Route("POST", "/api/boards/{id}/conflicts/{op}/restore")
            let restored = try await server.send(.post, "/api/boards/\(board)/conflicts/remote:7/restore")
            try check(restored, of: restoreRoute, in: document)
            #expect(restored.status == .ok)
            #expect(try restored.json()["columnId"]?.string == other)
            #expect(try await server.board(board)["columns"]?[1]?["tasks"]?.ids == [task])
            let after = try await server.send(.get, "/api/boards/\(board)/conflicts")
            #expect(try after.json().array == [])
            // The restore is not a conflict any more: restoring it again finds nothing (also when
            // the client percent-encodes the colon, as encodeURIComponent does).
            expectError(try await server.send(.post, "/api/boards/\(board)/conflicts/remote:7/restore"), .notFound, code: "not_found")
        }
    }

    /// `encodeURIComponent("replica:7")` and most HTTP clients send the colon as `%3A`; the
    /// operation ID in the path must be read after percent-decoding.
    @Test func conflictRestoreAcceptsAPercentEncodedOperationID() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Conflicts")
            let remote = try #require(ReplicaID("remote"))
            try await server.agent.store.apply([
                BoardOperation(id: OperationID(replica: remote, counter: 3),
                               stamp: HLCStamp(wallMillis: 1, counter: 0, replica: remote), board: try #require(EntityID(board)),
                               action: .renameBoard(title: "Old title")),
            ])
            #expect(try await server.expectJSON(.get, "/api/boards/\(board)/conflicts").array?.count == 1)
            let restored = try await server.send(.post, "/api/boards/\(board)/conflicts/remote%3A3/restore")
            #expect(restored.status == .ok, "\(restored)")
            #expect(try await server.board(board)["title"]?.string == "Old title")
        }
    }

    /// Found by schemathesis (Tools/fuzz): a method a path does not have was answered 404
    /// `no_route`, as if the path did not exist. RFC 9110 wants 405 with `Allow` listing the
    /// methods the path has; an unknown path stays 404.
    @Test func aMethodThePathDoesNotHaveIs405WithAllow() async throws {
        let document = try OpenAPIDocument.load()
        try await withAgent { server in
            let board = try await server.createBoard("Methods")
            let cases: [(HTTPRequest.Method, String, String)] = [
                (.put, "/api/boards", "GET, POST"),
                (.delete, "/api/boards/\(board)", "GET, PATCH"),
                (.patch, "/api/boards/\(board)/digest", "GET"),
                (.get, "/api/sync/reconnect", "POST"),
                (.get, "/api/columns/\(randomID())", "DELETE, PATCH"),
                (.post, "/health", "GET"),
                (.delete, "/metrics", "GET"),
                (.post, "/api/events", "GET"),
                (.init("TRACE")!, "/api/tasks/\(randomID())/move", "POST"),
            ]
            for (method, path, allow) in cases {
                let reply = try await server.send(method, path)
                expectError(reply, .methodNotAllowed, code: "method_not_allowed")
                #expect(reply.headers[.allow] == allow, "\(method) \(path): \(reply.headers)")
                // Only for methods the document does not list for that path.
                let template = document.routes.first { route in
                    let a = route.path.split(separator: "/"), b = path.split(separator: "/")
                    return a.count == b.count && zip(a, b).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
                }
                let documented = document.routes.filter { $0.path == template?.path }.map(\.method).sorted()
                #expect(documented.joined(separator: ", ") == allow, "\(path): the document lists \(documented)")
                #expect(!documented.contains(method.rawValue))
            }
            // Unknown paths, whatever the method, are still 404.
            expectError(try await server.send(.put, "/api/nothing-here"), .notFound, code: "no_route")
            expectError(try await server.send(.get, "/api/boards/\(board)/nothing"), .notFound, code: "no_route")
            // And the methods a path has still work.
            #expect(try await server.send(.get, "/api/boards/\(board)/digest").status == .ok)
        }
    }

    /// Found by schemathesis (Tools/fuzz): the document let an operation ID's counter have 20
    /// digits, more than an unsigned 64-bit counter holds, so a request the document calls valid
    /// was refused 400. The document now allows 19 digits; what it allows, the agent parses.
    @Test func operationIDsTheDocumentAllowsAreParsed() async throws {
        let document = try OpenAPIDocument.load()
        let schema = document.schema("OperationID")
        let largest = "r:" + String(repeating: "9", count: 19)
        let tooLong = "r:" + String(repeating: "9", count: 20)
        #expect(document.violations(of: .string(largest), against: schema) == [])
        #expect(OperationID(largest) != nil)
        #expect(!document.violations(of: .string(tooLong), against: schema).isEmpty)
        #expect(OperationID("r:\(UInt64.max)") != nil)
        try await withAgent { server in
            let board = try await server.createBoard("Counters")
            // Allowed by the document: routed and answered "no such conflict".
            expectError(try await server.send(.post, "/api/boards/\(board)/conflicts/\(largest)/restore"), .notFound, code: "not_found")
            // A 20-digit counter past UInt64.max: refused as malformed, as the document now says.
            expectError(try await server.send(.post, "/api/boards/\(board)/conflicts/gze0lu2kg6%3A60845032025750445159/restore"),
                        .badRequest, code: "invalid_request")
        }
    }
}
