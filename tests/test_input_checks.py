"""Every input checked before training, with messages that point at the real problem (issue 20,
cases 3 and 11)."""

from __future__ import annotations

import pytest

from tests._tiny import csv_args, write_split
from xfvae.data.loading import load_csv_split
from xfvae.train import train
from xfvae.training.config_checks import ConfigError

TINY = ["model=mf", "data=synthetic", "data.options.n_users=60", "data.options.n_items=40"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluation.protocol=bogus", "evaluation.protocol='bogus' is not a protocol"),
        ("evaluation.report_protocols=[paper,nope]", "evaluation.report_protocols="),
        ("evaluation.ks=[0,20]", "evaluation.ks=[0, 20] is invalid"),
        ("evaluation.ks=[]", "evaluation.ks=[] is invalid"),
        ("evaluation.cold_start=zero", "evaluation.cold_start='zero' is not a policy"),
        ("evaluation.min_test_ratings=0", "evaluation.min_test_ratings=0 is out of range"),
        ("evaluation.eval_batch_size=0", "evaluation.eval_batch_size=0 is out of range"),
        ("evaluation.test=maybe", "evaluation.test='maybe' is invalid"),
        ("evaluation.relevance_threshold=high", "evaluation.relevance_threshold='high'"),
        ("+evaluation.protcol=paper", "evaluation.protcol is not an evaluation setting"),
        ("+foo=1", "foo=1 is not a setting of xfvae.train"),
        (
            "data.options.rating_min=5.5",
            "data.options.rating_min=5.5 is above data.options.rating_max=5.0",
        ),
    ],
)
def test_a_bad_setting_is_refused_before_anything_is_written(
    tmp_path, cfg_factory, override, message
):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(cfg_factory(*TINY, "model.max_epochs=1", override))
    assert list(tmp_path.iterdir()) == []  # no run.json, no checkpoint, nothing trained


def test_every_committed_experiment_and_tuned_config_passes_the_key_check(cfg_factory):
    from xfvae import CONF_DIR
    from xfvae.training.config_checks import validate_config

    for f in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        validate_config(cfg_factory(f"experiment={f.stem}"))
    for f in sorted((CONF_DIR / "tuned").glob("*/*.yaml")):
        validate_config(cfg_factory(f"tuned={f.parent.name}/{f.stem}"))


def _three(tmp_path, train_text: str) -> dict:
    paths = write_split(tmp_path)
    paths["train"].write_text(train_text)
    return paths


def test_a_directory_given_as_a_data_file_says_so(tmp_path, cfg_factory):
    paths = write_split(tmp_path)
    paths["train"] = tmp_path / "a_folder"
    paths["train"].mkdir()
    with pytest.raises(IsADirectoryError, match="a_folder: is a directory, not a ratings file"):
        load_csv_split(*paths.values())
    with pytest.raises(IsADirectoryError, match=r"data.train=PATH"):
        train(cfg_factory(*csv_args(paths), "model.max_epochs=1", out=tmp_path / "run"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_file_without_header_quotes_its_first_line_as_written(tmp_path):
    paths = _three(tmp_path, "26,26,3\n1,2,4\n")
    with pytest.raises(
        ValueError, match=r"tr.csv:1: the file has no header line: its first line '26,26,3' is data"
    ):
        load_csv_split(*paths.values())


def test_an_inverted_rating_scale_is_named_as_such(tmp_path):
    paths = write_split(tmp_path)
    with pytest.raises(ValueError, match="rating_min=5 is above rating_max=1"):
        load_csv_split(*paths.values(), rating_min=5, rating_max=1)


def test_ids_with_spaces_around_them_are_refused_with_their_line(tmp_path):
    paths = _three(tmp_path, "user,item,rating\n25,28,2\n25, 27, 1\n")
    with pytest.raises(ValueError, match=r"tr.csv:3: item id ' 27' has spaces around it"):
        load_csv_split(*paths.values())
