import Foundation

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `fd00::/8`) or one address (`/32`, `/128`), for
/// `restapi.allowlist`. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4 networks.
public struct IPNetwork: Sendable, Equatable, CustomStringConvertible {
    /// Network bytes: 4 for IPv4, 16 for IPv6.
    public let bytes: [UInt8]
    public let prefixLength: Int

    /// `address` or `address/prefix`; nil when it is neither.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPNetwork.parseAddress(String(parts[0])) else { return nil }
        let bits = address.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...bits).contains(p) else { return nil }
            prefix = p
        }
        bytes = IPNetwork.masked(address, prefix)
        prefixLength = prefix
    }

    /// Whether `address` (textual IPv4 or IPv6) lies in this network.
    public func contains(_ address: String) -> Bool {
        guard var candidate = IPNetwork.parseAddress(address) else { return false }
        if bytes.count == 4, candidate.count == 16, candidate[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
            candidate = Array(candidate[12...])
        }
        return candidate.count == bytes.count && IPNetwork.masked(candidate, prefixLength) == bytes
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return cText(buffer) + "/\(prefixLength)"
    }

    static func parseAddress(_ text: String) -> [UInt8]? {
        let host = text.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func masked(_ address: [UInt8], _ prefix: Int) -> [UInt8] {
        address.enumerated().map { index, byte in
            let keep = min(8, max(0, prefix - index * 8))
            return keep == 8 ? byte : byte & ~(UInt8(0xff) >> keep)
        }
    }
}

/// The text of a NUL-terminated C buffer.
public func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
