"""ReST on Kubeflow: Reinforced Self-Training (Gulcehre et al. 2023) for seq2seq models.

The core library: every function here works on paths, iterables and config objects,
imports no kfp and reads no environment variables. ``components/`` wraps it for KFP and
``pipeline.py`` wires the components into the looped ReST pipeline.
"""

__version__ = "0.1.0"
