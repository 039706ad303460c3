import HTTPTypes
import KanbanStore
import Hummingbird
import Logging
import Synchronization

/// The agent's localhost defences (DESIGN.md section 4):
/// - `Host` must name this agent (127.0.0.1, localhost or [::1] at its port, or an allowed host),
///   which stops DNS-rebinding pages from reaching it under a foreign name;
/// - state-changing requests and WebSocket upgrades that carry an `Origin` must come from the
///   agent's own origin or an allow-listed one, which stops cross-site request forgery and
///   cross-site WebSocket hijacking;
/// - CORS headers are sent only to allow-listed origins.
final class LocalhostPolicy: Sendable {
    let allowedOrigins: Set<String>
    let allowedHosts: Set<String>
    /// The bound port, known once the server is listening (the configured port may be 0).
    let port: Atomic<Int>

    init(configuration: AgentConfiguration) {
        self.allowedOrigins = Set(configuration.allowedOrigins.map { Self.normalize($0) })
        self.allowedHosts = Set(configuration.allowedHosts.map { $0.lowercased() })
        self.port = Atomic(configuration.port)
    }

    static func normalize(_ origin: String) -> String {
        var o = origin.lowercased()
        while o.hasSuffix("/") { o.removeLast() }
        return o
    }

    var ownHosts: Set<String> {
        let p = port.load(ordering: .relaxed)
        return ["127.0.0.1:\(p)", "localhost:\(p)", "[::1]:\(p)"]
    }

    func hostAllowed(_ host: String?) -> Bool {
        guard let host = host?.lowercased() else { return false }
        return ownHosts.contains(host) || allowedHosts.contains(host)
    }

    /// nil when allowed; otherwise why not.
    func originRefusal(_ origin: String?) -> String? {
        guard let origin else { return nil }  // not a browser (curl, the CLI, the sync tests)
        let o = Self.normalize(origin)
        if ownHosts.contains(where: { o == "http://" + $0 }) || allowedOrigins.contains(o) { return nil }
        // Browsers only send http(s) origins (or "null"); a ws:// origin naming a loopback host
        // comes from a native WebSocket client (swift-websocket sends one), not a web page.
        if o.hasPrefix("ws://") || o.hasPrefix("wss://") {
            let host = o.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? ""
            let name = host.hasPrefix("[") ? String(host.prefix { $0 != "]" }) + "]" : String(host.split(separator: ":").first ?? "")
            if ["127.0.0.1", "localhost", "[::1]"].contains(name) { return nil }
        }
        return "Origin \(origin.prefix(100)) is not allowed"
    }

    func corsAllowed(_ origin: String?) -> Bool {
        guard let origin else { return false }
        return allowedOrigins.contains(Self.normalize(origin))
    }

    func hostRefusal(_ request: Request) -> AgentError? {
        let host = request.head.authority
        if hostAllowed(host) { return nil }
        return AgentError(.misdirectedRequest, code: "host_not_allowed",
                          "Host \(host.map { String($0.prefix(100)) } ?? "(none)") is not this agent",
                          hint: "Open the board at http://127.0.0.1:\(port.load(ordering: .relaxed))/ or start the agent with --allow-host.")
    }
}

struct LocalhostGuardMiddleware<Context: RequestContext>: RouterMiddleware {
    let policy: LocalhostPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let refusal = policy.hostRefusal(request) { throw refusal }
        let origin = request.headers[.origin]
        let cors = policy.corsAllowed(origin)
        if request.method == .options {
            guard cors else {
                throw AgentError(.forbidden, code: "origin_not_allowed", "CORS preflight from \(origin ?? "(no origin)") refused",
                                 hint: "Start the agent with --allow-origin \(origin ?? "URL") to let that page use the API.")
            }
            var headers = Self.corsHeaders(origin!)
            headers[.accessControlAllowMethods] = "GET, POST, PATCH, DELETE, OPTIONS"
            headers[.accessControlAllowHeaders] = "Content-Type"
            headers[.accessControlMaxAge] = "600"
            return Response(status: .noContent, headers: headers)
        }
        let stateChanging = ![.get, .head].contains(request.method)
        let upgrade = request.headers[.upgrade] != nil
        if stateChanging || upgrade, let refusal = policy.originRefusal(origin) {
            throw AgentError(.forbidden, code: "origin_not_allowed", refusal,
                             hint: "Start the agent with --allow-origin \(origin ?? "URL") if that page should control your boards.")
        }
        var response = try await next(request, context)
        if cors, let origin {
            response.headers.append(contentsOf: Self.corsHeaders(origin))
        }
        return response
    }

    static func corsHeaders(_ origin: String) -> HTTPFields {
        [.accessControlAllowOrigin: origin, .vary: "Origin", .accessControlExposeHeaders: "Kanban-Operations"]
    }
}

/// Turns every error into the API's JSON error shape.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The routes, to tell an unknown path (404) from a known path with another method (405).
    let methods: RouteMethods

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as AgentError {
            return try error.response(from: request, context: context)
        } catch let error as HTTPError {
            let agentError: AgentError
            switch error.status {
            case .notFound:
                let allowed = methods.allowed(for: request.uri.path)
                if !allowed.isEmpty {
                    let list = allowed.map(\.rawValue).joined(separator: ", ")
                    var response = try AgentError(.methodNotAllowed, code: "method_not_allowed",
                                                  "\(request.method) is not allowed on \(request.uri.path.prefix(200))",
                                                  hint: "This path accepts \(list); see Protocol/agent-api.openapi.json.")
                        .response(from: request, context: context)
                    response.headers[.allow] = list
                    return response
                }
                agentError = AgentError(.notFound, code: "no_route", "no route for \(request.method) \(request.uri.path)",
                                        hint: "See Protocol/agent-api.openapi.json for the routes.")
            case .methodNotAllowed:
                agentError = AgentError(.methodNotAllowed, code: "method_not_allowed", "\(request.method) is not allowed here",
                                        hint: "See Protocol/agent-api.openapi.json for the routes.")
            case .contentTooLarge:
                agentError = AgentError(.contentTooLarge, code: "body_too_large", "request body is too large", hint: "Send a smaller body.")
            default:
                agentError = AgentError(error.status, code: "http_error", error.body ?? "\(error.status)", hint: "Check the request.")
            }
            return try agentError.response(from: request, context: context)
        } catch where StoreError.isDiskFull(error) {
            context.logger.error("request failed: the disk is full", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return try AgentError(HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage"), code: "disk_full",
                                  "the disk holding the agent's data directory is full",
                                  hint: "Nothing was changed. Free some disk space, then retry; reading boards still works.")
                .response(from: request, context: context)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return try AgentError(.internalServerError, code: "internal", "the agent failed to handle this request",
                                  hint: "Nothing was changed. Check the agent's log; retry.").response(from: request, context: context)
        }
    }
}
