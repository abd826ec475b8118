import CArchive
import Foundation
import StorkConfig

// The one wrapper of libarchive: a reader and a writer of one file each. Every libarchive
// call of Stork is in this file; the rest of StorkArchive sees Swift types only.

/// What an entry of an archive being read is.
struct ArchiveEntry {
    enum Kind: Equatable {
        case regular
        case symlink(to: String)
        case other
    }
    var path: String
    var kind: Kind
    var isHardLink: Bool
    var size: Int
}

/// Reads one archive file (tar, or a single compressed stream with `raw`) through libarchive.
/// Errors name `label` (a path, or a backup's part) and carry libarchive's text, copied at
/// once: it is valid only until the next call. Not thread-safe; one reader per file.
final class ArchiveReader {
    enum Format { case tar, raw }
    private let a: OpaquePointer
    private let label: String
    private let name: String

    /// Opens `path`, reading `blockSize` bytes at a time; any compression filter is accepted
    /// here, and `compressedAsNamed` says whether it is the one the name promises.
    init(path: String, format: Format, blockSize: Int, label: String) throws(ArchiveError) {
        guard let a = archive_read_new() else { throw ArchiveError("libarchive: out of memory") }
        self.a = a
        self.label = label
        self.name = path
        archive_read_support_filter_all(a)
        switch format {
        case .tar: archive_read_support_format_tar(a)
        case .raw: archive_read_support_format_raw(a)
        }
        guard archive_read_open_filename(a, path, blockSize) == ARCHIVE_OK else { throw error() }
    }

    // Frees the reader and closes its file; nothing else holds the handle.
    deinit { archive_read_free(a) }

    /// The next entry, nil at the end of the archive (a warning is not an error).
    func next() throws(ArchiveError) -> ArchiveEntry? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(a, &entry)
        if status == ARCHIVE_EOF { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else { throw error() }
        let kind: ArchiveEntry.Kind
        switch archive_entry_filetype(entry) {
        case stork_AE_IFREG: kind = .regular
        case stork_AE_IFLNK: kind = .symlink(to: archive_entry_symlink(entry).map { String(cString: $0) } ?? "?")
        default: kind = .other
        }
        return ArchiveEntry(path: archive_entry_pathname(entry).map { String(cString: $0) } ?? "", kind: kind,
                            isHardLink: archive_entry_hardlink(entry) != nil, size: Int(archive_entry_size(entry)))
    }

    /// The file is compressed as its name says (`.zst`, `.lz4`, `.gz`, nothing): libarchive
    /// reads anything else as raw bytes. Known once the first header is read.
    var compressedAsNamed: Bool { archive_filter_code(a, 0) == Self.expectedFilter(name) }

    /// Reads the current entry's data into `buffer`; 0 at its end.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ArchiveError) -> Int {
        let n = archive_read_data(a, buffer.baseAddress, buffer.count)
        guard n >= 0 else { throw error() }
        return n
    }

    func skipData() throws(ArchiveError) {
        guard archive_read_data_skip(a) == ARCHIVE_OK else { throw error() }
    }

    private func error() -> ArchiveError { ArchiveError("\(label): \(libarchiveText(a))") }

    /// The libarchive filter code an object's name promises.
    private static func expectedFilter(_ name: String) -> Int32 {
        switch (name as NSString).pathExtension {
        case "zst": ARCHIVE_FILTER_ZSTD
        case "lz4": ARCHIVE_FILTER_LZ4
        case "gz": ARCHIVE_FILTER_GZIP
        default: ARCHIVE_FILTER_NONE
        }
    }
}

/// Writes one archive file through libarchive: a pax tar of regular files, or (`raw`) one
/// compressed stream. Errors name the file and carry libarchive's text. Not thread-safe.
final class ArchiveWriter {
    enum Format { case tar, raw }
    private let a: OpaquePointer
    private let entry: OpaquePointer
    private let path: String

    init(path: String, format: Format, compression: ArchiveSettings.Compression) throws(ArchiveError) {
        guard let a = archive_write_new() else { throw ArchiveError("libarchive: out of memory") }
        guard let entry = archive_entry_new() else {
            archive_write_free(a)
            throw ArchiveError("libarchive: out of memory")
        }
        self.a = a
        self.entry = entry
        self.path = path
        let filter: Int32 = switch compression {
        case .zstd: archive_write_add_filter_zstd(a)
        case .lz4: archive_write_add_filter_lz4(a)
        case .gzip: archive_write_add_filter_gzip(a)
        case .none: archive_write_add_filter_none(a)
        }
        let formatSet = switch format {
        case .tar: archive_write_set_format_pax_restricted(a)
        case .raw: archive_write_set_format_raw(a)
        }
        guard filter == ARCHIVE_OK, formatSet == ARCHIVE_OK, archive_write_open_filename(a, path) == ARCHIVE_OK else { throw error() }
    }

    // Frees the entry and the writer (which closes the file if `close` was not called; an
    // unclosed file is incomplete, and its caller throws and removes it).
    deinit {
        archive_entry_free(entry)
        archive_write_free(a)
    }

    /// Starts a regular file of `size` bytes (`path` nil for a raw stream).
    func beginFile(path name: String?, mode: UInt32 = 0o600, size: Int, modified: Int = 0) throws(ArchiveError) {
        archive_entry_clear(entry)
        if let name { archive_entry_set_pathname(entry, name) }
        archive_entry_set_filetype(entry, stork_AE_IFREG)
        archive_entry_set_perm(entry, mode_t(mode))
        archive_entry_set_size(entry, la_int64_t(size))
        archive_entry_set_mtime(entry, time_t(modified), 0)
        guard archive_write_header(a, entry) == ARCHIVE_OK else { throw error() }
    }

    /// Writes all of `bytes` into the current file.
    func write(_ bytes: UnsafeRawBufferPointer) throws(ArchiveError) {
        guard archive_write_data(a, bytes.baseAddress, bytes.count) == bytes.count else { throw error() }
    }

    /// Finishes the archive: the compressor's last block and the file are written.
    func close() throws(ArchiveError) {
        guard archive_write_close(a) == ARCHIVE_OK else { throw error() }
    }

    private func error() -> ArchiveError { ArchiveError("\(path): \(libarchiveText(a))") }
}

private func libarchiveText(_ a: OpaquePointer) -> String {
    archive_error_string(a).map { String(cString: $0) } ?? "libarchive error \(archive_errno(a))"
}
