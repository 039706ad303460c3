/// Why an operation (or a request to make one) was rejected. Nothing was written.
public struct OperationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Stable, machine-readable reason; callers switch on this.
    public struct Code: Hashable, Sendable, RawRepresentable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let malformed = Code(rawValue: "malformed")
        public static let missingField = Code(rawValue: "missing_field")
        public static let invalidField = Code(rawValue: "invalid_field")
        public static let unknownField = Code(rawValue: "unknown_field")
        public static let unknownKind = Code(rawValue: "unknown_kind")
        public static let tooLarge = Code(rawValue: "too_large")
    }

    public let code: Code
    /// The offending field, e.g. `title` or `base.place`; empty when the whole input is bad.
    public let field: String
    public let message: String

    public init(_ code: Code, field: String = "", _ message: String) {
        self.code = code
        self.field = field
        self.message = message
    }

    public var description: String {
        field.isEmpty ? "\(code): \(message)" : "\(code) (\(field)): \(message)"
    }
}

/// Bounds on what one operation may carry.
public enum OperationLimits {
    public static let maxTitleLength = 500
    public static let maxDescriptionLength = 20_000
    public static let maxEncodedBytes = 64 * 1024

    /// Checks a title: 1-500 characters (Unicode scalars, as JSON Schema counts), not only white space.
    public static func checkTitle(_ title: String, field: String = "title") throws(OperationError) {
        let length = title.unicodeScalars.count
        if length > maxTitleLength {
            throw OperationError(.invalidField, field: field, "must be at most \(maxTitleLength) characters (got \(length))")
        }
        if title.allSatisfy(\.isWhitespace) {
            throw OperationError(.invalidField, field: field, "must not be empty")
        }
    }

    public static func checkDescription(_ text: String, field: String = "description") throws(OperationError) {
        let length = text.unicodeScalars.count
        if length > maxDescriptionLength {
            throw OperationError(.invalidField, field: field, "must be at most \(maxDescriptionLength) characters (got \(length))")
        }
    }
}
