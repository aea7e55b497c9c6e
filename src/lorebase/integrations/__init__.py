"""Retrievers for LangChain and LlamaIndex over :mod:`lorebase.client` (optional extras:
``pip install 'lorebase[langchain]'`` or ``'lorebase[llamaindex]'``). Each module imports its
framework; nothing here is imported by ``lorebase.client``."""
