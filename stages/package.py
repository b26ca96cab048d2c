"""package stage: params.yaml `package:` -> the final model (+ processor, KB, index) in the BentoML model
store, with params, metrics and the git revision as metadata; models/package/record.json names the tag."""

import logging
import os

import yaml

os.environ.setdefault("BENTOML_HOME", os.path.abspath(".bentoml"))  # a project store, not ~/bentoml
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from safetyvlm.serve.package import PackageConfig, run_package  # noqa: E402  (after BENTOML_HOME)

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
params = yaml.safe_load(open("params.yaml"))
record = run_package(PackageConfig.from_dict(params.get("package")), params, "models/package/record.json")
print(f"packaged {record['tag']} ({record['family']}, git {record['git_revision']}) "
      f"in {os.environ['BENTOML_HOME']}: serve it with `bentoml serve` (SAFETYVLM_MODEL={record['tag']})")
