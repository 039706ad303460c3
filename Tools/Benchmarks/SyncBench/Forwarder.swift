import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A tiny TCP forwarder on 127.0.0.1 that counts the raw bytes it copies in each direction
/// (WebSocket frames incl. headers, after permessage-deflate; TCP/IP headers not included).
/// Blocking sockets, two threads per connection: for counting, not for speed.
final class CountingForwarder: Sendable {
    let port: Int
    let upstream = Atomic<Int>(0)    // client -> server
    let downstream = Atomic<Int>(0)  // server -> client
    private let listenFD: Int32

    init(targetPort: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 128) == 0 else { throw BenchError("forwarder: bind/listen failed") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        port = Int(UInt16(bigEndian: addr.sin_port))
        listenFD = fd
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var target = sockaddr_in()
                target.sin_family = sa_family_t(AF_INET)
                target.sin_port = UInt16(targetPort).bigEndian
                target.sin_addr.s_addr = inet_addr("127.0.0.1")
                let ok = withUnsafePointer(to: &target) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                if ok != 0 { close(client); close(server); continue }
                var nodelay: Int32 = 1
                setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &nodelay, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(server, Int32(IPPROTO_TCP), TCP_NODELAY, &nodelay, socklen_t(MemoryLayout<Int32>.size))
                Thread.detachNewThread { self.pump(from: client, to: server, up: true) }
                Thread.detachNewThread { self.pump(from: server, to: client, up: false) }
            }
        }
    }

    private func pump(from: Int32, to: Int32, up: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, 65536) }
            if n <= 0 { break }
            if up { upstream.wrappingAdd(n, ordering: .relaxed) } else { downstream.wrappingAdd(n, ordering: .relaxed) }
            var off = 0
            while off < n {
                let w = buffer.withUnsafeBytes { write(to, $0.baseAddress! + off, n - off) }
                if w <= 0 { shutdown(from, Int32(SHUT_RDWR)); shutdown(to, Int32(SHUT_RDWR)); return }
                off += w
            }
        }
        shutdown(to, Int32(SHUT_WR))
    }

    var counts: (up: Int, down: Int) { (upstream.load(ordering: .relaxed), downstream.load(ordering: .relaxed)) }

    func stop() { shutdown(listenFD, Int32(SHUT_RDWR)); close(listenFD) }
}
