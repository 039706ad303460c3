import Foundation
import Hummingbird
import KanbanModel

/// A request's JSON object, read strictly: unknown fields, wrong types and oversized bodies are
/// refused with an error naming the field.
struct JSONBody {
    private let object: [String: Any]

    static func read(_ request: Request, limit: Int, allowed: Set<String>) async throws -> JSONBody {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: limit)
        } catch {
            throw AgentError(.contentTooLarge, code: "body_too_large", "request body is larger than \(limit) bytes",
                             hint: "Send a smaller body; titles are at most \(OperationLimits.maxTitleLength) characters.")
        }
        let data = Data(buffer.readableBytesView)
        if data.isEmpty { throw AgentError.badRequest("request body is empty; expected a JSON object") }
        guard let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
            throw AgentError.badRequest("request body is not valid JSON")
        }
        guard let object = value as? [String: Any] else {
            throw AgentError.badRequest("request body must be a JSON object")
        }
        if let unknown = object.keys.filter({ !allowed.contains($0) }).sorted().first {
            throw AgentError.badRequest("unknown field '\(unknown.prefix(40))'", field: String(unknown.prefix(40)),
                                        hint: "Allowed fields: \(allowed.sorted().joined(separator: ", ")).")
        }
        return JSONBody(object: object)
    }

    func has(_ key: String) -> Bool { object[key] != nil }

    func string(_ key: String) throws -> String {
        guard let value = try optionalString(key) else {
            throw AgentError.badRequest("'\(key)' is required", field: key)
        }
        return value
    }

    func optionalString(_ key: String) throws -> String? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let text = value as? String else {
            throw AgentError.badRequest("'\(key)' must be a string", field: key)
        }
        return text
    }

    /// nil: absent; .some(nil): explicitly null; .some(id): an entity ID.
    func optionalID(_ key: String) throws -> EntityID?? {
        guard let value = object[key] else { return nil }
        if value is NSNull { return .some(nil) }
        guard let text = value as? String, let id = EntityID(text) else {
            throw AgentError.badRequest("'\(key)' must be an entity ID (UUID) or null", field: key)
        }
        return .some(id)
    }

    func id(_ key: String) throws -> EntityID {
        guard case .some(.some(let id)) = try optionalID(key) else {
            throw AgentError.badRequest("'\(key)' is required", field: key)
        }
        return id
    }
}

extension OperationError {
    var agentError: AgentError { AgentError.badRequest(message, field: field.isEmpty ? nil : field) }
}
