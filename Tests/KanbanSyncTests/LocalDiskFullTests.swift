import Foundation
import GRDB
import KanbanAgent
import KanbanModel
@testable import KanbanStore
import Testing

/// An agent whose own disk is full cannot store what the relay sends. Its status says that (not
/// a network failure, which would send the user to the relay), its board stays as it was, and
/// once there is room it catches up with nothing lost.
struct LocalDiskFullTests {
    @Test func anAgentWhoseDiskIsFullSaysSoAndCatchesUpOnceThereIsRoom() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-localfull-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let full = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path)
        defer { try? full.close() }  // after the cluster's shutdown, before the directory goes
        let cluster = try await SyncCluster(agents: 2, store: { i in
            i == 1 ? full : try ReplicaStore.inMemory(configuration: .init(durability: .normal))
        })
        try await cluster.whileRunning {
            let (a, b) = (cluster.agents[0], cluster.agents[1])
            let board = try await a.boardWithTasks(1, title: "Shared")
            try await cluster.connect(0)
            try await cluster.connect(1)
            try await cluster.waitForConvergence(board: board)
            let column = try #require(try a.store.document(board)?.columns.first?.id)
            let before = try b.store.digest(board)

            // B's disk fills up (every write to its write-ahead log fails with SQLITE_FULL).
            #expect(try await full.writer.writeWithoutTransaction { WALBuffer.failLogWrites($0, with: 13) })
            for i in 0..<3 { _ = try await a.createTask(column: column, title: "while full \(i)", description: nil, after: nil) }
            var seen: SyncStatus?
            try await eventually("B reports its own full disk") {
                let status = b.syncStatus
                if status.attempts.contains(where: { $0.errorClass == "local_disk_full" }) { seen = status }
                return seen != nil
            }
            #expect(seen?.lastError?.contains("This agent's disk is full") == true, "\(seen?.lastError ?? "no error")")
            #expect(try b.store.digest(board) == before, "B's board changed although nothing could be stored")

            // Room again: B catches up with everything.
            #expect(try await full.writer.writeWithoutTransaction { WALBuffer.failLogWrites($0, with: 0) })
            b.reconnectNow()
            try await cluster.waitForConvergence(board: board)
            #expect(try b.store.document(board)?.columns.first?.tasks.count == 4)
        }
    }
}
