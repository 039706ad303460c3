import KanbanProtocol
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Notes that a WebSocket peer sent something (any bytes: a message, a pong, a ping), for the
/// relay's heartbeat. It sits first in the connection's pipeline, so it sees every byte, the
/// pongs that `RelayFrameHandler` swallows included.
///
/// One `RelayHeartbeat` service pings every connection each period instead of a ping task per
/// connection: a task keeps the memory of its deepest call for as long as it lives, and a relay
/// mostly holds thousands of idle connections.
final class InboundActivity: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private let heard = Atomic<Bool>(true)
    private let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heard.store(true, ordering: .relaxed)
        context.fireChannelRead(data)
    }

    /// Whether the peer sent anything since the last call.
    func takeHeard() -> Bool {
        heard.exchange(false, ordering: .relaxed)
    }

    /// Closes the TCP connection after `grace` (time for a queued close frame to go out): a
    /// peer that stopped answering will not answer a close handshake either.
    func closeChannel(after grace: TimeAmount) {
        let channel = channel
        channel.eventLoop.scheduleTask(in: grace) { channel.close(promise: nil) }
    }
}

/// Every `period`: each WebSocket connection that sent nothing since the previous ping is
/// closed with 4009; the others get a WebSocket ping, which a live peer answers (and which keeps
/// idle links open through proxies).
struct RelayHeartbeat: Service {
    let hub: RelayHub
    let period: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                if Task.isCancelled { return }
                await hub.heartbeat()
            }
        }
    }
}

extension RelayHub {
    /// One heartbeat round (see `RelayHeartbeat`).
    func heartbeat() {
        for connection in connectionList {
            guard let activity = connection.activity else { continue }
            if activity.takeHeard() {
                _ = connection.send(.ping, false)
            } else {
                logger.notice("heartbeat timeout", metadata: ["connection": "\(connection.id)"])
                connection.close(SyncCloseCode.heartbeatTimeout, "no answer to the relay's ping")
                activity.closeChannel(after: .seconds(1))
            }
        }
    }
}
