public import Foundation

/// JSON form (one flat object):
/// `{"id":"r1:7","hlc":"...","board":"<uuid>","kind":"task.create","task":"<uuid>",
///   "column":"<uuid>","position":"V","title":"...","description":"...","base":{"title":"<hlc>"},
///   "restores":"r2:3"}`; fields not used by a kind must be absent.
extension BoardOperation: Codable {
    enum Key: String, CodingKey, CaseIterable {
        case id, hlc, board, kind, task, column, position, title, description, base, restores
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        let unknown = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
            .filter { Key(rawValue: $0) == nil }
        if let first = unknown.sorted().first {
            throw OperationError(.unknownField, field: first, "is not a field of an operation")
        }
        let c = try decoder.container(keyedBy: Key.self)
        let kindText = try Self.required(String.self, .kind, in: c)
        guard let kind = Action.Kind(rawValue: kindText) else {
            throw OperationError(.unknownKind, field: "kind",
                                 "'\(kindText.prefix(40))' is not one of \(Action.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        id = try Self.required(OperationID.self, .id, in: c)
        stamp = try Self.required(HLCStamp.self, .hlc, in: c)
        board = try Self.required(EntityID.self, .board, in: c)
        if stamp.replica != id.replica {
            throw OperationError(.invalidField, field: "hlc", "replica \(stamp.replica) differs from the operation ID's \(id.replica)")
        }
        let used: Set<Key>
        switch kind {
        case .boardCreate, .boardRename:
            let title = try Self.title(c)
            action = kind == .boardCreate ? .createBoard(title: title) : .renameBoard(title: title)
            used = [.title]
        case .columnCreate:
            action = .createColumn(column: try Self.required(EntityID.self, .column, in: c), title: try Self.title(c),
                                   position: try Self.required(PositionKey.self, .position, in: c))
            used = [.column, .title, .position]
        case .columnRename:
            action = .renameColumn(column: try Self.required(EntityID.self, .column, in: c), title: try Self.title(c))
            used = [.column, .title]
        case .columnMove:
            action = .moveColumn(column: try Self.required(EntityID.self, .column, in: c),
                                 position: try Self.required(PositionKey.self, .position, in: c))
            used = [.column, .position]
        case .columnDelete, .columnRestore:
            let column = try Self.required(EntityID.self, .column, in: c)
            action = kind == .columnDelete ? .deleteColumn(column: column) : .restoreColumn(column: column)
            used = [.column]
        case .taskCreate:
            let description = try Self.optional(String.self, .description, in: c) ?? ""
            try OperationLimits.checkDescription(description)
            action = .createTask(task: try Self.required(EntityID.self, .task, in: c),
                                 column: try Self.required(EntityID.self, .column, in: c),
                                 position: try Self.required(PositionKey.self, .position, in: c),
                                 title: try Self.title(c), description: description)
            used = [.task, .column, .position, .title, .description]
        case .taskUpdate:
            let title = try Self.optional(String.self, .title, in: c)
            if let title { try OperationLimits.checkTitle(title) }
            let description = try Self.optional(String.self, .description, in: c)
            if let description { try OperationLimits.checkDescription(description) }
            if title == nil && description == nil {
                throw OperationError(.missingField, field: "title", "task.update needs title or description")
            }
            action = .updateTask(task: try Self.required(EntityID.self, .task, in: c), title: title, description: description)
            used = [.task, .title, .description]
        case .taskMove:
            action = .moveTask(task: try Self.required(EntityID.self, .task, in: c),
                               column: try Self.required(EntityID.self, .column, in: c),
                               position: try Self.required(PositionKey.self, .position, in: c))
            used = [.task, .column, .position]
        case .taskDelete, .taskRestore:
            let task = try Self.required(EntityID.self, .task, in: c)
            action = kind == .taskDelete ? .deleteTask(task: task) : .restoreTask(task: task)
            used = [.task]
        }
        let common: Set<Key> = [.id, .hlc, .board, .kind, .base, .restores]
        if let extra = c.allKeys.filter({ !used.contains($0) && !common.contains($0) }).map(\.rawValue).sorted().first {
            throw OperationError(.unknownField, field: extra, "is not a field of \(kind.rawValue)")
        }
        let rawBase = try Self.optional([String: HLCStamp].self, .base, in: c) ?? [:]
        var base: [Field: HLCStamp] = [:]
        for (name, value) in rawBase {
            guard let field = Field(rawValue: name), action.fields.contains(field) else {
                throw OperationError(.invalidField, field: "base.\(name.prefix(40))", "\(kind.rawValue) does not write this register")
            }
            base[field] = value
        }
        self.base = base
        restores = try Self.optional(OperationID.self, .restores, in: c)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(id, forKey: .id)
        try c.encode(stamp, forKey: .hlc)
        try c.encode(board, forKey: .board)
        try c.encode(action.kind.rawValue, forKey: .kind)
        switch action {
        case .createBoard(let title), .renameBoard(let title):
            try c.encode(title, forKey: .title)
        case .createColumn(let column, let title, let position):
            try c.encode(column, forKey: .column)
            try c.encode(title, forKey: .title)
            try c.encode(position, forKey: .position)
        case .renameColumn(let column, let title):
            try c.encode(column, forKey: .column)
            try c.encode(title, forKey: .title)
        case .moveColumn(let column, let position):
            try c.encode(column, forKey: .column)
            try c.encode(position, forKey: .position)
        case .deleteColumn(let column), .restoreColumn(let column):
            try c.encode(column, forKey: .column)
        case .createTask(let task, let column, let position, let title, let description):
            try c.encode(task, forKey: .task)
            try c.encode(column, forKey: .column)
            try c.encode(position, forKey: .position)
            try c.encode(title, forKey: .title)
            try c.encode(description, forKey: .description)
        case .updateTask(let task, let title, let description):
            try c.encode(task, forKey: .task)
            try c.encodeIfPresent(title, forKey: .title)
            try c.encodeIfPresent(description, forKey: .description)
        case .moveTask(let task, let column, let position):
            try c.encode(task, forKey: .task)
            try c.encode(column, forKey: .column)
            try c.encode(position, forKey: .position)
        case .deleteTask(let task), .restoreTask(let task):
            try c.encode(task, forKey: .task)
        }
        if !base.isEmpty {
            try c.encode(Dictionary(uniqueKeysWithValues: base.map { ($0.key.rawValue, $0.value) }), forKey: .base)
        }
        try c.encodeIfPresent(restores, forKey: .restores)
    }

    private static func title(_ c: KeyedDecodingContainer<Key>) throws -> String {
        let title = try required(String.self, .title, in: c)
        try OperationLimits.checkTitle(title)
        return title
    }

    private static func required<T: Decodable>(_ type: T.Type, _ key: Key, in c: KeyedDecodingContainer<Key>) throws -> T {
        guard c.contains(key) else { throw OperationError(.missingField, field: key.rawValue, "is required") }
        return try field(key) { try c.decode(T.self, forKey: key) }
    }

    private static func optional<T: Decodable>(_ type: T.Type, _ key: Key, in c: KeyedDecodingContainer<Key>) throws -> T? {
        try field(key) { try c.decodeIfPresent(T.self, forKey: key) }
    }

    /// Turns a decoding failure inside one field into an error that names the field.
    private static func field<T>(_ key: Key, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as OperationError {
            throw error
        } catch let DecodingError.dataCorrupted(context) {
            throw OperationError(.invalidField, field: key.rawValue, context.debugDescription)
        } catch DecodingError.typeMismatch(let type, _) {
            throw OperationError(.invalidField, field: key.rawValue, "has the wrong type (expected \(describe(type)))")
        } catch DecodingError.valueNotFound(let type, _) {
            throw OperationError(.invalidField, field: key.rawValue, "is null (expected \(describe(type)))")
        } catch {
            throw OperationError(.invalidField, field: key.rawValue, "could not be read")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is [String: Any].Type, is [String: String].Type: "an object"
        default: "\(type)"
        }
    }
}

extension BoardOperation {
    /// Decodes one operation from JSON; every failure is an `OperationError` naming the field.
    public static func decode(json data: Data) throws(OperationError) -> BoardOperation {
        if data.count > OperationLimits.maxEncodedBytes {
            throw OperationError(.tooLarge, "an operation is at most \(OperationLimits.maxEncodedBytes) bytes of JSON (got \(data.count))")
        }
        if let op = decodeCanonical(data) { return op }
        do {
            return try JSONDecoder().decode(BoardOperation.self, from: data)
        } catch let error as OperationError {
            throw error
        } catch DecodingError.typeMismatch(_, _) {
            throw OperationError(.malformed, "an operation must be a JSON object")
        } catch {
            throw OperationError(.malformed, "not valid JSON")
        }
    }

    /// Encodes to compact JSON with sorted keys (stable bytes for logs and golden files).
    ///
    /// Written by hand because it runs once per logged operation and Foundation's encoder was
    /// 40% of the store's apply time; `jsonDataMatchesJSONEncoder` checks both agree.
    public func jsonData() -> Data { Data(jsonBytes()) }

    /// The same JSON as `jsonData()`, as a string (what the store logs).
    public func jsonString() -> String { String(decoding: jsonBytes(), as: UTF8.self) }

    /// The same JSON as `jsonData()`, as bytes (for splicing into larger messages).
    public func jsonBytes() -> [UInt8] {
        var column: EntityID?, task: EntityID?, position: PositionKey?, title: String?, description: String?
        switch action {
        case .createBoard(let t), .renameBoard(let t):
            title = t
        case .createColumn(let c, let t, let p):
            (column, title, position) = (c, t, p)
        case .renameColumn(let c, let t):
            (column, title) = (c, t)
        case .moveColumn(let c, let p):
            (column, position) = (c, p)
        case .deleteColumn(let c), .restoreColumn(let c):
            column = c
        case .createTask(let k, let c, let p, let t, let d):
            (task, column, position, title, description) = (k, c, p, t, d)
        case .updateTask(let k, let t, let d):
            (task, title, description) = (k, t, d)
        case .moveTask(let k, let c, let p):
            (task, column, position) = (k, c, p)
        case .deleteTask(let k), .restoreTask(let k):
            task = k
        }
        // Keys in sorted order, each written only when present.
        var out = JSONBytes(capacity: 256 + (title?.utf8.count ?? 0) + (description?.utf8.count ?? 0))
        if !base.isEmpty {
            out.key("base")
            out.bytes.append(UInt8(ascii: "{"))
            for (i, entry) in base.sorted(by: { $0.key.rawValue < $1.key.rawValue }).enumerated() {
                if i > 0 { out.bytes.append(UInt8(ascii: ",")) }
                out.string(entry.key.rawValue)
                out.bytes.append(UInt8(ascii: ":"))
                entry.value.withUTF8Text { out.string($0) }
            }
            out.bytes.append(UInt8(ascii: "}"))
        }
        out.field("board", board.rawValue)
        if let column { out.field("column", column.rawValue) }
        if let description { out.field("description", description) }
        out.key("hlc")
        stamp.withUTF8Text { out.string($0) }
        out.key("id")
        id.withUTF8Text { out.string($0) }
        out.field("kind", action.kind.rawValue)
        if let position { out.field("position", position.rawValue) }
        if let restores { out.field("restores", restores.description) }
        if let task { out.field("task", task.rawValue) }
        if let title { out.field("title", title) }
        return out.closed()
    }
}

/// A compact JSON object written straight into bytes: `{"key":"value",...}`. Keys go out in
/// the order they are written: callers write them sorted, as `JSONEncoder` with `.sortedKeys`
/// does, and a test per caller compares the bytes with `JSONEncoder`'s.
public struct JSONBytes {
    public internal(set) var bytes: [UInt8]
    private var first = true

    public init(capacity: Int) {
        bytes = [UInt8(ascii: "{")]
        bytes.reserveCapacity(capacity)
    }

    public mutating func key(_ key: StaticString) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
    }

    public mutating func field(_ name: StaticString, _ value: String) {
        key(name)
        string(value)
    }

    public mutating func field(_ name: StaticString, _ value: Int64) {
        key(name)
        bytes += Array(String(value).utf8)
    }

    public mutating func field(_ name: StaticString, _ value: Bool) {
        key(name)
        bytes += Array((value ? "true" : "false").utf8)
    }

    /// A value that is JSON already (a nested object written by another `JSONBytes`).
    public mutating func field(_ name: StaticString, json value: [UInt8]) {
        key(name)
        bytes += value
    }

    /// The object, closed.
    public consuming func closed() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    /// A JSON string literal escaped as `JSONEncoder` escapes it: quotes, backslashes and
    /// control characters (`\n \r \t \b \f`, the rest as `\u00XX`); everything else
    /// (including non-ASCII UTF-8, DEL and "/") copied as is.
    public mutating func string(_ text: String) {
        var text = text
        text.withUTF8 { string($0) }
    }

    /// The same for text given as UTF-8 bytes (stamps and operation IDs are formatted on the stack).
    public mutating func string(_ utf8: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        defer { bytes.append(UInt8(ascii: "\"")) }
        if !utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            bytes.append(contentsOf: utf8)
            return
        }
        let hex = Array("0123456789abcdef".utf8)
        for byte in utf8 {
            switch byte {
            case 0x22: bytes += [0x5C, 0x22]
            case 0x5C: bytes += [0x5C, 0x5C]
            case 0x0A: bytes += [0x5C, UInt8(ascii: "n")]
            case 0x0D: bytes += [0x5C, UInt8(ascii: "r")]
            case 0x09: bytes += [0x5C, UInt8(ascii: "t")]
            case 0x08: bytes += [0x5C, UInt8(ascii: "b")]
            case 0x0C: bytes += [0x5C, UInt8(ascii: "f")]
            case let c where c < 0x20:
                bytes += [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(c >> 4)], hex[Int(c & 0xF)]]
            default: bytes.append(byte)
            }
        }
    }
}
