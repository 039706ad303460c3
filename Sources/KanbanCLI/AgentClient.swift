import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KanbanModel

/// The terminal commands' connection to a running agent (`--agent URL`, `$KANBAN_AGENT`, or
/// http://127.0.0.1:7420).
struct AgentOptions: ParsableArguments {
    @Option(name: .customLong("agent"), help: ArgumentHelp("Agent base URL (default $KANBAN_AGENT or http://127.0.0.1:7420).", valueName: "URL"))
    var url: String?

    var baseURL: String {
        let raw = url ?? ProcessInfo.processInfo.environment["KANBAN_AGENT"] ?? "http://127.0.0.1:7420"
        return raw.hasSuffix("/") ? String(raw.dropLast()) : raw
    }

    var client: AgentClient { AgentClient(base: baseURL) }
}

struct AgentClient {
    let base: String

    struct APIError: Decodable { let error: Detail; struct Detail: Decodable { let code: String; let message: String; let hint: String } }

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try await send("GET", path, body: nil, as: type)
    }

    func send<T: Decodable>(_ method: String, _ path: String, body: [String: Any?]?, as type: T.Type) async throws -> T {
        guard let url = URL(string: base + path) else { throw ValidationError("bad agent URL \(base)") }
        var request = URLRequest(url: url, timeoutInterval: 10)
        request.httpMethod = method
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body.mapValues { $0 ?? NSNull() })
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw ValidationError("""
                no agent answered at \(base) (\(error.localizedDescription)).
                Start one with `kanban agent`, or point to it with --agent URL / KANBAN_AGENT.
                """)
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            if let apiError = try? JSONDecoder().decode(APIError.self, from: data) {
                throw ValidationError("\(apiError.error.message) (\(apiError.error.code), HTTP \(status)). \(apiError.error.hint)")
            }
            throw ValidationError("the agent answered HTTP \(status) for \(method) \(path)")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601  // how the agent writes dates (`apiEncoder`)
        return try decoder.decode(T.self, from: data)
    }

    struct Summary: Codable { let id: String; let title: String }

    /// The board named by an ID or title; the only/first board when nil.
    func board(_ selector: String?) async throws -> BoardDocument {
        let boards = try await get("/api/boards", as: [Summary].self)
        guard !boards.isEmpty else { throw ValidationError("there are no boards yet; create one in the web board or with `kanban board --create TITLE`") }
        let chosen: Summary
        if let selector {
            let matches = boards.filter { ShortID.matches($0.id, selector) || $0.title == selector }
            guard matches.count == 1 else {
                throw ValidationError(matches.isEmpty ? "no board matches '\(selector)'; `kanban board` lists them"
                                                      : "'\(selector)' matches \(matches.count) boards; give more of the ID")
            }
            chosen = matches[0]
        } else {
            chosen = boards[0]
        }
        return try await get("/api/boards/\(chosen.id)", as: BoardDocument.self)
    }

    /// A task anywhere on any board, by ID (see ShortID) or exact title.
    func findTask(_ selector: String) async throws -> (BoardDocument, BoardDocument.TaskView) {
        var found: [(BoardDocument, BoardDocument.TaskView)] = []
        for summary in try await get("/api/boards", as: [Summary].self) {
            let doc = try await get("/api/boards/\(summary.id)", as: BoardDocument.self)
            for task in doc.columns.flatMap(\.tasks) + doc.orphans + doc.trash
            where ShortID.matches(task.id.rawValue, selector) || task.title == selector {
                found.append((doc, task))
            }
        }
        guard found.count == 1 else {
            throw ValidationError(found.isEmpty ? "no task matches '\(selector)'; `kanban board ID` shows task IDs with --ids"
                                                : "'\(selector)' matches \(found.count) tasks; give more of the ID")
        }
        return found[0]
    }
}

extension BoardDocument.ColumnView {
    /// A task of this column by ID (see ShortID) or exact title.
    func task(_ selector: String) throws -> BoardDocument.TaskView {
        guard let task = tasks.first(where: { ShortID.matches($0.id.rawValue, selector) || $0.title == selector }) else {
            throw ValidationError("no task '\(selector)' in column \(title)")
        }
        return task
    }
}

extension BoardDocument {
    /// A column by ID (see ShortID) or exact (case-insensitive) title.
    func column(_ selector: String) throws -> ColumnView {
        let matches = columns.filter { ShortID.matches($0.id.rawValue, selector) || $0.title.lowercased() == selector.lowercased() }
        guard matches.count == 1 else {
            throw ValidationError(matches.isEmpty ? "no column '\(selector)' on \(title); columns: \(columns.map(\.title).joined(separator: ", "))"
                                                  : "'\(selector)' matches \(matches.count) columns")
        }
        return matches[0]
    }
}

/// What `--json` prints (`kanban board`, `kanban doctor`, `kanban queued`): sorted keys,
/// indented, slashes as is, dates in ISO 8601 as the agent's API writes them.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// How the terminal commands show and find things by ID. IDs are time-ordered (UUIDv7): their
/// first characters are the creation time, the same for everything made within a minute or so,
/// so the short form is the last 8 characters (random). A selector may be the start of an ID
/// (the whole ID included) or, from 4 characters, its end.
enum ShortID {
    static func of(_ raw: String) -> String { String(raw.suffix(8)) }

    static func matches(_ raw: String, _ selector: String) -> Bool {
        let s = selector.lowercased()
        return !s.isEmpty && (raw.hasPrefix(s) || (s.count >= 4 && raw.hasSuffix(s)))
    }
}

extension EntityID {
    var short: String { ShortID.of(rawValue) }
}
