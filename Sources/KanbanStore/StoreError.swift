import GRDB

/// Why a store call failed. `code` is stable; `message` says what to do.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, RawRepresentable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let notFound = Code(rawValue: "not_found")
        public static let invalid = Code(rawValue: "invalid")
        public static let conflict = Code(rawValue: "conflict")
        public static let corrupt = Code(rawValue: "corrupt")
    }

    public let code: Code
    public let message: String
    /// The request field the error is about, when there is one.
    public let field: String?

    public init(_ code: Code, _ message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String { "\(code): \(message)" }

    static func corrupt(_ detail: String) -> StoreError {
        StoreError(.corrupt, "the database holds an unreadable value (\(detail)); restore from a backup or re-sync")
    }
}

extension StoreError {
    /// Whether `error` is SQLite saying the disk (or the file system's quota) is full. Such a
    /// write rolled back entirely; reads go on working, and the same write succeeds once there
    /// is room.
    public static func isDiskFull(_ error: any Error) -> Bool {
        (error as? DatabaseError)?.resultCode == .SQLITE_FULL
    }

    /// Whether `error` came from SQLite (as opposed to the network or the caller).
    public static func isDatabaseError(_ error: any Error) -> Bool {
        error is DatabaseError
    }
}

extension StoreError {
    /// Whether `error` is SQLite saying a file is not a database or is damaged.
    public static func isDamagedFile(_ error: any Error) -> Bool {
        guard let code = (error as? DatabaseError)?.resultCode else { return false }
        return code == .SQLITE_NOTADB || code == .SQLITE_CORRUPT
    }
}
