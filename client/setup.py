"""Build of the light client distribution, ``llm-usage-client``.

The client is the server repository's own code, not a second copy of it: ``exporter/client.py``
and the vendor-usage mapping ``exporter/formats/vendor_usage.py`` (which the ingest validator also
uses) are copied into ``llm_usage_client/`` when the distribution is built from this repository,
keeping their relative layout so their relative imports work unchanged. An sdist already carries
the copies, so it builds on its own. The copies are build output (git-ignored): edit the sources.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE = HERE / "llm_usage_client"

# target in llm_usage_client/ -> source in the repository
SHARED = {
    "_version.py": "exporter/__init__.py",
    "client.py": "exporter/client.py",
    "formats/__init__.py": "exporter/formats/__init__.py",
    "formats/vendor_usage.py": "exporter/formats/vendor_usage.py",
}


def copy_shared_sources() -> None:
    if not (REPO / "exporter" / "client.py").is_file():
        return  # building from an sdist: the copies are in it
    for target, source in SHARED.items():
        text = f"# Copied from {source} by client/setup.py at build time; edit that file.\n"
        text += (REPO / source).read_text(encoding="utf-8")
        path = PACKAGE / target
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


copy_shared_sources()
setup()
