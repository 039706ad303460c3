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
