import AgentProtocol
import Foundation
import FoundationXML
import XMLGuards

/// FoundationXML behind the guards this project needs (docs: shared lab notes): empty
/// input and some malformed documents crash `XMLDocument` (SIGSEGV) or are silently
/// "recovered" by libxml2, so every document is pre-checked with `XMLParser` first;
/// element lookups walk children by name instead of XPath, so no XPath is ever built
/// from data. `XMLDocument` is not Sendable: keep each document inside one function.
enum SafeXML {
    /// Parses `text` (libvirt's XML, or XML this agent wrote) into a document.
    /// - Throws: `internal` naming `what` when the text is empty or not well-formed.
    static func document(_ text: String, what: String) throws(AgentError) -> XMLDocument {
        guard !text.allSatisfy(\.isWhitespace) else {
            throw AgentError(.internal, "\(what) is empty")
        }
        // XMLParser itself dies (SIGSEGV: strlen(NULL) in FoundationXML's processing
        // instruction callback) on a processing instruction without data, `<?x?>`
        // (found by Tests/Fuzz fuzz-xml). libvirt writes none: refuse every one but a
        // leading XML declaration before any parser sees the text.
        if hasProcessingInstruction(text) {
            throw AgentError(.internal, "\(what) holds an XML processing instruction")
        }
        let data = Data(text.utf8)
        let parser = XMLParser(data: data)
        let delegate = StrictDelegate()
        parser.delegate = delegate
        guard parser.parse(), parser.parserError == nil, delegate.error == nil, delegate.sawElement else {
            let reason = (parser.parserError ?? delegate.error).map { "\($0.localizedDescription)" } ?? "no root element"
            throw AgentError(.internal, "\(what) is not well-formed XML: \(reason)")
        }
        // A document type declaration can declare entities, and an external one makes
        // libxml2 read a file or URL into the document (XXE). libvirt never writes one:
        // refuse it outright, and tell XMLDocument never to load external entities.
        if text.utf8.firstRange(of: "<!DOCTYPE".utf8) != nil {
            throw AgentError(.internal, "\(what) holds a document type declaration (<!DOCTYPE), which is refused")
        }
        do {
            return try XMLDocument(data: data, options: [.nodePreserveWhitespace, .nodeLoadExternalEntitiesNever])
        } catch {
            throw AgentError(.internal, "\(what) cannot be read as XML: \(error)")
        }
    }

    /// True when `text` holds `<?` anywhere but in a leading `<?xml ...?>` declaration
    /// (``XMLGuards``, shared with the migration hook).
    static func hasProcessingInstruction(_ text: String) -> Bool {
        XMLGuards.hasProcessingInstruction(text.utf8)
    }

    private final class StrictDelegate: NSObject, XMLParserDelegate {
        var error: Error?
        var sawElement = false
        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
            sawElement = true
        }
        func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { error = parseError }
        func parser(_ parser: XMLParser, validationErrorOccurred validationError: Error) { error = validationError }
    }
}

extension XMLElement {
    /// Direct children that are elements called `name` (local name, prefix ignored).
    func children(named name: String) -> [XMLElement] {
        // Compared on the local part of the qualified name: libvirt writes namespaced
        // elements with a fixed prefix (fs:mount_opts), and FoundationXML's localName
        // is not reliable for them.
        (children ?? []).compactMap { $0 as? XMLElement }.filter { ($0.name ?? "").split(separator: ":").last.map(String.init) == name }
    }

    /// The first direct child element called `name`.
    func child(_ name: String) -> XMLElement? { children(named: name).first }

    /// The value of attribute `name`, or nil.
    func attr(_ name: String) -> String? { attribute(forName: name)?.stringValue }

    /// Sets (or replaces) attribute `name`. The value is escaped by the library.
    func setAttr(_ name: String, _ value: String) {
        if let existing = attribute(forName: name) {
            existing.stringValue = value
        } else {
            let node = XMLNode.attribute(withName: name, stringValue: value) as! XMLNode
            addAttribute(node)
        }
    }

    /// A new element `name` with the given attributes (values escaped by the library).
    static func make(_ name: String, _ attributes: [(String, String)] = [], children: [XMLElement] = []) -> XMLElement {
        let element = XMLElement(name: name)
        for (key, value) in attributes { element.setAttr(key, value) }
        for child in children { element.addChild(child) }
        return element
    }

    /// Removes every direct child element called `name`.
    func removeChildren(named name: String) {
        for (index, node) in (children ?? []).enumerated().reversed() {
            if let e = node as? XMLElement, (e.name ?? "").split(separator: ":").last.map(String.init) == name { removeChild(at: index) }
        }
    }
}
