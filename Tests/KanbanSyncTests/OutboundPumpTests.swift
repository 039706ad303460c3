@testable import KanbanRelay
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Synchronization
import Testing

/// The relay's per-connection writer (`OutboundPump`) on an embedded channel whose last handler
/// holds every write until the test lets it land, as a socket that is not being read would.
@Suite(.timeLimit(.minutes(1))) struct OutboundPumpTests {
    /// Holds writes (and their promises) and counts flushes.
    final class HeldWrites: ChannelOutboundHandler, @unchecked Sendable { // Used on the embedded loop only.
        typealias OutboundIn = WebSocketFrame
        var frames: [WebSocketFrame] = []
        var promises: [EventLoopPromise<Void>] = []
        var flushes = 0

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            frames.append(unwrapOutboundIn(data))
            if let promise { promises.append(promise) }
        }

        func flush(context: ChannelHandlerContext) { flushes += 1 }

        func land() {
            let held = promises
            promises = []
            for promise in held { promise.succeed() }
        }
    }

    static func item(_ text: String) -> OutboundItem {
        OutboundItem(payload: ByteBuffer(string: text), compressed: false, size: text.utf8.count)
    }

    @Test func aRunOfMessagesIsOneFlushInOrderAndCountsUntilWritten() async throws {
        let held = HeldWrites()
        let channel = EmbeddedChannel(handler: held)
        let ends = Atomic<Int>(0)
        let sentBytes = Atomic<Int>(0)
        let pump = OutboundPump(channel: channel, maxMessages: 4, maxBytes: 1 << 20,
                                sent: { sentBytes.add($0, ordering: .relaxed) }) { ends.add(1, ordering: .relaxed) }

        // (`#expect` describes its operands when it fails, and NIO traps describing an embedded
        // channel's pipeline: expectations see the Bools only.)
        let first = ["one", "two", "three"].map { pump.enqueue(Self.item($0)) }
        #expect(first == [true, true, true])
        #expect(held.frames.isEmpty, "nothing is written before the event loop runs the drain")
        channel.embeddedEventLoop.run()
        #expect(held.frames.map { String(buffer: $0.data) } == ["one", "two", "three"])
        #expect(held.flushes == 1, "three queued messages go out with one flush")
        #expect(held.frames.allSatisfy { $0.opcode == .text && $0.fin && !$0.rsv1 })
        #expect(sentBytes.load(ordering: .relaxed) == 11)

        // Handed to the channel but not written: still counted against the bound of 4.
        let fourth = pump.enqueue(Self.item("four")), fifth = pump.enqueue(Self.item("five"))
        #expect(fourth)
        #expect(!fifth, "a fifth message overflows while four are unwritten")
        channel.embeddedEventLoop.run()
        held.land()
        let sixth = pump.enqueue(Self.item("six")), ping = pump.enqueue(.ping)
        #expect(sixth, "written messages free their room")
        #expect(ping)
        channel.embeddedEventLoop.run()
        #expect(held.frames.map { String(buffer: $0.data) } == ["one", "two", "three", "four", "six", ""])
        #expect(held.frames.last?.opcode == .ping)

        // Finishing waits for the unwritten messages; `end` runs once, after them.
        pump.finish()
        let late = pump.enqueue(Self.item("late"))
        #expect(!late)
        #expect(ends.load(ordering: .relaxed) == 0, "two messages are still unwritten")
        held.land()
        await pump.ended()
        #expect(ends.load(ordering: .relaxed) == 1)
        _ = try? channel.finish()
    }

    @Test func aFailedWriteEndsThePumpAndRefusesMore() async throws {
        let held = HeldWrites()
        let channel = EmbeddedChannel(handler: held)
        let pump = OutboundPump(channel: channel, maxMessages: 8, maxBytes: 1 << 20, sent: { _ in }) {}
        let lost = pump.enqueue(Self.item("lost"))
        #expect(lost)
        channel.embeddedEventLoop.run()
        for promise in held.promises { promise.fail(ChannelError.ioOnClosedChannel) }
        held.promises = []
        await pump.ended()
        let after = pump.enqueue(Self.item("after"))
        #expect(!after, "nothing is queued on a connection that is gone")
        _ = try? channel.finish()
    }
}
