import Foundation

/// A client-generated, globally unique identifier for a board, column or task (a UUIDv7).
///
/// UUIDv7 puts a millisecond timestamp in its high bits, so IDs made later sort later; ordering
/// never depends on that, it only keeps indexes compact.
public struct EntityID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The canonical lowercase text form, e.g. `0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6e`.
    public let rawValue: String
    /// The UUID's 16 bytes as two big-endian halves. The text is canonical, so they are equal
    /// exactly when `rawValue` is, and (lowercase hex at fixed places) ordered the same way.
    /// Equality, hashing and ordering use them: every applied operation looks up boards, columns
    /// and tasks by ID, and hashing or comparing the 36-character string cost more.
    private let high: UInt64
    private let low: UInt64

    /// Parses the text form; accepts any RFC 9562 UUID, upper or lower case.
    ///
    /// Every decoded operation parses two or three IDs, so this reads the hex digits itself
    /// (Foundation's `UUID(uuidString:)` goes through `sscanf` on Linux) and keeps the caller's
    /// string when it is already canonical, which it is everywhere but in hand-typed input.
    public init?(_ text: some StringProtocol) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        var canonical = true
        var count = 0
        for byte in text.utf8 {
            defer { count += 1 }
            if count == 8 || count == 13 || count == 18 || count == 23 {
                guard byte == UInt8(ascii: "-") else { return nil }
                continue
            }
            guard count < 36 else { return nil }
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte &- UInt8(ascii: "a") &+ 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"):
                digit = byte &- UInt8(ascii: "A") &+ 10
                canonical = false
            default: return nil
            }
            // The first 16 hex digits (which end at text offset 18) are the high half.
            if count < 19 { high = high << 4 | UInt64(digit) } else { low = low << 4 | UInt64(digit) }
        }
        guard count == 36 else { return nil }
        if canonical {
            self.init(rawValue: String(text), high: high, low: low)
        } else {
            var bytes = [UInt8](repeating: 0, count: 16)
            for i in 0..<8 {
                bytes[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
                bytes[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
            }
            self.init(bytes: bytes)
        }
    }

    private init(rawValue: String, high: UInt64, low: UInt64) {
        self.rawValue = rawValue
        self.high = high
        self.low = low
    }

    /// From the UUID's 16 bytes.
    init(bytes: [UInt8]) {
        precondition(bytes.count == 16)
        let hex = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (i, byte) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { text.append(UInt8(ascii: "-")) }
            text.append(hex[Int(byte >> 4)])
            text.append(hex[Int(byte & 0xF)])
        }
        self.init(rawValue: String(decoding: text, as: UTF8.self),
                  high: bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) },
                  low: bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) })
    }

    public static func == (lhs: EntityID, rhs: EntityID) -> Bool { lhs.high == rhs.high && lhs.low == rhs.low }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(high)
        hasher.combine(low)
    }

    /// Makes a fresh UUIDv7 from a millisecond timestamp and random bits.
    public static func make(nowMillis: Int64 = WallClock.system.nowMillis()) -> EntityID {
        var generator = SystemRandomNumberGenerator()
        return make(nowMillis: nowMillis, using: &generator)
    }

    /// Makes a UUIDv7 with the given random source (tests use a seeded one).
    public static func make(nowMillis: Int64, using generator: inout some RandomNumberGenerator) -> EntityID {
        var bytes = [UInt8](repeating: 0, count: 16)
        let ms = UInt64(max(0, nowMillis)) & 0xFFFF_FFFF_FFFF
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: ms >> (40 - 8 * UInt64(i))) }
        let r1 = generator.next() as UInt64
        let r2 = generator.next() as UInt64
        for i in 6..<16 {
            let source = i < 12 ? r1 >> (8 * UInt64(i - 6)) : r2 >> (8 * UInt64(i - 12))
            bytes[i] = UInt8(truncatingIfNeeded: source)
        }
        bytes[6] = (bytes[6] & 0x0F) | 0x70  // version 7
        bytes[8] = (bytes[8] & 0x3F) | 0x80  // RFC 9562 variant
        return EntityID(bytes: bytes)
    }

    public var description: String { rawValue }
    public static func < (lhs: EntityID, rhs: EntityID) -> Bool { (lhs.high, lhs.low) < (rhs.high, rhs.low) }
}

extension EntityID: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let id = EntityID(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a UUID: \(text.prefix(64))")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}
