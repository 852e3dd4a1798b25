"""The demo's settings (`aurora-pipeline demo`, `make demo`): a short chain on a synthetic archive.

The flow ``demo`` (flows/demo.py) and the command's options take their defaults from
these fields; the README's demo figures are from these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoConfig:
    workdir: str = "demo_out"            # where the archive, store, models and plots go
    epochs: int = 15                     # pretraining epochs: a short pretraining (the paper's 100 is `pretrain`)
    image_size: int = 64                 # side of the stored frames in pixels: keeps the demo to minutes on 2 cores
    frames_per_hour: int = 120           # frames in each of the synthetic archive's 8 site-hours (one every 30 s)
    holdout_hours_fraction: float = 0.25  # the last quarter of each site's hours is held out of the classifier's fit
    k_min: int = 3                       # the K-means search over k = k_min..k_max (the cluster command's k_max is 15;
    k_max: int = 10                      # 10 keeps the demo's search short)
