"""The BentoML service (``serving.service``), its model import step and its web page."""

import os

# BentoML sends usage statistics unless told not to; the service must work offline.
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
