import ArgumentParser
import Foundation
import KanbanModel

/// `kanban column add|rename|mv|rm|restore`: a board's columns from the terminal.
struct ColumnCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "column",
        abstract: "Add, rename, move, delete or restore a board's columns.",
        discussion: "Columns are named by title (case-insensitive) or ID (whole, its start, or its last 4+ characters); --board picks the board (default: the first).",
        subcommands: [Add.self, Rename.self, Move.self, Remove.self, Restore.self])

    /// The board and agent every column command takes.
    struct Target: ParsableArguments {
        @Option(help: "Board ID or title (default: the first board).") var board: String?
        @OptionGroup var agent: AgentOptions
    }

    /// Where a column goes: below `--after`, or first with `--first`.
    struct Placement: ParsableArguments {
        @Option(help: "Put the column right of this column (title or ID).") var after: String?
        @Flag(help: "Put the column first (leftmost).") var first = false

        func validate() throws {
            if after != nil && first { throw ValidationError("give --after COLUMN or --first, not both") }
        }
    }

    struct Created: Decodable { let id: String; let title: String }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a column (last, unless --after or --first).")
        @Argument(help: "Column title.") var title: String
        @OptionGroup var placement: Placement
        @OptionGroup var target: Target

        func run() async throws {
            let client = target.agent.client
            let doc = try await client.board(target.board)
            let after: String? = placement.first ? nil : try placement.after.map { try doc.column($0).id.rawValue } ?? doc.columns.last?.id.rawValue
            let column = try await client.send("POST", "/api/boards/\(doc.id)/columns", body: ["title": title, "after": after], as: Created.self)
            let place = after.flatMap { id in doc.columns.first { $0.id.rawValue == id } }.map { "right of \($0.title)" } ?? "first"
            print("added column \(ShortID.of(column.id))  \(column.title)  on \(doc.title), \(place)")
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rename", abstract: "Rename a column.")
        @Argument(help: "Column title or ID.") var column: String
        @Argument(help: "New title.") var title: String
        @OptionGroup var target: Target

        func run() async throws {
            let client = target.agent.client
            let found = try await client.board(target.board).column(column)
            _ = try await client.send("PATCH", "/api/columns/\(found.id)", body: ["title": title], as: Ignored.self)
            print("renamed column \(found.title) → \(title)")
        }
    }

    struct Move: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "mv", abstract: "Move a column (--after COLUMN or --first).")
        @Argument(help: "Column title or ID.") var column: String
        @OptionGroup var placement: Placement
        @OptionGroup var target: Target

        func validate() throws {
            if placement.after == nil && !placement.first { throw ValidationError("say where: --after COLUMN or --first") }
        }

        func run() async throws {
            let client = target.agent.client
            let doc = try await client.board(target.board)
            let found = try doc.column(column)
            let after = try placement.after.map { try doc.column($0) }
            if after?.id == found.id { throw ValidationError("a column cannot go right of itself") }
            // An explicit null `after` moves the column first; a missing one would not move it.
            let body: [String: Any?] = ["after": after.map { $0.id.rawValue as Any } ?? NSNull()]
            _ = try await client.send("PATCH", "/api/columns/\(found.id)", body: body, as: Ignored.self)
            print("moved column \(found.title) " + (after.map { "right of \($0.title)" } ?? "first"))
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a column (restorable with `kanban column restore`).")
        @Argument(help: "Column title or ID.") var column: String
        @OptionGroup var target: Target

        func run() async throws {
            let client = target.agent.client
            let found = try await client.board(target.board).column(column)
            _ = try await client.send("DELETE", "/api/columns/\(found.id)", body: nil, as: Ignored.self)
            let tasks = found.tasks.count
            print("deleted column \(found.title)" + (tasks == 0 ? "" : "; its \(tasks) task\(tasks == 1 ? "" : "s") wait under \"Tasks whose column was deleted\"")
                  + " (restore with: kanban column restore \(found.id.short))")
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restore a deleted column, with the tasks it had.")
        @Argument(help: "Deleted column's title or ID (`kanban board ID` lists them).") var column: String
        @OptionGroup var target: Target

        func run() async throws {
            let client = target.agent.client
            let doc = try await client.board(target.board)
            let matches = doc.deletedColumns.filter {
                ShortID.matches($0.id.rawValue, column) || $0.title.lowercased() == column.lowercased()
            }
            guard matches.count == 1 else {
                throw ValidationError(matches.isEmpty
                    ? "no deleted column '\(column)' on \(doc.title)" + (doc.deletedColumns.isEmpty ? " (none is deleted)"
                        : "; deleted: \(doc.deletedColumns.map { "\($0.title) (\($0.id.short))" }.joined(separator: ", "))")
                    : "'\(column)' matches \(matches.count) deleted columns; give its ID")
            }
            _ = try await client.send("POST", "/api/columns/\(matches[0].id)/restore", body: nil, as: Ignored.self)
            print("restored column \(matches[0].title)")
        }
    }
}
