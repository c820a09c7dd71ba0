"""The paired model comparison (training/eval/compare.py, _scripts.eval.compare) on hand-made measure.json files."""
import json

import pytest

from _scripts.eval import compare as compare_script
from training.errors import UserError
from training.eval import compare


def _rec(front, cd, ring=None):
    views = {f"rgb60/{k}": {"psnr": v, "ssim": 90.0} for k, v in (ring or {}).items()}
    return {"front": {"psnr": front, "ssim": 95.0}, "geom": {"cd": cd, "f1@10": 40.0}, "views": views}


def _write(path, per_char, renderset="synth_body", name=None):
    path.write_text(json.dumps({"renderset": renderset, "inferquery": name or path.stem,
                                "per_character": per_char}))
    return path


@pytest.fixture
def pair(tmp_path):
    # rgb60/0042 is the spin view at azimuth 0 (the front), rgb60/0036 the one at -180 (the back)
    a = _write(tmp_path / "a.json", {
        "c1": _rec(20.0, 1.0, {"0042": 30.0, "0036": 25.0}),
        "c2": _rec(22.0, 2.0, {"0042": 28.0, "0036": 27.0}),
        "c3": _rec(24.0, 1.5, {"0042": 26.0}),
        "only_in_a": _rec(99.0, 0.1)})
    b = _write(tmp_path / "b.json", {
        "c1": _rec(19.0, 1.5, {"0042": 30.0, "0036": 21.0}),
        "c2": _rec(22.0, 1.5, {"0042": 29.0, "0036": 26.0}),
        "c3": _rec(21.0, 1.5, {"0042": 26.0})})
    return a, b


def test_paired_lead_standard_error_and_sign(pair):
    c = compare.paired(compare.load_measure(pair[0]), compare.load_measure(pair[1]))
    assert (c["n"], c["only_a"], c["only_b"]) == (3, 1, 0)          # the character B lacks is left out
    rows = {(r["subset"], r["metric"]): r for r in c["metrics"]}
    f = rows["front", "psnr"]                                       # leads 1, 0, 3
    assert f["lead"] == pytest.approx(4 / 3) and f["se"] == pytest.approx(0.8819171, abs=1e-6)
    assert (f["min"], f["max"], f["wins"]) == (0.0, 3.0, pytest.approx(2 / 3))
    assert f["a"] == pytest.approx(22.0) and f["b"] == pytest.approx(62 / 3)
    cd = rows["geom", "cd"]                                         # lower is better: leads +0.5, -0.5, 0
    assert cd["lead"] == pytest.approx(0.0) and (cd["min"], cd["max"]) == (-0.5, 0.5)
    assert ("back", "psnr") not in rows                             # not measured: no row rather than a zero


def test_ring_by_azimuth(pair):
    c = compare.paired(compare.load_measure(pair[0]), compare.load_measure(pair[1]))
    assert [(r["azim"], r["n"]) for r in c["ring"]] == [(-180.0, 2), (0.0, 3)]   # c3 lacks the back view
    back, front = c["ring"]
    assert back["lead"] == pytest.approx(2.5) and front["lead"] == pytest.approx(-1 / 3)
    text = compare.format_comparison(c)
    assert "1 only by A" in text and "+2.50" in text


def test_script_errors_name_the_file(pair, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        compare_script.main([str(tmp_path / "missing.json"), str(pair[1])])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.json" in err and "not found" in err
    other = _write(tmp_path / "head.json", {"c1": _rec(20.0, 1.0)}, renderset="synth_head")
    with pytest.raises(UserError, match="synth_head"):
        compare.paired(compare.load_measure(pair[0]), compare.load_measure(other))
    (tmp_path / "not.json").write_text('{"table": []}')
    with pytest.raises(UserError, match="not a measure.json"):
        compare.load_measure(tmp_path / "not.json")
    disjoint = _write(tmp_path / "d.json", {"zz": _rec(20.0, 1.0)})
    with pytest.raises(UserError, match="no character in common"):
        compare.paired(compare.load_measure(pair[0]), compare.load_measure(disjoint))


def test_script_writes_json(pair, tmp_path, capsys):
    out = tmp_path / "cmp" / "c.json"
    compare_script.main([str(pair[0]), str(pair[1]), "--json", str(out)])
    assert "A = a, B = b: 3 characters" in capsys.readouterr().out
    assert json.loads(out.read_text())["n"] == 3
