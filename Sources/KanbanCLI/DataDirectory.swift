import ArgumentParser
import Foundation

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
            throw ValidationError("cannot create data directory \(dir): \(error.localizedDescription). Pass --data with a writable directory.")
        }
        return dir + "/replica.sqlite"
    }
}
