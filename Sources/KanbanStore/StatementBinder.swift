import GRDB
import GRDBSQLite
import KanbanModel

/// Binds a hot-path statement's arguments straight from Swift values.
///
/// `execute(arguments:)` converts every value to a `DatabaseValue`, builds `StatementArguments`
/// through a key path per value, and copies them again to bind: with a row of 16 columns written
/// per changed entity, that was a fifth of the store's apply time. Stamps and operation IDs
/// are also bound from stack bytes, never made into a `String`.
struct StatementBinder {
    private let statement: SQLiteStatement
    private var index: CInt = 1

    fileprivate init(_ statement: SQLiteStatement) { self.statement = statement }

    /// The number of arguments bound so far.
    fileprivate var count: CInt { index - 1 }

    mutating func text(_ value: String) {
        var value = value
        value.withUTF8 { text(bytes: $0) }
    }

    mutating func text(bytes: UnsafeBufferPointer<UInt8>) {
        let code = bytes.withMemoryRebound(to: CChar.self) { chars in
            // SQLITE_TRANSIENT: SQLite copies the bytes, which live only as long as this call.
            // An empty buffer may have no address, and a null pointer would bind NULL, not ''.
            guard let start = chars.baseAddress else { return sqlite3_bind_text(statement, index, "", 0, transient) }
            return sqlite3_bind_text(statement, index, start, CInt(chars.count), transient)
        }
        check(code)
        index += 1
    }

    mutating func stamp(_ value: HLCStamp) { value.withUTF8Text { text(bytes: $0) } }

    mutating func operation(_ value: OperationID) { value.withUTF8Text { text(bytes: $0) } }

    mutating func int(_ value: Int64) {
        check(sqlite3_bind_int64(statement, index, value))
        index += 1
    }

    mutating func bool(_ value: Bool) { int(value ? 1 : 0) }

    mutating func null(count: Int = 1) {
        for _ in 0..<count {
            check(sqlite3_bind_null(statement, index))
            index += 1
        }
    }

    /// A register as three columns: value, stamp, operation ID (all NULL when unset).
    mutating func register<V>(_ r: Register<V>?, _ value: (inout StatementBinder, V) -> Void) {
        guard let r else { return null(count: 3) }
        value(&self, r.value)
        stamp(r.stamp)
        operation(r.op)
    }

    /// A task's placement register as four columns: column, position, stamp, operation ID.
    mutating func place(_ r: Register<Placement>?) {
        guard let r else { return null(count: 4) }
        text(r.value.column.rawValue)
        text(r.value.position.rawValue)
        stamp(r.stamp)
        operation(r.op)
    }

    /// Binding fails only for an index out of range or a value over SQLite's size limit: both
    /// bugs here (values are bounded by `OperationLimits` long before).
    private func check(_ code: CInt) {
        precondition(code == SQLITE_OK, "binding argument \(index) failed with SQLite code \(code)")
    }
}

/// `SQLITE_TRANSIENT`, which the C macro casts from -1 and Swift does not import.
private var transient: sqlite3_destructor_type {
    unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)
}

extension Statement {
    /// Executes the statement with arguments bound by `bind`, which must bind every one.
    func execute(binding bind: (inout StatementBinder) -> Void) throws {
        // Resets the statement, clears its bindings and marks them as set, so that `execute()`
        // runs it with the ones bound below instead of asking for `StatementArguments`.
        setUncheckedArguments(StatementArguments())
        var binder = StatementBinder(sqliteStatement)
        bind(&binder)
        precondition(binder.count == sqlite3_bind_parameter_count(sqliteStatement),
                     "bound \(binder.count) of \(sqlite3_bind_parameter_count(sqliteStatement)) arguments")
        try execute()
    }
}
