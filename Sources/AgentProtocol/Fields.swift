/// An ordered list of `key=value` pairs; a key may repeat (`client=a client=b`).
///
/// Order is kept as written so that rendering is deterministic and replayable.
public struct Fields: Sendable, Equatable, ExpressibleByDictionaryLiteral, Sequence {
    public struct Pair: Sendable, Equatable {
        public var key: String
        public var value: String
        public init(_ key: String, _ value: String) { self.key = key; self.value = value }
    }

    public private(set) var pairs: [Pair]

    public init() { pairs = [] }
    public init(_ pairs: [Pair]) { self.pairs = pairs }
    public init(dictionaryLiteral elements: (String, String)...) {
        pairs = elements.map { Pair($0.0, $0.1) }
    }

    /// The first value for `key`, or nil.
    public subscript(key: String) -> String? { pairs.first { $0.key == key }?.value }

    /// Every value for `key`, in order.
    public func all(_ key: String) -> [String] { pairs.filter { $0.key == key }.map(\.value) }

    public mutating func append(_ key: String, _ value: String) { pairs.append(Pair(key, value)) }
    public mutating func append(contentsOf other: Fields) { pairs.append(contentsOf: other.pairs) }

    public var isEmpty: Bool { pairs.isEmpty }
    public var keys: [String] { pairs.map(\.key) }
    public func makeIterator() -> IndexingIterator<[Pair]> { pairs.makeIterator() }
}
