"""qoq-node: a hospital AI node between the PACS and the EHR, running QoQ-Med."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qoq-node")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
