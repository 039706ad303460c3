public import Foundation
import KanbanModel

extension SyncMessage {
    public var type: String {
        switch self {
        case .hello: "hello"
        case .welcome: "welcome"
        case .push: "push"
        case .ack: "ack"
        case .ops: "ops"
        case .snapshot: "snapshot"
        case .presence: "presence"
        case .digest: "digest"
        case .digestResult: "digest_result"
        case .ping: "ping"
        case .pong: "pong"
        case .error: "error"
        }
    }

    private struct TypeOnly: Decodable { let type: String }

    /// Decodes one frame. Every failure is a `ProtocolViolation` saying what was wrong.
    public static func decode(_ data: Data, limit: Int = ProtocolLimits.maxMessageBytes) throws(ProtocolViolation) -> SyncMessage {
        if data.count > limit {
            throw ProtocolViolation(.tooLarge, "message is \(data.count) bytes; the limit is \(limit)")
        }
        if let message = decodeCanonical(data) { return message }
        let decoder = JSONDecoder()
        let type: String
        do {
            type = try decoder.decode(TypeOnly.self, from: data).type
        } catch {
            throw ProtocolViolation(.malformed, "a message must be a JSON object with a string 'type'")
        }
        do {
            switch type {
            case "hello": return .hello(try decoder.decode(Hello.self, from: data))
            case "welcome": return .welcome(try decoder.decode(Welcome.self, from: data))
            case "push":
                let push = try decoder.decode(Push.self, from: data)
                if push.ops.count > ProtocolLimits.maxOpsPerMessage {
                    throw ProtocolViolation(.tooLarge, "push carries \(push.ops.count) operations; the limit is \(ProtocolLimits.maxOpsPerMessage)")
                }
                return .push(push)
            case "ack": return .ack(try decoder.decode(Ack.self, from: data))
            case "ops": return .ops(try decoder.decode(Ops.self, from: data))
            case "snapshot": return .snapshot(try decoder.decode(Snapshot.self, from: data))
            case "presence": return .presence(try decoder.decode(Presence.self, from: data))
            case "digest": return .digest(try decoder.decode(Digest.self, from: data))
            case "digest_result": return .digestResult(try decoder.decode(DigestResult.self, from: data))
            case "ping": return .ping(try decoder.decode(Ping.self, from: data))
            case "pong": return .pong(try decoder.decode(Pong.self, from: data))
            case "error": return .error(try decoder.decode(ErrorMessage.self, from: data))
            default: throw ProtocolViolation(.unknownType, "unknown message type '\(type.prefix(40))'")
            }
        } catch let violation as ProtocolViolation {
            throw violation
        } catch let error as OperationError {
            throw ProtocolViolation(.badOperation, "operation rejected: \(error)")
        } catch let DecodingError.keyNotFound(key, context) {
            throw ProtocolViolation(.malformed, "\(type): missing field \(path(context.codingPath + [key]))")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                let DecodingError.dataCorrupted(context) {
            throw ProtocolViolation(.malformed, "\(type): bad value at \(path(context.codingPath)): \(context.debugDescription.prefix(120))")
        } catch {
            throw ProtocolViolation(.malformed, "\(type): could not be read")
        }
    }

    /// The three messages on every operation's way (push, ack, ops) when they are in the exact
    /// form `text` writes them, read with `CanonicalJSONReader`; nil for anything else, which
    /// `decode` then reads with `JSONDecoder` (the reference for validity and for every error).
    public static func decodeCanonical(_ data: Data) -> SyncMessage? {
        data.withContiguousStorageIfAvailable { bytes -> SyncMessage? in
            var reader = CanonicalJSONReader(bytes)
            let message: SyncMessage
            if reader.consume(#"{"ops":["#) {
                var ops: [BoardOperation] = []
                guard reader.list(into: &ops, { $0.operation() }), reader.consume(#","type":"push"}"#),
                      ops.count <= ProtocolLimits.maxOpsPerMessage
                else { return nil }
                message = .push(Push(ops: ops))
            } else if reader.consume(#"{"acks":["#) {
                var acks: [Ack.Entry] = []
                let read = reader.list(into: &acks) { reader in
                    guard reader.consume(#"{"board":"#), let board = reader.string().flatMap({ EntityID($0) }),
                          reader.consume(#","op":"#), let op = reader.string().flatMap({ OperationID($0) }),
                          reader.consume(#","seq":"#), let seq = reader.int64(), reader.consume("}")
                    else { return nil }
                    return Ack.Entry(op: op, board: board, seq: seq)
                }
                guard read, reader.consume(#","type":"ack"}"#) else { return nil }
                message = .ack(Ack(acks: acks))
            } else if reader.consume(#"{"board":"#) {
                guard let board = reader.string().flatMap({ EntityID($0) }), reader.consume(#","head":"#),
                      let head = reader.int64(), reader.consume(#","ops":["#)
                else { return nil }
                var ops: [Ops.Sequenced] = []
                let read = reader.list(into: &ops) { reader in
                    guard reader.consume(#"{"op":"#), let op = reader.operation(), reader.consume(#","seq":"#),
                          let seq = reader.int64(), reader.consume("}")
                    else { return nil }
                    return Ops.Sequenced(seq: seq, op: op)
                }
                guard read, reader.consume(#","type":"ops"}"#) else { return nil }
                message = .ops(Ops(board: board, ops: ops, head: head))
            } else {
                return nil
            }
            return reader.isAtEnd ? message : nil
        } ?? nil
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.isEmpty ? "(top)" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    /// Encodes to compact JSON with sorted keys.
    public func encoded() -> Data {
        let encoder = Self.encoder
        // All payloads are plain strings, numbers and arrays; encoding cannot fail.
        switch self {
        case .hello(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .welcome(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .push(let m): return Data(Self.bytes(m))
        case .ack(let m): return Data(Self.bytes(m))
        case .ops(let m): return Data(Self.bytes(m))
        case .snapshot(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .presence(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .digest(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .digestResult(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .ping(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .pong(let m): return try! encoder.encode(Tagged(type: type, body: m))
        case .error(let m): return try! encoder.encode(Tagged(type: type, body: m))
        }
    }

    public var text: String {
        switch self {
        // The messages on every operation's way, written by hand (the same bytes JSONEncoder
        // writes; `SyncMessageCodecTests` compares them): the two that carry operations are
        // spliced from the operations' own JSON, and the relay sends an ack for every push.
        case .push(let m): String(decoding: Self.bytes(m), as: UTF8.self)
        case .ack(let m): String(decoding: Self.bytes(m), as: UTF8.self)
        case .ops(let m): String(decoding: Self.bytes(m), as: UTF8.self)
        default: String(decoding: encoded(), as: UTF8.self)
        }
    }

    /// `{"ops":[op,...],"type":"push"}`
    static func bytes(_ push: Push) -> [UInt8] { pushBytes(encodedOperations: push.ops.map { $0.jsonBytes() }) }

    /// A `push` frame from operations already encoded with `BoardOperation.jsonBytes()`, for a
    /// sender that encoded them anyway (to size the batch).
    public static func pushText(encodedOperations: [[UInt8]]) -> String {
        String(decoding: pushBytes(encodedOperations: encodedOperations), as: UTF8.self)
    }

    static func pushBytes(encodedOperations: [[UInt8]]) -> [UInt8] {
        var out = Array(#"{"ops":["#.utf8)
        out.reserveCapacity(64 + encodedOperations.reduce(0) { $0 + $1.count + 1 })
        for (i, op) in encodedOperations.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += op
        }
        out += Array(#"],"type":"push"}"#.utf8)
        return out
    }

    /// `{"acks":[{"board":ID,"op":ID,"seq":N},...],"type":"ack"}`
    static func bytes(_ ack: Ack) -> [UInt8] {
        var out = Array(#"{"acks":["#.utf8)
        out.reserveCapacity(32 + ack.acks.count * 96)
        for (i, entry) in ack.acks.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            var object = JSONBytes(capacity: 96)
            object.field("board", entry.board.rawValue)
            object.key("op")
            entry.op.withUTF8Text { object.string($0) }
            object.field("seq", entry.seq)
            out += object.closed()
        }
        out += Array(#"],"type":"ack"}"#.utf8)
        return out
    }

    /// `{"board":ID,"head":N,"ops":[{"op":op,"seq":N},...],"type":"ops"}`
    static func bytes(_ ops: Ops) -> [UInt8] {
        var out = Array(#"{"board":"#.utf8)
        out.reserveCapacity(96 + ops.ops.count * 340)
        // An entity ID's text is a lowercase UUID: nothing in it needs escaping.
        out += Array("\"\(ops.board.rawValue)\"".utf8)
        out += Array(#","head":\#(ops.head),"ops":["#.utf8)
        for (i, entry) in ops.ops.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += Array(#"{"op":"#.utf8)
            out += entry.op.jsonBytes()
            out += Array(#","seq":\#(entry.seq)}"#.utf8)
        }
        out += Array(#"],"type":"ops"}"#.utf8)
        return out
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// The body's fields plus `type`, flat in one object.
    private struct Tagged<Body: Encodable>: Encodable {
        let type: String
        let body: Body
        enum Key: String, CodingKey { case type }
        func encode(to encoder: any Encoder) throws {
            try body.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(type, forKey: .type)
        }
    }
}

/// Bounds every relay and agent enforce on the wire.
public enum ProtocolLimits {
    /// Largest message an agent may send, after decompression.
    public static let maxMessageBytes = 1 << 20
    /// Largest message a relay may send (a board snapshot can be large), after decompression.
    public static let maxRelayMessageBytes = 64 << 20
    public static let maxOpsPerMessage = 500
}

/// A message that breaks the protocol. `code` is stable.
public struct ProtocolViolation: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, RawRepresentable {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let malformed = Code(rawValue: "malformed")
        public static let unknownType = Code(rawValue: "unknown_type")
        public static let tooLarge = Code(rawValue: "too_large")
        public static let badOperation = Code(rawValue: "bad_operation")
        public static let versionMismatch = Code(rawValue: "version_mismatch")
        public static let unexpected = Code(rawValue: "unexpected_message")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// WebSocket close codes used by the relay and agent (see Protocol/sync-protocol.md).
public enum SyncCloseCode {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    /// A text message that is not UTF-8, or a compressed one that does not inflate.
    public static let invalidPayload: UInt16 = 1007
    public static let policyViolation: UInt16 = 1008
    public static let messageTooBig: UInt16 = 1009
    public static let internalError: UInt16 = 1011
    public static let serviceRestart: UInt16 = 1012
    public static let tryAgainLater: UInt16 = 1013
    /// The agent speaks a protocol version the relay does not.
    public static let versionMismatch: UInt16 = 4001
    /// A message broke the protocol (bad JSON, unknown type, bad operation).
    public static let badMessage: UInt16 = 4002
    /// The token lost access (revoked, or the board scope changed).
    public static let forbidden: UInt16 = 4003
    /// The connection fell too far behind; reconnect and catch up from the cursor.
    public static let tooSlow: UInt16 = 4008
    /// No heartbeat answer in time.
    public static let heartbeatTimeout: UInt16 = 4009
    /// The token already has as many open connections as the relay allows.
    public static let tooManyConnections: UInt16 = 4029
}
