import ArgumentParser
import Foundation
import KanbanModel

struct Ignored: Decodable {}

struct AddCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a task (at the top of a column by default).")
    @Argument(help: "Task title.") var title: String
    @Option(help: "Board ID or title (default: the first board).") var board: String?
    @Option(help: "Column title or ID (default: the first column).") var column: String?
    @Option(help: "Put the task directly below this task (ID or title).") var after: String?
    @Option(help: "Task description.") var description: String?
    @OptionGroup var agent: AgentOptions

    func run() async throws {
        let client = agent.client
        let doc = try await client.board(board)
        guard let target = try column.map({ try doc.column($0) }) ?? doc.columns.first else {
            throw ValidationError("board \(doc.title) has no columns yet; add one: kanban column add TITLE --board \(doc.id.short)")
        }
        let afterID = try after.map { try target.task($0).id.rawValue }
        let task = try await client.send("POST", "/api/columns/\(target.id)/tasks",
                                         body: ["title": title, "description": description, "after": afterID],
                                         as: EntitySnapshot.TaskSnapshot.self)
        print("added \(task.id.short)  \(task.title)  → \(target.title)")
    }
}

struct MoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mv", abstract: "Move a task to a column (top, or below --after).")
    @Argument(help: "Task ID or title.") var task: String
    @Argument(help: "Target column title or ID.") var column: String
    @Option(help: "Put the task directly below this task.") var after: String?
    @OptionGroup var agent: AgentOptions

    func run() async throws {
        let client = agent.client
        let (doc, found) = try await client.findTask(task)
        let target = try doc.column(column)
        let afterID = try after.map { try target.task($0).id.rawValue }
        _ = try await client.send("POST", "/api/tasks/\(found.id)/move", body: ["columnId": target.id.rawValue, "after": afterID],
                                  as: Ignored.self)
        print("moved \(found.title) → \(target.title)")
    }
}

struct EditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "edit", abstract: "Change a task's title or description.")
    @Argument(help: "Task ID or title.") var task: String
    @Option(help: "New title.") var title: String?
    @Option(help: "New description.") var description: String?
    @OptionGroup var agent: AgentOptions

    func validate() throws {
        if title == nil && description == nil { throw ValidationError("give --title and/or --description") }
    }

    func run() async throws {
        let (_, found) = try await agent.client.findTask(task)
        _ = try await agent.client.send("PATCH", "/api/tasks/\(found.id)", body: ["title": title, "description": description].compactMapValues { $0 },
                                        as: Ignored.self)
        print("edited \(found.id.short)")
    }
}

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a task (restorable with `kanban restore`).")
    @Argument(help: "Task ID or title.") var task: String
    @OptionGroup var agent: AgentOptions

    func run() async throws {
        let (_, found) = try await agent.client.findTask(task)
        _ = try await agent.client.send("DELETE", "/api/tasks/\(found.id)", body: nil, as: Ignored.self)
        print("deleted \(found.title) (restore with: kanban restore \(found.id.short))")
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restore a deleted task.")
    @Argument(help: "Task ID or title.") var task: String
    @OptionGroup var agent: AgentOptions

    func run() async throws {
        let (_, found) = try await agent.client.findTask(task)
        _ = try await agent.client.send("POST", "/api/tasks/\(found.id)/restore", body: nil, as: Ignored.self)
        print("restored \(found.title)")
    }
}
