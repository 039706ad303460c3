import ArgumentParser
import Foundation
import KanbanModel

/// `kanban conflicts [BOARD] [--restore OP]`: the edits that lost to a concurrent one, and
/// bringing one back (the web board's Conflicts panel, from the terminal).
struct ConflictsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conflicts",
        abstract: "List the edits that lost to a concurrent edit, or restore one.",
        discussion: """
            Two replicas that change the same field without seeing each other's change both keep \
            the same winner (the later clock); the other edit is listed here until it is restored \
            or overwritten.
            """)

    @Argument(help: "Board ID or title (default: the first board).") var board: String?
    @Option(help: ArgumentHelp("Restore this lost edit (its ID as listed, like replica:42).", valueName: "OP")) var restore: String?
    @OptionGroup var agent: AgentOptions

    func run() async throws {
        let client = agent.client
        let doc = try await client.board(board)
        let conflicts = try await client.get("/api/boards/\(doc.id)/conflicts", as: [Conflict].self)
        if let restore {
            guard let conflict = conflicts.first(where: { $0.loser.description == restore }) else {
                throw ValidationError(conflicts.isEmpty ? "no conflicts on \(doc.title)"
                    : "no lost edit \(restore) on \(doc.title); lost edits: \(conflicts.map(\.loser.description).joined(separator: ", "))")
            }
            let path = conflict.loser.description.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? conflict.loser.description
            _ = try await client.send("POST", "/api/boards/\(doc.id)/conflicts/\(path)/restore", body: nil, as: Ignored.self)
            print("restored \(Self.describe(conflict.loserValue, field: conflict.field, in: doc)) as the \(conflict.field.rawValue) of \(Self.name(conflict, in: doc))")
            return
        }
        guard !conflicts.isEmpty else {
            print("No conflicts on \(doc.title).")
            return
        }
        print("Conflicts on \(doc.title) (\(conflicts.count)):")
        for c in conflicts {
            print("  \(Self.name(c, in: doc)), \(c.field.rawValue): kept \(Self.describe(c.winnerValue, field: c.field, in: doc)), "
                  + "lost \(Self.describe(c.loserValue, field: c.field, in: doc))  (lost edit \(c.loser))")
        }
        print("Restore a lost edit: kanban conflicts \(doc.id.short) --restore \(conflicts[0].loser)")
    }

    /// "task “Ship it”", "column “Done”", "the board".
    static func name(_ conflict: Conflict, in doc: BoardDocument) -> String {
        let tasks = doc.columns.flatMap(\.tasks) + doc.orphans + doc.trash
        switch conflict.entity {
        case "task": return "task " + (tasks.first { $0.id == conflict.entityId }.map { "“\($0.title)”" } ?? conflict.entityId.short)
        case "column": return "column " + ((doc.columns + doc.deletedColumns).first { $0.id == conflict.entityId }.map { "“\($0.title)”" }
                                           ?? conflict.entityId.short)
        default: return "the board"
        }
    }

    /// A register's value in words, as the web board's Conflicts panel says it.
    static func describe(_ value: ConflictValue, field: BoardOperation.Field, in doc: BoardDocument) -> String {
        switch value {
        case .flag(let deleted): return deleted ? "deleted" : "not deleted"
        case .placement(let place):
            return "in " + ((doc.columns + doc.deletedColumns).first { $0.id == place.column }.map { "“\($0.title)”" } ?? "a column not on this board")
        case .position: return "another place in the order"
        case .text(let text):
            if field == .position { return "another place in the order" }
            return field == .description && text.isEmpty ? "no description" : "“\(text)”"
        }
    }
}
