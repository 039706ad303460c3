import Foundation
@testable import KanbanRelay
import Testing

struct RelayDurabilityTests {
    /// The relay acknowledges an operation only after its commit, so that commit must be synced
    /// (`synchronous = FULL`), whatever GRDB sets when it opens the pool in WAL mode.
    @Test func theRelayLogSyncsEveryCommit() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-relay-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("relay.sqlite").path
        for _ in 0..<2 {  // a new file, then reopening it
            #expect(try SQLiteRelayStorage(path: path).writerSynchronousLevel() == 2)
        }
    }
}
