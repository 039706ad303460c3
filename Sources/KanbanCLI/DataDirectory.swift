import ArgumentParser
import Foundation
import KanbanStore

/// Where a replica lives: `--data DIR`, else `$KANBAN_DATA`, else `$XDG_DATA_HOME/kanban`,
/// else `~/.local/share/kanban`.
struct DataDirectory: ParsableArguments {
    @Option(name: .customLong("data"), help: ArgumentHelp("Data directory holding replica.sqlite.", valueName: "DIR"))
    var path: String?

    var resolved: String {
        if let path { return path }
        let env = ProcessInfo.processInfo.environment
        if let dir = env["KANBAN_DATA"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/kanban" }
        return NSHomeDirectory() + "/.local/share/kanban"
    }

    /// Creates the directory if needed and returns the replica database path.
    func replicaPath() throws -> String {
        let dir = resolved
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw CommandFailure("cannot create data directory \(dir): \(sentence(error.localizedDescription)) Pass --data with a writable directory.")
        }
        return dir + "/replica.sqlite"
    }
}

/// A command that could not do its work, said plainly: `kanban` prints it and exits 1, without
/// the usage text ArgumentParser adds to a `ValidationError` (that one is for bad arguments).
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }

    /// Why the SQLite file at `path` (the agent's replica or the relay's log) did not open.
    static func opening(_ path: String, _ error: any Error) -> CommandFailure {
        if StoreError.isDamagedFile(error) {
            return CommandFailure("""
                cannot open \(path): it is not an SQLite database, or it is damaged (\(error)). \
                Restore it from a backup, or move it aside to start with an empty one.
                """)
        }
        return CommandFailure("cannot open \(path): \(error)")
    }
}

/// `text` as one sentence ending in a single full stop (Foundation's descriptions end in one).
func sentence(_ text: String) -> String {
    text.hasSuffix(".") ? text : text + "."
}
