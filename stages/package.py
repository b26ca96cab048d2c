"""package stage: params.yaml `package:` -> the final model (+ processor, KB, index) in the BentoML model
store, with params, metrics and the git revision as metadata; models/package/record.json names the tag."""

import logging
import os

import yaml

# The stage's output is the project store that dvc.yaml names (.bentoml/models/<name>), whatever BENTOML_HOME
# the user exported for their own BentoML work; serve from it with BENTOML_HOME=$PWD/.bentoml (docs/serving.md).
STORE = os.path.abspath(".bentoml")
if os.environ.get("BENTOML_HOME") not in (None, "", STORE):
    print(f"package: BENTOML_HOME={os.environ['BENTOML_HOME']} is set; this stage writes to the project store "
          f"{STORE} that dvc.yaml tracks (serve it with BENTOML_HOME={STORE})")
os.environ["BENTOML_HOME"] = STORE
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from safetyvlm.serve.package import PackageConfig, run_package  # noqa: E402  (after BENTOML_HOME)

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
params = yaml.safe_load(open("params.yaml"))
record = run_package(PackageConfig.from_dict(params.get("package")), params, "models/package/record.json")
print(f"packaged {record['tag']} ({record['family']}, git {record['git_revision']}) "
      f"in {STORE}: serve it with `BENTOML_HOME={STORE} SAFETYVLM_MODEL={record['tag']} bentoml serve`")
