public import Foundation
import Crypto
import Synchronization

/// What a token grants: one team, optionally only some boards, and read or read-write.
///
/// Text form: `kb1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "kb1." + claims))>`.
/// The relay keeps the secret; tokens are never logged.
public struct RelayToken: Sendable, Hashable, Codable {
    public var team: String
    /// nil: every board of the team, including new ones.
    public var boards: [String]?
    public var write: Bool
    public var issuedAt: Int64
    /// Random, so that two tokens with the same claims issued in the same second still differ
    /// (and revoking one leaves the other). Absent in tokens issued before revocation existed.
    public var nonce: String?
    /// `TokenAuthority.id(of:)` of the verified token's text (not part of the signed claims).
    public var id: String?

    enum CodingKeys: String, CodingKey { case team, boards, write, issuedAt, nonce }

    public init(team: String, boards: [String]? = nil, write: Bool = true, issuedAt: Int64 = Int64(Date().timeIntervalSince1970),
                nonce: String? = TokenAuthority.base64url(Data((0..<9).map { _ in UInt8.random(in: 0...255) }))) {
        self.team = team
        self.boards = boards
        self.write = write
        self.issuedAt = issuedAt
        self.nonce = nonce
    }

    public func allows(board: String) -> Bool { boards?.contains(board) ?? true }
}

/// A token `kanban relay token create` issued, as the relay records it (never the token itself):
/// what `kanban relay token list` shows and `revoke` marks.
public struct IssuedToken: Sendable, Hashable, Codable {
    /// `TokenAuthority.id(of:)` of the token text.
    public var id: String
    public var team: String
    public var boards: [String]?
    public var write: Bool
    public var issuedAt: Int64
    /// Seconds since 1970 when it was revoked; nil while it is valid.
    public var revokedAt: Int64?

    public init(id: String, token: RelayToken, revokedAt: Int64? = nil) {
        self.id = id
        team = token.team
        boards = token.boards
        write = token.write
        issuedAt = token.issuedAt
        self.revokedAt = revokedAt
    }
}

/// IDs of revoked tokens, as the relay last read them from its store (`TokenRevocationWatcher`).
public final class RevokedTokens: Sendable {
    private let ids = Mutex<Set<String>>([])
    public init() {}
    public func contains(_ id: String) -> Bool { ids.withLock { $0.contains(id) } }
    /// Replaces the set; returns the IDs that were not in it before.
    func replace(with new: Set<String>) -> Set<String> {
        ids.withLock { current in
            defer { current = new }
            return new.subtracting(current)
        }
    }
}

/// Signs and verifies tokens with the relay's secret.
public struct TokenAuthority: Sendable {
    let secret: Data
    /// Tokens the relay refuses although their signature is good.
    public let revoked: RevokedTokens

    public init(secret: Data, revoked: RevokedTokens = RevokedTokens()) {
        self.secret = secret
        self.revoked = revoked
    }

    var key: SymmetricKey { SymmetricKey(data: secret) }

    public static func makeSecret() -> Data {
        Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    public func sign(_ token: RelayToken) -> String {
        let claims = Self.base64url(try! JSONEncoder().encode(token))
        let mac = HMAC<SHA256>.authenticationCode(for: Data(("kb1." + claims).utf8), using: key)
        return "kb1.\(claims).\(Self.base64url(Data(mac)))"
    }

    /// A short, stable name for a token (16 hex digits of its SHA-256): how `kanban relay token
    /// list` shows it and `revoke` names it. Every token has one, also those issued before tokens
    /// were recorded.
    public static func id(of text: String) -> String {
        SHA256.hash(data: Data(text.utf8)).prefix(8).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    public enum Failure: String, Error, Sendable {
        case missing = "no bearer token on the request"
        case revoked = "the token was revoked (`kanban relay token revoke`)"
        case malformed = "the token is not a kanban relay token (expected kb1.<claims>.<signature>)"
        case badSignature = "the token was not signed by this relay (wrong relay, or the relay's secret changed)"

        /// The code in a 401's JSON body (agents and `kanban doctor` classify by it).
        public var code: String {
            switch self {
            case .missing: "token_missing"
            case .revoked: "token_revoked"
            case .malformed, .badSignature: "token_invalid"
            }
        }

        /// What to do, in a 401's JSON body.
        public var hint: String {
            self == .revoked
                ? "This token no longer gives access: ask the relay's admin for a new one (`kanban relay token create`)."
                : "Create a token with `kanban relay token create --data DIR --team T` (or --store postgres://...) and send it as Authorization: Bearer <token>."
        }
    }

    public func verify(_ text: String) -> Result<RelayToken, Failure> {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "kb1", let claims = Self.unbase64url(String(parts[1])),
              let signature = Self.unbase64url(String(parts[2]))
        else { return .failure(.malformed) }
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Data(("kb1." + parts[1]).utf8), using: key) else {
            return .failure(.badSignature)
        }
        guard var token = try? JSONDecoder().decode(RelayToken.self, from: claims) else { return .failure(.malformed) }
        let id = Self.id(of: text)
        if revoked.contains(id) { return .failure(.revoked) }
        token.id = id
        return .success(token)
    }

    /// Reads `Authorization: Bearer <token>`.
    public func verify(authorization: String?) -> Result<RelayToken, Failure> {
        guard let authorization, authorization.lowercased().hasPrefix("bearer ") else { return .failure(.missing) }
        return verify(String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces))
    }

    public static func base64url(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func unbase64url(_ text: String) -> Data? {
        guard text.count < 8192 else { return nil }
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }
}
