"""Polling the Hub and deciding what to alert: the watcher and its alert policy."""
