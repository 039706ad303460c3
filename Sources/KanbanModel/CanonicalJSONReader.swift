/// Reads JSON that is exactly in the form this project writes (compact, sorted keys, strings
/// without escapes), fast, and gives up (nil) on anything else, so that the caller falls back to
/// Foundation's `JSONDecoder`, which stays the reference for what is valid and for every error
/// message.
///
/// Why: the relay decodes every pushed operation and every agent every received one. In the
/// running processes Foundation's decoder took 11 % of the relay's CPU and 16 % of a receiving
/// agent's (`perf`, 2026-11-30), several times what a decode costs when measured in a loop
/// (~20 µs): with the cores shared by three processes its code and metadata are cold at every
/// message.
///
/// An operation read here is accepted only if `jsonBytes()` writes it back byte for byte, so a
/// result is always the one `JSONDecoder` would produce; `CanonicalDecodingTests` checks that
/// on random operations and on mutated input.
public struct CanonicalJSONReader {
    private let bytes: UnsafeBufferPointer<UInt8>
    /// The next byte to read.
    public private(set) var index: Int

    public init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        self.index = 0
    }

    public var isAtEnd: Bool { index == bytes.count }

    /// Consumes `literal` if the input continues with it.
    public mutating func consume(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { return false }
        let expected = UnsafeBufferPointer(start: literal.utf8Start, count: count)
        for i in 0..<count where bytes[index + i] != expected[i] { return false }
        index += count
        return true
    }

    /// A string without escapes, of valid UTF-8.
    public mutating func string() -> String? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let start = index + 1
        var end = start
        var ascii = true
        while end < bytes.count {
            let byte = bytes[end]
            if byte == UInt8(ascii: "\"") { break }
            // Escapes are left to JSONDecoder; raw control characters are invalid JSON.
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            if byte >= 0x80 { ascii = false }
            end += 1
        }
        guard end < bytes.count else { return nil }
        let content = UnsafeBufferPointer(rebasing: bytes[start..<end])
        index = end + 1
        if ascii { return String(decoding: content, as: UTF8.self) }
        return String(validating: content, as: UTF8.self)
    }

    /// A non-negative integer written without leading zeros.
    public mutating func int64() -> Int64? {
        let start = index
        var value: Int64 = 0
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int64(bytes[index] - UInt8(ascii: "0")))
            guard !o1, !o2 else { return nil }
            value = sum
            index += 1
        }
        let digits = index - start
        guard digits > 0, digits == 1 || bytes[start] != UInt8(ascii: "0") else { return nil }
        return value
    }

    /// The elements of an array whose `[` is already consumed, through its `]`, each read by
    /// `element`; false if any is not.
    public mutating func list<Element>(into elements: inout [Element], _ element: (inout Self) -> Element?) -> Bool {
        if consume("]") { return true }
        repeat {
            guard let next = element(&self) else { return false }
            elements.append(next)
        } while consume(",")
        return consume("]")
    }

    /// One operation object, accepted only in the exact form `BoardOperation.jsonBytes()` writes
    /// and only if it is valid (the checks `init(from:)` makes).
    public mutating func operation() -> BoardOperation? {
        let start = index
        guard consume("{") else { return nil }
        var fields = [String?](repeating: nil, count: BoardOperation.Key.allCases.count)
        var base: [(String, String)] = []
        var first = true
        while !consume("}") {
            guard first || consume(","), let name = string(), consume(":"),
                  let key = BoardOperation.Key(rawValue: name), fields[key.index] == nil
            else { return nil }
            first = false
            if key == .base {
                guard consume("{") else { return nil }
                var firstEntry = true
                while !consume("}") {
                    guard firstEntry || consume(","), let field = string(), consume(":"), let stamp = string() else { return nil }
                    firstEntry = false
                    base.append((field, stamp))
                }
                fields[key.index] = ""
            } else {
                guard let value = string() else { return nil }
                fields[key.index] = value
            }
        }
        guard let op = BoardOperation(canonicalFields: fields, base: base) else { return nil }
        // Written back byte for byte: no field missing, extra, out of order or spelled otherwise.
        let written = op.jsonBytes()
        guard written.count == index - start,
              written.withUnsafeBufferPointer({ $0.elementsEqual(UnsafeBufferPointer(rebasing: bytes[start..<index])) })
        else { return nil }
        return op
    }
}

extension BoardOperation.Key {
    var index: Int { Self.allCases.firstIndex(of: self)! }
}

extension BoardOperation {
    /// Builds and checks an operation from its fields as read by `CanonicalJSONReader` (indexed
    /// by `Key`; `base` as its entries); nil where `init(from:)` would throw. Extra fields are
    /// not checked here: the caller's round trip through `jsonBytes()` rejects them.
    init?(canonicalFields fields: [String?], base entries: [(String, String)]) {
        func text(_ key: Key) -> String? { fields[key.index] }
        func entity(_ key: Key) -> EntityID? { text(key).flatMap { EntityID($0) } }
        func position() -> PositionKey? { text(.position).flatMap { PositionKey($0) } }
        func title() -> String? {
            guard let title = text(.title), (try? OperationLimits.checkTitle(title)) != nil else { return nil }
            return title
        }
        guard let kindText = text(.kind), let kind = Action.Kind(rawValue: kindText),
              let id = text(.id).flatMap({ OperationID($0) }),
              let stamp = text(.hlc).flatMap({ HLCStamp($0) }),
              let board = entity(.board), stamp.replica == id.replica
        else { return nil }
        let action: Action
        switch kind {
        case .boardCreate, .boardRename:
            guard let title = title() else { return nil }
            action = kind == .boardCreate ? .createBoard(title: title) : .renameBoard(title: title)
        case .columnCreate:
            guard let column = entity(.column), let title = title(), let position = position() else { return nil }
            action = .createColumn(column: column, title: title, position: position)
        case .columnRename:
            guard let column = entity(.column), let title = title() else { return nil }
            action = .renameColumn(column: column, title: title)
        case .columnMove:
            guard let column = entity(.column), let position = position() else { return nil }
            action = .moveColumn(column: column, position: position)
        case .columnDelete, .columnRestore:
            guard let column = entity(.column) else { return nil }
            action = kind == .columnDelete ? .deleteColumn(column: column) : .restoreColumn(column: column)
        case .taskCreate:
            let description = text(.description) ?? ""
            guard let task = entity(.task), let column = entity(.column), let position = position(), let title = title(),
                  (try? OperationLimits.checkDescription(description)) != nil
            else { return nil }
            action = .createTask(task: task, column: column, position: position, title: title, description: description)
        case .taskUpdate:
            let description = text(.description)
            guard let task = entity(.task), text(.title) != nil || description != nil,
                  text(.title) == nil || title() != nil,
                  description.map({ (try? OperationLimits.checkDescription($0)) != nil }) ?? true
            else { return nil }
            action = .updateTask(task: task, title: text(.title), description: description)
        case .taskMove:
            guard let task = entity(.task), let column = entity(.column), let position = position() else { return nil }
            action = .moveTask(task: task, column: column, position: position)
        case .taskDelete, .taskRestore:
            guard let task = entity(.task) else { return nil }
            action = kind == .taskDelete ? .deleteTask(task: task) : .restoreTask(task: task)
        }
        var base: [Field: HLCStamp] = [:]
        for (name, value) in entries {
            guard let field = Field(rawValue: name), action.fields.contains(field), base[field] == nil,
                  let stamp = HLCStamp(value)
            else { return nil }
            base[field] = stamp
        }
        var restores: OperationID?
        if let text = text(.restores) {
            guard let id = OperationID(text) else { return nil }
            restores = id
        }
        self.init(id: id, stamp: stamp, board: board, action: action, base: base, restores: restores)
    }

    /// `decode(json:)` for input in the exact form `jsonBytes()` writes; nil for anything else.
    public static func decodeCanonical(_ data: some Collection<UInt8>) -> BoardOperation? {
        data.withContiguousStorageIfAvailable { bytes in
            var reader = CanonicalJSONReader(bytes)
            guard let op = reader.operation(), reader.isAtEnd else { return nil }
            return op
        } ?? nil
    }
}
