import ArgumentParser
import Foundation
import KanbanModel
import Logging
import Synchronization
import WSClient

/// Redraws a board in the terminal as it changes, from the agent's event stream: at once for a
/// change after a quiet moment, and at most 10 times a second during a burst (a catch-up after a
/// reconnect brings thousands of events; drawing each would print the whole board each time).
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "watch", abstract: "Show a board and redraw it live as it changes.")
    @Argument(help: "Board ID or title (default: the first board).") var board: String?
    @Option(help: "Stop after this many changes (for scripts and tests).") var changes: Int?
    @OptionGroup var agent: AgentOptions

    static let frame: Duration = .milliseconds(100)

    /// One frame for the terminal: from the top left, each line written over the last frame's
    /// and cleared to its end, and whatever the last frame had below cleared, so the board does
    /// not flicker the way clearing the whole screen first made it (only the first frame does).
    static func screen(_ text: String, clearFirst: Bool) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0 + "\u{1B}[K" }
        return (clearFirst ? "\u{1B}[2J" : "") + "\u{1B}[H" + lines.joined(separator: "\n") + "\u{1B}[J"
    }

    func validate() throws {
        if let changes, changes < 1 { throw ValidationError("--changes must be at least 1") }
    }

    func run() async throws {
        let doc = try await agent.client.board(board)
        let wsBase = agent.baseURL.replacingOccurrences(of: "http://", with: "ws://").replacingOccurrences(of: "https://", with: "wss://")
        var logger = Logger(label: "kanban.watch")
        logger.logLevel = .warning
        let limit = changes
        let live = SharedBoard()
        // One pending "draw" at most: signals that come while a frame is drawn or waited out
        // fold into one, and the last state is always drawn before the drawer ends.
        let (draws, draw) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        try await WebSocketClient.connect(url: "\(wsBase)/api/events?board=\(doc.id)", logger: logger) { inbound, _, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var first = true
                    for await _ in draws {
                        let board = live.board.withLock { $0 }
                        let text = BoardRenderer.render(board.document, width: terminalWidth()) + "\n\n\(board.status)  (Ctrl-C to stop)"
                        print(Self.screen(text, clearFirst: first))
                        first = false
                        fflush(nil)
                        try await Task.sleep(for: Self.frame)
                    }
                }
                var seen = 0
                for try await message in inbound.messages(maxSize: 16 << 20) {
                    guard case .text(let text) = message else { continue }
                    let (changed, wasChange) = live.board.withLock { board in (board.apply(Data(text.utf8)), board.lastWasChange) }
                    guard changed else { continue }
                    draw.yield()
                    if wasChange { seen += 1 }
                    if let limit, seen >= limit { break }
                }
                draw.finish()
                try await group.waitForAll()
            }
        }
    }
}

/// The board the stream updates and the drawer reads.
final class SharedBoard: Sendable {
    let board = Mutex(LiveBoard())
}

/// A board kept up to date from stream events alone (no refetch), ordered like the agent does.
struct LiveBoard: Sendable {
    var id: EntityID?
    var title = ""
    var version: Int64 = 0
    var columns: [EntityID: EntitySnapshot.ColumnSnapshot] = [:]
    var tasks: [EntityID: EntitySnapshot.TaskSnapshot] = [:]
    var status = "live"
    var lastWasChange = false

    struct Envelope: Decodable {
        let type: String
        let version: Int64?
        let board: BoardDocumentOrView?
        let column: EntitySnapshot.ColumnSnapshot?
        let task: EntitySnapshot.TaskSnapshot?
        let sync: SyncState?
    }

    struct SyncState: Decodable { let state: String; let queuedOperations: Int? }

    enum BoardDocumentOrView: Decodable {
        case document(BoardDocument)
        case view(EntitySnapshot.BoardView)
        init(from decoder: any Decoder) throws {
            if let doc = try? BoardDocument(from: decoder) { self = .document(doc) } else { self = .view(try EntitySnapshot.BoardView(from: decoder)) }
        }
    }

    /// Applies one stream message; false if it changed nothing worth redrawing.
    mutating func apply(_ data: Data) -> Bool {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: data) else { return false }
        lastWasChange = false
        if let sync = envelope.sync {
            status = "relay: \(sync.state)" + ((sync.queuedOperations ?? 0) > 0 ? ", \(sync.queuedOperations!) queued" : "")
        }
        switch envelope.type {
        case "snapshot":
            guard case .document(let doc)? = envelope.board else { return false }
            id = doc.id
            title = doc.title
            version = doc.version
            columns = [:]
            tasks = [:]
            for column in doc.columns {
                columns[column.id] = .init(id: column.id, boardId: doc.id, title: column.title, position: column.position, deleted: false, created: true)
                for task in column.tasks { tasks[task.id] = snapshot(task, board: doc.id) }
            }
            for task in doc.orphans + doc.trash { tasks[task.id] = snapshot(task, board: doc.id) }
            return true
        case "sync:status":
            return true
        default:
            guard let v = envelope.version, v > version else { return false }
            version = v
            lastWasChange = true
            if let column = envelope.column { columns[column.id] = column }
            if let task = envelope.task { tasks[task.id] = task }
            if case .view(let view)? = envelope.board { title = view.title }
            return true
        }
    }

    private func snapshot(_ task: BoardDocument.TaskView, board: EntityID) -> EntitySnapshot.TaskSnapshot {
        .init(id: task.id, boardId: board, columnId: task.columnId, position: task.position, title: task.title,
              description: task.description, deleted: task.deleted, created: true)
    }

    var document: BoardDocument {
        let visible = columns.values.filter { $0.created && !$0.deleted }.sorted { ($0.position, $0.id) < ($1.position, $1.id) }
        let visibleIDs = Set(visible.map(\.id))
        func view(_ t: EntitySnapshot.TaskSnapshot) -> BoardDocument.TaskView {
            .init(id: t.id, columnId: t.columnId!, position: t.position!, title: t.title, description: t.description, deleted: t.deleted)
        }
        let placed = tasks.values.filter { $0.created && $0.columnId != nil && $0.position != nil }
        return BoardDocument(
            id: id ?? EntityID.make(), title: title, version: version,
            columns: visible.map { c in
                .init(id: c.id, title: c.title, position: c.position,
                      tasks: placed.filter { !$0.deleted && $0.columnId == c.id }.map(view).sorted { ($0.position, $0.id) < ($1.position, $1.id) })
            },
            orphans: placed.filter { !$0.deleted && !visibleIDs.contains($0.columnId!) }.map(view)
                .sorted { ($0.columnId, $0.position, $0.id) < ($1.columnId, $1.position, $1.id) },
            trash: placed.filter(\.deleted).map(view))
    }
}
