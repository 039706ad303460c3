import Dispatch
import Foundation
import Logging

/// Bounds a graceful shutdown. SIGTERM/SIGINT start the server's graceful shutdown (the service
/// group handles them); a peer whose link is stalled (its TCP window closed, so our writes and
/// the close handshake wait forever) could hold it open indefinitely. This watches the same
/// signals and ends the process after `limit` if it is still running then. Nothing is lost by
/// that: agent and relay commit before they acknowledge anything.
final class ShutdownDeadline {
    private let sources: [any DispatchSourceSignal]

    init(limit: Duration, logger: Logger) {
        let queue = DispatchQueue(label: "kanban.shutdown-deadline")
        sources = [SIGTERM, SIGINT].map { signalNumber in
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler {
                queue.asyncAfter(deadline: .now() + .milliseconds(Int(limit.components.seconds * 1000))) {
                    logger.warning("graceful shutdown did not finish in time; exiting (everything acknowledged is on disk)",
                                   metadata: ["limit": "\(limit)"])
                    exit(0)
                }
            }
            source.resume()
            return source
        }
    }
}
