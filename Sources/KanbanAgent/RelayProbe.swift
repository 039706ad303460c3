import Foundation
public import KanbanProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Low-level checks of a relay address, step by step, with plain sockets so each failure can
/// be told apart (DNS, TCP, what the HTTP upgrade answered). Used by `kanban doctor` and by the
/// sync client to explain a failed upgrade.
public enum RelayProbe {
    public struct Target: Sendable {
        public let scheme: String
        public let host: String
        public let port: Int
        public let path: String
    }

    public static func parse(_ url: String) -> Result<Target, LinkProblem> {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else { return .failure(.badURL) }
        if scheme == "http" || scheme == "https" { return .failure(.httpScheme) }
        guard scheme == "ws" || scheme == "wss" else { return .failure(.badURL) }
        let port = components.port ?? (scheme == "wss" ? 443 : 80)
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        return .success(Target(scheme: scheme, host: host, port: port, path: path))
    }

    /// Resolves the host; the numeric addresses found.
    public static func resolve(_ host: String) -> Result<[String], LinkProblem> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return .failure(.dns) }
        defer { freeaddrinfo(first) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !addresses.contains(text) { addresses.append(text) }
            }
            cursor = info.pointee.ai_next
        }
        return addresses.isEmpty ? .failure(.dns) : .success(addresses)
    }

    /// Opens a TCP connection with a timeout; the socket on success.
    public static func connect(host: String, port: Int, timeout: Double = 3) -> Result<Int32, LinkProblem> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { return .failure(.dns) }
        defer { freeaddrinfo(info) }
        let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard fd >= 0 else { return .failure(.refused) }
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) != 0 && errno != EINPROGRESS {
            close(fd)
            return .failure(errno == ECONNREFUSED ? .refused : .timeout)
        }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&poller, 1, Int32(timeout * 1000))
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        guard ready == 1, error == 0 else {
            close(fd)
            return .failure(ready == 0 ? .timeout : (error == ECONNREFUSED ? .refused : .timeout))
        }
        _ = fcntl(fd, F_SETFL, flags)
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return .success(fd)
    }

    /// What the server answered to a WebSocket upgrade request.
    public struct UpgradeAnswer: Sendable {
        public let status: Int
        public let headers: [String: String]
        public let body: String
        public var deflate: Bool { headers["sec-websocket-extensions"]?.contains("permessage-deflate") ?? false }
    }

    /// Sends a WebSocket upgrade request (ws:// only) and reads the answer's head.
    /// With `asUpgrade: false` the same request goes without the upgrade headers: servers built
    /// on hummingbird-websocket answer every refused upgrade with an empty 400, and the plain
    /// request is how to learn why (401 with a reason, 404 for a wrong path).
    public static func upgrade(_ target: Target, token: String?, asUpgrade: Bool = true, timeout: Double = 3) -> Result<UpgradeAnswer, LinkProblem> {
        if target.scheme == "wss" {
            return .failure(LinkProblem(code: "tls_not_probed", message: "The upgrade step speaks plain TCP; wss:// is checked by the protocol step only.",
                                        fix: "Run the doctor against the relay's ws:// address behind the TLS proxy to see the raw answer."))
        }
        switch connect(host: target.host, port: target.port, timeout: timeout) {
        case .failure(let problem): return .failure(problem)
        case .success(let fd):
            defer { close(fd) }
            var request = "GET \(target.path) HTTP/1.1\r\nHost: \(target.host):\(target.port)\r\n"
            if asUpgrade {
                request += "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                request += "Sec-WebSocket-Key: a2FuYmFuLWRvY3Rvci1rZXk=\r\nSec-WebSocket-Version: 13\r\n"
                request += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            } else {
                request += "Connection: close\r\n"
            }
            if let token { request += "Authorization: Bearer \(token)\r\n" }
            request += "\r\n"
            let bytes = Array(request.utf8)
            guard send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { return .failure(.refused) }
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while received.count < 16_384 {
                let n = recv(fd, &chunk, chunk.count, 0)
                if n <= 0 { break }
                received += chunk[0..<n]
                if let text = String(bytes: received, encoding: .utf8), let split = text.range(of: "\r\n\r\n") {
                    let head = text[..<split.lowerBound]
                    let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
                    var headers: [String: String] = [:]
                    for line in head.split(separator: "\r\n").dropFirst() {
                        guard let colon = line.firstIndex(of: ":") else { continue }
                        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                    }
                    let length = Int(headers["content-length"] ?? "0") ?? 0
                    let body = String(text[split.upperBound...])
                    if status == 101 || body.utf8.count >= min(length, 4096) {
                        return .success(UpgradeAnswer(status: status, headers: headers, body: String(body.prefix(2048))))
                    }
                }
            }
            if received.isEmpty { return .failure(.timeout) }
            return .failure(LinkProblem(code: "not_http", message: "The server's answer is not HTTP.",
                                        fix: "This port does not serve HTTP; check the port number."))
        }
    }
}
