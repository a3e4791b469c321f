"""The Flower app directory shipped by ``flwr run``: ``server_app.py``, ``client_app.py``, ``pyproject.toml``.

Its path is :data:`APP_DIR`; the modules are also importable as
``collab.fl.app.server_app`` / ``collab.fl.app.client_app``.
"""

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent

__all__ = ["APP_DIR"]
