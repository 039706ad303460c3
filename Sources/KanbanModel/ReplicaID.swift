/// Names one replica (one agent's database, or the relay when it writes on its own behalf).
///
/// 1 to 32 characters from `a-z`, `0-9` and `-`, so it can sit inside operation IDs
/// (`replica:counter`) and HLC stamps without escaping.
public struct ReplicaID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let rawValue: String

    public init?(_ text: some StringProtocol) {
        guard (1...32).contains(text.utf8.count),
              text.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 })
        else { return nil }
        self.rawValue = String(text)
    }

    /// A fresh random replica ID of 16 base-36 characters.
    public static func random() -> ReplicaID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    public static func random(using generator: inout some RandomNumberGenerator) -> ReplicaID {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        let text = String((0..<16).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
        return ReplicaID(text)!
    }

    public var description: String { rawValue }
    public static func < (lhs: ReplicaID, rhs: ReplicaID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let id = ReplicaID(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "replica IDs are 1-32 of a-z 0-9 -")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// Identifies one operation forever: the authoring replica and that replica's op counter.
public struct OperationID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let replica: ReplicaID
    public let counter: UInt64

    public init(replica: ReplicaID, counter: UInt64) {
        self.replica = replica
        self.counter = counter
    }

    /// Parses `replica:counter`.
    public init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"),
              let replica = ReplicaID(text[text.startIndex..<colon]),
              let counter = UInt64(text[text.index(after: colon)...])
        else { return nil }
        self.init(replica: replica, counter: counter)
    }

    public var description: String { withUTF8Text { String(decoding: $0, as: UTF8.self) } }

    /// Calls `body` with the bytes of `description` (`replica:counter`), formatted on the stack,
    /// so the store can bind an operation ID without making a `String`.
    public func withUTF8Text<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        var replicaText = replica.rawValue
        return try replicaText.withUTF8 { replicaBytes in
            // A UInt64 has at most 20 decimal digits.
            try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: replicaBytes.count + 21) { text in
                _ = UnsafeMutableBufferPointer(rebasing: text[..<replicaBytes.count]).initialize(from: replicaBytes)
                text[replicaBytes.count] = UInt8(ascii: ":")
                var digits = 1
                var rest = counter / 10
                while rest > 0 { digits += 1; rest /= 10 }
                let end = replicaBytes.count + 1 + digits
                var value = counter
                for i in stride(from: end - 1, through: replicaBytes.count + 1, by: -1) {
                    text[i] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
                return try body(UnsafeBufferPointer(rebasing: text[..<end]))
            }
        }
    }

    public static func < (lhs: OperationID, rhs: OperationID) -> Bool {
        (lhs.replica, lhs.counter) < (rhs.replica, rhs.counter)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let id = OperationID(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "operation IDs look like replica:counter")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
