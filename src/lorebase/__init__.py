"""lorebase: documents and websites into searchable knowledge bases, built by durable background jobs."""

__version__ = "0.1.0"
