import Foundation
import KanbanAgent
import KanbanModel
import KanbanSimulation
import KanbanStore
import Testing

/// The hand-written JSON of local events and entity snapshots against `JSONEncoder`'s, which
/// the agent used before and which stays the reference (the same settings as the agent's).
struct LocalEventEncodingTests {
    static let reference: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    @Test(arguments: Array(UInt64(1)...5))
    func eventsAndSnapshotsAreTheBytesJSONEncoderWrites(seed: UInt64) throws {
        var sim = ReplicaSimulation(seed: seed, replicaCount: 3)
        sim.run(operationsPerReplica: 80)
        let store = try ReplicaStore.inMemory()
        let changes = try store.apply(sim.allOperations)
        // Some of ours too, with text that needs escaping.
        let board = sim.board
        let column = EntityID.make(), task = EntityID.make()
        var local = [try store.author(board: board) { state in
            .createColumn(column: column, title: #"a "quoted" \ column / 1"#, position: state.columnPosition(after: nil)!)
        }]
        local.append(try store.author(board: board) { state in
            .createTask(task: task, column: column, position: state.taskPosition(in: column, after: nil)!,
                        title: "tab\there, café ☕", description: "line\nbreak\r\u{1}\u{1F}\u{8}\u{C}\u{7F}")
        })
        local.append(try store.author(board: board) { _ in .renameBoard(title: "Board </script>") })
        local.append(try store.author(board: board) { _ in .deleteTask(task: task) })
        let all = changes + local
        #expect(all.count > 200 && Set(all.map { $0.entity.kind }).count == 3)
        for change in all {
            let event = LocalEvent(change)
            let expected = try Self.reference.encode(event)
            #expect(event.jsonBytes() == Array(expected), "\(String(decoding: expected, as: UTF8.self))")
            #expect(change.entity.jsonBytes() == Array(try Self.reference.encode(change.entity)))
        }
    }
}

private extension EntitySnapshot {
    var kind: String {
        switch self {
        case .board: "board"
        case .column: "column"
        case .task: "task"
        }
    }
}
