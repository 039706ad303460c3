import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal keep-alive HTTP/1.1 client on SwiftNIO: one connection, one request at a time.
/// (AsyncHTTPClient is not a dependency of this target; adding it needs a Package.swift change.)
struct HTTPConnection {
    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    static func connect(host: String = "127.0.0.1", port: Int) async throws -> Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Opens a connection, runs `body` with a request function, closes.
    static func with<T: Sendable>(
        port: Int, _ body: (_ request: (HTTPMethod, String, String?) async throws -> (status: Int, body: String)) async throws -> T
    ) async throws -> T {
        let channel = try await connect(port: port)
        let host = "127.0.0.1:\(port)"
        return try await channel.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            return try await body { method, path, body in
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: host)
                headers.add(name: "Connection", value: "keep-alive")
                var parts: [HTTPClientRequestPart] = []
                if let body {
                    let buffer = ByteBuffer(string: body)
                    headers.add(name: "Content-Type", value: "application/json")
                    headers.add(name: "Content-Length", value: "\(buffer.readableBytes)")
                    parts = [.head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)),
                             .body(.byteBuffer(buffer)), .end(nil)]
                } else {
                    parts = [.head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)), .end(nil)]
                }
                try await outbound.write(contentsOf: parts)
                var status = 0
                var text = ""
                while let part = try await iterator.next() {
                    switch part {
                    case .head(let head): status = Int(head.status.code)
                    case .body(let buffer): text += String(buffer: buffer)
                    case .end: return (status, text)
                    }
                }
                throw BenchError("connection closed mid-response")
            }
        }
    }
}
