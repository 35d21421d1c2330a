"""Equal-budget tuning of every model: ``python -m xfvae.tune model=<m> data=<d> budget=<n>``.

``space`` reads the search spaces (``conf/hparams_search/<name>.yaml``), ``study`` holds a
study's settings, storage, lock and trial owners, ``trials`` runs the search and the re-runs,
``select`` is the selection protocol, ``record`` writes the records and the tuned config;
``driver`` ties them together.
"""
