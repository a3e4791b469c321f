"""Federated DP-LoRA training rounds on Flower's deployment engine.

Public API:

* :mod:`collab.fl.data` - :func:`load_user_data` (validated before training),
  :func:`load_bbc_news`, seeded IID and Dirichlet splits;
* :mod:`collab.fl.task` - :class:`TaskConfig`, :func:`build_model` (MiniLM or a
  tiny encoder with LoRA on query/value), the travelling weights;
* :mod:`collab.fl.deployment` - :class:`FlowerDeployment` (SuperLink,
  SuperNodes and ``flwr run`` as real processes on loopback);
* :mod:`collab.fl.app` - the ServerApp / ClientApp that ``flwr run`` ships.
"""

from collab.fl.data import Dataset, dirichlet_split, iid_split, load_bbc_news, load_user_data

__all__ = ["Dataset", "dirichlet_split", "iid_split", "load_bbc_news", "load_user_data"]
