import Foundation
import HTTPTypes
@testable import KanbanRelay
import NIOCore
import Testing

/// The relay's own permessage-deflate: negotiation, one compression per broadcast for the
/// subscribers that share a stream, and output every client decodes with its own inflater.
struct RelayDeflateTests {
    static let parameters = DeflateParameters(sendWindow: 12, sendNoContextTakeover: false, receiveWindow: 12, receiveNoContextTakeover: false)

    /// A client: its own inflater (context takeover, as RFC 7692 clients keep it) and what it read.
    final class Client {
        let deflate: ConnectionDeflate
        var inflater: Inflater
        let noContextTakeover: Bool
        var texts: [String] = []
        var wireBytes = 0

        init(noContextTakeover: Bool = false) throws {
            var parameters = RelayDeflateTests.parameters
            parameters.sendNoContextTakeover = noContextTakeover
            self.noContextTakeover = noContextTakeover
            deflate = ConnectionDeflate(parameters)
            inflater = try Inflater(windowBits: 12)
        }

        func receive(_ item: OutboundItem) throws {
            wireBytes += item.payload.readableBytes
            guard item.compressed else {
                texts.append(String(buffer: item.payload))
                return
            }
            if noContextTakeover { inflater = try Inflater(windowBits: 12) }
            var data = item.payload
            data.writeBytes([0, 0, 0xff, 0xff])
            let (out, _) = try inflater.inflate(&data, limit: 1 << 20)
            texts.append(String(buffer: out))
        }
    }

    static func ops(_ i: Int) -> String {
        #"{"type":"ops","board":"b-7f3a","ops":[{"seq":\#(i),"op":{"id":"w1:\#(i)","board":"b-7f3a","action":{"type":"task.update","task":"t-\#(i % 17)","title":"review the quarterly roadmap \#(i)","description":"notes for item \#(i * 7)"}}}],"head":\#(i)}"#
    }

    @Test func aBroadcastIsCompressedOnceForSubscribersThatJoinedAtDifferentTimesAndDecodesForEach() throws {
        let compressor = RelayCompressor(settings: RelayDeflate())
        var waste = 0
        let early = try Client(), late = try Client(), writer = try Client(), strict = try Client(noContextTakeover: true)
        var expected: [ObjectIdentifier: [String]] = [:]
        func send(_ text: String, to client: Client, keepContext: Bool) throws {
            try client.receive(compressor.message(text, for: client.deflate, keepContext: keepContext))
            expected[ObjectIdentifier(client), default: []].append(text)
        }
        func broadcast(_ text: String, to clients: [Client]) throws -> [OutboundItem] {
            let items = compressor.broadcast(text, to: clients.map(\.deflate), waste: &waste)
            for (client, item) in zip(clients, items) {
                try client.receive(item)
                expected[ObjectIdentifier(client), default: []].append(text)
            }
            return items
        }
        let welcome = #"{"type":"welcome","relay":"kanban-relay","team":"t","writable":true,"boards":[],"serverTime":1,"heartbeatSeconds":15}"#
        try send(welcome, to: early, keepContext: false)
        try send(welcome, to: writer, keepContext: false)
        for i in 0..<10 { _ = try broadcast(Self.ops(i), to: [early]) }
        // The late subscriber's window holds its own welcome and catch-up, not the early one's.
        try send(welcome, to: late, keepContext: false)
        try send(Self.ops(9), to: late, keepContext: false)
        try send(welcome, to: strict, keepContext: false)
        var last: [OutboundItem] = []
        for i in 10..<(10 + RelayCompressor.regroupAfter + 20) {
            // The writer gets an ack of its own before each broadcast (it forks from any group).
            try send(#"{"type":"ack","acks":[{"op":"w1:\#(i)","board":"b-7f3a","seq":\#(i)}]}"#, to: writer, keepContext: true)
            last = try broadcast(Self.ops(i), to: [early, late, writer, strict])
        }
        // Steady state: one compression for early + late together, one for the writer's
        // broadcast, one for its ack, one for the no-context-takeover client.
        let before = compressor.compressions
        for i in 200..<220 {
            try send(#"{"type":"ack","acks":[{"op":"w1:\#(i)","board":"b-7f3a","seq":\#(i)}]}"#, to: writer, keepContext: true)
            last = try broadcast(Self.ops(i), to: [early, late, writer, strict])
        }
        #expect(compressor.compressions - before == 20 * 4)
        #expect(last[0].compressed && last[0].payload == last[1].payload, "early and late get the same bytes")
        #expect(early.deflate.stream === late.deflate.stream)
        #expect(early.deflate.stream !== writer.deflate.stream)
        for client in [early, late, writer, strict] {
            #expect(client.texts == expected[ObjectIdentifier(client)], "every client decodes what was sent to it")
        }
        // Context takeover pays: the shared stream's ops frames are far smaller than the text.
        let text = expected[ObjectIdentifier(early)]!.map(\.utf8.count).reduce(0, +)
        #expect(Double(text) / Double(early.wireBytes) > 4, "ratio \(Double(text) / Double(early.wireBytes))")
        #expect(Double(text) / Double(strict.wireBytes) < Double(text) / Double(early.wireBytes))
    }

    @Test func aConnectionLeavingItsGroupGoesOnFromACopyAndTheOthersAreUndisturbed() throws {
        let compressor = RelayCompressor(settings: RelayDeflate())
        var waste = 0
        let a = try Client(), b = try Client(), c = try Client()
        for i in 0..<5 {
            for (client, item) in zip([a, b, c], compressor.broadcast(Self.ops(i), to: [a, b, c].map(\.deflate), waste: &waste)) {
                try client.receive(item)
            }
        }
        #expect(a.deflate.stream === b.deflate.stream && b.deflate.stream === c.deflate.stream)
        #expect(a.deflate.stream?.holders == 3)
        // A presence from c goes to a and b only; then a reply to a alone.
        for (client, item) in zip([a, b], compressor.broadcast(#"{"type":"presence","board":"b-7f3a","replica":"c","viewing":true}"#,
                                                                to: [a, b].map(\.deflate), waste: &waste)) {
            try client.receive(item)
        }
        try a.receive(compressor.message(#"{"type":"digestResult","board":"b-7f3a","seq":4,"match":true,"pad":"xxxxxxxx"}"#,
                                          for: a.deflate, keepContext: true))
        #expect(a.deflate.stream !== b.deflate.stream && b.deflate.stream !== c.deflate.stream)
        #expect(a.deflate.stream?.holders == 1 && b.deflate.stream?.holders == 1 && c.deflate.stream?.holders == 1)
        for i in 5..<10 {
            for (client, item) in zip([a, b, c], compressor.broadcast(Self.ops(i), to: [a, b, c].map(\.deflate), waste: &waste)) {
                try client.receive(item)
            }
        }
        #expect(a.texts.count == 12 && b.texts.count == 11 && c.texts.count == 10)
        #expect(c.texts.last == Self.ops(9) && b.texts.last == Self.ops(9) && a.texts[5].contains("presence") && a.texts[6].contains("digestResult"))
        // A connection that goes away stops counting as a holder.
        let shared = try Client(), other = try Client()
        _ = compressor.broadcast(Self.ops(1), to: [shared.deflate, other.deflate], waste: &waste)
        #expect(shared.deflate.stream?.holders == 2)
        other.deflate.leave()
        #expect(shared.deflate.stream?.holders == 1)
    }

    @Test func negotiationFollowsRFC7692() {
        let deflate = RelayDeflate()
        /// One header field per offer.
        func offer(_ values: String...) -> (DeflateParameters, response: String)? {
            var headers = HTTPFields()
            for value in values { headers.append(HTTPField(name: .secWebSocketExtensions, value: value)) }
            return deflate.negotiate(headers)
        }
        // Every response asks the client not to reuse its window (RFC 7692 7.1.1.2 lets a server
        // ask that unprompted): the relay then keeps no inflater for an idle connection.
        // swift-websocket's client (the agent) and browsers / Python websockets.
        #expect(offer("permessage-deflate;client_max_window_bits=12;server_max_window_bits=12")?.response
                == "permessage-deflate;client_max_window_bits=12;client_no_context_takeover;server_max_window_bits=12")
        let python = offer("permessage-deflate; client_max_window_bits")
        #expect(python?.response == "permessage-deflate;client_max_window_bits=12;client_no_context_takeover;server_max_window_bits=12")
        #expect(python?.0 == DeflateParameters(sendWindow: 12, sendNoContextTakeover: false, receiveWindow: 12, receiveNoContextTakeover: true))
        // No client_max_window_bits offered: the relay must inflate with a full window and not name one.
        let plain = offer("permessage-deflate")
        #expect(plain?.response == "permessage-deflate;client_no_context_takeover;server_max_window_bits=12" && plain?.0.receiveWindow == 15)
        let strict = offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
        #expect(strict?.0 == DeflateParameters(sendWindow: 10, sendNoContextTakeover: true, receiveWindow: 15, receiveNoContextTakeover: true))
        #expect(strict?.response == "permessage-deflate;client_no_context_takeover;server_max_window_bits=10;server_no_context_takeover")
        // A window zlib cannot honour is declined; the next offer is taken.
        #expect(offer("permessage-deflate; server_max_window_bits=8")?.response == nil)
        #expect(offer("permessage-deflate; server_max_window_bits=8", "permessage-deflate")?.response
                == "permessage-deflate;client_no_context_takeover;server_max_window_bits=12")
        #expect(offer("x-webkit-deflate-frame") == nil)
    }

    @Test func inflatingStopsAtTheLimit() throws {
        let stream = try #require(DeflateStream(windowBits: 12, memoryLevel: 3, level: -1))
        let bomb = String(repeating: "x", count: 200_000)
        var payload = try #require(stream.compress(bomb))
        #expect(payload.readableBytes < 2_000)
        payload.writeBytes([0, 0, 0xff, 0xff])
        var copy = payload
        #expect(throws: (any Error).self) { _ = try Inflater(windowBits: 12).inflate(&copy, limit: 100_000) }
        let (out, _) = try Inflater(windowBits: 12).inflate(&payload, limit: 200_000)
        #expect(out.readableBytes == 200_000)
    }
}
