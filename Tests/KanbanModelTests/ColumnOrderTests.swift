import KanbanModel
import KanbanSimulation
import Testing

/// The per-column task order a board keeps in step with its tasks must always equal the order
/// computed from scratch (visible tasks of the column sorted by position key, then ID), whatever
/// order operations arrive in, through snapshots and joins too.
struct ColumnOrderTests {
    func fromScratch(_ state: BoardState, _ column: EntityID) -> [String] {
        state.tasks.values.filter { $0.created && !$0.isDeleted && $0.place?.value.column == column }
            .map { (position: $0.place!.value.position, id: $0.id) }
            .sorted { ($0.position, $0.id) < ($1.position, $1.id) }
            .map { "\($0.position.rawValue)/\($0.id)" }
    }

    func kept(_ state: BoardState, _ column: EntityID) -> [String] {
        state.orderedTaskSlots(in: column).map { "\($0.position.rawValue)/\($0.id)" }
    }

    @Test(arguments: Array(UInt64(1)...25))
    func theKeptOrderEqualsTheOrderFromScratch(seed: UInt64) throws {
        var simulation = ReplicaSimulation(seed: seed, replicaCount: 3)
        simulation.run(operationsPerReplica: 150)
        let ops = simulation.allOperations
        var rng = SplitMix64(seed: seed)
        var state = BoardState(id: simulation.board)
        var checked = 0
        // Checked along the way, after every 50 operations in a shuffled delivery.
        for (index, op) in ops.shuffled(using: &rng).enumerated() {
            state.apply(op)
            guard index % 50 == 0 || index == ops.count - 1 else { continue }
            let columns = Set(state.tasks.values.compactMap { $0.place?.value.column })
            for column in columns {
                #expect(kept(state, column) == fromScratch(state, column), "seed \(seed), after \(index + 1) operations")
                checked += 1
            }
        }
        #expect(checked > 0)
        // A state rebuilt from a snapshot, and one joined from two halves, keep the same order.
        let restored = BoardSnapshot(state).state
        let half = ops.count / 2
        var left = BoardState(id: simulation.board), right = BoardState(id: simulation.board)
        for op in ops[..<half] { left.apply(op) }
        for op in ops[half...] { right.apply(op) }
        left.join(right)
        for column in Set(state.tasks.values.compactMap { $0.place?.value.column }) {
            #expect(kept(restored, column) == fromScratch(state, column), "seed \(seed): snapshot")
            #expect(kept(left, column) == fromScratch(state, column), "seed \(seed): join")
        }
        #expect(restored == state && left == state)
    }
}
