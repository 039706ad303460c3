import KanbanModel
import KanbanSimulation
import Testing

struct PositionKeyTests {
    @Test func betweenIsStrictlyBetween() {
        var rng = SplitMix64(seed: 1)
        var keys: [PositionKey] = [PositionKey.between(nil, nil)]
        for _ in 0..<2000 {
            let index = Int(rng.next() % UInt64(keys.count + 1))
            let lower = index == 0 ? nil : keys[index - 1]
            let upper = index == keys.count ? nil : keys[index]
            let key = PositionKey.between(lower, upper)
            if let lower { #expect(lower < key, "\(lower) !< \(key)") }
            if let upper { #expect(key < upper, "\(key) !< \(upper)") }
            #expect(PositionKey(key.rawValue) == key, "generated key \(key) does not validate")
            keys.insert(key, at: index)
        }
        #expect(keys == keys.sorted())
    }

    @Test func repeatedInsertsAtTheTopStayShort() {
        var first: PositionKey? = nil
        for _ in 0..<1000 { first = PositionKey.between(nil, first) }
        // Documented bound: one character per 61 inserts at an end, plus one.
        #expect(first!.rawValue.count <= 1000 / 61 + 2, "length \(first!.rawValue.count)")
    }

    @Test func repeatedAppendsStayShort() {
        var last: PositionKey? = nil
        for _ in 0..<1000 { last = PositionKey.between(last, nil) }
        #expect(last!.rawValue.count <= 1000 / 61 + 2, "length \(last!.rawValue.count)")
    }

    @Test func repeatedInsertsAtOneInteriorSpotGrowLogarithmicallyPerStep() {
        let a = PositionKey("V")!
        var b = PositionKey("W")!
        for _ in 0..<300 {
            let key = PositionKey.between(a, b)
            #expect(a < key && key < b)
            b = key
        }
        // Documented bound: one character per ~5.95 bisections, plus the starting digit.
        #expect(b.rawValue.count <= 300 / 5 + 2, "length \(b.rawValue.count)")
    }

    @Test func tiesSortAfterBoth() {
        let k = PositionKey("V")!
        #expect(PositionKey.between(k, k) > k)
    }

    @Test(arguments: ["", "0", "V0", "a-b", String(repeating: "V", count: 257)])
    func invalidKeysAreRejected(text: String) {
        #expect(PositionKey(text) == nil)
    }
}

/// `taskPosition` finds its neighbours in one pass; it must pick the same ones as sorting the
/// column (`orderedTaskSlots`) and taking the slot after `after`, for every column, every
/// possible `after` (and none), with and without a task being moved.
struct TaskPositionTests {
    static func reference(_ state: BoardState, column: EntityID, after: EntityID?, moving: EntityID?) -> PositionKey? {
        let slots = state.orderedTaskSlots(in: column).filter { $0.id != moving }
        guard let after else { return PositionKey.between(nil, slots.first?.position) }
        guard let index = slots.firstIndex(where: { $0.id == after }) else { return nil }
        return PositionKey.between(slots[index].position, index + 1 < slots.count ? slots[index + 1].position : nil)
    }

    @Test(arguments: Array(UInt64(1)...20))
    func onePassMatchesTheSortedColumn(seed: UInt64) {
        var sim = ReplicaSimulation(seed: seed, replicaCount: 3)
        sim.run(operationsPerReplica: 150)
        var state = BoardState(id: sim.board)
        for op in sim.allOperations { state.apply(op) }
        let taskIDs = Array(state.tasks.keys)
        var checked = 0
        for column in state.columns.keys {
            for after in [nil] + taskIDs.map(Optional.some) {
                for moving in [nil, taskIDs.first, after] {
                    let expected = Self.reference(state, column: column, after: after, moving: moving)
                    #expect(state.taskPosition(in: column, after: after, moving: moving) == expected,
                            "seed \(seed) column \(column) after \(String(describing: after)) moving \(String(describing: moving))")
                    checked += 1
                }
            }
        }
        #expect(checked > 0)
    }
}
