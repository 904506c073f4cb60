"""Offline jobs: sharded bulk indexing."""
