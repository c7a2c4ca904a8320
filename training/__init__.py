"""Training: LightGBM conversion, drop-off reason and contacts-to-order models, tracked in MLflow.

OpenMP threads that busy-wait between parallel regions starve when other processes share the
cores: on the 2-core project machine under load a 4,000-row fit took 126 s with two spinning
threads and 3 s with passive waiting. Set the policy before LightGBM (or scikit-learn) loads
its OpenMP runtime; an explicit environment setting wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
