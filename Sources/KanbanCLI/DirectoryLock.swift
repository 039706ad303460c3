import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One server per data directory. Two agents on one replica count operation IDs from two
/// in-memory copies of one counter (tried before the lock: the second one's first edit failed
/// with HTTP 500 on a duplicate operation ID); a relay's SQLite log is one relay's (several
/// relays share a PostgreSQL log instead). The lock is an
/// exclusive `flock` on `DIR/.kanban.lock`, held until the process ends (the kernel drops it
/// however the process ends, SIGKILL included, so a crash never leaves the directory locked).
/// The holder writes its PID into the file, so a refusal can name it.
final class DirectoryLock: Sendable {
    private let descriptor: Int32

    private init(descriptor: Int32) { self.descriptor = descriptor }

    /// Takes the lock of `directory` (which must exist) for a `what` ("agent", "relay", ...).
    /// Throws a `CommandFailure` naming the holder's PID when another process has it.
    static func acquire(_ directory: String, for what: String, flag: String = "--data") throws -> DirectoryLock {
        let path = directory + "/.kanban.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw CommandFailure("cannot open \(path): \(String(cString: strerror(errno))). Pass \(flag) with a writable directory.")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let failure = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, buffer.count)
            close(fd)
            guard failure == EWOULDBLOCK else {
                throw CommandFailure("cannot lock \(path): \(String(cString: strerror(failure))).")
            }
            let holder = count > 0 ? String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
            let who = Int32(holder).map { "another kanban process (pid \($0))" } ?? "another kanban process"
            throw CommandFailure("""
                \(who) is already using \(directory). Running two on one directory would corrupt it: \
                stop that one first, or give this \(what) its own directory with \(flag) DIR.
                """)
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        return DirectoryLock(descriptor: fd)
    }

    /// Closing the file lets go of the lock (ending the process does the same).
    deinit { close(descriptor) }
}
