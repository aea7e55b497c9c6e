"""The MCP server (Model Context Protocol), an entry point beside the HTTP API and the CLI.

* ``tools.py``: the tools and resources, defined once over a ``Backend`` (the canonical file)
* ``backend.py``: the ``Backend`` protocol and ``LocalBackend`` (the services, as one principal)
* ``remote.py``: ``RemoteBackend``, the REST API of a server (``lorebase mcp`` with
  ``LOREBASE_SERVER_URL``)
* ``http.py``: ``POST /mcp`` on ``lorebase serve`` (Streamable HTTP, the API's Bearer keys)
* ``stdio.py``: ``lorebase mcp`` (stdio, local data dir or remote server)
"""
