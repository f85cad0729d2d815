"""Generates the calgate.v1 Python stubs from proto/ into clients/python/generated/."""

import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "generated"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    return protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            str(PROTO_ROOT / "calgate" / "v1" / "calgate.proto"),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
