import Testing
import StorkHA

@Suite("Replication slot names")
struct SlotNameTests {
    @Test func patroniSlotNames() {
        #expect(slotName(forMember: "pg1") == "pg1")
        #expect(slotName(forMember: "Node-2.example") == "node_2_example")
        #expect(slotName(forMember: String(repeating: "a", count: 80)).count == 63)
    }
}
