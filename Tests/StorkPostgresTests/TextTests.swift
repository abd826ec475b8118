import Foundation
import StorkConfig
import StorkPostgres
import Testing

/// `LC_ALL=C pg_controldata` of a PostgreSQL 15 cluster (checkpoint location changed to a
/// high LSN, timeline to 3).
let controlDataSample = """
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7712865557818605823
Database cluster state:               in production
pg_control last modified:             Fri Nov 27 14:57:32 2026
Latest checkpoint location:           16/B374D848
Latest checkpoint's REDO location:    16/B374D810
Latest checkpoint's REDO WAL file:    0000000300000016000000B3
Latest checkpoint's TimeLineID:       3
Latest checkpoint's PrevTimeLineID:   2
Latest checkpoint's full_page_writes: on
Latest checkpoint's NextXID:          0:724
Latest checkpoint's oldestCommitTsXid:0
Time of latest checkpoint:            Fri Nov 27 14:57:32 2026
Minimum recovery ending location:     0/0
wal_level setting:                    replica
Bytes per WAL segment:                16777216
Data page checksum version:           1
Mock authentication nonce:            fdd345edcf026155df7c67dbce081b3c22bfde3672eef56fb8d12af345622c36

"""

@Suite("Text formats")
struct TextTests {
    /// Patroni's rule for a replica: forked when it replayed past the switchpoint where the
    /// newer timeline left its own, or when its timeline is not an ancestor at all.
    @Test func timelineHistoryForks() {
        let history = TimelineSwitch.parse(history: "1\t0/3000160\tno recovery target specified\n\n# comment\n2\t0/5000000\tno recovery target specified\n4\t0/7000000\tx\n")
        #expect(history == [TimelineSwitch(parent: 1, switchpoint: 0x300_0160), TimelineSwitch(parent: 2, switchpoint: 0x500_0000),
                            TimelineSwitch(parent: 4, switchpoint: 0x700_0000)])
        #expect(TimelineSwitch.forkPassed(history, timeline: 1, replayed: 0x300_0160) == nil)
        #expect(TimelineSwitch.forkPassed(history, timeline: 1, replayed: 0x300_0161) == history[0])
        #expect(TimelineSwitch.forkPassed(history, timeline: 2, replayed: 0x400_0000) == nil)
        // Timeline 3 is not in timeline 5's history: it branched off timeline 2 elsewhere.
        #expect(TimelineSwitch.forkPassed(history, timeline: 3, replayed: 0x100_0000) == history[1])
        #expect(TimelineSwitch.forkPassed([], timeline: 1, replayed: 1) == nil)
    }

    @Test func lsnRoundTrip() {
        #expect(LSN.parse("16/B374D848") == 0x16_B374_D848)
        #expect(LSN.parse("0/0") == 0)
        #expect(LSN.parse("0/1500718") == 0x150_0718)
        #expect(LSN.parse("FFFFFFFF/FFFFFFFF") == -1)
        #expect(LSN.format(0x16_B374_D848) == "16/B374D848")
        #expect(LSN.format(0) == "0/0")
        #expect(LSN.format(0x150_0718) == "0/1500718")
        for text in ["", "16", "16/", "/1", "G/1", "1/2/3", "123456789/0", "16/B374D848x"] {
            #expect(LSN.parse(text) == nil, "\(text)")
        }
        for value in [0, 1, 0xFFFF_FFFF, 0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF] {
            #expect(LSN.parse(LSN.format(value)) == value)
        }
    }

    @Test func parsesControlData() throws {
        let data = try PostgresNode.parseControlData(controlDataSample)
        #expect(data.systemIdentifier == "7712865557818605823")
        #expect(data.clusterState == "in production")
        #expect(data.timeline == 3)
        #expect(data.checkpointLSN == 0x16_B374_D848)
        #expect(data.fields["Latest checkpoint's PrevTimeLineID"] == "2")
        #expect(data.fields["Latest checkpoint's oldestCommitTsXid"] == "0")
        #expect(data.fields["Latest checkpoint's NextXID"] == "0:724")
        #expect(data.fields["Data page checksum version"] == "1")
        #expect(data.fields.count == 19)
    }

    @Test func controlDataWithoutRequiredFieldsIsAnError() {
        let missing = controlDataSample.replacingOccurrences(of: "Database cluster state:", with: "Something else:")
        #expect(throws: PostgresError.self) { try PostgresNode.parseControlData(missing) }
        let badLSN = controlDataSample.replacingOccurrences(of: "16/B374D848\n", with: "nonsense\n")
        #expect(throws: PostgresError.self) { try PostgresNode.parseControlData(badLSN) }
        #expect(throws: PostgresError.self) { try PostgresNode.parseControlData("") }
    }

    @Test func conninfoQuoting() {
        #expect(ConnInfo.quote("plain") == "plain")
        #expect(ConnInfo.quote("") == "''")
        #expect(ConnInfo.quote("a b") == "'a b'")
        #expect(ConnInfo.quote("it's") == "'it\\'s'")
        #expect(ConnInfo.quote("back\\slash") == "'back\\\\slash'")
        let text = ConnInfo.format([("host", "10.0.0.1"), ("application_name", "node one's"), ("sslmode", "require")])
        #expect(text == "host=10.0.0.1 application_name='node one\\'s' sslmode=require")
        let parsed = ConnInfo.parse(text)
        #expect(parsed?.map(\.key) == ["host", "application_name", "sslmode"])
        #expect(parsed?.map(\.value) == ["10.0.0.1", "node one's", "require"])
        #expect(ConnInfo.parse("host = 'a b' port=5") .map { $0.map(\.value) } == ["a b", "5"])
        #expect(ConnInfo.parse("host='unterminated") == nil)
        #expect(ConnInfo.parse("novalue") == nil)
    }

    @Test func pgpassLineEscapes() {
        let entry = PgpassEntry(host: "db1", port: "5432", user: "rep", password: "p:a\\ss")
        #expect(entry.line == "db1:5432:*:rep:p\\:a\\\\ss")
    }

    @Test func parameterQuoting() {
        #expect(PostgresNode.quoteParameter("on") == "'on'")
        #expect(PostgresNode.quoteParameter("it's") == "'it''s'")
        #expect(PostgresNode.quoteParameter("C:\\dir") == "'C:\\\\dir'")
    }

    @Test func postgresqlConfText() {
        let text = PostgresNode.renderPostgresqlConf(
            parameters: [
                "max_connections": .int(100), "hot_standby": .bool(true), "cluster_name": .string("batman"),
                "archive_command": .string("cp '%p' /archive/%f"), "port": .int(1), "ignored_list": .array([.int(1)]),
            ],
            listen: "127.0.0.1,10.0.0.5:5433",
            primaryConninfo: "host=10.0.0.1 port=5432 user=rep passfile=/tmp/pgpass")
        #expect(text == """
            # Do not edit this file manually! It will be overwritten by Stork
            include 'postgresql.base.conf'

            archive_command = 'cp ''%p'' /archive/%f'
            cluster_name = 'batman'
            hot_standby = 'on'
            listen_addresses = '127.0.0.1,10.0.0.5'
            max_connections = '100'
            port = '5433'
            primary_conninfo = 'host=10.0.0.1 port=5432 user=rep passfile=/tmp/pgpass'

            """)
    }
}

@Suite("WAL segment names")
struct WALSegmentTests {
    @Test func fromBackupLabelToStop() {
        #expect(LSN.segmentFiles(from: "000000010000000000000005", through: 0x0500_0028, segmentSize: 16 << 20)
                == ["000000010000000000000005"])
        #expect(LSN.segmentFiles(from: "000000020000000000000005", through: 0x0700_0000, segmentSize: 16 << 20)
                == ["000000020000000000000005", "000000020000000000000006", "000000020000000000000007"])
        // Across a log boundary: segment FF of log 0, then 00 of log 1.
        #expect(LSN.segmentFiles(from: "0000000100000000000000FF", through: 0x1_0000_0010, segmentSize: 16 << 20)
                == ["0000000100000000000000FF", "000000010000000100000000"])
        #expect(LSN.segmentFiles(from: "not a segment", through: 1, segmentSize: 16 << 20).isEmpty)
        #expect(LSN.segmentFiles(from: "000000010000000000000009", through: 0x0500_0000, segmentSize: 16 << 20).isEmpty)
    }
}
