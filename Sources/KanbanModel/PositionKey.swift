/// A fractional-index position: a base-62 fraction in (0, 1) written as its digits.
///
/// Keys compare as plain strings (`0-9` < `A-Z` < `a-z` in ASCII), never end in `0`, and there is
/// always a key between any two different keys, so an insert never renumbers its neighbours.
/// Ties between equal keys (two replicas inserting at the same spot at once) are broken by the
/// entity ID, so every replica shows the same order.
///
/// Length bound: inserting repeatedly at the top or bottom of a list steps the last digit, so the
/// key grows by one character every 61 inserts at the same end (after the first 30); inserting repeatedly at the same
/// interior spot bisects, growing the key by one character every 5 to 6 inserts
/// (log2(62) ≈ 5.95). `PositionKeyTests` checks both bounds.
public struct PositionKey: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let rawValue: String

    static let digits: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
    static let maxLength = 256

    /// Validates a key from outside: 1-256 base-62 digits, not ending in `0`.
    public init?(_ text: some StringProtocol) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.maxLength, bytes.last != UInt8(ascii: "0"),
              bytes.allSatisfy({ Self.value(of: $0) != nil })
        else { return nil }
        self.rawValue = String(decoding: bytes, as: UTF8.self)
    }

    private init(bytes: [UInt8]) { self.rawValue = String(decoding: bytes, as: UTF8.self) }

    public var description: String { rawValue }
    public static func < (lhs: PositionKey, rhs: PositionKey) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The key for the first item of an empty list.
    public static let initial = PositionKey(bytes: [UInt8(ascii: "V")])

    /// A key strictly between `lower` and `upper`; `nil` means the start or end of the list.
    ///
    /// When `lower == upper` (a tie from a concurrent insert), the result sorts just after both.
    public static func between(_ lower: PositionKey?, _ upper: PositionKey?) -> PositionKey {
        switch (lower, upper) {
        case (nil, nil):
            return .initial
        case (let low?, nil):
            return after(low)
        case (nil, let high?):
            return before(high)
        case (let low?, let high?):
            if low == high { return after(low) }
            let (a, b) = low < high ? (low, high) : (high, low)
            return PositionKey(bytes: midpoint(Array(a.rawValue.utf8), Array(b.rawValue.utf8)))
        }
    }

    /// The shortest step above `key`: bump the first digit that can be bumped.
    static func after(_ key: PositionKey) -> PositionKey {
        var bytes = Array(key.rawValue.utf8)
        for i in bytes.indices {
            let v = value(of: bytes[i])!
            if v < 61 {
                return PositionKey(bytes: Array(bytes[..<i]) + [digits[v + 1]])
            }
        }
        bytes.append(digits[1])
        return PositionKey(bytes: bytes)
    }

    /// The shortest step below `key`: lower the first digit above 1; at a 1, go to `0z` so the
    /// next 61 steps down need no extra character.
    static func before(_ key: PositionKey) -> PositionKey {
        let bytes = Array(key.rawValue.utf8)
        for i in bytes.indices {
            let v = value(of: bytes[i])!
            if v > 1 {
                return PositionKey(bytes: Array(bytes[..<i]) + [digits[v - 1]])
            }
            if v == 1 {
                return PositionKey(bytes: Array(bytes[..<i]) + [digits[0], digits[61]])
            }
        }
        // Unreachable for valid keys (they never end in 0), kept total for safety.
        return PositionKey(bytes: midpoint([], bytes))
    }

    /// Digits of a fraction strictly between `a` and `b` (a < b; b empty means 1.0).
    static func midpoint(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        var prefix: [UInt8] = []
        var i = 0
        while true {
            let da = i < a.count ? value(of: a[i])! : 0
            let db = b.isEmpty ? 62 : (i < b.count ? value(of: b[i])! : 0)
            if !b.isEmpty && da == db {
                prefix.append(digits[da])
                i += 1
                continue
            }
            if db - da > 1 {
                return prefix + [digits[(da + db) / 2]]
            }
            // Adjacent digits. If b continues past this digit, b's digit alone is between.
            if !b.isEmpty && i + 1 < b.count {
                return prefix + [digits[db]]
            }
            // Otherwise keep a's digit and find a fraction above the rest of a.
            prefix.append(digits[da])
            let rest = i + 1 < a.count ? Array(a[(i + 1)...]) : []
            return prefix + midpoint(rest, [])
        }
    }

    static func value(of byte: UInt8) -> Int? {
        switch byte {
        case 48...57: return Int(byte) - 48
        case 65...90: return Int(byte) - 65 + 10
        case 97...122: return Int(byte) - 97 + 36
        default: return nil
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let key = PositionKey(text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "position keys are 1-256 base-62 digits not ending in 0")
        }
        self = key
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}
