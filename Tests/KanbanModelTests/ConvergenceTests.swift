import Foundation
import KanbanModel
import KanbanSimulation
import Synchronization
import Testing

struct ConvergenceTests {
    static let seeds: [UInt64] = Array(1...200)

    /// Every replica that receives the same set of operations, in any order and with duplicates,
    /// ends with the same digest and the same board document.
    @Test("shuffled, duplicated delivery converges", arguments: seeds)
    func shuffledDeliveryConverges(seed: UInt64) async {
        let run = await OffPool.run { ConvergenceRun(seed: seed) }
        #expect(run.operations >= run.replicaCount * 200, "seed \(seed): only \(run.operations) operations")
        for (copy, delivery) in run.deliveries.enumerated() {
            #expect(delivery.sameDigest, "seed \(seed) diverged at delivery \(copy); replay with ConvergenceTests seed \(seed)")
            #expect(delivery.sameDocument, "seed \(seed): documents differ at delivery \(copy)")
            #expect(delivery.sameRegisters, "seed \(seed): registers differ at delivery \(copy)")
        }
        #expect(run.deliveries.count == run.replicaCount)
        // The authoring replicas also converge once they have exchanged everything.
        #expect(run.authorsDiverged == 0, "seed \(seed): \(run.authorsDiverged) authoring replicas diverged")
        // No created task is ever lost: each one shows in a column, in orphans or in the trash.
        #expect(run.notShown == 0 && run.shownButNotCreated == 0,
                "seed \(seed): \(run.notShown) tasks not shown, \(run.shownButNotCreated) shown but never created")
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

/// One seed of the convergence check, computed off Swift's cooperative pool (`OffPool`); the
/// test asserts on what it found.
struct ConvergenceRun: Sendable {
    struct Delivery: Sendable {
        var sameDigest: Bool
        var sameDocument: Bool
        var sameRegisters: Bool
    }
    var replicaCount: Int
    var operations: Int
    /// One per replica: that replica's shuffled, duplicated delivery against the reference.
    var deliveries: [Delivery] = []
    var authorsDiverged = 0
    var notShown = 0
    var shownButNotCreated = 0

    init(seed: UInt64) {
        replicaCount = 3 + Int(seed % 3)
        var simulation = ReplicaSimulation(seed: seed, replicaCount: replicaCount)
        simulation.run(operationsPerReplica: 200)
        let ops = simulation.allOperations
        operations = ops.count

        var rng = SplitMix64(seed: seed &* 7919)
        let reference = ReplicaSimulation.replay(ops, board: simulation.board, using: &rng)
        let referenceDocument = reference.document()
        for _ in 0..<replicaCount {
            let state = ReplicaSimulation.replay(ops, board: simulation.board, using: &rng)
            deliveries.append(Delivery(sameDigest: state.digest == reference.digest,
                                       sameDocument: state.document() == referenceDocument,
                                       sameRegisters: state == reference))
        }
        for i in 0..<replicaCount { for j in 0..<replicaCount where i != j { simulation.sync(from: j, to: i) } }
        authorsDiverged = simulation.replicas.filter { $0.state.digest != reference.digest }.count

        let shown = Set(referenceDocument.columns.flatMap { $0.tasks.map(\.id) }
            + referenceDocument.orphans.map(\.id) + referenceDocument.trash.map(\.id))
        let created = Set(reference.tasks.values.filter(\.created).map(\.id))
        notShown = created.subtracting(shown).count
        shownButNotCreated = shown.subtracting(created).count
    }
}

/// Runs CPU-heavy test work on two threads of its own instead of Swift's cooperative pool,
/// which has one thread per core (two here). Hundreds of CPU-bound test cases on that pool
/// starve every async test running meanwhile (servers answering sockets), for a minute.
enum OffPool {
    private static let queues = [DispatchQueue(label: "kanban.tests.heavy.0"), DispatchQueue(label: "kanban.tests.heavy.1")]
    private static let next = Atomic<Int>(0)

    static func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        let queue = queues[next.add(1, ordering: .relaxed).oldValue % queues.count]
        return await withCheckedContinuation { continuation in queue.async { continuation.resume(returning: work()) } }
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
