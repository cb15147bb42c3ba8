import Foundation
import FoundationXML
import XMLGuards

/// What the hook needs from a libvirt domain XML: the name, and every place each disk
/// keeps its data (the disk's own source, its backing chain, a block-job mirror, a
/// qcow2 external data file), each with the storage type of the element that holds it.
public struct DomainStorage: Sendable, Equatable {
    public struct Disk: Sendable, Equatable {
        /// `<target dev=...>` (vda), or "disk N" when there is none.
        public var target: String
        /// `device=`: disk, cdrom, floppy, lun.
        public var device: String
        public var layers: [Layer]
    }

    /// One storage element: `<disk>`, `<backingStore>`, `<mirror>` or `<dataStore>`.
    public struct Layer: Sendable, Equatable {
        /// `type=`: file, block, dir, network, volume, nvme, vhostuser... (libvirt's
        /// default, file, when absent).
        public var type: String
        /// The local path (`file=`, `dev=` or `dir=` of its `<source>`), nil when it has none.
        public var path: String?
        /// `pool=`/`volume=` of a volume source, for the message.
        public var volume: String?
    }

    public var name: String
    public var disks: [Disk]

    /// The most the hook reads from stdin (libvirt's domain XML is a few KiB).
    public static let maximumBytes = 4 << 20

    /// Parses libvirt's domain XML: the guards of ``XMLGuards`` first (no processing
    /// instruction, no DOCTYPE/ENTITY), then one strict pass of `XMLParser` (any parse
    /// error is fatal; libxml2's recovery is not trusted). Fails closed: anything but a
    /// well-formed `<domain>` with a `<name>` throws.
    public static func parse(_ bytes: [UInt8]) throws(HookError) -> DomainStorage {
        guard !bytes.isEmpty, !bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) else {
            throw HookError("the domain XML on stdin is empty")
        }
        guard bytes.count <= maximumBytes else {
            throw HookError("the domain XML on stdin is larger than \(maximumBytes >> 20) MiB")
        }
        guard !bytes.contains(0) else { throw HookError("the domain XML on stdin holds a NUL byte") }
        if XMLGuards.hasProcessingInstruction(bytes) {
            throw HookError("the domain XML on stdin holds an XML processing instruction")
        }
        if XMLGuards.hasDocumentType(bytes) {
            throw HookError("the domain XML on stdin holds a document type or entity declaration")
        }
        let parser = XMLParser(data: Data(bytes))
        let reader = Reader()
        parser.delegate = reader
        parser.shouldResolveExternalEntities = false
        let ok = parser.parse()
        if let error = reader.error { throw error }
        guard ok, parser.parserError == nil, reader.parseError == nil else {
            let code = (parser.parserError ?? reader.parseError).map { "XML error \(($0 as NSError).code)" } ?? "XML error"
            throw HookError("the domain XML on stdin is not well-formed (\(code) at line \(parser.lineNumber), column \(parser.columnNumber))")
        }
        guard reader.rootSeen else { throw HookError("the domain XML on stdin has no <domain> element") }
        let name = reader.name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty else { throw HookError("the domain XML on stdin has no <name>") }
        return DomainStorage(name: name, disks: reader.disks)
    }

    /// A SAX reader: a stack of open elements, so that every `<source>` is attributed to
    /// the storage element it belongs to.
    private final class Reader: NSObject, XMLParserDelegate {
        var stack: [String] = []
        var rootSeen = false
        var name = ""
        var disks: [Disk] = []
        var error: HookError?
        var parseError: Error?
        // The disk being read: its attributes, target and layers; open layers by depth.
        var disk: (device: String, target: String?, layers: [Layer])?
        var openLayers: [(depth: Int, index: Int)] = []

        static let storageElements: Set<String> = ["disk", "backingStore", "mirror", "dataStore"]

        func fail(_ parser: XMLParser, _ message: String) {
            if error == nil { error = HookError(message) }
            parser.abortParsing()
        }

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes: [String: String] = [:]) {
            let element = elementName.split(separator: ":").last.map(String.init) ?? elementName
            defer { stack.append(element) }
            if stack.isEmpty {
                guard element == "domain", !rootSeen else { return fail(parser, "the XML on stdin is not a libvirt <domain>") }
                rootSeen = true
                return
            }
            // <domain><devices><disk>
            if element == "disk", stack == ["domain", "devices"] {
                disk = (attributes["device"] ?? "disk", nil, [])
                openLayers = [(stack.count, 0)]
                disk?.layers.append(Layer(type: attributes["type"] ?? "file", path: nil, volume: nil))
                return
            }
            guard disk != nil, stack.count >= 3, stack[1] == "devices", stack[2] == "disk" else { return }
            let parent = stack.last ?? ""
            if element == "target", stack.count == 3 {
                disk?.target = attributes["dev"]
            } else if Self.storageElements.contains(element), element != "disk", openLayers.last?.depth == stack.count - 1
                        || (parent == "source" && element == "dataStore") {
                // A nested storage element: <backingStore type=...>, <mirror type=... file=...>,
                // <source><dataStore type=...>. An empty <backingStore/> ends the chain.
                guard attributes["type"] != nil || element == "mirror" || !attributes.isEmpty else {
                    openLayers.append((stack.count, -1))
                    return
                }
                var layer = Layer(type: attributes["type"] ?? "file", path: nil, volume: nil)
                // the legacy mirror form names its file on the element itself
                if element == "mirror", let f = attributes["file"] { layer.path = f }
                disk?.layers.append(layer)
                openLayers.append((stack.count, (disk?.layers.count ?? 1) - 1))
            } else if element == "source", let open = openLayers.last, open.depth == stack.count - 1, open.index >= 0 {
                guard var layer = disk?.layers[open.index] else { return }
                if let p = attributes["file"] ?? attributes["dev"] ?? attributes["dir"] {
                    if layer.path != nil, layer.path != p { return fail(parser, "a disk of the domain XML names two sources in one element") }
                    layer.path = p
                }
                if let pool = attributes["pool"] { layer.volume = "\(pool)/\(attributes["volume"] ?? "?")" }
                disk?.layers[open.index] = layer
            }
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
            stack.removeLast()
            if let open = openLayers.last, open.depth == stack.count { openLayers.removeLast() }
            if stack.count == 2, let d = disk, stack == ["domain", "devices"] {
                disks.append(Disk(target: d.target ?? "disk \(disks.count + 1)", device: d.device, layers: d.layers))
                disk = nil
                openLayers = []
            }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            if stack == ["domain", "name"] { name += string }
        }

        func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { self.parseError = parseError }
        func parser(_ parser: XMLParser, validationErrorOccurred validationError: Error) { self.parseError = validationError }
    }
}

/// Why the hook refuses: one sentence for libvirt to show (fail closed).
public struct HookError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
