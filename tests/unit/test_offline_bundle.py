"""bench/offline_bundle.py, the packages a GPU machine with no index lacks: which requirements it follows, what it
cuts out of a wheel, and that a program Ray starts from the unpacked archive stays executable. Built from wheels
made here (no index is asked)."""

from __future__ import annotations

import importlib.util
import os
import sys
import tarfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

BENCH = Path(__file__).resolve().parents[2] / "bench" / "offline_bundle.py"
spec = importlib.util.spec_from_file_location("offline_bundle", BENCH)
ob = importlib.util.module_from_spec(spec)
sys.modules["offline_bundle"] = ob
spec.loader.exec_module(ob)


def make_wheel(where: Path, name: str, requires: list[str], files: dict[str, tuple[bytes, int]] | None = None) -> Path:
    """A py3-none-any wheel of `name` 1.0; `files`: path -> (content, unix mode)."""
    dist = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": (b"", 0o644), **(files or {})}
    meta = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0",
                      *[f"Requires-Dist: {r}" for r in requires]]) + "\n"
    wheel_meta = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries = {**files, f"{dist}/METADATA": (meta.encode(), 0o644), f"{dist}/WHEEL": (wheel_meta.encode(), 0o644)}
    record = "".join(f"{p},,\n" for p in entries) + f"{dist}/RECORD,,\n"
    path = where / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, (data, mode) in {**entries, f"{dist}/RECORD": (record.encode(), 0o644)}.items():
            info = zipfile.ZipInfo(p)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)
    return path


def test_the_walk_follows_what_the_target_lacks_with_the_asked_extras_and_markers(tmp_path, monkeypatch):
    wheels = {
        "alpha": make_wheel(tmp_path, "alpha", ["beta>=1", "gamma; extra == 'x'", "old; python_version < '3.0'",
                                                "torch>=2"]),
        "beta": make_wheel(tmp_path, "beta", ["flask"]),  # flask: MLflow's server, excluded by name
        "gamma": make_wheel(tmp_path, "gamma", []),
    }
    fetched = []
    monkeypatch.setattr(ob.Walker, "fetch", lambda self, req: fetched.append(req.name) or wheels[req.name])
    walker = ob.Walker({"torch"}, "3.12", tmp_path)
    walker.visit(Requirement("alpha"))
    assert set(walker.wheels) == {"alpha", "beta"}  # not torch (the target has it), old (marker), flask (excluded)
    walker.visit(Requirement("alpha[x]"))  # the same package with an extra: only the extra's requirements are new
    assert set(walker.wheels) == {"alpha", "beta", "gamma"} and sorted(fetched) == ["alpha", "beta", "gamma"]


def test_a_slimmed_wheel_unpacks_and_packs_without_the_cut_files_and_keeps_executables(tmp_path):
    wheel = make_wheel(tmp_path, "ray", [], {"ray/jars/ray_dist.jar": (b"j" * 10_000, 0o644),
                                             "ray/core/gcs_server": (b"#!/bin/sh\necho up\n", 0o755)})
    saved = ob.slim(wheel, ("ray/jars/",))
    assert saved > 0
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        record = z.read("ray-1.0.dist-info/RECORD").decode()
    assert "ray/jars/ray_dist.jar" not in names and "ray/core/gcs_server" in names and "jars" not in record
    site, out = tmp_path / "site", tmp_path / "out" / "site.tar.xz"
    ob.install([wheel], site, "3.12")
    out.parent.mkdir()
    ob.pack(site, out)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="tar")
    assert not (unpacked / "ray" / "jars").exists() and (unpacked / "ray-1.0.dist-info").is_dir()
    assert os.access(unpacked / "ray" / "core" / "gcs_server", os.X_OK)  # Ray starts it as a program
    assert not list(out.parent.glob("*.partial"))
