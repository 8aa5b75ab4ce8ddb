"""The one image every component runs in (set REST_IMAGE at compile time to change it)."""
import os

IMAGE = os.environ.get("REST_IMAGE", "ghcr.io/rest-kubeflow/rest:0.1.0")
# The image already has the project and kfp installed: nothing is pip-installed at run time.
COMPONENT = dict(base_image=IMAGE, install_kfp_package=False)
