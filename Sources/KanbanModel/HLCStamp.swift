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
    public var description: String {
        Self.pad(String(wallMillis), 15) + "." + Self.pad(String(counter), 10) + "." + replica.rawValue
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].utf8.count == 15, parts[1].utf8.count == 10,
              let wall = Int64(parts[0]), wall >= 0, let counter = UInt32(parts[1]),
              let replica = ReplicaID(parts[2])
        else { return nil }
        self.init(wallMillis: wall, counter: counter, replica: replica)
    }

    private static func pad(_ digits: String, _ width: Int) -> String {
        digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
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
