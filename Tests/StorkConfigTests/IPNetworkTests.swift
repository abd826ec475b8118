import Testing
import StorkConfig

@Suite("restapi.allowlist networks")
struct IPNetworkTests {
    @Test func matching() throws {
        let net = try #require(IPNetwork("10.1.0.0/16"))
        #expect(net.contains("10.1.2.3") && net.contains("10.1.255.255"))
        #expect(!net.contains("10.2.0.1") && !net.contains("fd00::1") && !net.contains("not-an-ip"))
        // A client on an IPv6 socket shows as an IPv4-mapped address.
        #expect(net.contains("::ffff:10.1.9.9"))
        let host = try #require(IPNetwork("127.0.0.1"))
        #expect(host.prefixLength == 32 && host.contains("127.0.0.1") && !host.contains("127.0.0.2"))
        let v6 = try #require(IPNetwork("fd00::/8"))
        #expect(v6.contains("fd12:3456::1") && !v6.contains("fe80::1") && !v6.contains("10.0.0.1"))
        // Host bits in the network are masked off, as Python's ip_network(strict=False) does.
        #expect(IPNetwork("192.168.1.77/24")?.description == "192.168.1.0/24")
        #expect(IPNetwork("0.0.0.0/0")?.contains("203.0.113.5") == true)
    }

    @Test func refused() {
        for text in ["10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "fd00::/129", "host.example", "", "1.2.3.4/8/9"] {
            #expect(IPNetwork(text) == nil, "\(text)")
        }
    }
}
