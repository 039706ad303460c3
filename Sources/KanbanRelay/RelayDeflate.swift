import CRelayZlib
import HTTPTypes
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import Synchronization

// permessage-deflate (RFC 7692) on the relay, done by the relay instead of by swift-websocket's
// WSCompression, so that a broadcast is compressed once for every subscriber that can decode the
// same bytes, not once per subscriber.
//
// What makes that possible: a client's inflater only needs the server's output to refer to bytes
// it has in its own window (the last 2^window_bits bytes of the compressed messages it received;
// uncompressed messages do not enter it). Connections that were sent the same compressed messages
// since their stream started hold the same window, so one deflate stream can compress for all of
// them: `DeflateStream` is shared by such a group. A server may also start a new stream whenever it
// likes (its output then refers to nothing earlier, which every window decodes): a connection
// without a stream, or one that leaves its group, simply starts afresh. None of that shows in the
// negotiation: context takeover stays on from relay to client, window 2^12. From client to relay
// it is off (the relay asks for `client_no_context_takeover`; see `negotiate`).

/// What the relay negotiated with one client (from its `Sec-WebSocket-Extensions` offer).
struct DeflateParameters: Sendable, Equatable {
    /// Window bits of the relay → client stream.
    var sendWindow: Int
    /// The client asked the relay not to reuse its window between messages.
    var sendNoContextTakeover: Bool
    /// Window bits of the client → relay stream (15 when the client offered no limit).
    var receiveWindow: Int
    /// Each client message stands alone (`client_no_context_takeover`): true for every
    /// connection `negotiate` accepts, since the relay always asks it; false only in tests.
    var receiveNoContextTakeover: Bool
}

/// The relay's permessage-deflate settings and negotiation.
struct RelayDeflate: Sendable {
    /// Most window bits the relay uses for its stream and accepts for the client's.
    var maxWindow = 12
    var memoryLevel = 3
    var compressionLevel = -1
    /// Messages shorter than this go out uncompressed.
    var minSizeToCompress = 64

    /// The first acceptable offer among the client's, or nil (no compression on this connection).
    func negotiate(_ headers: HTTPFields) -> (DeflateParameters, response: String)? {
        for offer in WebSocketExtensionHTTPParameters.parseHeaders(headers) where offer.name == "permessage-deflate" {
            if let accepted = negotiate(offer) { return accepted }
        }
        return nil
    }

    func negotiate(_ offer: WebSocketExtensionHTTPParameters) -> (DeflateParameters, response: String)? {
        var send = maxWindow
        if let requested = offer.parameters["server_max_window_bits"] {
            // zlib cannot make a raw deflate stream with a 2^8 window: decline rather than overrun it.
            guard let bits = requested.integer, (9...15).contains(bits) else { return nil }
            send = min(send, bits)
        }
        var receive = 15
        var response = "permessage-deflate"
        if let offered = offer.parameters["client_max_window_bits"] {
            // Without a value the client accepts any limit; with one, at most that.
            let bits = offered.integer ?? 15
            guard (8...15).contains(bits) else { return nil }
            receive = min(max(maxWindow, 9), bits)
            response += ";client_max_window_bits=\(receive)"
        }
        // Always asked of the client (RFC 7692 7.1.1.2 lets a server ask it unprompted): each
        // message it sends then stands alone, so the relay inflates it with an inflater made for
        // that message and freed after it, and an idle connection keeps none. Kept for the
        // connection's life, the client's window and zlib's inflate state cost 11.5 KB per
        // connection of a client that had sent one compressed message (Python websockets
        // through `Tools/peers`, 2,000 connections: 48.8 against 37.3 KB without deflate).
        // What it costs is the ratio of pushes, which only the pushing client sends.
        let receiveNoContext = true
        response += ";client_no_context_takeover"
        response += ";server_max_window_bits=\(send)"
        let sendNoContext = offer.parameters["server_no_context_takeover"] != nil
        if sendNoContext { response += ";server_no_context_takeover" }
        return (DeflateParameters(sendWindow: send, sendNoContextTakeover: sendNoContext,
                                  receiveWindow: receive, receiveNoContextTakeover: receiveNoContext), response)
    }
}

enum ZlibError: Error { case failed(Int32) }

/// A raw inflate stream.
final class Inflater {
    private let z: UnsafeMutablePointer<z_stream>

    init(windowBits: Int) throws {
        z = .allocate(capacity: 1)
        z.initialize(to: z_stream())
        let rc = CRelayZlib_inflateInit2(z, -Int32(windowBits))
        guard rc == Z_OK else { z.deallocate(); throw ZlibError.failed(rc) }
    }

    deinit {
        inflateEnd(z)
        z.deallocate()
    }

    /// Inflates all of `input`; past `limit` bytes of output, throws (close 1009). Returns the
    /// output, and whether the client ended its deflate stream (a final block: start a new one).
    func inflate(_ input: inout ByteBuffer, limit: Int) throws -> (ByteBuffer, ended: Bool) {
        var out = ByteBufferAllocator().buffer(capacity: min(limit + 1, max(512, input.readableBytes * 4)))
        var ended = false
        try input.withUnsafeMutableReadableBytes { inBytes in
            z.pointee.next_in = inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
            z.pointee.avail_in = uInt(inBytes.count)
            defer { z.pointee.next_in = nil; z.pointee.avail_in = 0 }
            while true {
                let chunk = min(max(out.readableBytes, 1024), limit + 1 - out.readableBytes)
                var rc = Z_OK
                var roomLeft = false
                out.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { outBytes in
                    z.pointee.next_out = outBytes.baseAddress!.assumingMemoryBound(to: Bytef.self)
                    z.pointee.avail_out = uInt(outBytes.count)
                    rc = CRelayZlib.inflate(z, Z_SYNC_FLUSH)
                    defer { z.pointee.next_out = nil; z.pointee.avail_out = 0 }
                    roomLeft = z.pointee.avail_out > 0
                    return outBytes.count - Int(z.pointee.avail_out)
                }
                // A decompression bomb stops here: never more than `limit` + 1 bytes inflated.
                guard out.readableBytes <= limit else { throw NIOWebSocketError.invalidFrameLength }
                switch rc {
                case Z_STREAM_END:
                    ended = true
                    return
                case Z_OK, Z_BUF_ERROR:
                    // inflate stops when it needs more input or more room: done when it had room left.
                    if z.pointee.avail_in == 0 && roomLeft { return }
                default:
                    throw ZlibError.failed(rc)
                }
            }
        }
        return (out, ended)
    }
}
