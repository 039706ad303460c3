import Foundation
import NIOCore
import NIOPosix

/// A bare-bones WebSocket client over one TCP connection, for tests that must control the
/// upgrade request's `Host` and `Origin` exactly as a browser would send them.
///
/// `client.ws(...)` from HummingbirdWSTesting cannot do that: swift-websocket's client always adds
/// `Origin: ws://HOST` (see `EventStreamTests` for what the agent makes of it). This one sends only
/// the headers given, reports a refused upgrade as the HTTP response it got, and after a 101
/// delivers text messages. It never requests extensions, so frames are never compressed.
struct RawWebSocket: Sendable {
    struct HTTPHead: Sendable {
        let status: Int
        let headers: [String: String]  // lower-cased names
        let body: String
    }

    enum Event: Sendable {
        case head(HTTPHead)
        case text(String)
        case closed(code: UInt16?)
    }

    enum Failure: Error, CustomStringConvertible {
        case timeout(Duration)
        case ended
        case malformed(String)
        var description: String {
            switch self {
            case .timeout(let d): "no WebSocket event within \(d)"
            case .ended: "the connection ended"
            case .malformed(let why): "malformed response: \(why)"
            }
        }
    }

    let events: AsyncStream<Event>

    /// The next event, or a `Failure.timeout` after `timeout`.
    func next(timeout: Duration = .seconds(10)) async throws -> Event {
        let events = self.events
        return try await withThrowingTaskGroup(of: Event?.self) { group in
            group.addTask {
                var iterator = events.makeAsyncIterator()
                return await iterator.next()
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw Failure.timeout(timeout)
            }
            defer { group.cancelAll() }
            guard let event = try await group.next()! else { throw Failure.ended }
            return event
        }
    }

    /// The response to the upgrade request (status 101 when upgraded).
    func handshake(timeout: Duration = .seconds(10)) async throws -> HTTPHead {
        guard case .head(let head) = try await next(timeout: timeout) else { throw Failure.malformed("no HTTP head first") }
        return head
    }

    /// The next text message, parsed as JSON.
    func nextJSON(timeout: Duration = .seconds(10)) async throws -> JSONValue {
        switch try await next(timeout: timeout) {
        case .text(let text): return try JSONValue(parsing: text)
        case .closed(let code): throw Failure.malformed("closed with \(code.map(String.init) ?? "no code") instead of a message")
        case .head: throw Failure.malformed("a second HTTP head")
        }
    }

    /// Opens a connection to the agent, sends an upgrade request for `path` with exactly the
    /// given `Host` and extra headers, and runs `body` while frames are read in the background.
    static func connect<T: Sendable>(
        port: Int, path: String, host: String?, headers: [(String, String)] = [],
        _ body: (RawWebSocket) async throws -> T
    ) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: "localhost", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var key = [UInt8](repeating: 0, count: 16)
            for i in key.indices { key[i] = .random(in: 0...255) }
            var request = "GET \(path) HTTP/1.1\r\n"
            if let host { request += "Host: \(host)\r\n" }
            request += "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            request += "Sec-WebSocket-Key: \(Data(key).base64EncodedString())\r\nSec-WebSocket-Version: 13\r\n"
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            request += "\r\n"
            try await outbound.write(ByteBuffer(string: request))

            let (events, continuation) = AsyncStream<Event>.makeStream()
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    defer { continuation.finish() }
                    try await Self.pump(inbound, outbound, into: continuation)
                }
                defer {
                    channel.channel.close(promise: nil)
                    group.cancelAll()
                }
                return try await body(RawWebSocket(events: events))
            }
        }
    }

    /// Reads the HTTP response head, then (after a 101) WebSocket frames.
    private static func pump(
        _ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        into continuation: AsyncStream<Event>.Continuation
    ) async throws {
        var buffer = ByteBuffer()
        var upgraded = false
        var pending: (head: HTTPHead, length: Int)?
        var message: [UInt8] = []
        for try await chunk in inbound {
            var chunk = chunk
            buffer.writeBuffer(&chunk)
            while true {
                if !upgraded {
                    if let (head, length) = pending {
                        guard buffer.readableBytes >= length else { break }
                        let body = buffer.readString(length: length) ?? ""
                        continuation.yield(.head(HTTPHead(status: head.status, headers: head.headers, body: body)))
                        return
                    }
                    let view = Array(buffer.readableBytesView)
                    guard let end = view.indices.dropLast(3).first(where: { view[$0..<$0 + 4] == [13, 10, 13, 10] }) else { break }
                    let text = buffer.readString(length: end + 4)!
                    var lines = text.components(separatedBy: "\r\n").filter { !$0.isEmpty }
                    let statusLine = lines.removeFirst().split(separator: " ")
                    guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Failure.malformed(text) }
                    var headers: [String: String] = [:]
                    for line in lines {
                        guard let colon = line.firstIndex(of: ":") else { continue }
                        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                    }
                    let head = HTTPHead(status: status, headers: headers, body: "")
                    if status == 101 {
                        upgraded = true
                        continuation.yield(.head(head))
                    } else {
                        pending = (head, Int(headers["content-length"] ?? "0") ?? 0)
                    }
                    continue
                }
                // A server frame: FIN/opcode, unmasked length, payload.
                guard buffer.readableBytes >= 2 else { break }
                let start = buffer.readerIndex
                let b0 = buffer.getInteger(at: start, as: UInt8.self)!
                let b1 = buffer.getInteger(at: start + 1, as: UInt8.self)!
                var headerSize = 2
                var length = Int(b1 & 0x7F)
                if length == 126 {
                    guard buffer.readableBytes >= 4 else { break }
                    length = Int(buffer.getInteger(at: start + 2, as: UInt16.self)!)
                    headerSize = 4
                } else if length == 127 {
                    guard buffer.readableBytes >= 10 else { break }
                    length = Int(buffer.getInteger(at: start + 2, as: UInt64.self)!)
                    headerSize = 10
                }
                guard b1 & 0x80 == 0 else { throw Failure.malformed("the server masked a frame") }
                guard buffer.readableBytes >= headerSize + length else { break }
                buffer.moveReaderIndex(forwardBy: headerSize)
                let payload = buffer.readBytes(length: length)!
                let fin = b0 & 0x80 != 0
                switch b0 & 0x0F {
                case 0x0, 0x1, 0x2:
                    message += payload
                    if fin {
                        continuation.yield(.text(String(decoding: message, as: UTF8.self)))
                        message = []
                    }
                case 0x8:
                    let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
                    continuation.yield(.closed(code: code))
                    return
                case 0x9:
                    try await outbound.write(maskedFrame(opcode: 0xA, payload: payload))
                default:
                    break
                }
            }
        }
        if upgraded { continuation.yield(.closed(code: nil)) }
    }

    /// A client frame (clients must mask).
    static func maskedFrame(opcode: UInt8, payload: [UInt8]) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.writeInteger(0x80 | opcode)
        precondition(payload.count < 126)
        frame.writeInteger(0x80 | UInt8(payload.count))
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame.writeBytes(mask)
        frame.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
        return frame
    }
}
