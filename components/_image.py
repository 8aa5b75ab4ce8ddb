"""The one image every component runs in (set REST_IMAGE at compile time to change it)."""
from rest_kfp.cluster import component_image

# The image already has the project and kfp installed: nothing is pip-installed at run time.
COMPONENT = dict(base_image=component_image(), install_kfp_package=False)
