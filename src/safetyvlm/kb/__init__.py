"""The tool-safety knowledge base: one validated entry per category plus a retrieval corpus.

Two YAML files ship with the package:

* ``tools.yaml`` - ``tools`` (one entry per ``schema.CATEGORIES`` name) and ``references``
  (id -> title/publisher/url/note of the public guidance the entries are based on);
* ``corpus.yaml`` - a list of short passages for retrieval, each tied to a category or ``null``.

``load_kb()`` reads and validates both and returns a :class:`KnowledgeBase`. Any problem raises
:class:`KBError` whose message names the file, the entry and the field, e.g.
``tools.yaml: Drill.primary_hazards: needs at least 3 items``.

    entries.py    the validated types (ToolEntry, Reference, Passage, KnowledgeBase) and their limits
    load.py       load_kb: read, validate and cache the packaged files (or your own)
    manifest.py   the sha256 manifest: write after an intended edit, verify on load
    ground.py     ground_report: a report's safety fields from the entry of each tool's name
"""

from safetyvlm.kb.entries import KBError, KnowledgeBase, Passage, Reference, ToolEntry
from safetyvlm.kb.ground import ground_report
from safetyvlm.kb.load import DEFAULT_CORPUS_PATH, DEFAULT_TOOLS_PATH, VERIFY_MODES, load_kb
from safetyvlm.kb.manifest import KB_DIR, MANIFEST_NAME, file_sha256, verify_manifest, write_manifest

__all__ = [
    "KBError",
    "KnowledgeBase",
    "Passage",
    "Reference",
    "ToolEntry",
    "DEFAULT_TOOLS_PATH",
    "DEFAULT_CORPUS_PATH",
    "KB_DIR",
    "MANIFEST_NAME",
    "VERIFY_MODES",
    "load_kb",
    "ground_report",
    "file_sha256",
    "verify_manifest",
    "write_manifest",
]
