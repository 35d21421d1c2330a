"""The committed Table 3 and Table 4 runs replay their tuning trials and stop by the rule (issue 19,
acceptance 3): experiments/check_runs.py on the files under results/."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import check_runs  # noqa: E402


def test_every_committed_tuned_run_replays_its_trial_and_stops_by_the_rule(capsys):
    found = check_runs.runs()
    assert {r.table for r in found} == {"table3", "table4"}
    assert len(found) == 9 * 3 + 4 * 3, "Table 3: nine models, Table 4: four rows, seeds 0-2"
    assert check_runs.main([]) == 0, capsys.readouterr().out


def test_the_check_fails_on_a_run_that_does_not_replay(tmp_path, monkeypatch):
    run = check_runs.runs()[0]
    want = check_runs.replay(run)
    assert want is not None and want == run.val_rmse
    moved = check_runs.Run(**{**run.__dict__, "val_rmse": run.val_rmse + 1e-7})
    assert check_runs.replay(moved) != moved.val_rmse
    early = check_runs.Run(**{**run.__dict__, "epochs": run.best_epoch + run.patience})
    assert not check_runs.stopped_by_rule(early)
    assert check_runs.stopped_by_rule(run)


def test_a_run_is_checked_against_the_study_that_kept_its_configuration():
    """Records are found by the run's configuration: a run whose configuration no study kept (here
    another learning rate) has no trial to replay and fails the check."""
    tuned = [r for r in check_runs.runs() if check_runs.replay(r) is not None]
    run = next(r for r in tuned if r.config.model.get("optimizer"))
    folder, sel = check_runs.records(run)
    assert check_runs.kept(run, sel) and (folder / "selection.json").is_file()
    cfg = run.config.copy()
    cfg.model.optimizer.lr = 0.123456
    other = check_runs.Run(**{**run.__dict__, "config": cfg})
    assert check_runs.records(other) is None
    want = check_runs.replay(other)
    assert want != want  # NaN: nothing to replay
