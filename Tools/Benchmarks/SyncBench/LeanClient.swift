import CompressNIO
import Foundation
import Glibc
import KanbanModel
import NIOCore

/// The end-to-end measurement of `e2e --kanban` with a load generator that costs the servers
/// as little as possible: one thread, plain non-blocking sockets and `ppoll`, no Swift
/// concurrency, no NIO pipeline. The servers share this machine's two cores with the load
/// generator, and the NIO client's ~0.25 ms of CPU per create (a quarter of a core at 1,000/s)
/// and its own thread hand-offs (a timer task, a stream to the connection's task, the channel's
/// event loop; on the way back the event loop, the WebSocket decompressor's actor, the reading
/// task) are counted in its figure.
///
/// What it measures is the same: from a create's scheduled send time (open loop, so a late send
/// counts) to the moment the read that brought B's `task:created` event returns; the HTTP
/// latency on A likewise to the read that completed the response. The event socket offers
/// permessage-deflate like a browser does and inflates what comes compressed.
struct LeanE2E {
    struct Result {
        var ok = 0, errors = 0
        var e2e: [UInt64] = []
        var http: [UInt64] = []
        var received = 0
        /// How late each create was written, after its scheduled time.
        var sendLags: [UInt64] = []
    }

    let aPort: Int, bPort: Int
    let board: EntityID, columns: [EntityID]

    /// Runs on the calling thread until every create is answered and its event arrived (or
    /// `drainTimeout` passed).
    func run(rate: Double, duration: Double, warmup: Double, connections: Int, drainTimeout: Double = 30) throws -> Result {
        // Wake-ups on time: the kernel otherwise lets this thread's sleeps run 50 µs long.
        try? "1".write(toFile: "/proc/thread-self/timerslack_ns", atomically: false, encoding: .utf8)
        let events = try EventSocket(port: bPort, board: board)
        try events.waitForSnapshot(timeout: 10)
        var conns = try (0..<connections).map { _ in try HTTPSocket(port: aPort) }
        defer { for c in conns { close(c.fd) } ; close(events.fd) }

        let total = Int(rate * duration), warmCount = Int(rate * warmup)
        let interval = 1e9 / rate
        var result = Result()
        var pending: [(index: Int, scheduled: UInt64)] = []
        var next = 0, answered = 0
        let start = nowNs() + 1_000_000
        let measureFrom = start + UInt64(warmup * 1e9)
        events.onCreated = { sentAt, readAt in
            result.received += 1
            if sentAt >= measureFrom { result.e2e.append(nanos(from: sentAt, to: readAt)) }
        }
        var fds = [pollfd](repeating: pollfd(), count: connections + 1)
        var drainDeadline: UInt64?
        while true {
            let now = nowNs()
            while next < total, start + UInt64(Double(next) * interval) <= now {
                pending.append((next, start + UInt64(Double(next) * interval)))
                next += 1
            }
            for i in conns.indices where conns[i].outstanding == nil && !pending.isEmpty {
                let (index, scheduled) = pending.removeFirst()
                if index >= warmCount { result.sendLags.append(nanos(from: scheduled, to: nowNs())) }
                try conns[i].send(index: index, scheduled: scheduled, column: columns[index % columns.count])
            }
            if next == total && answered == total && pending.isEmpty {
                if result.received >= result.ok { break }
                let deadline = drainDeadline ?? (now + UInt64(drainTimeout * 1e9))
                drainDeadline = deadline
                if now >= deadline { break }
            }
            // Sleep until the next scheduled send or until a socket is readable.
            var wait: UInt64 = 1_000_000_000
            if next < total {
                let due = start + UInt64(Double(next) * interval)
                wait = due > now ? due - now : 0
            }
            var timeout = (seconds: Int(wait / 1_000_000_000), nanoseconds: Int(wait % 1_000_000_000))  // a struct timespec
            for i in conns.indices { fds[i] = pollfd(fd: conns[i].fd, events: Int16(POLLIN), revents: 0) }
            fds[connections] = pollfd(fd: events.fd, events: Int16(POLLIN), revents: 0)
            let ready = ppoll(&fds, nfds_t(fds.count), &timeout, nil)
            if ready < 0 && errno != EINTR { throw BenchError("ppoll: errno \(errno)") }
            if ready <= 0 { continue }
            if fds[connections].revents != 0 { try events.readAvailable() }
            for i in conns.indices where fds[i].revents != 0 {
                for (index, scheduled, status, readAt) in try conns[i].readAvailable() {
                    answered += 1
                    if status == 201 { result.ok += 1 } else {
                        result.errors += 1
                        if result.errors < 3 { note("HTTP \(status) for create \(index)") }
                    }
                    if index >= warmCount { result.http.append(nanos(from: scheduled, to: readAt)) }
                }
            }
        }
        return result
    }
}

/// `ppoll` (a timeout in nanoseconds; `poll` counts milliseconds, too coarse at 1,000 sends a
/// second), looked up at run time: Swift's Glibc module leaves out the GNU extensions.
private let ppoll: @convention(c) (UnsafeMutablePointer<pollfd>?, nfds_t, UnsafeRawPointer?, UnsafeRawPointer?) -> Int32 = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ppoll") else { fatalError("the C library has no ppoll") }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<pollfd>?, nfds_t, UnsafeRawPointer?, UnsafeRawPointer?) -> Int32).self)
}()

/// A blocking connect, then non-blocking I/O, Nagle off.
private func connectLoopback(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchError("socket: errno \(errno)") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { close(fd); throw BenchError("connect to 127.0.0.1:\(port): errno \(errno)") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return fd
}

/// Writes all of `bytes`, waiting for the socket when its buffer is full.
private func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n > 0 { offset += n; continue }
        guard n < 0, errno == EAGAIN || errno == EINTR else { throw BenchError("write: errno \(errno)") }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        _ = poll(&p, 1, 1_000)
    }
}

/// Reads what the socket has now into `buffer` (false: nothing was there), through `chunk`, the
/// socket's own read buffer (made once: this runs on every wake-up of the load loop).
private func readSome(_ fd: Int32, into buffer: inout [UInt8], chunk: inout [UInt8]) throws -> Bool {
    var got = false
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { buffer.append(contentsOf: chunk[0..<n]); got = true; if n < chunk.count { return true }; continue }
        if n == 0 { if got { return true }; throw BenchError("connection closed by the server") }
        if errno == EAGAIN || errno == EINTR { return got }
        throw BenchError("read: errno \(errno)")
    }
}

/// One keep-alive HTTP/1.1 connection to agent A, one request at a time.
private struct HTTPSocket {
    let fd: Int32
    let host: String
    var buffer: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 65_536)
    var outstanding: (index: Int, scheduled: UInt64)?

    init(port: Int) throws {
        fd = try connectLoopback(port: port)
        host = "127.0.0.1:\(port)"
    }

    mutating func send(index: Int, scheduled: UInt64, column: EntityID) throws {
        let body = Array(createTaskBody(index, sentAt: scheduled).utf8)
        let head = "POST /api/columns/\(column)/tasks HTTP/1.1\r\nHost: \(host)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        outstanding = (index, scheduled)
        try writeAll(fd, Array(head.utf8) + body)
    }

    /// Complete responses: (create index, scheduled time, status, time the read returned).
    mutating func readAvailable() throws -> [(Int, UInt64, Int, UInt64)] {
        _ = try readSome(fd, into: &buffer, chunk: &chunk)
        let readAt = nowNs()
        var done: [(Int, UInt64, Int, UInt64)] = []
        while let headEnd = buffer.firstRange(of: [13, 10, 13, 10]) {
            let head = String(decoding: buffer[..<headEnd.lowerBound], as: UTF8.self)
            let status = Int(head.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
            let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            guard buffer.count >= headEnd.upperBound + length else { break }
            buffer.removeFirst(headEnd.upperBound + length)
            guard let request = outstanding else { throw BenchError("a response without a request") }
            outstanding = nil
            done.append((request.index, request.scheduled, status, readAt))
        }
        return done
    }
}

/// A WebSocket client of B's `/api/events?board=ID`, frames parsed by hand.
private final class EventSocket {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 65_536)
    private var message: [UInt8] = []
    private var messageCompressed = false
    private var decompressor: ZlibDecompressor?
    private var resetPerMessage = false
    private var snapshotSeen = false
    var onCreated: (_ sentAt: UInt64, _ readAt: UInt64) -> Void = { _, _ in }

    init(port: Int, board: EntityID) throws {
        fd = try connectLoopback(port: port)
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let request = "GET /api/events?board=\(board) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
            + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        try writeAll(fd, Array(request.utf8))
        let deadline = nowNs() + 10_000_000_000
        var headEnd: Range<Int>?
        while headEnd == nil {
            guard nowNs() < deadline else { throw BenchError("no upgrade answer from B") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
            _ = try readSome(fd, into: &buffer, chunk: &chunk)
            headEnd = buffer.firstRange(of: [13, 10, 13, 10])
        }
        let head = String(decoding: buffer[..<headEnd!.lowerBound], as: UTF8.self)
        guard head.hasPrefix("HTTP/1.1 101") else { throw BenchError("B refused the upgrade: \(head.prefix(200))") }
        buffer.removeFirst(headEnd!.upperBound)
        if let line = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("sec-websocket-extensions:") }),
           line.contains("permessage-deflate") {
            let bits = line.range(of: "server_max_window_bits=").flatMap { Int32(line[$0.upperBound...].prefix { $0.isNumber }) } ?? 15
            decompressor = try ZlibDecompressor(algorithm: .deflate, windowSize: bits)
            resetPerMessage = line.contains("server_no_context_takeover")
        }
    }

    func waitForSnapshot(timeout: Double) throws {
        let deadline = nowNs() + UInt64(timeout * 1e9)
        while !snapshotSeen {
            guard nowNs() < deadline else { throw BenchError("B sent no snapshot on its event stream") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
            try readAvailable()
        }
    }

    func readAvailable() throws {
        guard try readSome(fd, into: &buffer, chunk: &chunk) else { return }
        let readAt = nowNs()
        var offset = 0
        while buffer.count - offset >= 2 {
            let b0 = buffer[offset], b1 = buffer[offset + 1]
            var length = Int(b1 & 0x7f), header = 2
            if length == 126 {
                guard buffer.count - offset >= 4 else { break }
                length = Int(buffer[offset + 2]) << 8 | Int(buffer[offset + 3]); header = 4
            } else if length == 127 {
                guard buffer.count - offset >= 10 else { break }
                length = (2..<10).reduce(0) { $0 << 8 | Int(buffer[offset + $1]) }; header = 10
            }
            if b1 & 0x80 != 0 { throw BenchError("B sent a masked frame") }
            guard buffer.count - offset >= header + length else { break }
            let payload = Array(buffer[(offset + header)..<(offset + header + length)])
            offset += header + length
            let opcode = b0 & 0x0f, fin = b0 & 0x80 != 0
            switch opcode {
            case 0x1, 0x2, 0x0:
                if opcode != 0 { message = []; messageCompressed = b0 & 0x40 != 0 }
                message += payload
                if fin { try finish(readAt) }
            case 0x9: try sendControl(opcode: 0xA, payload)  // ping: pong
            case 0x8: throw BenchError("B closed its event stream")
            default: break
            }
        }
        buffer.removeFirst(offset)
    }

    private func finish(_ readAt: UInt64) throws {
        var text: String
        if messageCompressed, let decompressor {
            var compressed = ByteBuffer(bytes: message + [0, 0, 0xff, 0xff])
            let plain = try compressed.decompressStream(with: decompressor, maxSize: 1 << 22)
            if resetPerMessage { try decompressor.reset() }
            text = String(buffer: plain)
        } else {
            text = String(decoding: message, as: UTF8.self)
        }
        message = []
        if !snapshotSeen { snapshotSeen = true; return }
        guard text.contains("\"origin\":\"remote\"") else { return }
        for sentAt in integers(after: "\"title\":\"b", in: text) { onCreated(UInt64(sentAt), readAt) }
    }

    private func sendControl(opcode: UInt8, _ payload: [UInt8]) throws {
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        let masked = payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try writeAll(fd, [0x80 | opcode, 0x80 | UInt8(payload.count)] + mask + masked)
    }
}
