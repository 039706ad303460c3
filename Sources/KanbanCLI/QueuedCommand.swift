import ArgumentParser
import Foundation
import KanbanAgent
import KanbanModel

/// `kanban queued [BOARD] [--discard]`: this agent's changes that no relay has yet, in words,
/// and throwing a board's away when the relay will never take them (a read-only token, a board
/// outside the token) or they are not wanted.
struct QueuedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queued",
        abstract: "List the changes not yet on the relay, or discard a board's.",
        discussion: """
            Changes made here wait in a queue until the relay acknowledges them. A relay that \
            refuses them (a read-only token, a board the token does not cover) leaves them queued \
            for good: --discard throws the board's queued changes away and rebuilds the board \
            from the rest, which is the team's board as the relay has it. A change the relay had \
            already stored comes back with the next catch-up.
            """)

    @Argument(help: "Board ID or title (default: every board with queued changes).") var board: String?
    @Flag(help: "Throw away BOARD's queued changes (cannot be undone; asks first).") var discard = false
    @Flag(help: "With --discard: do not ask (needed when no terminal can be asked).") var yes = false
    @Flag(help: "Print the agent's JSON instead of text.") var json = false
    @OptionGroup var agent: AgentOptions

    func validate() throws {
        if yes && !discard { throw ValidationError("--yes confirms --discard, which is not given: kanban queued BOARD --discard --yes") }
        if discard && board == nil {
            throw ValidationError("--discard needs the board whose changes to throw away: kanban queued BOARD --discard")
        }
    }

    func run() async throws {
        let client = agent.client
        if discard, let board {
            let doc = try await client.board(board)
            let queued = try await client.get("/api/boards/\(doc.id)/queued", as: Agent.QueuedChanges.self)
            if !queued.operations.isEmpty && !yes {
                guard isatty(STDIN_FILENO) != 0 else {
                    throw ValidationError("--discard throws \(Self.changes(queued.operations.count)) away for good; add --yes to confirm (there is no terminal to ask on)")
                }
                print("These \(Self.changes(queued.operations.count)) to “\(doc.title)” go, for good:")
                for op in queued.operations { print("  \(Self.time(op.stamp))  \(Self.describe(op, in: doc))") }
                print("Discard them? [y/N] ", terminator: "")
                fflush(nil)
                guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                    print("Nothing discarded.")
                    return
                }
            }
            let result = try await client.send("POST", "/api/boards/\(doc.id)/queued/discard", body: nil, as: Agent.DiscardedChanges.self)
            if json { return try printJSON(result) }
            switch (result.discarded.count, result.document) {
            case (0, _): print("Nothing queued on \(doc.title): nothing discarded.")
            case (let n, nil): print("Discarded \(Self.changes(n)); “\(doc.title)” existed only through them and is gone.")
            case (let n, .some(let now)): print("Discarded \(Self.changes(n)) to “\(now.title)”; it holds only what came from the relay now.")
            }
            return
        }
        let docs: [BoardDocument]
        if let board {
            docs = [try await client.board(board)]
        } else {
            var all: [BoardDocument] = []
            for summary in try await client.get("/api/boards", as: [AgentClient.Summary].self) {
                all.append(try await client.get("/api/boards/\(summary.id)", as: BoardDocument.self))
            }
            docs = all
        }
        var queued: [(BoardDocument, Agent.QueuedChanges)] = []
        for doc in docs {
            let q = try await client.get("/api/boards/\(doc.id)/queued", as: Agent.QueuedChanges.self)
            if board != nil || !q.operations.isEmpty { queued.append((doc, q)) }
        }
        if json { return try printJSON(queued.map(\.1)) }
        guard queued.contains(where: { !$0.1.operations.isEmpty }) else {
            print(board == nil ? "Nothing queued: the relay has every change made here." : "Nothing queued on \(docs[0].title).")
            return
        }
        for (doc, q) in queued {
            print("\(doc.title) (\(doc.id.short)): \(Self.changes(q.operations.count)) not on the relay yet")
            for refusal in q.refused {
                print("  refused by the relay: \(refusal.message) (\(refusal.code))")
                print("  \(refusal.fix)")
            }
            for op in q.operations {
                print("  \(Self.time(op.stamp))  \(Self.describe(op, in: doc))")
            }
        }
        if let (doc, _) = queued.first(where: { !$0.1.refused.isEmpty }) {
            print("Throw them away with: kanban queued \(doc.id.short) --discard")
        }
    }

    static func changes(_ n: Int) -> String { n == 1 ? "1 change" : "\(n) changes" }

    static func time(_ stamp: HLCStamp) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: Date(timeIntervalSince1970: Double(stamp.wallMillis) / 1000))
    }

    /// "add task “Ship it” to “Doing”", in the board's current names.
    static func describe(_ op: BoardOperation, in doc: BoardDocument) -> String {
        let columns = doc.columns + doc.deletedColumns
        let tasks = doc.columns.flatMap(\.tasks) + doc.orphans + doc.trash
        func column(_ id: EntityID) -> String { columns.first { $0.id == id }.map { "“\($0.title)”" } ?? "column \(id.short)" }
        func task(_ id: EntityID) -> String { tasks.first { $0.id == id }.map { "“\($0.title)”" } ?? "task \(id.short)" }
        switch op.action {
        case .createBoard(let title): return "create the board “\(title)”"
        case .renameBoard(let title): return "rename the board to “\(title)”"
        case .createColumn(_, let title, _): return "add column “\(title)”"
        case .renameColumn(let id, let title): return "rename column \(column(id)) to “\(title)”"
        case .moveColumn(let id, _): return "move column \(column(id))"
        case .deleteColumn(let id): return "delete column \(column(id))"
        case .restoreColumn(let id): return "restore column \(column(id))"
        case .createTask(_, let col, _, let title, _): return "add task “\(title)” to \(column(col))"
        case .updateTask(let id, let title, let description):
            switch (title, description) {
            case (let title?, nil): return "rename a task to “\(title)” (\(id.short))"
            case (nil, _?): return "edit the description of \(task(id))"
            default: return "edit task \(task(id))"
            }
        case .moveTask(let id, let col, _): return "move task \(task(id)) to \(column(col))"
        case .deleteTask(let id): return "delete task \(task(id))"
        case .restoreTask(let id): return "restore task \(task(id))"
        }
    }
}
