import Foundation
public import KanbanModel
import KanbanProtocol
import KanbanStore
import Synchronization

/// Presence of this agent's own front-ends, summarised per board and sent to the relay.
/// Nothing here is stored: it lives as long as the local WebSockets and the relay link.
final class LocalPresence: Sendable {
    struct Viewer { var editing: EntityID? }
    let viewers = Mutex<[EntityID: [Int: Viewer]]>([:])
    /// Sends a message on the live relay link, when there is one.
    let link = Mutex<(@Sendable (SyncMessage) -> Void)?>(nil)

    func summary(of board: EntityID, user: String) -> SyncMessage.Presence {
        let list = viewers.withLock { $0[board].map { Array($0.values) } ?? [] }
        return .init(board: board, user: user, viewing: !list.isEmpty, editing: list.compactMap(\.editing).first)
    }

    var boards: [EntityID] { viewers.withLock { Array($0.keys) } }
}

extension Agent {
    /// A local client started or stopped viewing a board, or changed the task it edits.
    public func updatePresence(board: EntityID, client: Int, viewing: Bool, editing: EntityID? = nil) {
        presence.viewers.withLock { viewers in
            if viewing {
                viewers[board, default: [:]][client] = .init(editing: editing)
            } else {
                viewers[board]?.removeValue(forKey: client)
                if viewers[board]?.isEmpty == true { viewers.removeValue(forKey: board) }
            }
        }
        let message = presence.summary(of: board, user: configuration.userName ?? store.replicaID.rawValue)
        presence.link.withLock { $0 }?(.presence(message))
    }

    /// Called by the sync session when a link comes up (with a sender) or goes down (nil).
    func setRelayLink(_ send: (@Sendable (SyncMessage) -> Void)?) {
        presence.link.withLock { $0 = send }
        guard let send else { return }
        for board in presence.boards {
            send(.presence(presence.summary(of: board, user: configuration.userName ?? store.replicaID.rawValue)))
        }
    }
}
