import Foundation
import KanbanModel

/// One route: an HTTP method (upper case) and a path template like `/api/tasks/{id}`.
struct Route: Hashable, Sendable, Comparable, CustomStringConvertible {
    let method: String
    let path: String

    init(_ method: String, _ path: String) {
        self.method = method.uppercased()
        self.path = path
    }

    var description: String { "\(method) \(path)" }
    static func < (a: Route, b: Route) -> Bool { (a.path, a.method) < (b.path, b.method) }

    /// The path with each `{name}` replaced by `values[name]`.
    func uri(_ values: [String: String]) -> String {
        var result = path
        for (name, value) in values { result = result.replacingOccurrences(of: "{\(name)}", with: value) }
        return result
    }

    var parameterNames: [String] {
        path.split(separator: "/").filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) }
    }
}

/// `Protocol/agent-api.openapi.json`, with a small JSON Schema checker for responses:
/// `$ref`, `type` (+ `nullable`), `required`, `properties`, `additionalProperties: false`,
/// `items`, `enum`, `allOf` / `anyOf` / `oneOf`, string lengths, `pattern` and `format: uuid`.
struct OpenAPIDocument: Sendable {
    let root: JSONValue

    static let fileURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocol/agent-api.openapi.json")

    static func load() throws -> OpenAPIDocument {
        OpenAPIDocument(root: try JSONValue(parsing: Data(contentsOf: fileURL)))
    }

    static let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    /// Every (method, path) the document describes.
    var routes: Set<Route> {
        var result = Set<Route>()
        for (path, item) in root["paths"]?.object ?? [:] {
            for method in Self.methods where item[method] != nil { result.insert(Route(method, path)) }
        }
        return result
    }

    func operation(_ route: Route) -> JSONValue? {
        root["paths"]?[route.path]?[route.method.lowercased()]
    }

    /// The status codes documented for a route.
    func statuses(_ route: Route) -> Set<Int> {
        Set((operation(route)?["responses"]?.object ?? [:]).keys.compactMap { Int($0) })
    }

    /// The JSON schema documented for one response of a route, if it has a JSON body.
    func responseSchema(_ route: Route, status: Int) -> JSONValue? {
        guard let response = operation(route)?["responses"]?[String(status)] else { return nil }
        return resolve(response)["content"]?["application/json"]?["schema"]
    }

    /// The named schema under `components/schemas`.
    func schema(_ name: String) -> JSONValue {
        .object(["$ref": .string("#/components/schemas/\(name)")])
    }

    func resolve(_ value: JSONValue) -> JSONValue {
        var value = value
        while let ref = value["$ref"]?.string {
            var target: JSONValue? = root
            for part in ref.dropFirst(2).split(separator: "/") { target = target?[String(part)] }
            guard let found = target else { return .object(["x-unresolved": .string(ref)]) }
            value = found
        }
        return value
    }

    /// Why `value` does not match `schema`; empty when it does.
    func violations(of value: JSONValue, against schema: JSONValue, at path: String = "$") -> [String] {
        let schema = resolve(schema)
        if let ref = schema["x-unresolved"]?.string { return ["\(path): unresolved $ref \(ref)"] }
        var problems: [String] = []

        if case .null = value, schema["nullable"]?.bool == true { return [] }
        for sub in schema["allOf"]?.array ?? [] {
            problems += violations(of: value, against: sub, at: path)
        }
        if let options = schema["anyOf"]?.array,
           !options.contains(where: { violations(of: value, against: $0, at: path).isEmpty }) {
            problems.append("\(path): matches none of anyOf")
        }
        if let options = schema["oneOf"]?.array {
            let matching = options.filter { violations(of: value, against: $0, at: path).isEmpty }.count
            if matching != 1 { problems.append("\(path): matches \(matching) of oneOf, not exactly 1") }
        }
        if let expected = schema["type"]?.string {
            let actual = value.typeName
            let ok = actual == expected || (expected == "number" && actual == "integer")
            if !ok { return problems + ["\(path): expected \(expected), got \(actual) \(value)"] }
        }
        if let allowed = schema["enum"]?.array, !allowed.contains(value) {
            problems.append("\(path): \(value) is not one of \(allowed)")
        }
        switch value {
        case .object(let fields):
            for name in schema["required"]?.array?.compactMap(\.string) ?? [] where fields[name] == nil {
                problems.append("\(path): missing required '\(name)'")
            }
            let properties = schema["properties"]?.object ?? [:]
            for (name, field) in fields {
                if let sub = properties[name] {
                    problems += violations(of: field, against: sub, at: "\(path).\(name)")
                } else if schema["additionalProperties"]?.bool == false {
                    problems.append("\(path): unexpected property '\(name)'")
                }
            }
        case .array(let items):
            if let sub = schema["items"] {
                for (index, item) in items.enumerated() {
                    problems += violations(of: item, against: sub, at: "\(path)[\(index)]")
                }
            }
        case .string(let text):
            let length = text.unicodeScalars.count
            if let max = schema["maxLength"]?.int, length > max { problems.append("\(path): longer than \(max)") }
            if let min = schema["minLength"]?.int, length < min { problems.append("\(path): shorter than \(min)") }
            if schema["format"]?.string == "uuid", UUID(uuidString: text) == nil {
                problems.append("\(path): '\(text)' is not a UUID")
            }
            if let pattern = schema["pattern"]?.string,
               text.range(of: pattern, options: .regularExpression) == nil {
                problems.append("\(path): '\(text.prefix(60))' does not match \(pattern)")
            }
        default:
            break
        }
        return problems
    }
}
