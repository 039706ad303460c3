import Foundation
import GRDB
@testable import KanbanStore
import Testing

struct DurabilityTests {
    /// The writer connection must run with the synchronous level the durability asks for
    /// (`.full`: sync the WAL at every commit), whatever GRDB sets when it opens the pool.
    @Test(arguments: [(ReplicaStore.Configuration.Durability.full, 2), (.normal, 1)])
    func writerSyncsAsConfigured(durability: ReplicaStore.Configuration.Durability, level: Int) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        for _ in 0..<2 {  // a new file, then reopening it
            let store = try ReplicaStore(path: path, configuration: .init(durability: durability))
            let synchronous = try store.writer.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
            #expect(synchronous == level)
        }
    }
}
