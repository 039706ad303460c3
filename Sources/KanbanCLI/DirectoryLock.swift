import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One server per data directory. Two agents on one replica would each keep their own copy of
/// the boards and of the replica's operation counter, hand out the same operation IDs and show
/// stale boards; two relays on one SQLite log would not see each other's pushes. The lock is an
/// exclusive `flock` on `DIR/.kanban.lock`, held until the process ends (the kernel drops it
/// however the process ends, SIGKILL included, so a crash never leaves the directory locked).
/// The holder writes its PID into the file, so a refusal can name it.
final class DirectoryLock: Sendable {
    private let descriptor: Int32

    struct Busy: Error, CustomStringConvertible {
        let description: String
    }

    private init(descriptor: Int32) { self.descriptor = descriptor }

    /// Takes the lock of `directory` (which must exist) for a `what` ("agent", "relay", ...).
    /// Throws `Busy` naming the holder's PID when another process has it.
    static func acquire(_ directory: String, for what: String, flag: String = "--data") throws -> DirectoryLock {
        let path = directory + "/.kanban.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw Busy(description: "cannot open \(path): \(String(cString: strerror(errno))). Pass \(flag) with a writable directory.")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let failure = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, buffer.count)
            close(fd)
            guard failure == EWOULDBLOCK else {
                throw Busy(description: "cannot lock \(path): \(String(cString: strerror(failure))).")
            }
            let holder = count > 0 ? String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
            let who = Int32(holder).map { "another kanban process (pid \($0))" } ?? "another kanban process"
            throw Busy(description: """
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
