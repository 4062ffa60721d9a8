"""Device profile files: the built-ins load, bad files are refused naming file, field and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.config_files import PROFILES_DIR, builtin_profiles, load_profile
from services.core.profiles import ProfileError
from services.core.schemas import Precision, Processor

TABLE_II = {  # device: (cpu steps, gpu steps, cpu peak W, gpu peak W, has dsp)
    "mi8pro": (23, 7, 5.5, 2.8, True),
    "galaxy_s10e": (21, 9, 5.6, 2.4, False),
    "moto_x_force": (15, 6, 3.6, 2.0, False),
}


def test_builtins_listed_and_load() -> None:
    assert set(builtin_profiles()) >= {"mi8pro", "galaxy_s10e", "moto_x_force", "galaxy_tab_s6", "cloud_p100"}
    for name in builtin_profiles():
        assert load_profile(name).name == name


@pytest.mark.parametrize("name", sorted(TABLE_II))
def test_table_ii(name: str) -> None:
    cpu_steps, gpu_steps, cpu_w, gpu_w, dsp = TABLE_II[name]
    p = load_profile(name)
    assert p.kind == "phone" and p.radio is not None and p.radio.p2p is not None
    cpu, gpu = p.processors[Processor.cpu], p.processors[Processor.gpu]
    assert cpu.dvfs and cpu.dvfs.steps == cpu_steps and cpu.dvfs.busy_w[-1] == pytest.approx(cpu_w)
    assert gpu.dvfs and gpu.dvfs.steps == gpu_steps and gpu.dvfs.busy_w[-1] == pytest.approx(gpu_w)
    assert (Processor.dsp in p.processors) is dsp
    if dsp:
        assert p.processors[Processor.dsp].power_w == pytest.approx(1.8)
    assert set(cpu.throughput_gmacs) == {Precision.fp32, Precision.int8}
    assert set(gpu.throughput_gmacs) == {Precision.fp32, Precision.fp16}


def test_every_number_has_a_source_comment() -> None:
    # Each top-level numeric setting of a processor/radio sits on a line with, or under, a source.
    for path in PROFILES_DIR.glob("*.yaml"):
        text = path.read_text()
        assert "# source:" in text, path


def _write(tmp_path: Path, data: object) -> Path:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def _base() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROFILES_DIR / "mi8pro.yaml").read_text())
    return data


def _refused(tmp_path: Path, data: object) -> ProfileError:
    f = _write(tmp_path, data)
    with pytest.raises(ProfileError) as ei:
        load_profile(f)
    assert str(f) in str(ei.value)
    return ei.value


def test_missing_field(tmp_path: Path) -> None:
    d = _base()
    del d["processors"]["cpu"]["throughput_gmacs"]
    e = _refused(tmp_path, d)
    assert e.field == "processors.cpu.throughput_gmacs" and "required" in e.reason


def test_negative_power(tmp_path: Path) -> None:
    d = _base()
    d["processors"]["dsp"]["power_w"] = -1.0
    e = _refused(tmp_path, d)
    assert e.field == "processors.dsp.power_w" and "greater than 0" in e.reason


def test_negative_idle_power(tmp_path: Path) -> None:
    d = _base()
    d["processors"]["gpu"]["idle_w"] = -0.1
    assert _refused(tmp_path, d).field == "processors.gpu.idle_w"


def test_dvfs_count_mismatch(tmp_path: Path) -> None:
    d = _base()
    d["processors"]["cpu"]["dvfs"]["steps"] = 22
    e = _refused(tmp_path, d)
    assert e.field == "processors.cpu.dvfs" and "23 entries but steps is 22" in e.reason


def test_unknown_processor(tmp_path: Path) -> None:
    d = _base()
    d["processors"]["npu"] = d["processors"]["dsp"]
    e = _refused(tmp_path, d)
    assert e.field == "processors.npu" and "unknown processor" in e.reason


def test_unknown_key_and_bad_yaml(tmp_path: Path) -> None:
    d = _base()
    d["processors"]["cpu"]["turbo"] = True
    assert _refused(tmp_path, d).field == "processors.cpu.turbo"
    f = tmp_path / "broken.yaml"
    f.write_text("name: [unclosed")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(f)


def test_radio_points_sorted(tmp_path: Path) -> None:
    d = _base()
    d["radio"]["wifi"]["points"].reverse()
    e = _refused(tmp_path, d)
    assert e.field == "radio.wifi.points" or e.field == "radio.wifi"
    assert "ascending" in e.reason


def test_unknown_name() -> None:
    with pytest.raises(ProfileError, match="built-in profiles are"):
        load_profile("pixel_42")


def test_extra_dir_overrides(tmp_path: Path) -> None:
    d = _base()
    d["description"] = "my own"
    (tmp_path / "mi8pro.yaml").write_text(yaml.safe_dump(d))
    assert load_profile("mi8pro", tmp_path).description == "my own"
    assert load_profile("mi8pro").description != "my own"


def test_published_schemas_are_current() -> None:
    import json

    from services.core.profiles import profile_json_schema
    from services.core.scenarios import scenario_json_schema
    from services.evaluation.results import results_json_schema

    docs = Path(__file__).resolve().parents[1] / "docs"
    for name, schema in (
        ("profile", profile_json_schema()),
        ("scenario", scenario_json_schema()),
        ("results", results_json_schema()),
    ):
        published = json.loads((docs / f"{name}.schema.json").read_text())
        assert published == json.loads(json.dumps(schema)), (
            f"regenerate: python -m services.cli.evaluate schemas docs ({name})"
        )
