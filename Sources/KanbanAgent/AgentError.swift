public import HTTPTypes
public import Hummingbird
import Foundation

/// An API error: HTTP status, a stable code, a message, and a hint saying what to do.
/// Rendered as `{"error": {"code", "message", "hint", "field"?}}`.
public struct AgentError: Error, Sendable, HTTPResponseError, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public let hint: String
    public let field: String?

    public init(_ status: HTTPResponse.Status, code: String, _ message: String, hint: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.field = field
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    public var headers: HTTPFields { [.contentType: "application/json; charset=utf-8"] }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = try apiEncoder.encode(ErrorBody(error: .init(code: code, message: message, hint: hint, field: field)))
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func badRequest(_ message: String, field: String? = nil, hint: String = "Fix the request body and retry.") -> AgentError {
        AgentError(.badRequest, code: "invalid_request", message, hint: hint, field: field)
    }

    static func notFound(_ what: String, _ id: String, field: String? = nil) -> AgentError {
        AgentError(.notFound, code: "not_found", "no \(what) with ID \(id)",
                   hint: "List boards with GET /api/boards and read IDs from GET /api/boards/{id}.", field: field)
    }
}

struct ErrorBody: Codable {
    struct Detail: Codable {
        let code: String
        let message: String
        let hint: String
        let field: String?
    }

    let error: Detail
}
