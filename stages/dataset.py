"""dataset stage: params.yaml `dataset:` -> data/dataset/, metrics/detail/dataset.json (headline:
metrics/dataset.json) and the class plot."""

import sys

import yaml

from safetyvlm import headline
from safetyvlm.data.dataset import DatasetParams, build_dataset
from safetyvlm.data.records import InvalidInput

params = DatasetParams.from_dict(yaml.safe_load(open("params.yaml"))["dataset"])
try:
    report = build_dataset(params, "data/dataset", "metrics/detail/dataset.json", "metrics/class_distribution.json")
except InvalidInput as err:
    sys.exit(f"dataset stage stopped: {err}\n(set dataset.skip_invalid: true to skip and count such rows)")
m = report.metrics()
headline.write("metrics/dataset.json", headline.dataset(m))
print(f"dataset: {m['total']['images']} images, {m['total']['boxes']} boxes, {m['invalid']['skipped']} skipped")
