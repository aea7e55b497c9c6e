"""Web sources: the crawler, its network guard and its adapters."""
