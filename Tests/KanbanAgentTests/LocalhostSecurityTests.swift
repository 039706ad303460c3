import Foundation
import HTTPTypes
import HummingbirdTesting
import HummingbirdWSTesting
import KanbanAgent
import KanbanStore
import Testing
import WSClient

/// DNS-rebinding, CSRF and cross-site WebSocket defences of the local agent (DESIGN.md section 4).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct LocalhostSecurityTests {
    static let devServer = "http://localhost:5173"

    static func origin(_ value: String) -> HTTPFields { [.origin: value] }

    // MARK: Host

    @Test func foreignHostIsRefusedForEveryMethod() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Mine")
            let evil = Authority.custom("evil.example:\(server.port)")
            for (method, path) in [(HTTPRequest.Method.get, "/api/boards"), (.get, "/health"), (.get, "/api/boards/\(board)"),
                                   (.get, "/"), (.get, "/api/nothing")] {
                expectError(try await server.send(method, path, authority: evil), .misdirectedRequest, code: "host_not_allowed")
            }
            let post = try await server.send(.post, "/api/boards", json: #"{"title": "Injected"}"#, authority: evil)
            expectError(post, .misdirectedRequest, code: "host_not_allowed")
            let delete = try await server.send(.delete, "/api/boards/\(board)", authority: evil)
            expectError(delete, .misdirectedRequest, code: "host_not_allowed")
            #expect(try await server.expectJSON(.get, "/api/boards").ids == [board], "nothing was created")
        }
    }

    @Test func hostMustNameThisAgentsPort() async throws {
        try await withAgent { server in
            for host in ["127.0.0.1:\(server.port)", "localhost:\(server.port)", "[::1]:\(server.port)", "LOCALHOST:\(server.port)"] {
                let reply = try await server.send(.get, "/health", authority: .custom(host))
                #expect(reply.status == .ok, "\(host) -> \(reply)")
            }
            for host in ["127.0.0.1", "127.0.0.1:\(server.port + 1)", "localhost", "evil.example", "127.0.0.1.evil.example:\(server.port)"] {
                let reply = try await server.send(.get, "/health", authority: .custom(host))
                expectError(reply, .misdirectedRequest, code: "host_not_allowed")
            }
            expectError(try await server.send(.get, "/health", authority: .missing), .misdirectedRequest, code: "host_not_allowed")
            // HummingbirdTesting's own live client sends `Host: localhost` (no port): refused too.
            let stock = try await server.client.execute(uri: "/health", method: .get)
            #expect(stock.status == .misdirectedRequest)
        }
    }

    // MARK: Origin on state-changing requests

    @Test func foreignOriginCannotChangeAnything() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            let board = try await server.createBoard("Mine")
            let column = try await server.createColumn(board: board, "Todo")
            let task = try await server.createTask(column: column, "Keep me")
            let before = try await server.boardBytes(board)
            let attacks: [(HTTPRequest.Method, String, String?)] = [
                (.post, "/api/boards", #"{"title": "Injected"}"#),
                (.post, "/api/columns/\(column)/tasks", #"{"title": "Injected"}"#),
                (.patch, "/api/tasks/\(task)", #"{"title": "Pwned"}"#),
                (.delete, "/api/tasks/\(task)", nil),
                (.delete, "/api/columns/\(column)", nil),
                (.post, "/api/sync/reconnect", nil),
            ]
            for origin in ["http://evil.example", "null", "http://127.0.0.1:\(server.port + 1)", "https://127.0.0.1:\(server.port)",
                           "http://localhost:5174", "http://127.0.0.1"] {
                for (method, path, body) in attacks {
                    let reply = try await server.send(method, path, json: body, headers: Self.origin(origin))
                    expectError(reply, .forbidden, code: "origin_not_allowed")
                    #expect(reply.headers[.accessControlAllowOrigin] == nil)
                }
            }
            #expect(try await server.boardBytes(board) == before)
            #expect(try await server.expectJSON(.get, "/api/boards").ids == [board])
        }
    }

    @Test func ownOriginAndNoOriginMayChangeState() async throws {
        try await withAgent { server in
            for origin in ["http://127.0.0.1:\(server.port)", "http://localhost:\(server.port)", "http://[::1]:\(server.port)",
                           "http://127.0.0.1:\(server.port)/"] {
                let reply = try await server.send(.post, "/api/boards", json: #"{"title": "From \#(origin)"}"#,
                                                  headers: Self.origin(origin))
                #expect(reply.status == .created, "\(origin) -> \(reply)")
                #expect(reply.headers[.accessControlAllowOrigin] == nil, "same-origin needs no CORS header")
            }
            // curl and the CLI send no Origin.
            #expect(try await server.send(.post, "/api/boards", json: #"{"title": "curl"}"#).status == .created)
            #expect(try await server.expectJSON(.get, "/api/boards").array?.count == 5)
        }
    }

    // MARK: CORS

    @Test func allowListedOriginGetsCORSHeaders() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            let created = try await server.send(.post, "/api/boards", json: #"{"title": "From Vite"}"#,
                                                headers: Self.origin(Self.devServer))
            #expect(created.status == .created)
            #expect(created.headers[.accessControlAllowOrigin] == Self.devServer)
            #expect(created.headers[.vary]?.contains("Origin") == true)

            let read = try await server.send(.get, "/api/boards", headers: Self.origin(Self.devServer))
            #expect(read.status == .ok)
            #expect(read.headers[.accessControlAllowOrigin] == Self.devServer)
        }
    }

    @Test func otherOriginsGetNoCORSHeaders() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            for origin in ["http://evil.example", "http://localhost:5174", "http://127.0.0.1:\(server.port)"] {
                let reply = try await server.send(.get, "/api/boards", headers: Self.origin(origin))
                #expect(reply.status == .ok, "a cross-origin read is answered but not readable: \(reply)")
                #expect(reply.headers[.accessControlAllowOrigin] == nil, "\(origin)")
            }
            #expect(try await server.send(.get, "/api/boards").headers[.accessControlAllowOrigin] == nil)
        }
    }

    /// The dev server must be able to read why a request failed, not just see a CORS failure.
    @Test func allowListedOriginCanReadErrorResponses() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            let reply = try await server.send(.post, "/api/boards", json: #"{"title": 42}"#, headers: Self.origin(Self.devServer))
            expectError(reply, .badRequest, code: "invalid_request", field: "title")
            #expect(reply.headers[.accessControlAllowOrigin] == Self.devServer,
                    "an error answered without Access-Control-Allow-Origin is unreadable to the allowed page")
            let missing = try await server.send(.get, "/api/boards/\(randomID())", headers: Self.origin(Self.devServer))
            expectError(missing, .notFound, code: "not_found")
            #expect(missing.headers[.accessControlAllowOrigin] == Self.devServer)
        }
    }

    @Test func preflightFromAllowListedOriginIsAnswered() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            let reply = try await server.send(.options, "/api/tasks/\(randomID())", headers: [
                .origin: Self.devServer, .accessControlRequestMethod: "PATCH", .accessControlRequestHeaders: "content-type",
            ])
            #expect(reply.status == .noContent, "\(reply)")
            #expect(reply.headers[.accessControlAllowOrigin] == Self.devServer)
            let methods = Set((reply.headers[.accessControlAllowMethods] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(methods.isSuperset(of: ["GET", "POST", "PATCH", "DELETE"]), "\(methods)")
            #expect(reply.headers[.accessControlAllowHeaders]?.lowercased().contains("content-type") == true)
        }
    }

    @Test func preflightFromOtherOriginsIsRefused() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            for headers: HTTPFields in [Self.origin("http://evil.example"), Self.origin("http://127.0.0.1:\(server.port)"), [:]] {
                var headers = headers
                headers[.accessControlRequestMethod] = "POST"
                let reply = try await server.send(.options, "/api/boards", headers: headers)
                expectError(reply, .forbidden, code: "origin_not_allowed")
                #expect(reply.headers[.accessControlAllowOrigin] == nil)
                #expect(reply.headers[.accessControlAllowMethods] == nil)
            }
        }
    }

    // MARK: WebSocket upgrades

    /// Opens an upgrade request with exactly these headers and returns the handshake response,
    /// plus the first message if the server did upgrade.
    static func tryUpgrade(_ server: AgentServer, path: String, host: String, headers: [(String, String)] = [])
        async throws -> (head: RawWebSocket.HTTPHead, firstMessage: String?)
    {
        try await RawWebSocket.connect(port: server.port, path: path, host: host, headers: headers) { ws in
            let head = try await ws.handshake()
            guard head.status == 101 else { return (head, nil) }
            guard case .text(let text) = try await ws.next() else { return (head, nil) }
            return (head, text)
        }
    }

    @Test func eventStreamUpgradeWithForeignOriginIsRefused() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            let board = try await server.createBoard("Private")
            for origin in ["http://evil.example", "null", "http://localhost:5174", "http://127.0.0.1:\(server.port + 1)"] {
                let (head, message) = try await Self.tryUpgrade(server, path: "/api/events?board=\(board)",
                                                                host: "127.0.0.1:\(server.port)", headers: [("Origin", origin)])
                #expect(head.status != 101, "\(origin) was upgraded")
                #expect((400..<500).contains(head.status), "\(origin): \(head.status)")
                #expect(message == nil, "\(origin) received \(message ?? "")")
                #expect(!head.body.contains("snapshot"))
            }
            // The same through swift-websocket's client: the upgrade fails.
            var configuration = WebSocketClientConfiguration()
            configuration.additionalHeaders = [.origin: "http://evil.example"]
            await #expect(throws: WebSocketClientError.webSocketUpgradeFailed) {
                try await server.client.ws("/api/events?board=\(board)", configuration: configuration) { _, _, _ in
                    Issue.record("upgraded despite a foreign Origin")
                }
            }
            #expect(server.agent.hub.subscriberCount == 0)
        }
    }

    @Test func eventStreamUpgradeWithForeignHostIsRefused() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Private")
            for host in ["evil.example:\(server.port)", "localhost", "127.0.0.1:\(server.port + 1)"] {
                let (head, message) = try await Self.tryUpgrade(server, path: "/api/events?board=\(board)", host: host)
                #expect(head.status != 101, "\(host) was upgraded")
                #expect((400..<500).contains(head.status), "\(host): \(head.status)")
                #expect(message == nil)
            }
        }
    }

    /// hummingbird-websocket answers every refused upgrade with an empty 400 (its
    /// `writeFailedUpgrade`), so the agent cannot put its JSON reason there; it logs it instead.
    /// What a client can rely on: a refused upgrade is never 101, and the same URL fetched
    /// without `Upgrade` returns the JSON reason.
    @Test func refusedEventStreamUpgradesAreNeverUpgradedAndPlainGetsSayWhy() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Private")
            let own = "127.0.0.1:\(server.port)"
            let cases: [(host: String, origin: String?, query: String)] = [
                (own, "http://evil.example", "?board=\(board)"),
                ("evil.example:\(server.port)", nil, "?board=\(board)"),
                (own, nil, "?board=\(randomID())"),
            ]
            for c in cases {
                let (head, message) = try await Self.tryUpgrade(server, path: "/api/events\(c.query)", host: c.host,
                                                                headers: c.origin.map { [("Origin", $0)] } ?? [])
                #expect(head.status == 400, "\(c): got \(head.status)")
                #expect(message == nil)
            }
            let plain = try await server.send(.get, "/api/events?board=\(randomID())")
            #expect(plain.status == .upgradeRequired)
            #expect(plain.errorCode == "websocket_required")
        }
    }

    @Test func eventStreamUpgradeWorksWithoutOriginWithOwnOriginAndAllowListedOrigin() async throws {
        try await withAgent(allowedOrigins: [Self.devServer]) { server in
            let board = try await server.createBoard("Mine")
            for headers in [[], [("Origin", "http://127.0.0.1:\(server.port)")], [("Origin", "http://localhost:\(server.port)")],
                            [("Origin", Self.devServer)]] {
                let snapshot = try await RawWebSocket.connect(port: server.port, path: "/api/events?board=\(board)",
                                                              host: "127.0.0.1:\(server.port)", headers: headers) { ws in
                    let head = try await ws.handshake()
                    #expect(head.status == 101, "\(headers): \(head.status) \(head.body)")
                    return try await ws.nextJSON()
                }
                #expect(snapshot["type"]?.string == "snapshot", "\(headers)")
                #expect(snapshot["board"]?["id"]?.string == board)
            }
        }
    }

    /// swift-websocket's `WebSocketClient` (used by `client.ws` and by any Swift tool built on the
    /// house libraries) always sends `Origin: ws://HOST` without a port. No browser can send a
    /// `ws:` origin, so it is no cross-site risk, and the agent should let such a client in.
    @Test func swiftWebSocketClientCanOpenTheEventStream() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Mine")
            try await server.client.ws("/api/events?board=\(board)") { inbound, _, _ in
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message else { continue }
                    let json = try JSONValue(parsing: text)
                    #expect(json["type"]?.string == "snapshot")
                    #expect(json["board"]?["id"]?.string == board)
                    return
                }
                Issue.record("the stream ended before the snapshot")
            }
        }
    }
}
