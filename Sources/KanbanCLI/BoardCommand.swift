import ArgumentParser
import Foundation
import KanbanAgent
import KanbanModel
import KanbanStore

/// Prints a board as columns.
struct BoardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "board",
        abstract: "Print a board as columns, or list boards when no ID is given.",
        discussion: "Reads through the running agent; --offline reads the data directory instead."
    )

    @Argument(help: "Board ID or title.") var id: String?
    @Flag(help: "Show short task IDs (their last 8 characters).") var ids = false
    @Flag(help: "Print the board document (or the list of boards) as JSON, as the agent's API gives it.") var json = false
    @Option(help: "Create a board with this title.") var create: String?
    @Option(help: "Rename the board given by ID or title to this title.") var rename: String?
    @Flag(help: "Read the local replica directly (no agent needed).") var offline = false
    @OptionGroup var data: DataDirectory
    @OptionGroup var agent: AgentOptions

    func validate() throws {
        if rename != nil && id == nil { throw ValidationError("--rename needs the board: kanban board BOARD --rename TITLE") }
        if rename != nil && create != nil { throw ValidationError("give --create or --rename, not both") }
        if offline && (rename != nil || create != nil) { throw ValidationError("--offline only reads; run the agent to --create or --rename") }
    }

    func run() async throws {
        if offline {
            let store = try ReplicaStore(path: try data.replicaPath())
            defer { try? store.close() }
            let boards = try store.boards()
            guard let id else {
                if json { return try printJSON(boards.map { AgentClient.Summary(id: $0.id.rawValue, title: $0.title) }) }
                if boards.isEmpty { print("No boards yet.") }
                for b in boards { print("\(b.id)  \(b.title)") }
                return
            }
            let matches = boards.filter { ShortID.matches($0.id.rawValue, id) || $0.title == id }
            guard matches.count == 1, let doc = try store.document(matches[0].id) else {
                throw ValidationError(matches.isEmpty ? "no board matches '\(id)'" : "'\(id)' matches \(matches.count) boards")
            }
            if json { return try printJSON(doc) }
            print(BoardRenderer.render(doc, width: 100, ids: ids))
            return
        }
        let client = agent.client
        if let create {
            let doc = try await client.send("POST", "/api/boards", body: ["title": create], as: BoardDocument.self)
            print("created \(doc.id)  \(doc.title)")
            return
        }
        if let rename, let id {
            let doc = try await client.board(id)
            _ = try await client.send("PATCH", "/api/boards/\(doc.id)", body: ["title": rename], as: Ignored.self)
            print("renamed board \(doc.title) → \(rename)")
            return
        }
        guard id != nil else {
            let boards = try await client.get("/api/boards", as: [AgentClient.Summary].self)
            if json { return try printJSON(boards) }
            if boards.isEmpty { print("No boards yet. Create one: kanban board --create \"My board\"") }
            for b in boards { print("\(b.id)  \(b.title)") }
            return
        }
        let doc = try await client.board(id)
        if json { return try printJSON(doc) }
        print(BoardRenderer.render(doc, width: terminalWidth(), ids: ids))
        if let line = try? await Self.queuedLine(doc, client) { print(line) }
    }

    struct LinkState: Decodable { let state: String }

    /// "3 changes made here are not on the relay yet ..." when the agent has a relay and some of
    /// this board's changes wait for it (an agent without a relay keeps everything here).
    static func queuedLine(_ doc: BoardDocument, _ client: AgentClient) async throws -> String? {
        guard try await client.get("/health/websocket", as: LinkState.self).state != "disabled" else { return nil }
        let queued = try await client.get("/api/boards/\(doc.id)/queued", as: Agent.QueuedChanges.self)
        guard !queued.operations.isEmpty else { return nil }
        let count = queued.operations.count
        let why = queued.refused.first.map { " (the relay refuses them: \($0.code))" } ?? ""
        return "\n\(QueuedCommand.changes(count)) made here \(count == 1 ? "is" : "are") not on the relay yet\(why): kanban queued \(doc.id.short)"
    }
}

func terminalWidth() -> Int {
    Int(ProcessInfo.processInfo.environment["COLUMNS"] ?? "") ?? 100
}

enum BoardRenderer {
    /// Side-by-side columns of fixed width, one line per task.
    static func render(_ doc: BoardDocument, width: Int, ids: Bool = false) -> String {
        var lines = ["\(doc.title)  (\(doc.id))", ""]
        let columns = doc.columns
        guard !columns.isEmpty else {
            lines.append("(no columns; add one: kanban column add TITLE --board \(doc.id.short))")
            return (lines + deletedLines(doc)).joined(separator: "\n")
        }
        let colWidth = max(12, min(32, width / columns.count - 2))
        func cell(_ text: String) -> String {
            let clipped = text.count > colWidth ? String(text.prefix(colWidth - 1)) + "…" : text
            return clipped + String(repeating: " ", count: colWidth - clipped.count)
        }
        lines.append(columns.map { cell("\($0.title) (\($0.tasks.count))") }.joined(separator: "  "))
        lines.append(columns.map { _ in String(repeating: "─", count: colWidth) }.joined(separator: "  "))
        let depth = columns.map(\.tasks.count).max() ?? 0
        for row in 0..<depth {
            lines.append(columns.map { column -> String in
                guard row < column.tasks.count else { return cell("") }
                let task = column.tasks[row]
                return cell((ids ? task.id.short + " " : "• ") + task.title)
            }.joined(separator: "  "))
        }
        if !doc.orphans.isEmpty {
            lines.append("")
            lines.append("Tasks whose column was deleted: " + doc.orphans.map(\.title).joined(separator: ", "))
        }
        if !doc.trash.isEmpty {
            lines.append("Trash: " + doc.trash.prefix(5).map(\.title).joined(separator: ", ") + (doc.trash.count > 5 ? ", …" : ""))
        }
        return (lines + deletedLines(doc)).joined(separator: "\n")
    }

    /// The deleted columns, with the short ID `kanban column restore` takes.
    static func deletedLines(_ doc: BoardDocument) -> [String] {
        guard !doc.deletedColumns.isEmpty else { return [] }
        return ["Deleted columns: " + doc.deletedColumns.map { "\($0.title) (\($0.id.short))" }.joined(separator: ", ")]
    }
}
