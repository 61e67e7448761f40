"""The README's experiment example must stay loadable and buildable."""

import re
from pathlib import Path

import yaml

from dlforge.config import parse_config
from dlforge.experiment import check_experiment
from dlforge.nn import build_model

README = Path(__file__).parent.parent / "README.md"


def test_readme_experiment_example_loads_and_builds() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README lost its YAML example"
    cfg = check_experiment(parse_config(yaml.safe_load(blocks[0])))
    net = build_model(cfg.model, (1, 8, 8), 10)
    assert sum(p.numel() for p in net.parameters()) > 0
