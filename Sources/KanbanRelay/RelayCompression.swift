import CRelayZlib
import NIOCore

/// A message for one connection's writer: the frame payload, compressed (send with RSV1) or not.
struct OutboundItem: Sendable {
    let payload: ByteBuffer
    let compressed: Bool
    /// Bytes of the JSON text (what the queue's byte bound counts, before compression).
    let size: Int
    /// A WebSocket ping frame rather than a text message (`RelayHeartbeat`).
    var isPing = false

    static let ping = OutboundItem(payload: ByteBuffer(), compressed: false, size: 0, isPing: true)

    /// A text message sent uncompressed.
    static func plain(_ text: String) -> OutboundItem {
        OutboundItem(payload: ByteBuffer(string: text), compressed: false, size: text.utf8.count)
    }
}

/// A raw deflate stream for relay → client messages (RFC 7692: each message deflated with a sync
/// flush, the trailing 00 00 ff ff removed). Shared by every connection whose client holds the
/// window it compresses against.
final class DeflateStream {
    private let z: UnsafeMutablePointer<z_stream>
    let windowBits: Int
    /// Connections whose next compressed message comes from this stream. Never fewer than really
    /// do: compressing in place for fewer than all of them would leave the others' clients behind.
    var holders = 0

    init?(windowBits: Int, memoryLevel: Int, level: Int) {
        self.windowBits = windowBits
        z = .allocate(capacity: 1)
        z.initialize(to: z_stream())
        guard CRelayZlib_deflateInit2(z, Int32(level), -Int32(windowBits), Int32(memoryLevel)) == Z_OK else {
            z.deallocate()
            return nil
        }
    }

    /// A stream that goes on exactly where `other` is (for connections leaving its group).
    init?(copying other: DeflateStream) {
        windowBits = other.windowBits
        z = .allocate(capacity: 1)
        z.initialize(to: z_stream())
        guard deflateCopy(z, other.z) == Z_OK else {
            z.deallocate()
            return nil
        }
    }

    deinit {
        deflateEnd(z)
        z.deallocate()
    }

    /// Forgets the window: the next message refers to nothing before it.
    func reset() { deflateReset(z) }

    /// One message's payload; nil if zlib failed (the stream is then unusable).
    func compress(_ text: String) -> ByteBuffer? {
        var text = text
        return text.withUTF8 { compress(UnsafeRawBufferPointer($0)) }
    }

    func compress(_ input: UnsafeRawBufferPointer) -> ByteBuffer? {
        var out = ByteBufferAllocator().buffer(capacity: Int(deflateBound(z, uLong(input.count))) + 8)
        z.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        z.pointee.avail_in = uInt(input.count)
        defer { z.pointee.next_in = nil; z.pointee.avail_in = 0 }
        while true {
            var rc = Z_OK
            var roomLeft = false
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: 64) { outBytes in
                z.pointee.next_out = outBytes.baseAddress!.assumingMemoryBound(to: Bytef.self)
                z.pointee.avail_out = uInt(outBytes.count)
                rc = deflate(z, Z_SYNC_FLUSH)
                defer { z.pointee.next_out = nil; z.pointee.avail_out = 0 }
                roomLeft = z.pointee.avail_out > 0
                return outBytes.count - Int(z.pointee.avail_out)
            }
            guard rc == Z_OK || rc == Z_BUF_ERROR else { return nil }
            // With a sync flush, deflate is done when it returns with room to spare.
            if roomLeft && z.pointee.avail_in == 0 { break }
        }
        // A sync flush ends with an empty stored block, 00 00 ff ff, which RFC 7692 leaves off.
        guard out.readableBytes >= 4,
              out.getBytes(at: out.writerIndex - 4, length: 4) == [0, 0, 0xff, 0xff] else { return nil }
        out.moveWriterIndex(to: out.writerIndex - 4)
        return out
    }
}

/// The relay → client side of one connection's permessage-deflate. Used on the hub actor only.
final class ConnectionDeflate: @unchecked Sendable {
    let windowBits: Int
    /// The client asked for `server_no_context_takeover`: every message from a fresh stream.
    let noContextTakeover: Bool
    /// The stream the client's window matches; nil: the next message starts a new one.
    var stream: DeflateStream?
    /// Was sent a message of its own since its last broadcast (an ack, a reply), so it would
    /// leave a shared stream again at once.
    var chatty = false

    init(_ parameters: DeflateParameters) {
        windowBits = parameters.sendWindow
        noContextTakeover = parameters.sendNoContextTakeover
    }

    /// Stops using its stream (the next message starts a new one).
    func leave() {
        stream?.holders -= 1
        stream = nil
    }
}

/// Compresses what the hub sends: a broadcast once per group of connections that share a stream
/// (in a room of quiet subscribers, once), a connection's own message on its own stream.
final class RelayCompressor {
    let settings: RelayDeflate
    /// Fresh streams (reset before each use) for one-off messages and no-context-takeover clients.
    private var scratch: [Int: DeflateStream] = [:]
    /// When a room's broadcasts have cost this many compressions beyond one for quiet
    /// connections kept apart (they joined at different times, or were excluded from one
    /// broadcast), those connections start one new shared stream together.
    static let regroupAfter = 64
    private(set) var compressions = 0

    init(settings: RelayDeflate) { self.settings = settings }

    /// A message for one connection. `keepContext`: compress it on the connection's own stream
    /// (acks, replies: small, and they compress best against what came before); otherwise (a
    /// welcome, a catch-up: large and once) on a fresh one, which leaves the connection without
    /// a stream, so an idle connection holds no deflate state.
    func message(_ text: String, for deflate: ConnectionDeflate?, keepContext: Bool) -> OutboundItem {
        guard let deflate, text.utf8.count >= settings.minSizeToCompress else { return .plain(text) }
        if deflate.noContextTakeover || !keepContext {
            deflate.leave()
            return fresh(text, windowBits: deflate.windowBits) ?? .plain(text)
        }
        deflate.chatty = true
        if let stream = deflate.stream, stream.holders > 1 {
            // Shared: this connection goes on with a copy.
            deflate.leave()
            if let copy = DeflateStream(copying: stream) {
                copy.holders = 1
                deflate.stream = copy
            }
        }
        if deflate.stream == nil, let stream = newStream(deflate.windowBits) {
            stream.holders = 1
            deflate.stream = stream
        }
        guard let stream = deflate.stream else { return fresh(text, windowBits: deflate.windowBits) ?? .plain(text) }
        compressions += 1
        guard let payload = stream.compress(text) else {
            deflate.leave()
            return .plain(text)
        }
        return OutboundItem(payload: payload, compressed: true, size: text.utf8.count)
    }

    /// One message for many connections (nil: no compression negotiated), in their order.
    /// `waste` is the room's count toward regrouping.
    func broadcast(_ text: String, to recipients: [ConnectionDeflate?], waste: inout Int) -> [OutboundItem] {
        let plainItem = OutboundItem.plain(text)
        var items = Array(repeating: plainItem, count: recipients.count)
        guard text.utf8.count >= settings.minSizeToCompress else { return items }
        var groups: [ObjectIdentifier: [Int]] = [:]
        var starting: [Int: [Int]] = [:]  // by window bits: connections without a stream
        var noContext: [Int: [Int]] = [:]
        for (index, deflate) in recipients.enumerated() {
            guard let deflate else { continue }
            if deflate.noContextTakeover {
                noContext[deflate.windowBits, default: []].append(index)
            } else if let stream = deflate.stream {
                groups[ObjectIdentifier(stream), default: []].append(index)
            } else {
                starting[deflate.windowBits, default: []].append(index)
            }
        }
        // Quiet connections in separate streams: each stream costs a compression per broadcast.
        let quiet = groups.filter { $0.value.allSatisfy { !recipients[$0]!.chatty } }
        let quietStreams = quiet.count + starting.count
        if quietStreams > 1 { waste += quietStreams - 1 }
        if waste >= Self.regroupAfter {
            waste = 0
            for (key, indices) in quiet {
                groups[key] = nil
                for index in indices {
                    let deflate = recipients[index]!
                    deflate.leave()
                    starting[deflate.windowBits, default: []].append(index)
                }
            }
        }
        func send(_ stream: DeflateStream, _ indices: [Int]) {
            compressions += 1
            if let payload = stream.compress(text) {
                let item = OutboundItem(payload: payload, compressed: true, size: plainItem.size)
                for index in indices { items[index] = item }
            } else {
                for index in indices { recipients[index]!.leave() }
            }
        }
        for indices in groups.values {
            guard var stream = recipients[indices[0]]!.stream else { continue }
            if stream.holders != indices.count {
                // Some holders are not among the recipients: these go on with a copy.
                for index in indices { recipients[index]!.leave() }
                guard let copy = DeflateStream(copying: stream) else { continue }
                copy.holders = indices.count
                for index in indices { recipients[index]!.stream = copy }
                stream = copy
            }
            send(stream, indices)
        }
        for (windowBits, indices) in starting {
            guard let stream = newStream(windowBits) else { continue }
            stream.holders = indices.count
            for index in indices { recipients[index]!.stream = stream }
            send(stream, indices)
        }
        for (windowBits, indices) in noContext {
            guard let item = fresh(text, windowBits: windowBits) else { continue }
            for index in indices { items[index] = item }
        }
        for deflate in recipients { deflate?.chatty = false }
        return items
    }

    /// How `message(_:for:keepContext: false)` compresses, as work that can run off the hub's
    /// actor (for a large message: a board's snapshot), on a stream of its own. The caller sends
    /// the result with `sendingStandalone(_:)` first.
    func standalone(for deflate: ConnectionDeflate?) -> @Sendable (String) -> OutboundItem {
        guard let deflate else { return { .plain($0) } }
        compressions += 1
        let (windowBits, memoryLevel, level, minSize) = (deflate.windowBits, settings.memoryLevel, settings.compressionLevel,
                                                         settings.minSizeToCompress)
        return { text in
            guard text.utf8.count >= minSize, let stream = DeflateStream(windowBits: windowBits, memoryLevel: memoryLevel, level: level),
                  let payload = stream.compress(text)
            else { return .plain(text) }
            return OutboundItem(payload: payload, compressed: true, size: text.utf8.count)
        }
    }

    /// Just before a `standalone` message is queued: the connection leaves its stream, whose
    /// next message would refer to a window the client no longer holds (the standalone message
    /// came between). What was queued before it, from that stream, is still fine. (A snapshot is
    /// followed by its tail or an empty `ops`, sent without context, which leaves too; this does
    /// not rely on that.)
    func sendingStandalone(_ deflate: ConnectionDeflate?) { deflate?.leave() }

    private func newStream(_ windowBits: Int) -> DeflateStream? {
        DeflateStream(windowBits: windowBits, memoryLevel: settings.memoryLevel, level: settings.compressionLevel)
    }

    /// Compressed from a fresh stream (decodable whatever the client's window holds).
    private func fresh(_ text: String, windowBits: Int) -> OutboundItem? {
        if scratch[windowBits] == nil { scratch[windowBits] = newStream(windowBits) }
        guard let stream = scratch[windowBits] else { return nil }
        stream.reset()
        compressions += 1
        guard let payload = stream.compress(text) else { return nil }
        return OutboundItem(payload: payload, compressed: true, size: text.utf8.count)
    }
}
