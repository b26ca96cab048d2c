"""The sha256 manifest beside the KB files: written after an intended, reviewed edit, checked on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetyvlm.kb.entries import KBError

KB_DIR = Path(__file__).parent


MANIFEST_NAME = "manifest.json"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest(kb_dir: str | Path = KB_DIR) -> dict[str, str]:
    """Record the sha256 of every KB yaml file in `kb_dir/manifest.json` (after an intended edit)."""
    kb_dir = Path(kb_dir)
    hashes = {p.name: file_sha256(p) for p in sorted(kb_dir.glob("*.yaml"))}
    (kb_dir / MANIFEST_NAME).write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    return hashes


def verify_manifest(*paths: Path, require: bool = False) -> None:
    """Refuse a KB file whose sha256 differs from the manifest beside it (tampering or an unrecorded
    edit). Files in a directory without a manifest (a user's own KB) are not checked, unless `require`:
    the service passes it, so a deployment missing its manifest cannot serve an unchecked KB."""
    for path in paths:
        manifest = path.parent / MANIFEST_NAME
        if not manifest.exists():
            if require:
                raise KBError(f"{path}: no {MANIFEST_NAME} beside it, so its integrity cannot be checked; ship "
                              f"the manifest (`safetyvlm kb rehash` writes it) or, in development only, set "
                              f"SAFETYVLM_KB_VERIFY=off")
            continue
        expected = json.loads(manifest.read_text()).get(path.name)
        if expected is None:
            raise KBError(f"{path}: not listed in {manifest}; run `safetyvlm kb rehash` after an intended edit")
        actual = file_sha256(path)
        if actual != expected:
            raise KBError(f"{path}: sha256 {actual[:12]}… does not match {manifest} ({expected[:12]}…): the file "
                          "was changed outside review. If the edit is intended, run `safetyvlm kb rehash`.")
