"""Known vulnerabilities of installed packages, from PyPI's project JSON: a check beside pip-audit.

    python3 benchmarks/pypi_latest_audit.py [--path SITE_PACKAGES ...] [--json out.json]

Why: through this network's proxy PyPI's per-version JSON API (`/pypi/<name>/<version>/json`, what
pip-audit's PyPI service reads) answers 404 and OSV is unreachable, so pip-audit reports every package
"could not be audited". The project JSON (`/pypi/<name>/json`) does answer, and its `vulnerabilities`
list is PyPI's (OSV-fed) record for the project's *latest* release. So a package can be checked here
only when the installed version is the latest one; every other package is listed as not checked, with
the reason. Nothing is guessed for older versions.

For each distribution installed under `--path` (default: this interpreter's environment; editable and
local-directory installs skipped):
  * installed == latest: audited; each vulnerability not withdrawn and not in EXCEPTIONS is a finding;
  * installed != latest, not on PyPI, or the request failed: not checked (reason given).
Exit status: 1 when there is a finding, else 0, also when the network fails (then nothing could be
checked, and the output says so). Standard library only.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

INDEX = "https://pypi.org/pypi"
# A vulnerability id (or alias) -> why it is accepted. Reviewed like code; README: Hardening.
EXCEPTIONS: dict[str, str] = {
    "CVE-2025-69872": (
        "diskcache (every release through 5.6.3, the latest; no fix exists) unpickles what it reads from its "
        "cache directory, so whoever can write that directory runs code in the reader. Only DVC uses it here "
        "(dvc-data keeps its file-hash state in the site cache dir, /var/tmp/dvc/repo/<hash> by default): a "
        "developer or CI tool, not part of the service, whose Bento image does not install dvc or diskcache. "
        "On a machine shared with untrusted users, point DVC at a directory only you can write: "
        "`dvc config --local core.site_cache_dir ~/.cache/dvc-site`."),
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """`2.13.0+cpu` -> `2.13.0`: a local build label does not change which release it is."""
    return version.split("+", 1)[0]


def local_install(dist) -> str | None:
    """Why `dist` is not a PyPI release (editable or from a local path), or None."""
    raw = dist.read_text("direct_url.json")
    if not raw:
        return None
    info = json.loads(raw)
    if info.get("dir_info", {}).get("editable"):
        return "editable install"
    if "dir_info" in info or info.get("url", "").startswith("file:") and "archive_info" not in info:
        return "installed from a local directory"
    return None


def fetch(name: str, index: str, timeout: float, tries: int = 3) -> tuple[dict | None, str | None]:
    """(project JSON, None) or (None, why it could not be read)."""
    why = None
    for attempt in range(tries):
        try:
            req = urllib.request.Request(f"{index.rstrip('/')}/{name}/json", headers={"Accept": "application/json"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r), None
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None, "not on PyPI (404)"
            why = f"HTTP {e.code}"
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
            why = f"network error: {getattr(e, 'reason', e)}"
        time.sleep(0.5 * (attempt + 1))
    return None, why


def audit(dists, index: str = INDEX, exceptions: dict[str, str] = EXCEPTIONS, timeout: float = 15.0,
          workers: int = 8) -> dict:
    by_name: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for d in dists:
        name = canonical(d.metadata["Name"])
        why = local_install(d)
        if why:
            skipped[name] = why
        else:
            by_name.setdefault(name, d.version)
    for name in skipped:  # e.g. an editable install that also left an .egg-info on the path
        by_name.pop(name, None)
    with ThreadPoolExecutor(workers) as pool:
        answers = dict(zip(by_name, pool.map(lambda n: fetch(n, index, timeout), by_name)))
    audited, findings, not_checked, accepted = [], [], {}, []
    for name, version in sorted(by_name.items()):
        data, why = answers[name]
        if data is None:
            not_checked[name] = f"{version}: {why}"
            continue
        latest = data["info"]["version"]
        if public_version(version) != latest:
            not_checked[name] = (f"{version} installed, {latest} is the latest: PyPI's project JSON lists the "
                                 "vulnerabilities of the latest release only")
            continue
        audited.append(f"{name}=={version}")
        for v in data.get("vulnerabilities") or []:
            if v.get("withdrawn"):
                continue
            item = {"package": name, "version": version, "id": v.get("id"), "aliases": v.get("aliases", []),
                    "fixed_in": v.get("fixed_in", []), "link": v.get("link")}
            ids = {v.get("id"), *v.get("aliases", [])}
            reason = next((exceptions[i] for i in ids if i in exceptions), None)
            (accepted if reason else findings).append({**item, **({"accepted_because": reason} if reason else {})})
    network = sum(1 for w in not_checked.values() if "network error" in w or "HTTP " in w)
    return {"installed": len(by_name) + len(skipped), "audited": len(audited), "vulnerable": len(findings),
            "not_checked": len(not_checked), "not_checked_network": network,
            "not_checked_not_latest": sum(1 for w in not_checked.values() if "is the latest" in w),
            "skipped_local": skipped, "findings": findings, "accepted": accepted,
            "exceptions": exceptions, "audited_packages": audited, "not_checked_reasons": not_checked}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", action="append", default=None,
                    help="a site-packages directory to audit (repeatable); default: this interpreter's")
    ap.add_argument("--index-url", default=INDEX, help="the JSON API's base (default: %(default)s)")
    ap.add_argument("--json", default=None, help="write the full result here")
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--exceptions", action="store_true",
                    help="only print the accepted vulnerability ids, one a line (for pip-audit's --ignore-vuln)")
    args = ap.parse_args()
    if args.exceptions:
        print("\n".join(EXCEPTIONS))
        return 0
    dists = metadata.distributions(path=args.path) if args.path else metadata.distributions()
    out = audit(dists, args.index_url, timeout=args.timeout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    print(f"PyPI project-JSON audit of {out['installed']} installed distributions: {out['audited']} audited "
          f"(installed = latest), {out['vulnerable']} with a known vulnerability, {out['not_checked']} not checked "
          f"({out['not_checked_not_latest']} not the latest release, {out['not_checked_network']} network errors, "
          f"{out['not_checked'] - out['not_checked_not_latest'] - out['not_checked_network']} not on PyPI), "
          f"{len(out['skipped_local'])} local installs skipped, {len(out['accepted'])} accepted exceptions")
    for f in out["findings"]:
        print(f"VULNERABLE {f['package']}=={f['version']}: {f['id']} {' '.join(f['aliases'])} "
              f"fixed in {', '.join(f['fixed_in']) or '?'} {f['link'] or ''}")
    if out["audited"] == 0:
        print("warning: no package could be checked (network?); this check did not run", file=sys.stderr)
    return 1 if out["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
