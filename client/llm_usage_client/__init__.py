"""llm-usage-client: record LLM usage events from an application to an llm-usage-exporter.

Only the client and the vendor-usage mapping, with httpx as the one dependency, so an application
does not install the exporter's server (starlette, uvicorn, protobuf). See client/setup.py for why
``client`` and ``formats`` are the server repository's own modules.
"""

from ._version import __version__
from .client import UsageClient
from .formats.vendor_usage import UsageError, map_usage

__all__ = ["UsageClient", "UsageError", "__version__", "map_usage"]
