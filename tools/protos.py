"""Build what the contracts in protos/ generate: Python stubs and the gateway's descriptor set.

    python -m tools.protos gen          # regenerate gen/ (messages, gRPC stubs, .pyi types)
    python -m tools.protos check        # exit 1 when gen/ differs from what the protos generate
    python -m tools.protos descriptor OUT.pb   # descriptor set for Envoy's transcoder

Generation uses grpc_tools' bundled protoc and mypy-protobuf, so it needs no network and no
system protoc. Only our own files are generated, and protovalidate's rules (buf/validate), which no
package provides for the `google.protobuf` runtime (the protovalidate wheel carries its own copy for
another runtime); the vendored Google protos are provided at run time by googleapis-common-protos.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
VENDOR_ROOT = PROTO_ROOT / "vendor"
GEN_ROOT = ROOT / "gen"


# Vendored protos our generated code imports that no installed package provides.
VENDORED_GENERATED = ["buf/validate/validate.proto"]


def own_proto_files() -> list[str]:
    """Our .proto files, as import paths relative to protos/ (sorted, so output is stable)."""
    return sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "clinic").rglob("*.proto"))


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    argv = ["protoc", f"-I{PROTO_ROOT}", f"-I{VENDOR_ROOT}", f"-I{well_known}", *args]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args[:3])} ...")


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed as a console script next to this interpreter."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    found = candidate if candidate.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return str(found)


def generate_python(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out=quiet:{out_dir}",
            f"--mypy_grpc_out=quiet:{out_dir}",
            *VENDORED_GENERATED,
            *own_proto_files(),
        ]
    )
    # Every directory of generated code is a regular package, so setuptools finds it.
    for top in ("clinic", "buf"):
        for directory in [out_dir / top, *(out_dir / top).rglob("*")]:
            if directory.is_dir():
                (directory / "__init__.py").touch()


def build_descriptor_set(out_file: Path) -> Path:
    """A self-contained FileDescriptorSet (imports and comments included) for Envoy."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out_file}",
            "google/rpc/error_details.proto",  # so the edge can print error details as JSON
            *own_proto_files(),
        ]
    )
    return out_file


def _differences(expected: Path, actual: Path) -> list[str]:
    def walk(cmp: filecmp.dircmp, prefix: str) -> list[str]:
        diffs = [f"only in fresh output: {prefix}{n}" for n in cmp.left_only]
        diffs += [f"not generated any more: {prefix}{n}" for n in cmp.right_only if n != "__pycache__"]
        diffs += [f"stale: {prefix}{n}" for n in cmp.diff_files]
        for name, sub in cmp.subdirs.items():
            diffs += walk(sub, f"{prefix}{name}/")
        return diffs

    return walk(filecmp.dircmp(expected, actual, ignore=["__pycache__"]), "gen/")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate_python(fresh)
        diffs = _differences(fresh, GEN_ROOT) if GEN_ROOT.exists() else ["gen/ is missing"]
    for line in diffs:
        print(line, file=sys.stderr)
    if diffs:
        print("generated code is stale: run `python -m tools.protos gen` and commit gen/", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "gen"
    if command == "gen":
        with tempfile.TemporaryDirectory() as tmp:
            generate_python(Path(tmp))
            shutil.rmtree(GEN_ROOT, ignore_errors=True)
            shutil.copytree(tmp, GEN_ROOT)
        print(f"generated {len(own_proto_files())} proto files into {GEN_ROOT.relative_to(ROOT)}/")
        return 0
    if command == "check":
        return check()
    if command == "descriptor" and len(argv) == 2:
        print(build_descriptor_set(Path(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
