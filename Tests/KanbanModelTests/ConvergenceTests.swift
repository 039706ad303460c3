import Foundation
import KanbanModel
import KanbanSimulation
import Testing

struct ConvergenceTests {
    static let seeds: [UInt64] = Array(1...200)

    /// Every replica that receives the same set of operations, in any order and with duplicates,
    /// ends with the same digest and the same board document.
    @Test("shuffled, duplicated delivery converges", arguments: seeds)
    func shuffledDeliveryConverges(seed: UInt64) {
        let replicaCount = 3 + Int(seed % 3)
        var simulation = ReplicaSimulation(seed: seed, replicaCount: replicaCount)
        simulation.run(operationsPerReplica: 200)
        let ops = simulation.allOperations
        #expect(ops.count >= replicaCount * 200, "seed \(seed): only \(ops.count) operations")

        var rng = SplitMix64(seed: seed &* 7919)
        let reference = ReplicaSimulation.replay(ops, board: simulation.board, using: &rng)
        let referenceDocument = reference.document()
        for copy in 0..<replicaCount {
            let state = ReplicaSimulation.replay(ops, board: simulation.board, using: &rng)
            #expect(state.digest == reference.digest, "seed \(seed) diverged at delivery \(copy); replay with ConvergenceTests seed \(seed)")
            #expect(state.document() == referenceDocument, "seed \(seed): documents differ at delivery \(copy)")
            #expect(state == reference, "seed \(seed): registers differ at delivery \(copy)")
        }

        // The authoring replicas also converge once they have exchanged everything.
        for i in 0..<replicaCount { for j in 0..<replicaCount where i != j { simulation.sync(from: j, to: i) } }
        for replica in simulation.replicas {
            #expect(replica.state.digest == reference.digest, "seed \(seed): an authoring replica diverged")
        }

        // No created task is ever lost: each one shows in a column, in orphans or in the trash.
        let shown = Set(referenceDocument.columns.flatMap { $0.tasks.map(\.id) }
            + referenceDocument.orphans.map(\.id) + referenceDocument.trash.map(\.id))
        let created = Set(reference.tasks.values.filter(\.created).map(\.id))
        #expect(shown == created, "seed \(seed): \(created.subtracting(shown).count) tasks not shown")
    }

    @Test func workloadContainsTheHardCases() {
        var simulation = ReplicaSimulation(seed: 42, replicaCount: 4)
        simulation.run(operationsPerReplica: 200)
        let ops = simulation.allOperations
        let state = ReplicaSimulation.replay(ops, board: simulation.board, using: &SplitMixBox.rng)
        // Concurrent inserts at one spot produce equal keys in one column.
        var sameSpot = 0
        var byColumn: [EntityID: [PositionKey]] = [:]
        for op in ops {
            if case .createTask(_, let column, let position, _, _) = op.action { byColumn[column, default: []].append(position) }
        }
        for keys in byColumn.values { sameSpot += keys.count - Set(keys).count }
        #expect(sameSpot > 0)
        // Some task was created in a column that ends up deleted, and shows as an orphan.
        #expect(!state.document().orphans.isEmpty)
        // Some edit raced a delete, and some move raced another move.
        #expect(!ConflictFinder.conflicts(in: ops).filter { $0.field == .place }.isEmpty)
        #expect(!ConflictFinder.conflicts(in: ops).filter { $0.field == .title }.isEmpty)
    }
}

enum SplitMixBox {
    nonisolated(unsafe) static var rng = SplitMix64(seed: 99)
}

struct SnapshotJoinTests {
    /// A snapshot of any prefix of the log, joined with the rest of the log applied in any
    /// order, equals the full state; and the snapshot survives a JSON round trip.
    @Test(arguments: Array(UInt64(1)...20))
    func snapshotPlusTailEqualsTheWholeLog(seed: UInt64) throws {
        var simulation = ReplicaSimulation(seed: seed, replicaCount: 3)
        simulation.run(operationsPerReplica: 100)
        let ops = simulation.allOperations
        var rng = SplitMix64(seed: seed)
        let full = ReplicaSimulation.replay(ops, board: simulation.board, using: &rng)
        let cut = Int(rng.next() % UInt64(ops.count))
        var prefix = BoardState(id: simulation.board)
        for op in ops[..<cut] { prefix.apply(op) }
        let data = try JSONEncoder().encode(BoardSnapshot(prefix))
        var state = try JSONDecoder().decode(BoardSnapshot.self, from: data).state
        #expect(state == prefix, "seed \(seed): snapshot round trip changed the state")
        // A replica that already has some of the tail joins the snapshot after it.
        for op in ops[cut...].shuffled(using: &rng) { state.apply(op) }
        var other = BoardState(id: simulation.board)
        for op in ops[cut...].shuffled(using: &rng) where rng.next() % 2 == 0 { other.apply(op) }
        other.join(prefix)
        for op in ops[cut...] { other.apply(op) }
        #expect(state.digest == full.digest, "seed \(seed)")
        #expect(other.digest == full.digest, "seed \(seed)")
    }
}
