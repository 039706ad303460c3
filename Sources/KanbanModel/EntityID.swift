import Foundation

/// A client-generated, globally unique identifier for a board, column or task (a UUIDv7).
///
/// UUIDv7 puts a millisecond timestamp in its high bits, so IDs made later sort later; ordering
/// never depends on that, it only keeps indexes compact.
public struct EntityID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The canonical lowercase text form, e.g. `0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6e`.
    public let rawValue: String

    /// Parses the text form; accepts any RFC 9562 UUID, upper or lower case.
    public init?(_ text: some StringProtocol) {
        guard text.utf8.count == 36, let uuid = UUID(uuidString: String(text)) else { return nil }
        self.rawValue = uuid.uuidString.lowercased()
    }

    init(canonical: String) { self.rawValue = canonical }

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
        let hex = bytes.map { byte -> String in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
        let chars = Array(hex)
        let text = String(chars[0..<8]) + "-" + String(chars[8..<12]) + "-" + String(chars[12..<16]) + "-"
            + String(chars[16..<20]) + "-" + String(chars[20..<32])
        return EntityID(canonical: text)
    }

    public var description: String { rawValue }
    public static func < (lhs: EntityID, rhs: EntityID) -> Bool { lhs.rawValue < rhs.rawValue }
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
