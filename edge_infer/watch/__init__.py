"""The folder watcher and its results ledger."""
