"""The server's limits, importable without the server (the CLI shows them in --help)."""

MAX_BODY_BYTES = 20 * 1024 * 1024
#: an oversized body up to this size is read and discarded before the 413; beyond it the
#: connection is closed at once
DRAIN_LIMIT = 128 * 1024 * 1024
#: idle or stalled connections are closed after this many seconds
SOCKET_TIMEOUT_S = 15.0
#: connections served at once; more are answered 503 immediately (far below the fd limit)
MAX_CONNECTIONS = 400
#: images decoded at once: bounds memory under parallel uploads (decompression bombs)
MAX_DECODES = 2
#: parts a multipart body may hold
MAX_PARTS = 16
LISTEN_BACKLOG = 128
#: a body must arrive at this rate (bytes/s) once the idle timeout's grace is over
MIN_BODY_RATE = 64 * 1024
#: bytes of request bodies buffered at once, server-wide, as a number of maximal bodies
BODY_BUDGET_BODIES = 4
