import KanbanModel
public import KanbanStore
import CoreMetrics
import Synchronization

/// The local agent's core: the replica store, the local event hub and the sync status.
/// The HTTP routes, the event stream and the sync client all act through it.
public final class Agent: Sendable {
    public let store: ReplicaStore
    public let hub: EventHub
    public let configuration: AgentConfiguration
    private let status: Mutex<SyncStatus>
    private let reconnect = Signal()
    /// Fired after every commit of a local operation; the sync session pushes on it.
    let localChange = Signal()
    let presence = LocalPresence()
    public let metrics = AgentMetrics()

    public init(store: ReplicaStore, configuration: AgentConfiguration = .init()) {
        self.store = store
        self.configuration = configuration
        self.hub = EventHub(bufferSize: configuration.maxQueuedEvents)
        self.status = Mutex(SyncStatus(state: .disabled))
        store.addChangeListener { [hub, localChange, metrics] changes in
            hub.publish(changes)
            let local = changes.count { $0.local }
            metrics.opsAuthored.increment(by: local)
            metrics.opsReceived.increment(by: changes.count - local)
            if changes.contains(where: \.local) { localChange.fire() }
        }
    }

    /// The relay link's state alone (no outbox count read).
    var linkState: SyncStatus.State { status.withLock { $0.state } }

    public var syncStatus: SyncStatus {
        var current = status.withLock { $0 }
        current.queuedOperations = (try? store.outboxCount()) ?? current.queuedOperations
        return current
    }

    /// Updates the link status and, unless `publish` is false, tells every local subscriber.
    public func updateSyncStatus(publish: Bool = true, _ update: (inout SyncStatus) -> Void) {
        let new = status.withLock { status in
            update(&status)
            return status
        }
        // Every acknowledgment lands here: count the outbox only when someone is listening.
        guard publish, hub.subscriberCount > 0 else { return }
        var withQueue = new
        withQueue.queuedOperations = (try? store.outboxCount()) ?? new.queuedOperations
        hub.publish(withQueue)
    }

    /// "Reconnect now": ends the current wait before the next attempt, or abandons an attempt
    /// still in its handshake, so that a fresh one starts at once.
    public func reconnectNow() {
        reconnect.fire()
    }

    /// Waits until `reconnectNow()` is called (true) or the calling task is cancelled (false).
    @discardableResult
    func waitForReconnect() async -> Bool {
        await reconnect.wait()
    }

    /// Waits for `delay`, or less if `reconnectNow()` is called: true if it was.
    @discardableResult
    func waitForReconnect(upTo delay: Duration) async -> Bool {
        await reconnect.wait(upTo: delay)
    }
}
