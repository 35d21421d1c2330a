"""xfvae: reference reproduction of Jin et al., "Leveraging Cross Feedback of User and Item
Embeddings with Attention for Variational Autoencoder based Collaborative Filtering"."""

from pathlib import Path

__version__ = "0.1.0"

#: Repository root (the folder holding ``conf/``); valid for the editable install ``make install`` does.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"


def _register_resolvers() -> None:
    import secrets

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("xfvae_root"):
        OmegaConf.register_new_resolver("xfvae_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("xfvae_uid"):
        # A random suffix drawn once per process: runs started in the same second never share a
        # directory (conf/hydra/default.yaml).
        uid = secrets.token_hex(3)
        OmegaConf.register_new_resolver("xfvae_uid", lambda: uid)


_register_resolvers()
