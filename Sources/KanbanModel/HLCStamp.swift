/// A hybrid logical clock stamp: wall milliseconds, a counter, and the replica that made it.
///
/// Stamps are totally ordered (wall, then counter, then replica), so two replicas never produce
/// equal stamps and every last-writer-wins register has exactly one winner.
public struct HLCStamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var wallMillis: Int64
    public var counter: UInt32
    public var replica: ReplicaID

    public init(wallMillis: Int64, counter: UInt32, replica: ReplicaID) {
        self.wallMillis = wallMillis
        self.counter = counter
        self.replica = replica
    }

    public static func < (lhs: HLCStamp, rhs: HLCStamp) -> Bool {
        if lhs.wallMillis != rhs.wallMillis { return lhs.wallMillis < rhs.wallMillis }
        if lhs.counter != rhs.counter { return lhs.counter < rhs.counter }
        return lhs.replica < rhs.replica
    }

    /// Fixed-width text whose byte order equals the stamp order:
    /// 15 digits of wall ms, `.`, 10 digits of counter, `.`, replica.
    public var description: String { withUTF8Text { String(decoding: $0, as: UTF8.self) } }

    /// Calls `body` with the bytes of `description`, formatted on the stack.
    ///
    /// Hot: every logged operation and every saved register formats stamps; the store binds these
    /// bytes straight into its statements instead of making a `String` per stamp.
    public func withUTF8Text<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        var replicaText = replica.rawValue
        return try replicaText.withUTF8 { replicaBytes in
            try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 27 + replicaBytes.count) { text in
                var wall = UInt64(max(0, wallMillis))
                for i in stride(from: 14, through: 0, by: -1) {
                    text[i] = UInt8(ascii: "0") + UInt8(wall % 10)
                    wall /= 10
                }
                text[15] = UInt8(ascii: ".")
                var count = counter
                for i in stride(from: 25, through: 16, by: -1) {
                    text[i] = UInt8(ascii: "0") + UInt8(count % 10)
                    count /= 10
                }
                text[26] = UInt8(ascii: ".")
                _ = UnsafeMutableBufferPointer(rebasing: text[27...]).initialize(from: replicaBytes)
                return try body(UnsafeBufferPointer(text))
            }
        }
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].utf8.count == 15, parts[1].utf8.count == 10,
              let wall = Int64(parts[0]), wall >= 0, let counter = UInt32(parts[1]),
              let replica = ReplicaID(parts[2])
        else { return nil }
        self.init(wallMillis: wall, counter: counter, replica: replica)
    }
}

extension HLCStamp: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let stamp = HLCStamp(text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "HLC stamps look like 000001732912345678.0000000000.replica")
        }
        self = stamp
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
