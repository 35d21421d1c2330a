"""The data options declared in conf/data/*.yaml: every docs command that sets one composes,
the declared defaults are the loaders' own (declaring them changes nothing), and each option
reaches the loader (a run with it reads the data differently)."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from xfvae import CONF_DIR, REPO_ROOT
from xfvae.data.loading import OPTIONS, SYNTHETIC_OPTIONS, load_csv_split
from xfvae.data.registry import get_spec
from xfvae.data.synthetic import make_synthetic

DOWNLOADED = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "amazon-pet", "amazon-kindle")
#: The data-option commands docs/data.md gives, as overrides of `python -m xfvae.train`.
README_COMMANDS = [
    ["data=amazon-pet", "data.options.version=2018"],
    ["data=amazon-kindle", "data.options.version=2018"],
    ["data=amazon-pet", "data.options.filter_iterate=false"],
    ["data=amazon-kindle", "data.options.filter_iterate=false"],
    *[[f"data={name}", f"data.options.duplicates={p}"] for name in DOWNLOADED for p in
      ("first", "last", "mean")],
    ["data=csv", "data.options.duplicates=mean"],
    ["data=csv", "data.options.rating_min=0.5", "data.options.rating_max=10"],
    ["data=synthetic", "data.options.n_users=40", "data.options.seed=3"],
]  # fmt: skip


def _options(cfg) -> dict:
    return OmegaConf.to_container(cfg.data.options, resolve=True)


@pytest.mark.parametrize("overrides", README_COMMANDS, ids=" ".join)
def test_readme_data_option_commands_compose(cfg_factory, overrides):
    cfg = cfg_factory(*overrides)
    for item in overrides[1:]:
        key, value = item.split("=")
        assert str(OmegaConf.select(cfg, key)).lower() == value.lower()


def test_every_data_option_the_docs_name_is_declared_for_a_data_set():
    """The docs may only name data options that a data config declares (else "Key not in struct")."""
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    text = "\n".join(d.read_text() for d in docs)
    named = set(re.findall(r"data\.options\.(\w+)", text))
    declared = set()
    for path in (CONF_DIR / "data").glob("*.yaml"):
        declared |= set(OmegaConf.load(path).get("options") or {})
    assert named, "the docs name no data option: update this test"
    assert named <= declared, f"the docs name undeclared data options: {named - declared}"


def test_an_option_of_another_data_set_is_rejected_by_name(cfg_factory):
    with pytest.raises(ConfigCompositionException, match="version"):
        cfg_factory("data=ml-100k", "data.options.version=2018")
    with pytest.raises(ConfigCompositionException, match="n_users"):
        cfg_factory("data=ml-1m", "data.options.n_users=5")


@pytest.mark.parametrize("name", DOWNLOADED)
def test_declared_defaults_are_the_registry_values(cfg_factory, name):
    options = _options(cfg_factory(f"data={name}"))
    assert set(options) <= set(OPTIONS)
    spec = get_spec(name, options.get("version"))
    assert spec.version == options.get("version")  # the default dump (Amazon: 2014)
    for field in dataclasses.fields(spec):
        if field.name in options and field.name != "version":
            assert options[field.name] == getattr(spec, field.name), field.name
    assert options["path"] is None
    assert set(options) - {"version"} == {
        "duplicates",
        "min_user_ratings",
        "min_item_ratings",
        "filter_iterate",
        "rating_min",
        "rating_max",
        "path",
    }
    assert ("version" in options) == name.startswith("amazon")  # the only versioned data sets


def test_synthetic_and_csv_defaults_are_their_loaders_defaults(cfg_factory):
    synthetic = _options(cfg_factory("data=synthetic"))
    params = inspect.signature(make_synthetic).parameters
    assert set(synthetic) == set(SYNTHETIC_OPTIONS)
    assert {k: params[k].default for k in synthetic} == synthetic
    csv = _options(cfg_factory("data=csv"))
    params = inspect.signature(load_csv_split).parameters
    assert {k: params[k].default for k in csv} == csv
    assert set(csv) == {"rating_min", "rating_max", "duplicates"}


# -- the options reach the loader ----------------------------------------------------------------
def _setup(cfg):
    dm = instantiate(cfg.data)
    dm.setup()
    return dm


def _amazon_rows(order: str) -> str:
    """A 12 x 12 complete block (a 10-core) plus user V, who keeps 10 ratings only in one pass."""
    rows = [(f"U{u}", f"I{i}") for u in range(12) for i in range(12)]
    rows += [("V", f"I{i}") for i in range(9)] + [("V", "J")]
    return "".join(
        f"{u},{i},4.0,{k}\n" if order == "2014" else f"{i},{u},4.0,{k}\n"
        for k, (u, i) in enumerate(rows)
    )


def test_version_and_filter_iterate_options_reach_the_amazon_loader(cfg_factory, tmp_path):
    path = tmp_path / "Pet_Supplies.csv"
    path.write_text(_amazon_rows("2018"))  # item first: read as 2014 the "users" are items
    base = ("data=amazon-pet", f"data.options.path={path}")
    dm = _setup(cfg_factory(*base, "data.options.version=2018"))
    assert set(dm.user_ids) == {f"U{u}" for u in range(12)}
    assert dm.summary()["users"] == 12  # the 10-core at a fixed point drops V
    once = _setup(
        cfg_factory(*base, "data.options.version=2018", "data.options.filter_iterate=false")
    )
    assert "V" in set(once.user_ids)  # one pass drops (V, J) only
    as_2014 = _setup(cfg_factory(*base))
    assert "U0" in set(as_2014.item_ids) and "U0" not in set(as_2014.user_ids)


def test_duplicates_option_reaches_the_loader(cfg_factory, tmp_path):
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t3\t{u}\n" for u in range(1, 11) for i in range(1, 11)))
    path.write_text(path.read_text() + "1\t1\t5\t99\n")  # (1, 1) rated twice: 3 and 5
    base = ("data=ml-100k", f"data.options.path={path}")
    with pytest.raises(ValueError, match="rates item '1' again.*duplicates to first, last or mean"):
        _setup(cfg_factory(*base))
    dm = _setup(cfg_factory(*base, "data.options.duplicates=mean"))
    frames = dm.split_frames()
    ratings = sum(len(f) for f in frames.values())
    assert ratings == 100
    both = [f[(f["user"] == 1) & (f["item"] == 1)]["rating"].tolist() for f in frames.values()]
    assert sum(both, []) == [4.0]


def test_csv_scale_options_reach_the_loader(cfg_factory, tmp_path):
    paths = {}
    for k, text in (("train", "1,1,9\n2,2,0.5\n"), ("val", "1,2,7\n"), ("test", "2,1,10\n")):
        paths[k] = tmp_path / f"{k}.csv"
        paths[k].write_text("user,item,rating\n" + text)
    base = ["data=csv", *(f"data.{k}={p}" for k, p in paths.items())]
    with pytest.raises(ValueError, match="rating 9 is outside the scale"):
        _setup(cfg_factory(*base))
    dm = _setup(cfg_factory(*base, "data.options.rating_min=0.5", "data.options.rating_max=10"))
    assert (dm.rating_min, dm.rating_max) == (0.5, 10.0)
