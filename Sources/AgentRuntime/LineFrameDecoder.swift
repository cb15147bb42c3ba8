import NIOCore

/// What the line framer hands upwards.
public enum InboundLine: Sendable, Equatable {
    /// One line, without `\n`.
    case line([UInt8])
    /// A line exceeded the limit; its bytes up to the next `\n` are discarded and the
    /// connection stays usable. Carries the limit.
    case tooLong(limit: Int)
}

/// Splits a byte stream at `\n` with a hard bound on line length.
///
/// Written by hand instead of NIOExtras' `LineBasedFrameDecoder` because that one has no
/// length limit: an agent must not buffer a 1 MiB line from a hostile peer. Memory held
/// per connection is at most `maxLineBytes + one read`.
public struct LineFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = InboundLine

    let maxLineBytes: Int
    /// True while skipping the rest of an over-long line.
    var discarding = false

    public init(maxLineBytes: Int) { self.maxLineBytes = maxLineBytes }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        if let nl = view.firstIndex(of: UInt8(ascii: "\n")) {
            let length = nl - view.startIndex
            if discarding {
                buffer.moveReaderIndex(forwardBy: length + 1)
                discarding = false
                return .continue
            }
            if length > maxLineBytes {
                buffer.moveReaderIndex(forwardBy: length + 1)
                context.fireChannelRead(wrapInboundOut(.tooLong(limit: maxLineBytes)))
                return .continue
            }
            let bytes = buffer.readBytes(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            context.fireChannelRead(wrapInboundOut(.line(bytes)))
            return .continue
        }
        if discarding {
            buffer.moveReaderIndex(forwardBy: view.count)
            return .needMoreData
        }
        if view.count > maxLineBytes {
            buffer.moveReaderIndex(forwardBy: view.count)
            discarding = true
            context.fireChannelRead(wrapInboundOut(.tooLong(limit: maxLineBytes)))
        }
        return .needMoreData
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A trailing fragment without `\n` at EOF is not a request: drop it.
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}
