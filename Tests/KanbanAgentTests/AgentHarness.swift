import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KanbanAgent
import KanbanModel
import KanbanStore
import NIOCore
import Testing

/// The `Host` a request carries.
enum Authority: Sendable {
    /// `127.0.0.1:PORT`, as a browser on the agent's own page sends it.
    case own
    case custom(String)
    /// No `Host` header at all.
    case missing
}

/// One HTTP response from the agent.
struct Reply: Sendable, CustomStringConvertible {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let body: ByteBuffer

    var text: String { String(buffer: body) }
    func json() throws -> JSONValue { try JSONValue(parsing: Data(body.readableBytesView)) }
    var errorCode: String? { (try? json())?["error"]?["code"]?.string }
    var description: String { "\(status.code) \(text.prefix(300))" }
}

/// A running agent under test: the real Hummingbird application from `buildAgentApplication`,
/// listening on a free port, plus the `Agent` behind it for direct set-up.
struct AgentServer: Sendable {
    let port: Int
    let agent: Agent
    /// The `.live` client from HummingbirdTesting (it always sends `Host: localhost`).
    let client: any TestClientProtocol

    var ownOrigin: String { "http://127.0.0.1:\(port)" }

    /// Sends one request on a fresh connection with the `Host` of our choice.
    ///
    /// The `.live` test client sends `Host: localhost` without the port, which the agent rightly
    /// refuses (421), so requests go through a `TestClient` whose authority we set.
    func send(
        _ method: HTTPRequest.Method, _ path: String, json body: String? = nil, bytes: ByteBuffer? = nil,
        headers: HTTPFields = [:], authority: Authority = .own
    ) async throws -> Reply {
        var headers = headers
        let payload = bytes ?? body.map { ByteBuffer(string: $0) }
        if payload != nil, headers[.contentType] == nil { headers[.contentType] = "application/json" }
        let host: String? = switch authority {
        case .own: "127.0.0.1:\(port)"
        case .custom(let value): value
        case .missing: nil
        }
        let request = TestClient.Request(path, method: method, authority: host, headers: headers, body: payload)
        let response = try await TestClient.withClient(host: "localhost", port: port,
                                                       configuration: .init(timeout: .seconds(10))) { client in
            try await client.execute(request)
        }
        return Reply(status: response.status, headers: response.headers, body: response.body ?? ByteBuffer())
    }

    /// Sends a request that must succeed with `status`, and returns its JSON body.
    @discardableResult
    func expectJSON(
        _ method: HTTPRequest.Method, _ path: String, json body: String? = nil, status: HTTPResponse.Status = .ok,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> JSONValue {
        let reply = try await send(method, path, json: body)
        #expect(reply.status == status, "\(method) \(path) -> \(reply)", sourceLocation: sourceLocation)
        return try reply.json()
    }

    /// The board document as `GET /api/boards/{id}` returns it, byte for byte.
    func boardBytes(_ board: String) async throws -> String {
        let reply = try await send(.get, "/api/boards/\(board)")
        #expect(reply.status == .ok)
        return reply.text
    }

    func board(_ board: String) async throws -> JSONValue {
        try JSONValue(parsing: try await boardBytes(board))
    }

    // MARK: Set-up shortcuts over HTTP

    func createBoard(_ title: String) async throws -> String {
        try #require(try await expectJSON(.post, "/api/boards", json: #"{"title": \#(jsonString(title))}"#, status: .created)["id"]?.string)
    }

    func createColumn(board: String, _ title: String, after: String? = nil) async throws -> String {
        let afterField = after.map { #", "after": "\#($0)""# } ?? ""
        let json = try await expectJSON(.post, "/api/boards/\(board)/columns",
                                        json: #"{"title": \#(jsonString(title))\#(afterField)}"#, status: .created)
        return try #require(json["id"]?.string)
    }

    func createTask(column: String, _ title: String, after: String? = nil) async throws -> String {
        let afterField = after.map { #", "after": "\#($0)""# } ?? ""
        let json = try await expectJSON(.post, "/api/columns/\(column)/tasks",
                                        json: #"{"title": \#(jsonString(title))\#(afterField)}"#, status: .created)
        return try #require(json["id"]?.string)
    }
}

/// Runs `body` against a live agent on a free port, with an in-memory store unless one is given.
func withAgent<T: Sendable>(
    allowedOrigins: [String] = [], store: ReplicaStore? = nil,
    _ body: @escaping @Sendable (AgentServer) async throws -> T
) async throws -> T {
    let agent = Agent(store: try store ?? ReplicaStore.inMemory(),
                      configuration: AgentConfiguration(port: 0, allowedOrigins: allowedOrigins))
    let app = buildAgentApplication(agent: agent)
    return try await app.test(.live) { client in
        let port = try #require(client.port)
        return try await body(AgentServer(port: port, agent: agent, client: client))
    }
}

/// Checks the API error shape `{"error": {"code", "message", "hint", "field"?}}`.
func expectError(
    _ reply: Reply, _ status: HTTPResponse.Status, code: String, field: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(reply.status == status, "\(reply)", sourceLocation: sourceLocation)
    guard let json = try? reply.json(), let error = json["error"] else {
        Issue.record("not an error JSON body: \(reply)", sourceLocation: sourceLocation)
        return
    }
    #expect(json.object?.keys.sorted() == ["error"], sourceLocation: sourceLocation)
    #expect(error["code"]?.string == code, "\(reply)", sourceLocation: sourceLocation)
    #expect((error["message"]?.string ?? "").isEmpty == false, sourceLocation: sourceLocation)
    #expect((error["hint"]?.string ?? "").isEmpty == false, sourceLocation: sourceLocation)
    if let field {
        #expect(error["field"]?.string == field, "\(reply)", sourceLocation: sourceLocation)
    }
    #expect(reply.headers[.contentType]?.hasPrefix("application/json") == true, sourceLocation: sourceLocation)
}

/// A random (version 4) UUID that names nothing.
func randomID() -> String { UUID().uuidString.lowercased() }
