import Foundation
import GRDB
import HTTPTypes
import KanbanAgent
@testable import KanbanStore
import Testing

/// A full disk: writes are refused with 507 `disk_full` and change nothing (the board, the
/// event stream's view of it, the next write once there is room); reads go on working.
struct DiskFullTests {
    @Test func writesOnAFullDiskAnswer507AndChangeNothing() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-full-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path)
        try await withAgent(store: store) { server in
            let board = try await server.createBoard("Plan")
            let column = try await server.createColumn(board: board, "Todo")
            _ = try await server.createTask(column: column, "stored")
            let before = try await server.boardBytes(board)

            // Every write to the write-ahead log now fails as on a full disk (SQLITE_FULL).
            #expect(try await store.writer.writeWithoutTransaction { WALBuffer.failLogWrites($0, with: 13) })
            let refused = try await server.send(.post, "/api/columns/\(column)/tasks", json: #"{"title": "lost"}"#)
            expectError(refused, .init(code: 507, reasonPhrase: "Insufficient Storage"), code: "disk_full")
            let renamed = try await server.send(.patch, "/api/boards/\(board)", json: #"{"title": "Renamed"}"#)
            expectError(renamed, .init(code: 507, reasonPhrase: "Insufficient Storage"), code: "disk_full")
            #expect(try await server.boardBytes(board) == before)

            #expect(try await store.writer.writeWithoutTransaction { WALBuffer.failLogWrites($0, with: 0) })
            _ = try await server.createTask(column: column, "after")
            let titles = try await server.board(board)["columns"]?[0]?["tasks"]?.array?.compactMap { $0["title"]?.string }
            #expect(titles == ["after", "stored"])  // a task without `after` goes on top
        }
        try store.close()
    }
}
