import Foundation
import Synchronization

/// Runs `body(0..<count)` on `width` threads of its own (libarchive, file I/O and hashing
/// block, and must not hold Swift's cooperative threads: the agent's loop and API run there).
/// The first error stops the work not yet started and is thrown.
func inParallel(_ count: Int, width: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    final class Shared: Sendable {
        let next = Mutex(0)
        let failure = Mutex<(any Error)?>(nil)
    }
    let shared = Shared()
    let group = DispatchGroup()
    for _ in 0..<max(1, min(width, count)) {
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            while true {
                let index = shared.next.withLock { value -> Int in
                    defer { value += 1 }
                    return value
                }
                guard index < count, shared.failure.withLock({ $0 == nil }) else { return }
                do { try body(index) } catch { shared.failure.withLock { if $0 == nil { $0 = error } } }
            }
        }
    }
    group.wait()
    if let error = shared.failure.withLock({ $0 }) { throw error }
}

/// `body` on a thread of its own, awaited without blocking a cooperative thread.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
        }
    }
}
