import Foundation
import KanbanModel
import Testing

struct HybridLogicalClockTests {
    let a = ReplicaID("alpha")!
    let b = ReplicaID("beta")!

    @Test func ticksAreStrictlyIncreasingEvenWhenWallTimeGoesBack() {
        var clock = HybridLogicalClock(replica: a)
        var last = clock.tick(nowMillis: 1_000)
        for now in [999, 1_000, 500, 2_000, 1_999] as [Int64] {
            let next = clock.tick(nowMillis: now)
            #expect(next > last)
            last = next
        }
    }

    @Test func observingAFutureStampKeepsLocalStampsAboveIt() {
        var clock = HybridLogicalClock(replica: a)
        let remote = HLCStamp(wallMillis: 50_000, counter: 7, replica: b)
        clock.observe(remote, nowMillis: 1_000)
        let next = clock.tick(nowMillis: 1_001)
        #expect(next > remote)
        #expect(next.wallMillis == 50_000)
    }

    @Test func textFormRoundTripsAndSortsLikeStamps() {
        let stamps = [
            HLCStamp(wallMillis: 5, counter: 2, replica: a), HLCStamp(wallMillis: 5, counter: 10, replica: a),
            HLCStamp(wallMillis: 5, counter: 10, replica: b), HLCStamp(wallMillis: 1_700_000_000_000, counter: 0, replica: a),
        ]
        for s in stamps { #expect(HLCStamp(s.description) == s) }
        #expect(stamps.map(\.description).sorted() == stamps.sorted().map(\.description))
    }

    @Test func entityIDsAreVersion7AndUnique() {
        let ids = (0..<1000).map { _ in EntityID.make() }
        #expect(Set(ids).count == 1000)
        for id in ids.prefix(10) {
            let version = id.rawValue[id.rawValue.index(id.rawValue.startIndex, offsetBy: 14)]
            #expect(version == "7")
            #expect(EntityID(id.rawValue) == id)
        }
    }

    /// IDs compare and hash by their bytes; that must agree with their canonical text.
    @Test func entityIDsCompareAndHashLikeTheirText() {
        var rng = SplitMix(seed: 3)
        // Few distinct timestamps and a narrow random range, so equal prefixes and equal IDs occur.
        let ids = (0..<400).map { i in EntityID.make(nowMillis: Int64(i % 3), using: &rng) }
            + [EntityID("0192F3C4-8B1E-7C2A-9D3E-1F2A3B4C5D6E")!, EntityID("0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6e")!,
               EntityID("ffffffff-ffff-ffff-ffff-ffffffffffff")!, EntityID("00000000-0000-0000-0000-000000000000")!]
        for (x, y) in Array(zip(ids, ids.shuffled(using: &rng))) + Array(zip(ids, ids.reversed())) {
            #expect((x == y) == (x.rawValue == y.rawValue))
            #expect((x < y) == (x.rawValue < y.rawValue))
            if x == y { #expect(x.hashValue == y.hashValue) }
        }
        #expect(ids[400] == ids[401])
        #expect(ids[401].rawValue == "0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6e")
        #expect(Set(ids.map(\.rawValue)).count == Set(ids).count)
    }

    /// The ID parser reads hex itself; Foundation's UUID parser is the reference it must match,
    /// on good text in either case and on text that is wrong by one character.
    @Test func entityIDsParseLikeFoundationsUUID() {
        var rng = SplitMix(seed: 11)
        let good = (0..<200).map { i in EntityID.make(nowMillis: Int64(i) * 977, using: &rng).rawValue }
            + ["ffffffff-ffff-ffff-ffff-ffffffffffff", "00000000-0000-0000-0000-000000000000"]
        var texts = good + good.prefix(20).map { $0.uppercased() } + ["0192F3C4-8b1e-7C2A-9d3e-1F2A3B4C5D6E"]
        for text in good.prefix(20) {
            var chars = Array(text)
            for (i, replacement) in [(0, "g"), (8, "0"), (13, "x"), (35, "-"), (18, "+"), (23, " ")] as [(Int, Character)] {
                let original = chars[i]
                chars[i] = replacement
                texts.append(String(chars))
                chars[i] = original
            }
            texts += [String(text.dropLast()), text + "0", "{" + text.dropLast() + "}", String(text.dropFirst()) + "-",
                      text.replacingOccurrences(of: "-", with: "") + "0000", "é" + text.dropFirst(2)]
        }
        texts += ["", "-", "0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6", "0192f3c4_8b1e_7c2a_9d3e_1f2a3b4c5d6e"]
        for text in texts {
            let reference = UUID(uuidString: text)
            let parsed = EntityID(text)
            #expect((parsed == nil) == (reference == nil), "\(text)")
            if let parsed, let reference {
                #expect(parsed.rawValue == reference.uuidString.lowercased(), "\(text)")
                #expect(parsed == EntityID(reference.uuidString.lowercased()))
            }
        }
        // Parsing a substring gives the same ID as parsing its own string.
        let line = "board=\(good[0]);"
        let slice = line.dropFirst(6).dropLast()
        #expect(EntityID(slice) == EntityID(good[0]))
    }

    @Test func operationIDTextForm() {
        for counter: UInt64 in [0, 1, 9, 10, 99, 100, 12_345, .max] {
            let id = OperationID(replica: a, counter: counter)
            #expect(id.description == "alpha:\(counter)")
            #expect(OperationID(id.description) == id)
        }
    }
}

/// A seeded generator that repeats values (a small range), to make colliding IDs.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return (z ^ (z >> 31)) % 4
    }
}
