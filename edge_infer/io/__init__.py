"""File and terminal I/O: which files, safe reads and moves, record writers and log lines."""
