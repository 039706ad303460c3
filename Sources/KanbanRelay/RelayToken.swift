public import Foundation
import Crypto

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

    public init(team: String, boards: [String]? = nil, write: Bool = true, issuedAt: Int64 = Int64(Date().timeIntervalSince1970)) {
        self.team = team
        self.boards = boards
        self.write = write
        self.issuedAt = issuedAt
    }

    public func allows(board: String) -> Bool { boards?.contains(board) ?? true }
}

/// Signs and verifies tokens with the relay's secret.
public struct TokenAuthority: Sendable {
    let secret: Data

    public init(secret: Data) { self.secret = secret }

    var key: SymmetricKey { SymmetricKey(data: secret) }

    public static func makeSecret() -> Data {
        Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    public func sign(_ token: RelayToken) -> String {
        let claims = Self.base64url(try! JSONEncoder().encode(token))
        let mac = HMAC<SHA256>.authenticationCode(for: Data(("kb1." + claims).utf8), using: key)
        return "kb1.\(claims).\(Self.base64url(Data(mac)))"
    }

    public enum Failure: String, Error, Sendable {
        case missing = "no bearer token on the request"
        case malformed = "the token is not a kanban relay token (expected kb1.<claims>.<signature>)"
        case badSignature = "the token was not signed by this relay (wrong relay, or the relay's secret changed)"
    }

    public func verify(_ text: String) -> Result<RelayToken, Failure> {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "kb1", let claims = Self.unbase64url(String(parts[1])),
              let signature = Self.unbase64url(String(parts[2]))
        else { return .failure(.malformed) }
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Data(("kb1." + parts[1]).utf8), using: key) else {
            return .failure(.badSignature)
        }
        guard let token = try? JSONDecoder().decode(RelayToken.self, from: claims) else { return .failure(.malformed) }
        return .success(token)
    }

    /// Reads `Authorization: Bearer <token>`.
    public func verify(authorization: String?) -> Result<RelayToken, Failure> {
        guard let authorization, authorization.lowercased().hasPrefix("bearer ") else { return .failure(.missing) }
        return verify(String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces))
    }

    static func base64url(_ data: Data) -> String {
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
