import ArgumentParser
import Foundation
import KanbanModel
import KanbanStore

/// Prints a board as columns.
struct BoardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "board",
        abstract: "Print a board as columns (all boards when no ID is given)."
    )

    @Argument(help: "Board ID (or a unique prefix of it).") var id: String?
    @OptionGroup var data: DataDirectory

    func run() async throws {
        let store = try ReplicaStore(path: try data.replicaPath())
        let boards = try store.boards()
        guard let id else {
            if boards.isEmpty { print("No boards yet.") }
            for b in boards { print("\(b.id)  \(b.title)") }
            return
        }
        let matches = boards.filter { $0.id.rawValue.hasPrefix(id.lowercased()) }
        guard matches.count == 1, let doc = try store.document(matches[0].id) else {
            throw ValidationError(matches.isEmpty ? "no board matches '\(id)'; run `kanban board` to list boards"
                                                  : "'\(id)' matches \(matches.count) boards; give more of the ID")
        }
        print(BoardRenderer.render(doc, width: 100))
    }
}

enum BoardRenderer {
    /// Side-by-side columns of fixed width, task titles wrapped to one line each.
    static func render(_ doc: BoardDocument, width: Int) -> String {
        var lines = ["\(doc.title)  (\(doc.id))", ""]
        let columns = doc.columns
        guard !columns.isEmpty else { return (lines + ["(no columns)"]).joined(separator: "\n") }
        let colWidth = max(12, min(30, width / columns.count - 2))
        func cell(_ text: String) -> String {
            let clipped = text.count > colWidth ? String(text.prefix(colWidth - 1)) + "…" : text
            return clipped + String(repeating: " ", count: colWidth - clipped.count)
        }
        lines.append(columns.map { cell("\($0.title) (\($0.tasks.count))") }.joined(separator: "  "))
        lines.append(columns.map { _ in String(repeating: "─", count: colWidth) }.joined(separator: "  "))
        let depth = columns.map(\.tasks.count).max() ?? 0
        for row in 0..<depth {
            lines.append(columns.map { row < $0.tasks.count ? cell("• " + $0.tasks[row].title) : cell("") }
                .joined(separator: "  "))
        }
        if !doc.orphans.isEmpty {
            lines.append("")
            lines.append("Tasks whose column was deleted: " + doc.orphans.map(\.title).joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }
}
