"""benchmarks/demo_profile.py: the demo's per-step table from run summaries."""

import json

from benchmarks.demo_profile import load_profile, main, profile_table


def _summary(path, tasks):
    path.write_text(json.dumps({"pipeline": "aicd-finetune", "tasks": [
        {"name": n, "status": "ran", "seconds": w, "cpu_seconds": c} for n, w, c in tasks]}))
    return path


def test_before_and_after_side_by_side_with_totals(tmp_path, capsys):
    before = _summary(tmp_path / "a.json", [("train-adapter", 160.0, 150.0), ("evaluate-model", 200.0, 40.0)])
    after = _summary(tmp_path / "b.json", [("train-adapter", 150.0, 148.0), ("evaluate-model", 90.0, 23.2)])
    assert main([str(before), str(after)]) == 0
    # Compared line by line, stripped: in the full suite an earlier test's thread may write a
    # stray indent to stdout while this test captures it (seen once in CI).
    table = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert table[0] == "| step | before wall s | before CPU s | after wall s | after CPU s |"
    assert table[2:] == ["| train-adapter | 160.0 | 150.0 | 150.0 | 148.0 |",
                         "| evaluate-model | 200.0 | 40.0 | 90.0 | 23.2 |",
                         "| total | 360.0 | 190.0 | 240.0 | 171.2 |"]


def test_a_step_missing_from_one_run_shows_a_dash(tmp_path):
    runs = [load_profile(_summary(tmp_path / "a.json", [("a", 1.0, 0.5)])),
            load_profile(_summary(tmp_path / "b.json", [("a", 1.0, 0.5), ("b", 2.0, 1.0)]))]
    assert "| b | - | - | 2.0 | 1.0 |" in profile_table(runs, ["x", "y"]).splitlines()
